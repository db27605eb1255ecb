# Sprout build. `make` builds the three programs; `make run` and `make test`
# also install Debian packages and build the guest image when missing.
#
#   build/sproutd       the daemon (src/ + proto/)
#   build/sprout        the CLI (cli/)
#   build/sprout-agent  the static guest agent (agent/ + proto/, musl)
#   build/test-unit     unit tests; build/asan/test-unit the same under ASan+UBSan

CC       ?= cc
MUSLCC   ?= musl-gcc
WERROR   ?= -Werror
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -Wall -Wextra $(WERROR) -D_GNU_SOURCE -Iproto -Isrc
PKGS      = libmicrohttpd jansson sqlite3 gnutls
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) libcurl 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CURL_LIBS  = $(shell pkg-config --libs libcurl jansson 2>/dev/null)
SANFLAGS  = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SPROUT_CACHE ?= $(HOME)/.cache/sprout
export SPROUT_CACHE
IMAGE_DIR = $(SPROUT_CACHE)/images/current
PORT     ?= 8080
DATA_DIR ?= $(HOME)/.local/share/sprout

DAEMON_SRCS := $(wildcard src/*/*.c) proto/proto.c
DAEMON_HDRS := $(wildcard src/*.h src/*/*.h) proto/proto.h
AGENT_SRCS  := $(wildcard agent/*.c) proto/proto.c
CLI_SRCS    := $(wildcard cli/*.c)
UNIT_SRCS   := $(wildcard tests/unit/*.c)
WEB_SRCS    := $(wildcard web/*.html web/*.js web/*.css) web/package.json web/package-lock.json

.PHONY: all deps image web run test test-unit bench load fuzz clean format
all: build/sproutd build/sprout build/sprout-agent

build/sproutd: src/main.c $(DAEMON_SRCS) $(DAEMON_HDRS) | build
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -pthread -o $@ src/main.c $(DAEMON_SRCS) $(PKG_LIBS) -pthread

build/sprout: $(CLI_SRCS) $(wildcard cli/*.h) src/lib/util.c src/lib/util.h src/lib/ws.c src/lib/ws.h | build
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -pthread -o $@ $(CLI_SRCS) src/lib/util.c src/lib/ws.c $(CURL_LIBS) -pthread

# The agent is static so the guest needs nothing but the binary, and
# stripped so the image hash does not depend on where the tree is checked out.
build/sprout-agent: $(AGENT_SRCS) $(wildcard agent/*.h) proto/proto.h | build
	$(MUSLCC) $(CFLAGS) -static -s -o $@ $(AGENT_SRCS)

build/test-unit: $(UNIT_SRCS) $(DAEMON_SRCS) $(DAEMON_HDRS) $(wildcard tests/unit/*.h) | build
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -Itests/unit -pthread -o $@ $(UNIT_SRCS) $(DAEMON_SRCS) $(PKG_LIBS) -pthread

build/asan/test-unit: $(UNIT_SRCS) $(DAEMON_SRCS) $(DAEMON_HDRS) $(wildcard tests/unit/*.h) | build
	@mkdir -p build/asan
	$(CC) $(CFLAGS) $(SANFLAGS) $(PKG_CFLAGS) -Itests/unit -pthread -o $@ $(UNIT_SRCS) $(DAEMON_SRCS) $(PKG_LIBS) -pthread

build:
	@mkdir -p build

deps:
	@scripts/deps.sh

image: build/sprout-agent
	@scripts/build-image.sh build/sprout-agent

# The web console (build/web, served by sproutd at /).
web: build/web/index.html
build/web/index.html: $(WEB_SRCS) scripts/build-web.sh
	@scripts/build-web.sh

run: deps
	@$(MAKE) --no-print-directory all image web
	@scripts/run.sh $(PORT) $(DATA_DIR)

test: deps
	@$(MAKE) --no-print-directory all image web build/test-unit build/asan/test-unit
	@tests/run.sh

test-unit: build/test-unit build/asan/test-unit build/sprout-agent
	@build/test-unit && build/asan/test-unit

bench: deps
	@$(MAKE) --no-print-directory all image web build/sprout-bench-raw
	@bench/run.sh

load: deps
	@$(MAKE) --no-print-directory all image
	@tests/load.sh

# libFuzzer harnesses (tests/fuzz/), each run FUZZ_SECONDS on a scratch
# copy of its corpus; fails on any crash.
FUZZ_SECONDS ?= 60
fuzz: deps
	@tests/fuzz.sh $(FUZZ_SECONDS)

format:
	clang-format -i src/*.c src/*.h src/*/*.c src/*/*.h agent/*.c cli/*.c proto/*.c proto/*.h

clean:
	rm -rf build

build/sprout-bench-raw: bench/raw_restore.c $(DAEMON_SRCS) $(DAEMON_HDRS) | build
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -pthread -o $@ bench/raw_restore.c $(DAEMON_SRCS) $(PKG_LIBS) -pthread

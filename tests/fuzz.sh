#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with ASan and UBSan
# into build/fuzz/ and runs each for SECONDS on a scratch copy of its
# committed corpus (tests/fuzz/corpus/NAME/), so a run never changes the
# corpus. One line per harness, then "N passed, N failed": a harness
# passes when it builds and runs its time without a crash, leak, timeout
# or broken invariant. A failing input is kept under
# build/fuzz/artifacts/NAME/ and the log under build/fuzz/logs/NAME.log;
# add the input to the corpus as a regression seed once it is fixed.
#
# Usage: tests/fuzz.sh SECONDS [NAME...]   (default: every harness)
# Env:   FUZZ_CC=clang   the compiler (it must have libFuzzer)
#        WERROR=-Werror  set empty to build with warnings allowed
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1

SECONDS_EACH=${1:-}
if ! [[ $SECONDS_EACH =~ ^[0-9]+$ ]] || [ "$SECONDS_EACH" -lt 1 ]; then
        echo "usage: tests/fuzz.sh SECONDS [NAME...]" >&2
        exit 2
fi
shift

FUZZ_CC=${FUZZ_CC:-clang}
WERROR=${WERROR--Werror}
OUT=build/fuzz
PKG_CFLAGS=$(pkg-config --cflags jansson libmicrohttpd 2>/dev/null)
PKG_LIBS=$(pkg-config --libs jansson libmicrohttpd gnutls 2>/dev/null)
CFLAGS=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
        -std=gnu11 -Wall -Wextra $WERROR -D_GNU_SOURCE -Iproto -Isrc -Itests/fuzz $PKG_CFLAGS -pthread)

# The sources each harness links besides its own file. The agent harness
# compiles agent/*.c into its own file, behind its sandbox.
sources() {
        case $1 in
        proto) echo proto/proto.c ;;
        qmp) echo src/hv/qmp.c src/lib/util.c ;;
        agentc) echo src/agentc/agentc.c src/lib/util.c proto/proto.c ;;
        agent) echo proto/proto.c ;;
        api) echo tests/fuzz/fake_vmm.c src/vmm/vmm_names.c src/api/*.c src/http/http.c src/guest/*.c src/lib/*.c \
                src/agentc/agentc.c proto/proto.c ;;
        systemd) echo src/guest/systemd.c src/lib/util.c ;;
        dockerfile) echo src/build/dockerfile.c src/guest/systemd.c src/lib/util.c ;;
        proxy) echo src/lib/util.c ;; # the harness includes proxy.c
        util) echo src/http/http.c src/lib/util.c src/lib/json.c src/guest/systemd.c ;;
        esac
}

# Builds build/fuzz/fuzz_NAME unless it is newer than every source.
build() {
        local name=$1 bin=$OUT/fuzz_$1
        local srcs

        srcs=$(sources "$name")
        if [ -x "$bin" ] && [ -z "$(find tests/fuzz src proto agent -name '*.[ch]' -newer "$bin" | head -1)" ]; then
                return 0
        fi
        # shellcheck disable=SC2086 # word splitting of the source list is meant
        "$FUZZ_CC" "${CFLAGS[@]}" -o "$bin" "tests/fuzz/fuzz_$name.c" $srcs $PKG_LIBS -pthread
}

# Runs one harness for SECONDS_EACH; prints its line; 0 if it passed.
run() {
        local name=$1 log=$OUT/logs/$1.log art=$OUT/artifacts/$1/ work execs t0 secs rc
        local args=(-max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
                    -max_len=16384 -artifact_prefix="$art")

        mkdir -p "$art" "$OUT/logs"
        work=$(mktemp -d "${TMPDIR:-/tmp}/sprout-fuzz-$name.XXXXXX") || return 1
        cp -r "tests/fuzz/corpus/$name/." "$work/" 2>/dev/null
        [ -f "tests/fuzz/$name.dict" ] && args+=(-dict="tests/fuzz/$name.dict")
        t0=$(date +%s)
        UBSAN_OPTIONS=print_stacktrace=1 "$OUT/fuzz_$name" "${args[@]}" "$work" >"$log" 2>&1
        rc=$?
        secs=$(($(date +%s) - t0))
        rm -rf "$work"
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        if [ "$rc" -eq 0 ]; then
                echo "fuzz $name: ${execs:-0} execs in $secs s, no crash"
                return 0
        fi
        echo "fuzz $name: FAILED after ${execs:-?} execs in $secs s (exit $rc); input in $art, log in $log"
        grep -E 'ERROR|FUZZ_CHECK|runtime error|SUMMARY' "$log" | head -5 | sed 's/^/    /'
        return 1
}

NAMES=("$@")
if [ ${#NAMES[@]} -eq 0 ]; then
        for f in tests/fuzz/fuzz_*.c; do
                n=${f#tests/fuzz/fuzz_}
                NAMES+=("${n%.c}")
        done
fi

mkdir -p "$OUT"
PASSED=0
FAILED=0
for name in "${NAMES[@]}"; do
        if [ -z "$(sources "$name")" ] || [ ! -f "tests/fuzz/fuzz_$name.c" ]; then
                echo "fuzz $name: no such harness"
                FAILED=$((FAILED + 1))
        elif ! build "$name"; then
                echo "fuzz $name: FAILED to build"
                FAILED=$((FAILED + 1))
        elif run "$name"; then
                PASSED=$((PASSED + 1))
        else
                FAILED=$((FAILED + 1))
        fi
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]

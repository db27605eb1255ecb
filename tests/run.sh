#!/usr/bin/env bash
# The whole Sprout test suite; `make test` runs it once everything is built
# and the guest image exists.
#
#   1. unit tests: build/test-unit, then the same under ASan+UBSan; the
#      layering check (tests/layers.sh); each libFuzzer harness for 10 s
#      (tests/fuzz.sh; SPROUT_FUZZ_SECONDS)
#   2. CLI tests against a fake in-process server (no daemon needed)
#   3. a fresh build/sproutd on a free loopback port, temp data dir, random
#      admin key; wait for /healthz (the first boot of a data dir cold-boots
#      the guest and saves a snapshot)
#   4. end-to-end tests (tests/e2e/*.test.mjs) and SDK tests (tests/sdk),
#      then checks that restart sproutd over the same data dir: after a
#      SIGTERM, after a crash at every crash point (tests/crash_matrix.sh),
#      after a SIGKILL during a create, below the free-space reserve
#      and with a storage quota; a short load (tests/load.mjs)
#   6. the disk-full test (tests/diskfull.sh), with its own sproutd
#   5. SIGTERM: sproutd must exit 0 within 20 s; no VM process may remain
#      (VMs outlive a daemon restart by design, but the tests delete theirs)
#
# The last line is always "N passed, N failed" over every runner, and the
# exit status is non-zero when anything failed.
#
# Usage: tests/run.sh [TEST_FILE.mjs...]   (default: every e2e and SDK file)
# Env:   SPROUTD=PATH              daemon to test (default: build/sproutd)
#        SPROUT_IMAGE=DIR          image to boot (default: sproutd's own)
#        SPROUT_TEST_KEEP=1        keep the data dir for inspection
#        SPROUT_HEALTH_TIMEOUT=S   seconds to wait for /healthz (default 900)
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD

PASSED=0
FAILED=0
FAILED_RUNNERS=()
LOGDIR=$ROOT/build/test-logs
SPROUTD_LOG=$LOGDIR/sproutd.log
SPROUTD_PID=
SPROUTD_EXTRA_ARGS=() # more sproutd options for the next launch_sproutd
SPROUTD_ENV=()        # more environment (VAR=value) for the next launch_sproutd
BASE_ARGS=()          # sproutd options for every launch
DATA_DIR=
REGISTRY_DIR=
MAX_BODY=$((8 * 1024 * 1024))
HEALTH_TIMEOUT=${SPROUT_HEALTH_TIMEOUT:-900}
SPROUTD=${SPROUTD:-build/sproutd}
FILE_TIMEOUT=900 # seconds any one node test file may run

mkdir -p "$LOGDIR"

log() { printf '==> %s\n' "$*"; }

# Records one pass or failure of a harness check (not a test file).
check() { # NAME OK(0|1)
        if [ "$2" -eq 0 ]; then
                PASSED=$((PASSED + 1))
                log "ok   $1"
        else
                FAILED=$((FAILED + 1))
                FAILED_RUNNERS+=("$1")
                log "FAIL $1"
        fi
}

# Adds a runner's counts to the totals.
tally() { # NAME PASSED FAILED
        PASSED=$((PASSED + $2))
        FAILED=$((FAILED + $3))
        [ "$3" -eq 0 ] || FAILED_RUNNERS+=("$1")
        log "$1: $2 passed, $3 failed"
}

# Runs a command that ends with "N passed, N failed" (fuzzing, load, disk
# full) and adds its counts; a command that ends without one, or exits
# non-zero with none failed, counts as one failure.
run_counted() { # NAME COMMAND...
        local name=$1 out line p f rc
        shift
        out=$LOGDIR/$(printf '%s' "$name" | tr -c 'a-z0-9\n' '-' | sed 's/^-*//').log
        log "running $name: $*"
        "$@" 2>&1 | tee "$out"
        rc=${PIPESTATUS[0]}
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
        if [ -z "$line" ]; then
                log "$name ended without a summary (exit $rc)"
                check "$name" 1
                return
        fi
        p=${line%% passed*}
        f=${line#*passed, }
        f=${f%% failed}
        [ "$rc" -eq 0 ] || [ "$f" -ne 0 ] || f=1
        tally "$name" "$p" "$f"
}

# Runs a unit-test binary, which ends with "N passed, N failed".
run_unit() { # BINARY
        if [ ! -x "$1" ]; then
                log "$1 is missing (make $1)"
                check "$1" 1
                return
        fi
        run_counted "$1" "$1"
}

# Runs one node:test file with a human reporter on the console and TAP in a
# log file, whose "# pass N" / "# fail N" lines are counted.
run_node() { # FILE [ENV=VALUE...]
        local file=$1 tap p f c rc
        shift
        tap=$LOGDIR/$(basename "$(dirname "$file")")-$(basename "$file" .mjs).tap
        rm -f "$tap" # never count an earlier run's results
        log "running $file"
        env "$@" timeout --kill-after=10 "$FILE_TIMEOUT" node --test \
                --test-reporter=spec --test-reporter-destination=stdout \
                --test-reporter=tap --test-reporter-destination="$tap" "$file"
        rc=$?
        p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -n 1)
        f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -n 1)
        c=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$tap" 2>/dev/null | tail -n 1)
        if [ -z "$p" ] || [ -z "$f" ]; then
                [ "$rc" -eq 124 ] && log "$file ran past ${FILE_TIMEOUT}s"
                log "$file ended without a summary (exit $rc)"
                check "$file" 1
                return
        fi
        f=$((f + ${c:-0}))
        [ "$rc" -eq 0 ] || [ "$f" -ne 0 ] || f=1
        tally "$file" "$p" "$f"
}

# Returns a TCP port nobody listens on right now.
free_port() {
        node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# PIDs of processes (other than sproutd itself) whose command line names our
# data dir: the VMs sproutd started.
leftovers() {
        [ -n "$DATA_DIR" ] || return 0
        pgrep -f -- "$DATA_DIR" | grep -vx "${SPROUTD_PID:-none}" | grep -vx "$$" || true
}

kill_leftovers() {
        local pids
        pids=$(leftovers)
        [ -z "$pids" ] && return 0
        log "killing leftover processes: $(echo "$pids" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
}

cleanup() {
        if [ -n "$SPROUTD_PID" ] && kill -0 "$SPROUTD_PID" 2>/dev/null; then
                kill -TERM "$SPROUTD_PID" 2>/dev/null
                for _ in $(seq 1 20); do kill -0 "$SPROUTD_PID" 2>/dev/null || break; sleep 1; done
                kill -KILL "$SPROUTD_PID" 2>/dev/null || true
                wait "$SPROUTD_PID" 2>/dev/null || true
        fi
        SPROUTD_PID=
        kill_leftovers
        test_net_down
        [ -z "$REGISTRY_DIR" ] || tests/registry.sh stop "$REGISTRY_DIR"
        if [ -n "$DATA_DIR" ] && [ -z "${SPROUT_TEST_KEEP:-}" ]; then
                rm -rf "$DATA_DIR"
        elif [ -n "$DATA_DIR" ]; then
                log "kept data dir $DATA_DIR"
        fi
        DATA_DIR=
}
trap cleanup EXIT
on_signal() {
        log "interrupted"
        FAILED=$((FAILED + 1))
        cleanup
        echo "$PASSED passed, $FAILED failed"
        exit 130
}
trap on_signal INT TERM

show_sproutd_log() {
        [ -f "$SPROUTD_LOG" ] || return 0
        log "last lines of $SPROUTD_LOG:"
        tail -n 40 "$SPROUTD_LOG" | sed 's/^/    /'
}

# Installs the SDK test's npm dependencies when missing or older than the lock.
sdk_deps() {
        local d
        for d in "$ROOT/tests/sdk" "$ROOT/tests/browser"; do
                if [ -f "$d/node_modules/.package-lock.json" ] && [ ! "$d/package-lock.json" -nt "$d/node_modules/.package-lock.json" ]; then
                        continue
                fi
                log "installing $(basename "$d") test dependencies (npm ci)"
                (cd "$d" && npm ci --no-audit --no-fund --loglevel=error) || return 1
        done
}

# ------------------------------------------------------------------------
# 1-2. Tests that need no daemon
# ------------------------------------------------------------------------

if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' 2>/dev/null; then
        log "node 18 or newer is needed"
        check "node >= 18" 1
        echo "$PASSED passed, $FAILED failed"
        exit 1
fi

run_unit build/test-unit
run_unit build/asan/test-unit
tests/layers.sh
check "layers: each part of src/ includes only what is below it" $?
# Each libFuzzer harness for a short time (make fuzz runs them longer).
run_counted "fuzz (${SPROUT_FUZZ_SECONDS:-10} s each)" tests/fuzz.sh "${SPROUT_FUZZ_SECONDS:-10}"
run_node tests/e2e/cli-offline.test.mjs SPROUT_BIN="$ROOT/build/sprout"

if [ $# -gt 0 ]; then
        FILES=("$@")
else
        FILES=()
        for f in tests/e2e/*.test.mjs; do
                [ "$f" = tests/e2e/cli-offline.test.mjs ] || FILES+=("$f")
        done
        FILES+=(tests/sdk/*.test.mjs tests/browser/*.test.mjs)
fi
export SPROUT_SCREENSHOTS=$LOGDIR

# ------------------------------------------------------------------------
# 3. Start sproutd
# ------------------------------------------------------------------------

# Launches $SPROUTD on a free port over $DATA_DIR with $SPROUT_API_KEY as the
# bootstrap admin key and $SPROUTD_EXTRA_ARGS (appending to its log), then
# waits for /healthz.
launch_sproutd() {
        local port args waited=0 code body msg last=0
        port=$(free_port) || return 1
        args=(--listen "127.0.0.1:$port" --data-dir "$DATA_DIR" --max-body-bytes "$MAX_BODY" "${BASE_ARGS[@]}")
        [ -n "${SPROUT_IMAGE:-}" ] && args+=(--image "$SPROUT_IMAGE")
        args+=("${SPROUTD_EXTRA_ARGS[@]}")
        log "starting $SPROUTD ${args[*]} (log: $SPROUTD_LOG)"
        env "${SPROUTD_ENV[@]}" SPROUT_BOOTSTRAP_KEY="$SPROUT_API_KEY" "$SPROUTD" "${args[@]}" >>"$SPROUTD_LOG" 2>&1 &
        SPROUTD_PID=$!
        export SPROUT_URL=http://127.0.0.1:$port SPROUTD_PID SPROUT_DATA_DIR=$DATA_DIR

        # Fetch npm packages while the guest boots (the first time only).
        if [ -z "${SDK_DEPS_DONE:-}" ]; then
                SDK_DEPS_DONE=1
                sdk_deps
                check "npm ci (tests/sdk)" $?
        fi

        while :; do
                if ! kill -0 "$SPROUTD_PID" 2>/dev/null; then
                        wait "$SPROUTD_PID"
                        log "sproutd exited (status $?) before it was healthy"
                        SPROUTD_PID=
                        return 1
                fi
                body=$(curl -s -m 5 -w '\n%{http_code}' "$SPROUT_URL/healthz")
                code=${body##*$'\n'}
                [ "$code" = 200 ] && break
                # The daemon says why it is not ready in the error message.
                msg=$(printf '%s' "${body%$'\n'*}" | sed -n 's/.*"message" *: *"\([^"]*\)".*/\1/p' | cut -c1-160)
                if [ "$waited" -ge "$HEALTH_TIMEOUT" ]; then
                        log "sproutd not healthy after ${waited}s (healthz: $code)"
                        return 1
                fi
                if [ $((waited - last)) -ge 10 ]; then
                        log "waiting for sproutd: ${waited}s, healthz: $code${msg:+ ($msg)}"
                        last=$waited
                fi
                sleep 2
                waited=$((waited + 2))
        done
        log "sproutd healthy after ${waited}s"
        return 0
}

# Guests reach nothing of the host: test servers that guests must use
# (git, proxies) listen on an address of an interface made for the tests
# (one end of a veth pair) that sproutd is told to allow (--egress-allow),
# never on the host's loopback.
TEST_HOST_ADDR=198.51.100.1
test_net_up() {
        ip link show sprout-test0 >/dev/null 2>&1 ||
                ip link add sprout-test0 type veth peer name sprout-test1 2>/dev/null || return 1
        ip addr replace "$TEST_HOST_ADDR/32" dev sprout-test0 && ip link set sprout-test0 up &&
                ip link set sprout-test1 up
}
test_net_down() {
        ip link del sprout-test0 2>/dev/null || true
}

# A container registry on loopback for tests/e2e/images.test.mjs, seeded in
# the background (debootstrap, cached) while the other tests run.
registry_up() {
        local port
        # Once per run: start_sproutd runs again for later checks.
        [ -z "$REGISTRY_DIR" ] || return 0
        port=$(free_port) || return 0
        REGISTRY_DIR=${SPROUT_CACHE:-$HOME/.cache/sprout}/test-registry
        rm -f "$REGISTRY_DIR/seeded" "$REGISTRY_DIR/seed-failed"
        if ! tests/registry.sh start "$REGISTRY_DIR" "$port"; then
                log "no test registry: tests/e2e/images.test.mjs will fail"
                return 0
        fi
        BASE_ARGS+=(--registries-conf "$REGISTRY_DIR/registries.conf")
        export SPROUT_TEST_REGISTRY=127.0.0.1:$port SPROUT_TEST_REGISTRY_DIR=$REGISTRY_DIR
        (if tests/registry.sh seed "$REGISTRY_DIR" "$port" >"$REGISTRY_DIR/seed.log" 2>&1; then
                touch "$REGISTRY_DIR/seeded"
        else
                touch "$REGISTRY_DIR/seed-failed"
        fi) &
}

# First start: a fresh data dir and a random admin key.
start_sproutd() {
        if [ ! -x "$SPROUTD" ]; then
                log "$SPROUTD is missing"
                return 1
        fi
        # Short path: sockets under the data dir must fit sun_path.
        DATA_DIR=$(mktemp -d /tmp/sprout-t.XXXXXX) || return 1
        : >"$SPROUTD_LOG"
        registry_up
        if [ -z "${SPROUT_PROXY_URL:-}" ]; then
                PROXY_PORT=$(free_port) || return 1
                # A short timeout, so that the test of a VM that never
                # answers takes 20 s rather than the default 60.
                BASE_ARGS+=(--proxy-listen "127.0.0.1:$PROXY_PORT" --proxy-timeout-seconds 20)
                export SPROUT_PROXY_URL=http://127.0.0.1:$PROXY_PORT SPROUT_PROXY_TIMEOUT_SECONDS=20
                # The port speaks HTTPS too, with a certificate for
                # *.vm.localhost that the tests trust.
                if openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=vm.localhost \
                        -addext "subjectAltName=DNS:*.vm.localhost,DNS:vm.localhost" \
                        -keyout "$LOGDIR/proxy-key.pem" -out "$LOGDIR/proxy-cert.pem" 2>>"$SPROUTD_LOG"; then
                        BASE_ARGS+=(--proxy-tls-cert "$LOGDIR/proxy-cert.pem" --proxy-tls-key "$LOGDIR/proxy-key.pem")
                        export SPROUT_PROXY_CA=$LOGDIR/proxy-cert.pem
                else
                        log "openssl made no test certificate: the proxy's TLS test will fail"
                fi
        fi
        SPROUT_API_KEY=sk-test-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        export SPROUT_API_KEY
        export SPROUT_MAX_BODY_BYTES=$MAX_BODY SPROUT_BIN=$ROOT/build/sprout
        if test_net_up; then
                export SPROUT_TEST_HOST_ADDR=$TEST_HOST_ADDR
                BASE_ARGS+=(--egress-allow "$TEST_HOST_ADDR/32")
        else
                log "no test address for guests ($TEST_HOST_ADDR): tests that serve guests from the host will fail"
        fi
        launch_sproutd
}

# ------------------------------------------------------------------------
# 5. Stop sproutd
# ------------------------------------------------------------------------

# Sends SIGTERM and checks a clean exit; with "final", also that no VM
# process remains.
stop_sproutd() { # [final]
        local rc pids i
        [ -n "$SPROUTD_PID" ] || return 1
        log "stopping sproutd (SIGTERM)"
        kill -TERM "$SPROUTD_PID"
        for ((i = 0; i < 20; i++)); do
                kill -0 "$SPROUTD_PID" 2>/dev/null || break
                sleep 1
        done
        if kill -0 "$SPROUTD_PID" 2>/dev/null; then
                log "sproutd still running 20s after SIGTERM"
                kill -KILL "$SPROUTD_PID"
                wait "$SPROUTD_PID" 2>/dev/null
                SPROUTD_PID=
                check "sproutd exits within 20s of SIGTERM" 1
                return
        fi
        wait "$SPROUTD_PID"
        rc=$?
        SPROUTD_PID=
        [ "$rc" -eq 0 ] || log "sproutd exited with status $rc"
        check "sproutd exits 0 on SIGTERM" "$rc"
        [ "${1:-}" = final ] || return 0
        sleep 1
        pids=$(leftovers)
        # VMs outlive a daemon restart by design, but every test deletes its
        # VMs, so a QEMU still running here was leaked by a test or a DELETE.
        [ -z "$pids" ] || log "processes left behind: $(ps -o pid=,args= -p "$(echo "$pids" | paste -sd,)" | cut -c1-200)"
        check "no VM processes left after the tests deleted their VMs" "$([ -z "$pids" ] && echo 0 || echo 1)"
}

# VMs outlive a daemon restart: a VM made before a SIGTERM still answers,
# with its files, once sproutd runs again over the same data dir.
restart_check() {
        local id out old_key code ok=1
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        log "restart check: a VM survives a sproutd restart"
        id=$(build/sprout vm create --name restart-check) || { check "restart: vm create" 1; return; }
        build/sprout vm exec "$id" 'echo kept > /root/restart-marker' || { check "restart: write marker" 1; return; }
        stop_sproutd
        # The restart comes with a new bootstrap key, which replaces the old.
        old_key=$SPROUT_API_KEY
        SPROUT_API_KEY=sk-test-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        if ! launch_sproutd; then
                check "restart: sproutd becomes healthy again" 1
                return
        fi
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $old_key" "$SPROUT_URL/v1/vms")
        [ "$code" = 401 ] || log "the previous bootstrap key answered $code"
        check "restart: a new bootstrap key revokes the previous one" "$([ "$code" = 401 ] && echo 0 || echo 1)"
        out=$(build/sprout vm exec "$id" 'cat /root/restart-marker') && [ "$out" = kept ] && ok=0
        [ "$ok" -eq 0 ] || log "after the restart, vm exec $id printed '$out'"
        check "restart: the VM still runs and keeps its files" "$ok"
        out=$(build/sprout vm get "$id" --json)
        case $out in *'"running"'*) ok=0 ;; *) ok=1; log "after the restart: $out" ;; esac
        check "restart: the VM is reported running" "$ok"
        build/sprout vm delete "$id" >/dev/null
        check "restart: vm delete" $?
}

# A layer directory the way a sproutd killed inside vm_make_layer before it
# recorded the layer leaves it: nothing backs onto it yet.
ORPHAN=l-testorphan0000000000
plant_orphan_layer() {
        mkdir -p "$DATA_DIR/layers/$ORPHAN" && echo state >"$DATA_DIR/layers/$ORPHAN/state" &&
                qemu-img create -q -f qcow2 "$DATA_DIR/layers/$ORPHAN/disk.qcow2" 1M
}

# The crash-point matrix (crash_matrix), and a layer directory planted
# the way a sproutd killed inside vm_make_layer before it recorded the
# layer leaves it: removed at the next start.
. "$ROOT/tests/crash_matrix.sh"
orphan_check() {
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        stop_sproutd
        plant_orphan_layer
        check "crash: make a layer directory without a record" $?
        launch_sproutd || { check "crash: sproutd starts again" 1; return; }
        [ ! -e "$DATA_DIR/layers/$ORPHAN" ]
        check "crash: a layer directory without a record is removed at start" $?
}

# sproutd killed with SIGKILL while a create's setup runs: after the restart
# the VM is stopped with the VM_SETUP_FAILED error in its info, not taken
# back as running with its setup half done.
create_crash_check() {
        local id info ok
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        log "create crash check: sproutd killed with SIGKILL during a create's setup"
        id=$(api POST /v1/vms '{"waitForReadySignal":false,"readySignalTimeoutSeconds":900,"systemd":{"services":[{"name":"never-ready","mode":"service","readySignal":true,"timeoutSec":600,"exec":["sleep 3600"]}]}}' |
                grep -o '"id":"[a-z0-9]*"' | head -1 | cut -d'"' -f4)
        [ -n "$id" ] || { check "create crash: create without waiting" 1; return; }
        sleep 5
        kill -9 "$SPROUTD_PID"
        wait "$SPROUTD_PID" 2>/dev/null
        SPROUTD_PID=
        if ! launch_sproutd; then
                check "create crash: sproutd becomes healthy again after SIGKILL" 1
                return
        fi
        info=$(api GET "/v1/vms/$id")
        case $info in *'"state":"stopped"'*'"code":"VM_SETUP_FAILED"'* | *'"code":"VM_SETUP_FAILED"'*'"state":"stopped"'*) ok=0 ;; *) ok=1 ;; esac
        [ "$ok" -eq 0 ] || log "after the crash: $info"
        check "create crash: the VM is stopped with VM_SETUP_FAILED after the restart" "$ok"
        api DELETE "/v1/vms/$id" >/dev/null
        check "create crash: vm delete" $?
}

# sproutd stopped (SIGTERM) while a build runs a long step: after the
# restart the build is failed with that reason, its snapshot is failed,
# its temporary VM is gone (not listed, no directory, no QEMU), and the
# same spec builds again.
build_restart_check() {
        local spec out bid state vmid i ok
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        log "build restart check: sproutd stopped during a build"
        spec='{"discriminator":"restart-'$RANDOM'","systemd":{"services":[{"name":"long-step","mode":"oneshot","exec":["sleep 600"]}]}}'
        out=$(curl -s -m 60 -X POST -H "Authorization: Bearer $SPROUT_API_KEY" \
                -H 'x-freestyle-background-after-secs: 0' -d "{\"spec\":$spec}" "$SPROUT_URL/v1/vms/snapshots")
        bid=$(printf '%s' "$out" | grep -o '"buildId":"bd-[a-z0-9]*"' | cut -d'"' -f4)
        [ -n "$bid" ] || { log "create_snapshot: $out"; check "build restart: a build starts in the background" 1; return; }
        for i in $(seq 1 120); do
                case $(api GET "/v1/vms/builds/$bid/phases") in *'setup: services'*) break ;; esac
                sleep 1
        done
        vmid=$(sqlite3 "$DATA_DIR/sprout.db" "SELECT vm_id FROM builds WHERE id = '$bid'" 2>/dev/null)
        [ -n "$vmid" ]
        check "build restart: the build runs in a VM of its own ($vmid)" $?
        stop_sproutd
        launch_sproutd || { check "build restart: sproutd starts again" 1; return; }
        for i in $(seq 1 60); do
                out=$(api GET "/v1/vms/builds/$bid")
                case $out in *'"state":"failed"'*) break ;; esac
                sleep 1
        done
        case $out in *'"state":"failed"'*'sproutd stopped during the build'*) ok=0 ;; *) ok=1; log "build after restart: $out" ;; esac
        check "build restart: the build is failed, and says why" "$ok"
        case $(api GET '/v1/vms/snapshots?includeFailed=true') in *"\"buildId\":\"$bid\""*'"state":"failed"'* | *'"state":"failed"'*"\"buildId\":\"$bid\""*) ok=0 ;; *) ok=1 ;; esac
        check "build restart: its snapshot is failed" "$ok"
        for i in $(seq 1 30); do [ -z "$vmid" ] || [ ! -e "$DATA_DIR/vms/$vmid" ] && break; sleep 1; done
        [ -n "$vmid" ] && [ ! -e "$DATA_DIR/vms/$vmid" ] && ! pgrep -f -- "$DATA_DIR/vms/$vmid" >/dev/null &&
                ! api GET /v1/vms | grep -q "$vmid"
        check "build restart: its VM is gone (no directory, no QEMU, not listed)" $?
}

# Calls the API with the admin key: METHOD PATH [JSON]; prints the body.
api() {
        local data=()
        [ $# -ge 3 ] && data=(-d "$3")
        curl -s -m 120 -X "$1" -H "Authorization: Bearer $SPROUT_API_KEY" "${data[@]}" "$SPROUT_URL$2"
}

# Bytes sproutd counts against --storage-quota-bytes, counted the way
# storage_used() in src/vmm.c does: files under vms/ with no other name
# (not a running VM's RAM, on a tmpfs mounted there), and all files under
# layers/. (The API's diskUsageBytes covers only this account's VMs and
# snapshots, not fork layers.)
storage_used() {
        { find "$DATA_DIR/vms" -xdev -type f -links 1 -printf '%b\n'; find "$DATA_DIR/layers" -type f -printf '%b\n'; } \
                2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s * 512 }'
}

# Which of the given VM ids GET /v1/vms lists. Listing, unlike a GET of one
# VM, does not count as using a VM, so it leaves the eviction order alone.
listed_vms() { # ID...
        local list id
        list=$(api GET /v1/vms)
        for id in "$@"; do
                case $list in *"\"id\":\"$id\""*) echo "$id" ;; esac
        done
}

# Over the storage quota sproutd evicts sticky VMs, the lowest priority
# first, then the least recently used; never persistent ones. The VM used
# last is the one made first, and it is used before a restart: evicting by
# creation order, or forgetting use across the restart, would pick it.
quota_check() {
        local pers s9 s5used s5idle vm used quota n i code body
        local -a vms present
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        log "quota check: over the storage quota, the least recently used lowest-priority sticky VM is evicted"
        # idleTimeoutSeconds 0: never suspended for idleness, and guest
        # network traffic does not count as use.
        for vm in 'quota-persistent {"type":"persistent"}' 'quota-sticky9 {"type":"sticky","priority":9}' \
                'quota-sticky5-used {"type":"sticky","priority":5}' 'quota-sticky5-idle {"type":"sticky","priority":5}'; do
                body=$(api POST /v1/vms "{\"name\":\"${vm%% *}\",\"idleTimeoutSeconds\":0,\"persistence\":${vm#* }}")
                vms+=("$(printf '%s' "$body" | grep -o '"id":"[a-z0-9]*"' | head -1 | cut -d'"' -f4)")
                [ -n "${vms[-1]}" ] || log "quota: create ${vm%% *}: $body"
        done
        pers=${vms[0]} s9=${vms[1]} s5used=${vms[2]} s5idle=${vms[3]}
        [ -n "$pers" ] && [ -n "$s9" ] && [ -n "$s5used" ] && [ -n "$s5idle" ]
        n=$?
        check "quota: create a persistent, a priority 9 and two priority 5 sticky VMs" $n
        if [ "$n" -ne 0 ]; then
                for vm in "${vms[@]}"; do [ -z "$vm" ] || api DELETE "/v1/vms/$vm" >/dev/null; done
                return
        fi
        # 48 MiB on each sticky VM's disk, the one to be used last.
        for vm in "$s9" "$s5idle" "$s5used"; do
                build/sprout vm exec "$vm" 'head -c 48M /dev/urandom > /root/ballast && sync' >/dev/null || n=1
        done
        build/sprout vm exec "$s5used" true >/dev/null || n=1
        check "quota: fill the sticky VMs' disks; use the first priority 5 VM last" $n
        stop_sproutd
        # Room for 32 MiB more; then 64 MiB written in the persistent VM's
        # disk go over the quota by less than evicting one sticky VM frees
        # (its 48 MiB).
        used=$(storage_used)
        quota=$((used + 32 * 1024 * 1024))
        SPROUTD_EXTRA_ARGS=(--storage-quota-bytes "$quota")
        launch_sproutd
        n=$?
        SPROUTD_EXTRA_ARGS=()
        log "quota: $used bytes used, quota $quota"
        check "quota: sproutd restarts with --storage-quota-bytes" $n
        [ "$n" -eq 0 ] || return
        build/sprout vm exec "$pers" 'head -c 64M /dev/urandom > /root/quota-fill && sync' >/dev/null
        check "quota: write 64 MiB in the persistent VM" $?
        # sproutd looks at the quota every 5 s; wait for an eviction, then
        # one more round, which must evict nothing more.
        for ((i = 0; i < 60; i++)); do
                mapfile -t present < <(listed_vms "${vms[@]}")
                [ "${#present[@]}" -lt 4 ] && break
                sleep 1
        done
        sleep 6
        mapfile -t present < <(listed_vms "${vms[@]}")
        log "quota: $(storage_used) bytes used now; left: ${present[*]}"
        code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SPROUT_API_KEY" "$SPROUT_URL/v1/vms/$s5idle")
        case " ${present[*]} " in *" $s5idle "*) n=1 ;; *) [ "$code" = 404 ]; n=$? ;; esac
        [ "$n" -eq 0 ] || log "quota: GET of the VM that should be evicted: $code"
        check "quota: the least recently used priority 5 sticky VM is evicted" $n
        for vm in "$s5used:the recently used priority 5" "$s9:the priority 9" "$pers:the persistent"; do
                case " ${present[*]} " in *" ${vm%%:*} "*) n=0 ;; *) n=1 ;; esac
                check "quota: ${vm#*:} VM is not evicted" $n
        done
        # Without the quota again, for the rest of the run.
        stop_sproutd
        if ! launch_sproutd; then
                check "quota: sproutd restarts without the quota" 1
                return
        fi
        n=0
        for vm in $(listed_vms "${vms[@]}"); do
                api DELETE "/v1/vms/$vm" >/dev/null || n=1
        done
        [ -z "$(listed_vms "${vms[@]}")" ] || n=1
        check "quota: vm delete" $n
}

# Below the free-space reserve, creates, forks and snapshots are refused
# with 507 INSUFFICIENT_STORAGE, and a VM that runs keeps running.
reserve_check() {
        local id free code out
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        log "reserve check: a data dir below --disk-reserve-bytes refuses new VMs, and running ones go on"
        id=$(build/sprout vm create --name reserve-check) || { check "reserve: vm create" 1; return; }
        stop_sproutd
        free=$(df -B1 --output=avail "$DATA_DIR" | tail -n 1)
        SPROUTD_EXTRA_ARGS=(--disk-reserve-bytes "$((free + (1 << 30)))")
        if ! launch_sproutd; then
                SPROUTD_EXTRA_ARGS=()
                check "reserve: sproutd restarts with the reserve" 1
                return
        fi
        SPROUTD_EXTRA_ARGS=()
        code=$(api POST /v1/vms '{}' | grep -o '"code":"[A-Z_]*"')
        [ "$code" = '"code":"INSUFFICIENT_STORAGE"' ] || log "reserve: a create answered $code"
        check "reserve: a create below the reserve is refused with INSUFFICIENT_STORAGE" "$([ "$code" = '"code":"INSUFFICIENT_STORAGE"' ] && echo 0 || echo 1)"
        code=$(api POST "/v1/vms/$id/snapshot" '{}' | grep -o '"code":"[A-Z_]*"')
        check "reserve: so is a snapshot" "$([ "$code" = '"code":"INSUFFICIENT_STORAGE"' ] && echo 0 || echo 1)"
        out=$(build/sprout vm exec "$id" 'echo still-running')
        check "reserve: the running VM keeps running" "$([ "$out" = still-running ] && echo 0 || echo 1)"
        build/sprout vm delete "$id" >/dev/null
        check "reserve: vm delete" $?
        stop_sproutd
        launch_sproutd || check "reserve: sproutd restarts without the reserve" 1
}

# --egress deny: a guest reaches only what --egress-allow names (and DNS).
egress_check() {
        local id mirror out
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        mirror=$(getent ahostsv4 deb.debian.org | awk 'NR == 1 { print $1 }')
        if [ -z "$mirror" ]; then
                log "egress check: deb.debian.org does not resolve here; skipped"
                return
        fi
        log "egress check: with --egress deny, a guest reaches only --egress-allow ($mirror/32)"
        stop_sproutd
        SPROUTD_EXTRA_ARGS=(--egress deny --egress-allow "$mirror/32")
        if ! launch_sproutd; then
                SPROUTD_EXTRA_ARGS=()
                check "egress: sproutd restarts with --egress deny" 1
                return
        fi
        SPROUTD_EXTRA_ARGS=()
        id=$(build/sprout vm create --name egress-check) || { check "egress: vm create" 1; return; }
        out=$(build/sprout vm exec "$id" "curl -s -m 20 -o /dev/null -w '%{http_code}' --resolve deb.debian.org:80:$mirror http://deb.debian.org/debian/")
        check "egress: the allowed mirror answers ($out)" "$(case $out in [23]??) echo 0 ;; *) echo 1 ;; esac)"
        out=$(build/sprout vm exec "$id" "curl -s -m 10 -o /dev/null -w '%{http_code}' https://registry.npmjs.org/ || true")
        check "egress: anything else does not ($out)" "$(case $out in [1-5]??) echo 1 ;; *) echo 0 ;; esac)"
        build/sprout vm delete "$id" >/dev/null
        check "egress: vm delete" $?
        stop_sproutd
        launch_sproutd || check "egress: sproutd restarts with the default egress" 1
}

if start_sproutd; then
        check "sproutd starts and becomes healthy" 0
        for f in "${FILES[@]}"; do
                if [ ! -f "$f" ]; then
                        log "$f does not exist"
                        check "$f" 1
                        continue
                fi
                if ! kill -0 "$SPROUTD_PID" 2>/dev/null; then
                        log "sproutd died; not running $f"
                        check "$f (sproutd died)" 1
                        continue
                fi
                run_node "$f"
        done
        # Mixed requests from many clients on a few VMs (make load: 16 x 200).
        [ $# -gt 0 ] || run_counted "load (16 clients x 25 requests, 8 VMs)" node tests/load.mjs --clients 16 --requests 25
        restart_check
        orphan_check
        crash_matrix
        create_crash_check
        build_restart_check
        reserve_check
        egress_check
        quota_check
        [ -z "$SPROUTD_PID" ] || stop_sproutd final
else
        check "sproutd starts and becomes healthy" 1
fi
cleanup
# Its own sproutd on a small file system that fills up (never beside
# another sproutd: they would share network namespaces' names).
[ $# -gt 0 ] || run_counted "disk full" tests/diskfull.sh

# ------------------------------------------------------------------------
# Summary
# ------------------------------------------------------------------------

if [ "$FAILED" -ne 0 ]; then
        show_sproutd_log
        log "failed: ${FAILED_RUNNERS[*]}"
        log "logs: $LOGDIR"
fi
cleanup
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]

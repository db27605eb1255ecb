#!/usr/bin/env bash
# The whole Sprout test suite; `make test` runs it once everything is built
# and the guest image exists.
#
#   1. unit tests: build/test-unit, then the same under ASan+UBSan
#   2. CLI tests against a fake in-process server (no daemon needed)
#   3. a fresh build/sproutd on a free loopback port, temp data dir, random
#      admin key; wait for /healthz (the first boot of a data dir cold-boots
#      the guest and saves a snapshot)
#   4. end-to-end tests (tests/e2e/*.test.mjs) and SDK tests (tests/sdk)
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
DATA_DIR=
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

# Runs a unit-test binary, which ends with "N passed, N failed".
run_unit() { # BINARY
        local bin=$1 out line p f
        out=$LOGDIR/$(basename "$(dirname "$1")")-$(basename "$1").log
        if [ ! -x "$bin" ]; then
                log "$bin is missing (make $bin)"
                check "$bin" 1
                return
        fi
        log "running $bin"
        rm -f "$out"
        "$bin" 2>&1 | tee "$out"
        local rc=${PIPESTATUS[0]}
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
        if [ -z "$line" ]; then
                log "$bin ended without a summary (exit $rc)"
                check "$bin" 1
                return
        fi
        p=${line%% passed*}
        f=${line#*passed, }
        f=${f%% failed}
        # A crash after the summary still counts as a failure.
        [ "$rc" -eq 0 ] || [ "$f" -ne 0 ] || f=1
        tally "$bin" "$p" "$f"
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
        local d=$ROOT/tests/sdk
        if [ -f "$d/node_modules/.package-lock.json" ] && [ ! "$d/package-lock.json" -nt "$d/node_modules/.package-lock.json" ] \
                && [ -d "$d/node_modules/freestyle-sandboxes" ]; then
                return 0
        fi
        log "installing SDK test dependencies (npm ci)"
        (cd "$d" && npm ci --no-audit --no-fund --loglevel=error)
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
run_node tests/e2e/cli-offline.test.mjs SPROUT_BIN="$ROOT/build/sprout"

if [ $# -gt 0 ]; then
        FILES=("$@")
else
        FILES=()
        for f in tests/e2e/*.test.mjs; do
                [ "$f" = tests/e2e/cli-offline.test.mjs ] || FILES+=("$f")
        done
        FILES+=(tests/sdk/*.test.mjs)
fi

# ------------------------------------------------------------------------
# 3. Start sproutd
# ------------------------------------------------------------------------

# Launches $SPROUTD on a free port over $DATA_DIR with $SPROUT_API_KEY as the
# bootstrap admin key (appending to its log), then waits for /healthz.
launch_sproutd() {
        local port args waited=0 code body msg last=0
        port=$(free_port) || return 1
        args=(--listen "127.0.0.1:$port" --data-dir "$DATA_DIR" --max-body-bytes "$MAX_BODY")
        [ -n "${SPROUT_IMAGE:-}" ] && args+=(--image "$SPROUT_IMAGE")
        log "starting $SPROUTD ${args[*]} (log: $SPROUTD_LOG)"
        SPROUT_BOOTSTRAP_KEY=$SPROUT_API_KEY "$SPROUTD" "${args[@]}" >>"$SPROUTD_LOG" 2>&1 &
        SPROUTD_PID=$!
        export SPROUT_URL=http://127.0.0.1:$port

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

# First start: a fresh data dir and a random admin key.
start_sproutd() {
        if [ ! -x "$SPROUTD" ]; then
                log "$SPROUTD is missing"
                return 1
        fi
        # Short path: sockets under the data dir must fit sun_path.
        DATA_DIR=$(mktemp -d /tmp/sprout-t.XXXXXX) || return 1
        : >"$SPROUTD_LOG"
        SPROUT_API_KEY=sk-test-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        export SPROUT_API_KEY
        export SPROUT_MAX_BODY_BYTES=$MAX_BODY SPROUT_BIN=$ROOT/build/sprout
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
        local id out ok=1
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        log "restart check: a VM survives a sproutd restart"
        id=$(build/sprout vm create --name restart-check) || { check "restart: vm create" 1; return; }
        build/sprout vm exec "$id" 'echo kept > /root/restart-marker' || { check "restart: write marker" 1; return; }
        stop_sproutd
        if ! launch_sproutd; then
                check "restart: sproutd becomes healthy again" 1
                return
        fi
        out=$(build/sprout vm exec "$id" 'cat /root/restart-marker') && [ "$out" = kept ] && ok=0
        [ "$ok" -eq 0 ] || log "after the restart, vm exec $id printed '$out'"
        check "restart: the VM still runs and keeps its files" "$ok"
        out=$(build/sprout vm get "$id" --json)
        case $out in *'"running"'*) ok=0 ;; *) ok=1; log "after the restart: $out" ;; esac
        check "restart: the VM is reported running" "$ok"
        build/sprout vm delete "$id" >/dev/null
        check "restart: vm delete" $?
}

# sproutd killed with SIGKILL in the middle of a snapshot: after a restart
# the VM runs with its files, and the snapshot either exists and restores,
# or does not exist at all.
crash_check() {
        local id out ok=1 snaps sid restored
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        log "crash check: sproutd killed with SIGKILL during a snapshot"
        id=$(build/sprout vm create --name crash-check) || { check "crash: vm create" 1; return; }
        build/sprout vm exec "$id" 'echo kept > /root/crash-marker; sync' || { check "crash: write marker" 1; return; }
        curl -s -m 30 -XPOST -H "Authorization: Bearer $SPROUT_API_KEY" \
                "$SPROUT_URL/v1/vms/$id/snapshot" -d '{}' >/dev/null 2>&1 &
        sleep 0.05
        kill -9 "$SPROUTD_PID"
        wait "$SPROUTD_PID" 2>/dev/null
        SPROUTD_PID=
        wait
        if ! launch_sproutd; then
                check "crash: sproutd becomes healthy again after SIGKILL" 1
                return
        fi
        out=$(build/sprout vm exec "$id" 'cat /root/crash-marker') && [ "$out" = kept ] && ok=0
        [ "$ok" -eq 0 ] || log "after the crash, vm exec $id printed '$out'"
        check "crash: the VM runs and keeps its files after a SIGKILL mid-snapshot" "$ok"
        snaps=$(curl -s -m 10 -H "Authorization: Bearer $SPROUT_API_KEY" "$SPROUT_URL/v1/vms/snapshots")
        sid=$(printf '%s' "$snaps" | grep -o '"snapshotId":"sc-[a-z0-9]*"' | head -1 | cut -d'"' -f4)
        ok=0
        if [ -n "$sid" ]; then
                restored=$(curl -s -m 120 -XPOST -H "Authorization: Bearer $SPROUT_API_KEY" "$SPROUT_URL/v1/vms" \
                        -d "{\"snapshotId\":\"$sid\"}" | grep -o '"id":"[a-z0-9]*"' | cut -d'"' -f4)
                out=$(build/sprout vm exec "$restored" 'cat /root/crash-marker' 2>&1) && [ "$out" = kept ] || ok=1
                [ "$ok" -eq 0 ] || log "snapshot $sid after the crash: restore gave '$restored', exec '$out'"
                [ -z "$restored" ] || build/sprout vm delete "$restored" >/dev/null
                curl -s -m 10 -XDELETE -H "Authorization: Bearer $SPROUT_API_KEY" "$SPROUT_URL/v1/vms/snapshots/$sid" >/dev/null
        fi
        check "crash: a snapshot cut short is either whole or absent" "$ok"
        build/sprout vm delete "$id" >/dev/null
        check "crash: vm delete" $?
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
        restart_check
        crash_check
        [ -z "$SPROUTD_PID" ] || stop_sproutd final
else
        check "sproutd starts and becomes healthy" 1
fi

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

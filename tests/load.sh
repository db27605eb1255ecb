#!/usr/bin/env bash
# make load: starts its own sproutd (temp data dir, free loopback port,
# random bootstrap admin key, --egress deny, limits raised so that the load
# itself is not refused), waits for /healthz (a fresh data dir first
# cold-boots the guest to make its base snapshot), runs tests/load.mjs
# against it, stops it with SIGTERM and checks that it exits 0 and that no
# process naming the data dir remains. Ends with "N passed, N failed";
# exits non-zero when anything failed.
#
# Env:   SPROUTD=PATH           daemon to load (default build/sproutd)
#        SPROUT_IMAGE=DIR       guest image (default: sproutd's own)
#        LOAD_CLIENTS, LOAD_REQUESTS, LOAD_VMS   (default 16, 200, 8; see tests/load.mjs)
#        LOAD_MEM_MB=N          guest RAM (default 512)
#        LOAD_HEALTH_TIMEOUT=S  seconds to wait for /healthz (default 900)
#        SPROUT_TEST_KEEP=1     keep the data dir
# Args are passed to tests/load.mjs (e.g. --clients 16 --requests 25).
# It must not run beside another sproutd on this host (network namespaces,
# nftables table): run it under the same lock as the other VM tests, e.g.
# `flock /tmp/sprout-vm.lock tests/load.sh`.
#
# Sourced (`. tests/load.sh`), it only defines the helpers below, which
# tests/diskfull.sh shares.
set -uo pipefail

# ---- helpers: checks, and one sproutd of our own ----
#
# The caller sets SPROUTD, ARGS (its options), KEY (the bootstrap admin
# key), URL, LOG (its log file), HEALTH_TIMEOUT and SCOPE (a path that the
# command lines of its VMs' processes name: the data dir or above).

PASSED=0
FAILED=0
FAILED_NAMES=()
PID=
SCOPE=
T0=$(date +%s)

log() { printf '==> [%3ds] %s\n' "$(($(date +%s) - T0))" "$*"; }

check() { # NAME OK(0|1)
        if [ "$2" -eq 0 ]; then PASSED=$((PASSED + 1)) && log "ok   $1" && return 0; fi
        FAILED=$((FAILED + 1)) && FAILED_NAMES+=("$1") && log "FAIL $1"
}

free_port() {
        node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

healthy() { [ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/healthz")" = 200 ]; }
alive() { [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; }

# Processes (other than sproutd and this script) whose command line names
# $SCOPE: the VMs' QEMUs.
leftovers() {
        [ -n "$SCOPE" ] || return 0
        pgrep -f -- "$SCOPE" | grep -vx "${PID:-none}" | grep -vx "$$" || true
}

# Ends the run before it got going: the reason, and one failure.
give_up() { # WHY
        log "$1"
        echo "$PASSED passed, $((FAILED + 1)) failed"
        exit 1
}

# Checks that $SPROUTD is there and starts its log afresh.
prepare() {
        [ -x "$SPROUTD" ] || give_up "$SPROUTD is missing (make build/sproutd)"
        mkdir -p "$(dirname "$LOG")" && : >"$LOG"
}

# Starts sproutd and waits for /healthz; sets PID and WAITED (seconds).
launch_sproutd() {
        log "starting $SPROUTD ${ARGS[*]} (log: $LOG)"
        SPROUT_BOOTSTRAP_KEY=$KEY "$SPROUTD" "${ARGS[@]}" >>"$LOG" 2>&1 &
        PID=$!
        WAITED=0
        until healthy; do
                if ! alive; then
                        wait "$PID"
                        log "sproutd exited (status $?) before it was healthy"
                        PID=
                        return 1
                fi
                [ "$WAITED" -lt "$HEALTH_TIMEOUT" ] || { log "sproutd not healthy after ${WAITED}s"; return 1; }
                [ $((WAITED % 30)) -ne 0 ] || [ "$WAITED" -eq 0 ] || log "waiting for sproutd: ${WAITED}s"
                sleep 2
                WAITED=$((WAITED + 2))
        done
}

# SIGTERM; checks that sproutd exits 0 within 20 s.
stop_sproutd() { # WHEN
        local rc
        if ! alive; then
                check "$1: sproutd is still running" 1
                PID=
                return
        fi
        kill -TERM "$PID"
        for _ in $(seq 1 20); do kill -0 "$PID" 2>/dev/null || break; sleep 1; done
        if kill -0 "$PID" 2>/dev/null; then
                kill -KILL "$PID"
                wait "$PID" 2>/dev/null
                check "$1: sproutd exits within 20s of SIGTERM" 1
        else
                wait "$PID"
                rc=$?
                check "$1: sproutd exits 0 on SIGTERM (status $rc)" "$rc"
        fi
        PID=
}

# Checks that no VM process outlived sproutd (every VM was deleted).
check_no_leftovers() {
        local pids
        sleep 1
        pids=$(leftovers)
        [ -z "$pids" ] || log "processes left behind: $(ps -o pid=,args= -p "$(echo "$pids" | paste -sd,)" | cut -c1-200)"
        check "no process naming the data dir remains" "$([ -z "$pids" ] && echo 0 || echo 1)"
}

# For traps: ends sproutd (SIGTERM, then SIGKILL) and whatever names $SCOPE.
kill_sproutd() {
        local pids
        if alive; then
                kill -TERM "$PID" 2>/dev/null
                for _ in $(seq 1 20); do kill -0 "$PID" 2>/dev/null || break; sleep 1; done
                kill -KILL "$PID" 2>/dev/null || true
                wait "$PID" 2>/dev/null || true
        fi
        PID=
        pids=$(leftovers)
        [ -n "$pids" ] || return 0
        log "killing leftover processes: $(echo "$pids" | tr '\n' ' ')"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 1
}

# The end of a run: what failed, sproutd's warnings, the time taken.
report() {
        [ "$FAILED" -eq 0 ] || {
                log "failed: ${FAILED_NAMES[*]}"
                log "sproutd's warnings and errors ($LOG):"
                grep -v ' info ' "$LOG" | tail -n 30 | sed 's/^/    /'
        }
        log "took $(($(date +%s) - T0))s"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

# ---- make load ----

cd "$(dirname "$0")/.." || exit 1
SPROUTD=${SPROUTD:-build/sproutd}
HEALTH_TIMEOUT=${LOAD_HEALTH_TIMEOUT:-900}
LOG=$PWD/build/test-logs/load-sproutd.log
DATA_DIR=

cleanup() {
        kill_sproutd
        if [ -n "$DATA_DIR" ]; then
                # Nothing should be mounted there, but never delete through a mount.
                for m in $(findmnt -rn -o TARGET | grep -F -- "$DATA_DIR" | sort -r); do umount -l "$m" 2>/dev/null; done
                if [ -z "${SPROUT_TEST_KEEP:-}" ]; then rm -rf "$DATA_DIR"; else log "kept data dir $DATA_DIR"; fi
        fi
        DATA_DIR=
}
trap cleanup EXIT
trap 'log interrupted; cleanup; echo "$PASSED passed, $((FAILED + 1)) failed"; exit 130' INT TERM

prepare
# Short path: sockets under the data dir must fit sun_path.
DATA_DIR=$(mktemp -d /tmp/sprout-l.XXXXXX) || exit 1
SCOPE=$DATA_DIR
KEY=sk-load-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
PORT=$(free_port) || exit 1
URL=http://127.0.0.1:$PORT
ARGS=(--listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" --egress deny --mem-mb "${LOAD_MEM_MB:-512}"
        --max-vms 256 --account-max-vms 0 --account-max-running-vms 0 --account-max-memory-mb 0
        --account-max-snapshots 0 --account-max-long-requests 256)
[ -n "${SPROUT_IMAGE:-}" ] && ARGS+=(--image "$SPROUT_IMAGE")

launch_sproutd
ok=$?
check "sproutd starts and becomes healthy (${WAITED}s)" "$ok"
if [ "$ok" -eq 0 ]; then
        out=${LOG%/*}/load.out
        SPROUT_URL=$URL SPROUT_API_KEY=$KEY SPROUTD_PID=$PID node tests/load.mjs "$@" 2>&1 | tee "$out"
        rc=${PIPESTATUS[0]}
        # Its last line counts its checks: "N passed, N failed".
        read -r p _ f _ < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
        [ -n "${f:-}" ] || { p=0 f=1; log "tests/load.mjs ended without a summary (exit $rc)"; }
        [ "$rc" -eq 0 ] || [ "$f" -ne 0 ] || f=1 # a crash after the summary still fails
        PASSED=$((PASSED + p)) FAILED=$((FAILED + f))
        [ "$f" -eq 0 ] || FAILED_NAMES+=(tests/load.mjs)
        log "tests/load.mjs: $p passed, $f failed"
        stop_sproutd "after the load"
        check_no_leftovers
fi
report
cleanup
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]

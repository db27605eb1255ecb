#!/usr/bin/env bash
# make bench: starts sproutd on a private data dir (kept in $SPROUT_CACHE so
# the default snapshot is made only once), measures the raw QEMU restore
# baseline with build/sprout-bench-raw (one at a time and 4 in parallel, in
# temporary directories on the data directory's file system), then the same
# work through the HTTP API with bench/bench.mjs. Prints JSON lines, ratios
# included. Every VM made is deleted; QEMU processes left behind by an
# aborted run are killed.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${SPROUT_CACHE:-$HOME/.cache/sprout}
DATA=$CACHE/bench-data
IMAGE=$CACHE/images/current
MEM_MB=1024
VCPUS=1
KEY=bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOG=$(mktemp /tmp/sprout-bench.XXXXXX.log)
RAWTMP=$CACHE/bench-raw-tmp
URL=http://127.0.0.1:$PORT

# Kills the QEMU processes whose command line names a path under $1.
kill_qemus_under() {
        local p
        for p in /proc/[0-9]*; do
                { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$1/" &&
                        grep -q qemu "$p/comm" 2>/dev/null && kill -KILL "${p#/proc/}" 2>/dev/null
        done
        return 0
}
# Waits until the sproutd (PID, on PORT, logging to LOG) answers /healthz,
# saying so every 15 s; exits with its log's tail if it dies first.
wait_healthy() { # PORT PID LOG
        local i
        for i in $(seq 1 900); do
                curl -fs "http://127.0.0.1:$1/healthz" >/dev/null && return 0
                kill -0 "$2" 2>/dev/null || { tail -30 "$3" >&2; exit 1; }
                [ $((i % 15)) -eq 0 ] && echo "    still preparing ($i s)" >&2
                sleep 1
        done
}

# Only the default snapshot is worth keeping between runs: the database,
# VMs and layers start fresh (a database from an older sproutd may not
# match its schema), and QEMU left over from an aborted run is ended.
mkdir -p "$DATA" "$RAWTMP"
if ! flock -n "$DATA/sproutd.lock" true; then
        echo "another sproutd is using $DATA (is a bench already running?)" >&2
        exit 1
fi
kill_qemus_under "$DATA/vms"
kill_qemus_under "$RAWTMP"
rm -rf "$DATA/sprout.db" "$DATA/sprout.db-wal" "$DATA/sprout.db-shm" "$DATA/vms" "$DATA/layers" "$RAWTMP"/*
PPORT=$((PORT + 1))
SPROUT_BOOTSTRAP_KEY=$KEY build/sproutd --listen 127.0.0.1:$PORT --data-dir "$DATA" --image "$IMAGE" \
        --mem-mb $MEM_MB --vcpus $VCPUS --proxy-listen 127.0.0.1:$PPORT >"$LOG" 2>&1 &
PID=$!
cleanup() {
        # VMs a failed run left behind, through the API while it is up.
        if kill -0 $PID 2>/dev/null; then
                curl -fs -H "authorization: Bearer $KEY" "$URL/v1/vms" 2>/dev/null |
                        python3 -c 'import json,sys; [print(v["id"]) for v in json.load(sys.stdin)["vms"]]' 2>/dev/null |
                        while read -r id; do
                                echo "==> deleting leftover VM $id" >&2
                                curl -fs -X DELETE -H "authorization: Bearer $KEY" "$URL/v1/vms/$id" >/dev/null || true
                        done
        fi
        kill -TERM $PID 2>/dev/null || true
        wait $PID 2>/dev/null || true
        kill_qemus_under "$DATA/vms"
        kill_qemus_under "$RAWTMP"
        rm -rf "$RAWTMP"
}
trap cleanup EXIT

echo "==> waiting for sproutd (the first run cold-boots the guest to make the snapshot)" >&2
wait_healthy $PORT $PID "$LOG"
SNAP=$(ls -td "$DATA"/snapshots/base-* | head -1)

echo "==> load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs (timings assume an otherwise idle machine)" >&2
echo "==> raw QEMU restore baseline" >&2
RAW=$(TMPDIR=$RAWTMP build/sprout-bench-raw "$SNAP" "$IMAGE" 5 $MEM_MB $VCPUS 3)
echo "$RAW"
echo "==> through the HTTP API" >&2
SPROUT_URL=$URL SPROUT_PROXY_URL=http://127.0.0.1:$PPORT SPROUT_API_KEY=$KEY SPROUT_DATA=$DATA RAW="$RAW" SPROUT_RAW_BIN=build/sprout-bench-raw \
        SPROUT_IMAGE=$IMAGE SPROUT_MEM_MB=$MEM_MB SPROUT_VCPUS=$VCPUS SPROUT_RAW_TMP=$RAWTMP node bench/bench.mjs
echo "==> cost at scale: creates on an empty host and with 24 VMs running, idle CPU per VM" >&2
SPROUT_URL=$URL SPROUT_API_KEY=$KEY SPROUT_DATA=$DATA node bench/scale.mjs
echo "==> the web console's page load (Chromium, headless)" >&2
[ -d tests/browser/node_modules/puppeteer-core ] || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
SPROUT_URL=$URL node bench/console.mjs || echo '{"bench":"console_page_load","error":"no Chromium or puppeteer-core (make test installs them)"}'
echo "==> with the warm pool: create, fork into 4, create from a cached template" >&2
SPROUT_URL=$URL SPROUT_API_KEY=$KEY POOL=on node bench/pool_compare.mjs


# The same create and exec on an unconfined sproutd (its own data dir and
# default snapshot: user-mode networking saves other device state), to
# price confinement in this run.
UDATA=$CACHE/bench-data-unconfined
UPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ULOG=$(mktemp /tmp/sprout-bench-unconfined.XXXXXX.log)
mkdir -p "$UDATA"
kill_qemus_under "$UDATA/vms"
rm -rf "$UDATA/sprout.db" "$UDATA/sprout.db-wal" "$UDATA/sprout.db-shm" "$UDATA/vms" "$UDATA/layers"
SPROUT_BOOTSTRAP_KEY=$KEY build/sproutd --listen 127.0.0.1:$UPORT --data-dir "$UDATA" --image "$IMAGE" \
        --mem-mb $MEM_MB --vcpus $VCPUS --unconfined >"$ULOG" 2>&1 &
UPID=$!
echo "==> waiting for an unconfined sproutd (its first run cold-boots its own snapshot)" >&2
wait_healthy $UPORT $UPID "$ULOG"
echo "==> confined against unconfined" >&2
SPROUT_URL=$URL UNCONFINED_URL=http://127.0.0.1:$UPORT SPROUT_API_KEY=$KEY SPROUT_LOG=$LOG node bench/confinement.mjs || true
kill -TERM $UPID 2>/dev/null || true
wait $UPID 2>/dev/null || true
kill_qemus_under "$UDATA/vms"

# Last, the same without any pool: this sproutd again, with --warm-pool 0
# and --warm-pool-memory-mb 0 (no pools for snapshots either).
kill -TERM $PID 2>/dev/null || true
wait $PID 2>/dev/null || true
SPROUT_BOOTSTRAP_KEY=$KEY build/sproutd --listen 127.0.0.1:$PORT --data-dir "$DATA" --image "$IMAGE" \
        --mem-mb $MEM_MB --vcpus $VCPUS --warm-pool 0 --warm-pool-memory-mb 0 >>"$LOG" 2>&1 &
PID=$!
wait_healthy $PORT $PID "$LOG"
echo "==> without pools (--warm-pool 0 --warm-pool-memory-mb 0): the same" >&2
SPROUT_URL=$URL SPROUT_API_KEY=$KEY POOL=off node bench/pool_compare.mjs

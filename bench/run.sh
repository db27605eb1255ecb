#!/usr/bin/env bash
# make bench: starts sproutd on a private data dir (kept in $SPROUT_CACHE so
# the default snapshot is made only once), measures the raw QEMU restore
# baseline with build/sprout-bench-raw, then the same work through the HTTP
# API with bench/bench.mjs. Prints JSON lines, ratios included.
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

mkdir -p "$DATA"
SPROUT_BOOTSTRAP_KEY=$KEY build/sproutd --listen 127.0.0.1:$PORT --data-dir "$DATA" --image "$IMAGE" \
        --mem-mb $MEM_MB --vcpus $VCPUS >"$LOG" 2>&1 &
PID=$!
cleanup() { kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; }
trap cleanup EXIT

echo "==> waiting for sproutd (the first run cold-boots the guest to make the snapshot)" >&2
for i in $(seq 1 900); do
        curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break
        kill -0 $PID 2>/dev/null || { tail -30 "$LOG" >&2; exit 1; }
        [ $((i % 15)) -eq 0 ] && echo "    still preparing ($i s)" >&2
        sleep 1
done
SNAP=$(ls -d "$DATA"/snapshots/base-* | head -1)

echo "==> raw QEMU restore baseline" >&2
RAW=$(build/sprout-bench-raw "$SNAP" "$IMAGE" 5 $MEM_MB $VCPUS)
echo "$RAW"
echo "==> through the HTTP API" >&2
SPROUT_URL=http://127.0.0.1:$PORT SPROUT_API_KEY=$KEY RAW="$RAW" node bench/bench.mjs

#!/usr/bin/env bash
# Runs sproutd in the foreground for `make run`.
#
# Usage: scripts/run.sh PORT DATA_DIR
#
# The admin API key is generated once and kept in DATA_DIR/admin-key (mode
# 0600), so it stays the same across runs; sproutd receives it through
# SPROUT_BOOTSTRAP_KEY. Ctrl-C (SIGINT) or SIGTERM stops the daemon.
set -euo pipefail

if [ $# -ne 2 ]; then
        echo "usage: $0 PORT DATA_DIR" >&2
        exit 2
fi
PORT=$1
DATA_DIR=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SPROUTD=$ROOT/build/sproutd

case $PORT in
'' | *[!0-9]*)
        echo "$0: PORT must be a number, not '$PORT'" >&2
        exit 2
        ;;
esac
if [ ! -x "$SPROUTD" ]; then
        echo "$0: $SPROUTD is missing; run make first" >&2
        exit 1
fi

mkdir -p "$DATA_DIR"
chmod 0700 "$DATA_DIR"
KEY_FILE=$DATA_DIR/admin-key
if [ ! -s "$KEY_FILE" ]; then
        # Written next to its final name and renamed into place, never half-written.
        (
                umask 077
                tmp=$(mktemp "$DATA_DIR/.admin-key.XXXXXX")
                printf 'sk-admin-%s\n' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$tmp"
                mv "$tmp" "$KEY_FILE"
        )
fi
chmod 0600 "$KEY_FILE"
KEY=$(head -n 1 "$KEY_FILE")
URL=http://127.0.0.1:$PORT
PROXY_PORT=${SPROUT_PROXY_PORT:-8081}

cat <<EOF
Sprout API:  $URL
Web console: $URL/  (sign in with the key below, or any API key)
Admin key:   $KEY  (kept in $KEY_FILE)
VMs' ports:  http://<vmId>.vm.localhost:$PROXY_PORT/  (port 443 of a VM; 8081: http://8081-<vmId>.vm.localhost:$PROXY_PORT/)

Use it from the SDK or the CLI:
  export FREESTYLE_API_URL=$URL FREESTYLE_API_KEY=$KEY
  build/sprout vm create

The first start on a new data dir boots the guest once and saves a snapshot;
$URL/healthz answers 200 once VMs can be created.

EOF

export SPROUT_BOOTSTRAP_KEY=$KEY
exec "$SPROUTD" --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" --proxy-listen "127.0.0.1:$PROXY_PORT"

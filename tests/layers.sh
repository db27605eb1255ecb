#!/usr/bin/env bash
# Checks the daemon's layering from its #include lines (README, "How it is
# built"): a file in src/DIR/ includes headers of its own directory or of
# a lower layer only, never a peer's or one above it; only the agent client
# speaks the wire protocol (proto.h); only the store sees SQLite, only the
# HTTP glue libmicrohttpd, and the VM manager no JSON. Prints each breach
# and exits non-zero if there is one.
#
#   6  main.c daemon.h     sproutd itself
#   5  api/                HTTP handlers
#   4  build/              templates and specs into snapshots
#   3  guest/ ingress/     create-time setup, services, stats in a VM; the ingress proxy
#   2  vmm/                the VM manager
#   1  hv/ agentc/ store/ http/   hypervisor driver, agent client, store, HTTP glue
#   0  lib/                helpers
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

rank() { # DIR
        case $1 in
        lib) echo 0 ;; hv | agentc | store | http) echo 1 ;; vmm) echo 2 ;; guest | ingress) echo 3 ;; build) echo 4 ;;
        api) echo 5 ;; .) echo 6 ;; *) echo -1 ;;
        esac
}

bad=0
files=0
breach() { echo "layers: $1"; bad=$((bad + 1)); }

for f in src/*.c src/*.h src/*/*.c src/*/*.h; do
        [ -e "$f" ] || continue
        files=$((files + 1))
        d=$(dirname "${f#src/}")
        r=$(rank "$d")
        [ "$r" -ge 0 ] || breach "$f: src/$d/ is no known layer; add it to tests/layers.sh and the README"
        while IFS= read -r inc; do
                case $inc in
                '"proto.h"') [ "$d" = agentc ] || breach "$f includes proto.h: only the agent client speaks the protocol" ;;
                '<sqlite3.h>') [ "$d" = store ] || breach "$f includes sqlite3.h: only the store sees the database" ;;
                '<microhttpd.h>') [ "$d" = http ] || breach "$f includes microhttpd.h: only src/http/ does" ;;
                '<jansson.h>') [ "$d" = vmm ] && breach "$f includes jansson.h: the VM manager speaks no JSON" ;;
                '"'*/*'"')
                        h=${inc//\"/}
                        hd=${h%%/*}
                        hr=$(rank "$hd")
                        if [ "$hd" != "$d" ] && { [ "$hr" -lt 0 ] || [ "$hr" -ge "$r" ]; }; then
                                breach "$f includes $h: src/$hd/ is not below src/$d/"
                        fi
                        ;;
                '"'*'"')
                        [ "$d" = . ] && [ "$inc" = '"daemon.h"' ] && continue
                        breach "$f includes $inc: name headers by their directory (\"dir/name.h\")"
                        ;;
                esac
        done < <(sed -n 's/^#[[:space:]]*include[[:space:]]*\([<"][^>"]*[>"]\).*/\1/p' "$f")
done
if [ "$bad" -gt 0 ]; then
        echo "layers: $bad breaches in $files files"
        exit 1
fi
echo "layers: $files files, no breach"

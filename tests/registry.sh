#!/usr/bin/env bash
# A container registry on loopback for the base image tests, seeded with
# images this script makes itself (no registry on the internet is asked).
#
#   tests/registry.sh start DIR PORT   start Debian's docker-registry, write
#                                      DIR/registries.conf (the registry is
#                                      plain HTTP) and DIR/registry.pid
#   tests/registry.sh seed DIR PORT    push the test images (cached in DIR)
#   tests/registry.sh stop DIR
#
# Images pushed, as 127.0.0.1:PORT/sprout-test/NAME:1:
#   minbase   Debian bookworm minbase (apt, no systemd), two layers: the
#             second deletes /etc/motd with a whiteout and adds
#             /etc/sprout-layer2
#   nosystemd one file, no shell, no apt: what cannot become a VM
set -euo pipefail
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "registry.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: $0 start|seed|stop DIR [PORT]"
cmd=$1 DIR=$2 PORT=${3:-5055}
mkdir -p "$DIR"

start() {
        command -v docker-registry >/dev/null || die "docker-registry is not installed (scripts/deps.sh)"
        mkdir -p "$DIR/data"
        cat > "$DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
EOF
        cat > "$DIR/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "127.0.0.1:$PORT"
insecure = true
EOF
        docker-registry serve "$DIR/config.yml" > "$DIR/registry.log" 2>&1 &
        echo $! > "$DIR/registry.pid"
        for _ in $(seq 100); do
                curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && return 0
                sleep 0.1
        done
        die "the registry did not answer on 127.0.0.1:$PORT (log: $DIR/registry.log)"
}

# blob FILE: stores it under DIR/oci/blobs/sha256 and prints its digest hex.
blob() {
        local h
        h=$(sha256sum < "$1" | cut -c1-64)
        cp "$1" "$DIR/oci/blobs/sha256/$h"
        echo "$h"
}

# push NAME CONFIG_DIFF_IDS LAYER_JSON...: an OCI image from the layers
# already in blobs, pushed to the registry.
push() {
        local name=$1 diff_ids=$2 layers=$3 cfg man
        printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
                "$diff_ids" > "$DIR/cfg.json"
        cfg=$(blob "$DIR/cfg.json")
        printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[%s]}' \
                "$cfg" "$(stat -c %s "$DIR/cfg.json")" "$layers" > "$DIR/man.json"
        man=$(blob "$DIR/man.json")
        printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
                "$man" "$(stat -c %s "$DIR/man.json")" "$name" > "$DIR/oci/index.json"
        skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$DIR/oci:$name" \
                "docker://127.0.0.1:$PORT/sprout-test/$name:1"
}

# layer TAR MEDIATYPE: the manifest's entry for it, its blob stored.
layer_json() {
        local h
        h=$(blob "$1")
        printf '{"mediaType":"%s","digest":"sha256:%s","size":%d}' "$2" "$h" "$(stat -c %s "$1")"
}

seed() {
        local cache=${SPROUT_CACHE:-$HOME/.cache/sprout} mirror rfs l1 l2 d1 d2
        rm -rf "$DIR/oci" && mkdir -p "$DIR/oci/blobs/sha256"
        echo '{"imageLayoutVersion":"1.0.0"}' > "$DIR/oci/oci-layout"

        if [ ! -f "$DIR/minbase.tar.gz" ]; then
                [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
                mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' |
                        grep -v -e security -e backports | grep -m1 '^http' || true)
                mirror=${mirror:-http://deb.debian.org/debian}
                rfs=$DIR/minbase
                rm -rf "$rfs"
                mkdir -p "$cache/debootstrap-debs"
                debootstrap --variant=minbase --cache-dir="$cache/debootstrap-debs" bookworm "$rfs" "$mirror" \
                        > "$DIR/debootstrap.log" 2>&1 || { tail -20 "$DIR/debootstrap.log" >&2; die "debootstrap failed"; }
                rm -rf "$rfs/var/cache/apt/archives/"*.deb "$rfs/var/lib/apt/lists/"*_*
                tar --numeric-owner -C "$rfs" -czf "$DIR/minbase.tar.gz.new" .
                mv "$DIR/minbase.tar.gz.new" "$DIR/minbase.tar.gz"
                rm -rf "$rfs"
        fi
        l1=$DIR/minbase.tar.gz
        d1=$(gzip -dc "$l1" | sha256sum | cut -c1-64)
        # The second layer: a whiteout for /etc/motd and a file of its own.
        rm -rf "$DIR/l2" && mkdir -p "$DIR/l2/etc"
        : > "$DIR/l2/etc/.wh.motd"
        echo "second layer" > "$DIR/l2/etc/sprout-layer2"
        tar --numeric-owner --owner=0 --group=0 -C "$DIR/l2" -cf "$DIR/l2.tar" ./etc
        l2=$DIR/l2.tar
        d2=$(sha256sum < "$l2" | cut -c1-64)
        push minbase "\"sha256:$d1\",\"sha256:$d2\"" \
                "$(layer_json "$l1" application/vnd.oci.image.layer.v1.tar+gzip),$(layer_json "$l2" application/vnd.oci.image.layer.v1.tar)"

        rm -rf "$DIR/l3" && mkdir -p "$DIR/l3/srv"
        echo "nothing to boot" > "$DIR/l3/srv/readme"
        tar --numeric-owner --owner=0 --group=0 -C "$DIR/l3" -cf "$DIR/l3.tar" ./srv
        d1=$(sha256sum < "$DIR/l3.tar" | cut -c1-64)
        push nosystemd "\"sha256:$d1\"" "$(layer_json "$DIR/l3.tar" application/vnd.oci.image.layer.v1.tar)"
        rm -rf "$DIR/l2" "$DIR/l3" "$DIR/l2.tar" "$DIR/l3.tar" "$DIR/oci"
}

stop() {
        [ -f "$DIR/registry.pid" ] && kill "$(cat "$DIR/registry.pid")" 2>/dev/null || true
        rm -f "$DIR/registry.pid"
}

case $cmd in
start) start ;;
seed) seed ;;
stop) stop ;;
*) die "unknown command $cmd" ;;
esac

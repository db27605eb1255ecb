#!/usr/bin/env bash
# Installs the Debian packages Sprout needs to build, run and test, if any is
# missing. Runs apt-get only when something is absent, so it is cheap to call
# before every build.
set -euo pipefail

# skopeo fetches a Dockerfile's FROM image (zstd packs a debootstrapped
# one); docker-registry is the tests' local registry.
# clang builds the fuzz harnesses (make fuzz); on bookworm its libFuzzer
# runtime is in libclang-rt-14-dev, which clang only recommends.
PKGS=(build-essential pkg-config musl-tools clang libclang-rt-14-dev
      libmicrohttpd-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev libgnutls28-dev openssl
      qemu-system-x86 qemu-utils debootstrap e2fsprogs zstd skopeo docker-registry
      curl ca-certificates git nodejs npm nftables iproute2 sqlite3 chromium)

missing=()
for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# A machine may have node from elsewhere; only ask apt for it when absent.
if command -v node >/dev/null && command -v npm >/dev/null; then
        filtered=()
        for p in "${missing[@]}"; do
                [[ $p == nodejs || $p == npm ]] || filtered+=("$p")
        done
        missing=("${filtered[@]}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "==> installing Debian packages: ${missing[*]}"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

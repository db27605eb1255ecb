#!/usr/bin/env bash
# Builds the Sprout guest image (Debian bookworm, systemd, the guest agent).
#
#   scripts/build-image.sh AGENT_BINARY
#
# Output: $SPROUT_CACHE/images/<hash>/ (SPROUT_CACHE defaults to ~/.cache/sprout)
#   rootfs.img   raw ext4 filesystem, sparse, 4 GiB apparent size (root=/dev/vda)
#   vmlinuz      the Debian cloud kernel from the rootfs /boot
#   initrd.img   its initrd (virtio modules included)
#   cmdline      the kernel command-line fragment the image needs
#   .complete    marker, written last
# and $SPROUT_CACHE/images/current -> <hash>, switched atomically.
# <hash> covers image/*, this script and the agent binary; when that image
# is already complete, only `current` is updated.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

die() { echo "build-image: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 AGENT_BINARY"
AGENT=$1
[ -f "$AGENT" ] || die "agent binary not found: $AGENT"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RECIPE=$ROOT/image
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
[ -d "$RECIPE" ] || die "recipe directory not found: $RECIPE"

SUITE=bookworm
IMG_SIZE=4G
CMDLINE="root=/dev/vda rootfstype=ext4 rw console=ttyS0 panic=-1 net.ifnames=0 random.trust_cpu=on mitigations=off tsc=reliable nowatchdog"

SPROUT_CACHE=${SPROUT_CACHE:-$HOME/.cache/sprout}
IMAGES=$SPROUT_CACHE/images
mkdir -p "$IMAGES"

# --- content hash --------------------------------------------------------
hash=$(
        {
                (cd "$RECIPE" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
                echo "script $(sha256sum < "$SELF")"
                echo "agent $(sha256sum < "$AGENT")"
        } | sha256sum | cut -c1-16
)
FINAL=$IMAGES/$hash

point_current() {
        ln -sfn "$hash" "$IMAGES/.current.$$"
        mv -T "$IMAGES/.current.$$" "$IMAGES/current"
}

# One build at a time per cache (a second caller waits, then finds it done).
exec 9>"$IMAGES/.lock"
flock 9

if [ -f "$FINAL/.complete" ]; then
        point_current
        echo "image up to date: $FINAL"
        exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the image needs root (debootstrap, chroot)"
for t in debootstrap mkfs.ext4 chroot flock; do
        command -v "$t" >/dev/null || die "missing $t (run scripts/deps.sh)"
done

# --- mirror: the host's own Debian mirror --------------------------------
find_mirror() {
        local f u
        for f in /etc/apt/sources.list.d/*.sources; do
                [ -f "$f" ] || continue
                # URIs: lines; skip security/backports style repositories.
                # shellcheck disable=SC2013  # a URIs: line may list several
                for u in $(sed -n 's/^[[:space:]]*URIs:[[:space:]]*//p' "$f"); do
                        case $u in *security*|*backports*|*/ports*) continue ;; esac
                        case $u in http://*|https://*) echo "${u%/}"; return ;; esac
                done
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
                [ -f "$f" ] || continue
                # deb [options] URI suite components
                u=$(awk '$1=="deb" { i=2; if ($2 ~ /^\[/) { while (i<=NF && $i !~ /\]$/) i++; i++ }
                                     if ($i ~ /^https?:\/\// && $i !~ /security|backports/) { print $i; exit } }' "$f")
                [ -n "$u" ] && { echo "${u%/}"; return; }
        done
        echo http://deb.debian.org/debian
}
MIRROR=$(find_mirror)

# --- build in a temp dir next to the final one ----------------------------
TMP=$(mktemp -d "$IMAGES/.build-$hash.XXXXXX")
RFS=$TMP/rootfs
LOG=$IMAGES/build-$hash.log
: > "$LOG"
MOUNTS=()

cleanup() {
        local rc=$? m i
        trap - EXIT INT TERM HUP
        for ((i=${#MOUNTS[@]}-1; i>=0; i--)); do
                m=${MOUNTS[i]}
                mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m" || true; }
        done
        if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
                # Never rm -rf through a mount that failed to come off.
                if grep -q " $TMP/" /proc/mounts; then
                        echo "build-image: mounts still under $TMP; not removing it" >&2
                else
                        rm -rf "$TMP"
                fi
        fi
        if [ $rc -ne 0 ]; then
                echo "build-image: FAILED (log: $LOG); last lines:" >&2
                tail -n 30 "$LOG" >&2 || true
        fi
        exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

step() { echo "==> $*"; echo "==> $*" >> "$LOG"; }
t0=$(date +%s)

pkgs=$(grep -v '^[[:space:]]*#' "$RECIPE/packages" | xargs | tr ' ' ',')
DEBS=$SPROUT_CACHE/debootstrap-debs
mkdir -p "$DEBS"

step "debootstrap $SUITE from $MIRROR (about 1-2 min, log: $LOG)..."
debootstrap --variant=minbase --include="$pkgs" --cache-dir="$DEBS" \
        "$SUITE" "$RFS" "$MIRROR" >> "$LOG" 2>&1 || die "debootstrap failed"

step "configuring the guest..."
install -m 0755 "$AGENT" "$RFS/usr/local/bin/sprout-agent"
install -m 0644 "$RECIPE/sprout-agent.service" "$RFS/etc/systemd/system/sprout-agent.service"
mkdir -p "$RFS/etc/systemd/system/sysinit.target.wants"
ln -sfn ../sprout-agent.service "$RFS/etc/systemd/system/sysinit.target.wants/sprout-agent.service"

echo sprout > "$RFS/etc/hostname"
cat > "$RFS/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	sprout
::1		localhost ip6-localhost ip6-loopback
EOF
cat > "$RFS/etc/fstab" <<'EOF'
# <device>	<mount point>	<type>	<options>		<dump>	<pass>
/dev/vda	/		ext4	rw,noatime,errors=remount-ro	0	0
EOF
rm -f "$RFS/etc/resolv.conf"
echo "nameserver 10.0.2.3" > "$RFS/etc/resolv.conf"
cat > "$RFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
EOF
# No recommends/suggests for what agents install later; keep it lean.
cat > "$RFS/etc/apt/apt.conf.d/90sprout" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
ln -sfn /usr/share/zoneinfo/Etc/UTC "$RFS/etc/localtime"
echo Etc/UTC > "$RFS/etc/timezone"

# Networking: systemd-networkd, the static address every VM has.
install -m 0644 "$RECIPE/20-wired.network" "$RFS/etc/systemd/network/20-wired.network"
mkdir -p "$RFS/etc/systemd/system/multi-user.target.wants" "$RFS/etc/systemd/system/sockets.target.wants"
ln -sfn /lib/systemd/system/systemd-networkd.service \
        "$RFS/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
ln -sfn /lib/systemd/system/systemd-networkd.socket \
        "$RFS/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"

mkdir -p "$RFS/etc/systemd/journald.conf.d"
install -m 0644 "$RECIPE/journald.conf" "$RFS/etc/systemd/journald.conf.d/sprout.conf"
install -m 0644 "$RECIPE/modprobe-blacklist.conf" "$RFS/etc/modprobe.d/sprout-blacklist.conf"
install -m 0644 "$RECIPE/sysctl.conf" "$RFS/etc/sysctl.d/90-sprout.conf"

# Mask what a microVM does not need.
while read -r u; do
        case $u in ''|'#'*) continue ;; esac
        rm -f "$RFS/etc/systemd/system/"*.wants/"$u"
        ln -sfn /dev/null "$RFS/etc/systemd/system/$u"
done < "$RECIPE/masked-units"

# Root password locked; machine-id empty so systemd makes one at boot.
chroot "$RFS" passwd -l root >> "$LOG" 2>&1
: > "$RFS/etc/machine-id"
rm -f "$RFS/var/lib/dbus/machine-id"

step "regenerating the initrd with the virtio modules..."
{
        grep -v '^[[:space:]]*#' "$RECIPE/initramfs-modules"
} >> "$RFS/etc/initramfs-tools/modules"
# Only the listed modules (and their dependencies): small initrd, fast boot.
sed -i 's/^MODULES=.*/MODULES=list/' "$RFS/etc/initramfs-tools/initramfs.conf"
mkdir -p "$RFS/proc" "$RFS/sys" "$RFS/dev"
mount -t proc proc "$RFS/proc"; MOUNTS+=("$RFS/proc")
mount -t sysfs sysfs "$RFS/sys"; MOUNTS+=("$RFS/sys")
mount --bind /dev "$RFS/dev"; MOUNTS+=("$RFS/dev")
chroot "$RFS" update-initramfs -u -k all >> "$LOG" 2>&1 || die "update-initramfs failed"

step "cleaning up apt caches..."
chroot "$RFS" apt-get clean >> "$LOG" 2>&1
for ((i=${#MOUNTS[@]}-1; i>=0; i--)); do umount "${MOUNTS[i]}"; done
MOUNTS=()
rm -rf "$RFS"/var/lib/apt/lists/* "$RFS"/var/cache/apt/*.bin "$RFS"/var/cache/debconf/*-old \
       "$RFS"/var/log/*.log "$RFS"/var/log/apt/* "$RFS"/tmp/* "$RFS"/var/tmp/* "$RFS"/root/.bash_history
mkdir -p "$RFS/var/lib/apt/lists/partial"

vmlinuz=$(find "$RFS/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
initrd=$(find "$RFS/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
if [ ! -f "$vmlinuz" ] || [ ! -f "$initrd" ]; then die "no kernel/initrd in the rootfs /boot"; fi
cp "$vmlinuz" "$TMP/vmlinuz"
cp "$initrd" "$TMP/initrd.img"
echo "$CMDLINE" > "$TMP/cmdline"

step "making the ext4 image ($IMG_SIZE, sparse)..."
truncate -s "$IMG_SIZE" "$TMP/rootfs.img"
# Inode tables and journal are initialised now, so the guest's first mount
# does not start zeroing them in the background (slow under TCG).
mkfs.ext4 -q -F -L sprout-root -m 1 -E lazy_itable_init=0,lazy_journal_init=0,nodiscard \
        -d "$RFS" "$TMP/rootfs.img" >> "$LOG" 2>&1 || die "mkfs.ext4 failed"
rm -rf "$RFS"

chmod 0755 "$TMP"
date -u +%FT%TZ > "$TMP/.complete"
rm -rf "$FINAL"                                 # an incomplete leftover
mv -T "$TMP" "$FINAL"
TMP=
mv "$LOG" "$FINAL/build.log" && LOG=$FINAL/build.log
point_current
used=$(du -sh "$FINAL/rootfs.img" | cut -f1)
echo "==> image built in $(( $(date +%s) - t0 ))s: $FINAL (rootfs.img $used used of $IMG_SIZE)"

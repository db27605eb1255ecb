#!/usr/bin/env bash
# Disk-full test: sproutd with its data dir on a small file system (a 4 GiB
# sparse file, ext4, loop-mounted) that the host fills in steps while VMs
# run, are forked and snapshotted. Checks that:
#   - creates, forks and snapshots are refused cleanly as space runs out (a
#     JSON error, 507 INSUFFICIENT_STORAGE; never a dropped connection or a
#     crash), both below --disk-reserve-bytes and above it, where the
#     operation itself runs out of space half way;
#   - VMs already running keep running (exec answers, files intact), sproutd
#     stays up and /healthz answers; with no space at all, a file PUT, a
#     suspend (refused with 507) and a delete answer cleanly;
#   - a VM whose guest wrote while the host was full writes again once
#     space is freed;
#   - the store stays consistent: GET /v1/vms lists exactly the VMs answered
#     as created (and deleted), also after a restart over the same data dir,
#     every listed snapshot restores once space is freed, and a refused
#     operation leaves no files behind;
#   - once the filler is deleted, creates, forks and snapshots work again and
#     the earlier VMs still exec with their files;
#   - a guest that fills its own disk (fallocate, then dd until ENOSPC) gets
#     ENOSPC, its files API answers 507, and the daemon and other VMs go on.
# Ends with "N passed, N failed"; exits non-zero when anything failed.
# Needs root (mkfs, mount) and must not run beside another sproutd on this
# host: run it as `flock /tmp/sprout-vm.lock tests/diskfull.sh`.
#
# Env:   SPROUTD=PATH          daemon to test (default build/sproutd)
#        SPROUT_IMAGE=DIR      guest image (default: sproutd's own)
#        DISKFULL_FS_MIB=N     size of the file system (default 4096)
#        DISKFULL_MEM_MB=N     guest RAM (default 256)
#        DISKFULL_RESERVE_MIB=N  sproutd's --disk-reserve-bytes, in MiB (default 96)
#        SPROUT_TEST_KEEP=1    keep the work dir (unmounted) for inspection
cd "$(dirname "$0")/.." || exit 1
# log, check, launch_sproutd, stop_sproutd, kill_sproutd, check_no_leftovers,
# report, healthy, alive, free_port (it sets -uo pipefail).
. tests/load.sh

SPROUTD=${SPROUTD:-build/sproutd}
HEALTH_TIMEOUT=600
FS_MIB=${DISKFULL_FS_MIB:-4096}
MEM_MB=${DISKFULL_MEM_MB:-256}
RESERVE=$((${DISKFULL_RESERVE_MIB:-96} << 20))
MiB=$((1 << 20))
LOG=$PWD/build/test-logs/diskfull-sproutd.log
WORK=
MNT=
DATA=
URL=
KEY=

ok_if() { "$@" && echo 0 || echo 1; } # the exit status of a test as 0/1

cleanup() {
        kill_sproutd
        if [ -n "$MNT" ] && mountpoint -q "$MNT"; then
                umount "$MNT" 2>/dev/null || { sleep 2; umount "$MNT" 2>/dev/null; } || umount -l "$MNT"
        fi
        if [ -n "$WORK" ]; then
                if [ -z "${SPROUT_TEST_KEEP:-}" ]; then rm -rf "$WORK"; else log "kept $WORK (image $WORK/fs.img)"; fi
        fi
        WORK="" MNT="" SCOPE=""
}
trap cleanup EXIT
trap 'log interrupted; cleanup; echo "$PASSED passed, $((FAILED + 1)) failed"; exit 130' INT TERM

# ---- HTTP and JSON ----

# call METHOD PATH [JSON] [TIMEOUT_S]: sets CODE (000: no answer) and BODY.
call() {
        local out data=()
        [ $# -ge 3 ] && [ -n "$3" ] && data=(-H 'content-type: application/json' -d "$3")
        out=$(curl -s -m "${4:-180}" -X "$1" -H "Authorization: Bearer $KEY" "${data[@]}" -w '\n%{http_code}' "$URL$2")
        CODE=${out##*$'\n'}
        BODY=${out%$'\n'*}
        [ "$CODE" != "$out" ] || BODY=
}

# jf EXPR: evaluates a JS expression over j (the JSON on stdin, undefined if
# it is not JSON); prints it (objects as JSON), nothing for null/undefined.
jf() {
        node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
                let j; try { j = JSON.parse(s); } catch {}
                let v; try { v = new Function("j", "return (" + process.argv[1] + ")")(j); } catch {}
                if (v !== undefined && v !== null) console.log(typeof v === "object" ? JSON.stringify(v) : String(v));
        });' "$1"
}
short() { printf '%s' "$1" | tr '\n' ' ' | cut -c1-220; }

# exec_out ID COMMAND: runs exec-await; sets CODE, BODY, OUT (stdout), RC (statusCode).
exec_out() {
        call POST "/v1/vms/$1/exec-await" "$(node -e 'console.log(JSON.stringify({command: process.argv[1]}))' "$2")" "${3:-120}"
        OUT=$(printf '%s' "$BODY" | jf 'j.stdout')
        RC=$(printf '%s' "$BODY" | jf 'j.statusCode')
}

free_bytes() { df -B1 --output=avail "$MNT" | tail -n 1 | tr -d ' '; }

# ---- bookkeeping: the VMs and snapshots answered as created ----

declare -A VMS=()   # id -> what it is
declare -A SNAPS=() # id -> source
declare -A SHA=()   # id -> sha256 of /root/data.bin in it
KEPT_STOPPED=        # a VM whose delete was refused for want of space
declare -A NOTE=()  # id -> content of /root/note.txt in it

# Refusals seen: "op status code" -> count.
declare -A REFUSALS=()

# An operation answered while space runs short: either done (the new id is
# tracked), or a clean refusal. Sets NEW to the new id or "".
# judge OP LEVEL (after call)
judge() {
        local op=$1 level=$2 code msg
        NEW=
        if [ "$CODE" = 200 ]; then
                case $op in
                create) NEW=$(printf '%s' "$BODY" | jf 'j.id') ;;
                fork) NEW=$(printf '%s' "$BODY" | jf 'j.forks && j.forks[0] && j.forks[0].id') ;;
                snapshot) NEW=$(printf '%s' "$BODY" | jf 'j.snapshotId') ;;
                esac
                log "  $op at $level: done ($NEW)"
                check "$level: a $op that is answered 200 names what it made" "$([ -n "$NEW" ] && echo 0 || echo 1)"
                REFUSALS["$op 200 done"]=$((${REFUSALS["$op 200 done"]:-0} + 1))
                return
        fi
        code=$(printf '%s' "$BODY" | jf 'typeof j.code === "string" && typeof j.message === "string" ? j.code : null')
        msg=$(printf '%s' "$BODY" | jf 'j.message')
        log "  $op at $level: $CODE ${code:-<no JSON error>} $(short "$msg")"
        REFUSALS["$op $CODE ${code:-none}"]=$((${REFUSALS["$op $CODE ${code:-none}"]:-0} + 1))
        check "$level: a refused $op answers a JSON error, not a dropped connection ($CODE ${code:-$(short "$BODY")})" \
                "$([ "$CODE" != 000 ] && [ "$CODE" -ge 400 ] && [ -n "$code" ] && echo 0 || echo 1)"
        check "$level: the refused $op says 507 INSUFFICIENT_STORAGE ($CODE ${code:-none})" \
                "$([ "$CODE" = 507 ] && [ "$code" = INSUFFICIENT_STORAGE ] && echo 0 || echo 1)"
}

# One attempt each of create, fork of A and snapshot of A.
try_ops() { # LEVEL
        local lvl=$1
        call POST /v1/vms '{"idleTimeoutSeconds":0}' 300
        judge create "$lvl"
        [ -z "$NEW" ] || VMS[$NEW]="create at $lvl"
        call POST "/v1/vms/$A/fork" '{"count":1}' 300
        judge fork "$lvl"
        [ -z "$NEW" ] || VMS[$NEW]="fork of A at $lvl"
        call POST "/v1/vms/$A/snapshot" '{}' 300
        judge snapshot "$lvl"
        [ -z "$NEW" ] || SNAPS[$NEW]=$A
}

# The VMs A and B still run and hold their files; sproutd answers /healthz.
# With paused-ok (no byte free at all, and the reserve spent by the running
# VMs' own writes), a VM QEMU paused on its write may answer 507
# INSUFFICIENT_STORAGE instead; it must run again once space is freed.
vms_intact() { # LEVEL [paused-ok]
        local lvl=$1 paused_ok=${2:-} id ok
        for id in "$A" "$B"; do
                exec_out "$id" 'sha256sum /root/data.bin | cut -d" " -f1; cat /root/note.txt'
                ok=1
                [ "$CODE" = 200 ] && [ "$OUT" = "${SHA[$id]}"$'\n'"${NOTE[$id]}" ] && ok=0
                [ "$ok" -eq 0 ] || log "  exec in ${VMS[$id]}: $CODE $(short "$BODY")"
                [ -n "$paused_ok" ] && [ "$CODE" = 507 ] && [ "$(printf '%s' "$BODY" | jf 'j.code')" = INSUFFICIENT_STORAGE ] && ok=0
                check "$lvl: ${VMS[$id]} still execs and its files are intact${paused_ok:+ (or 507 while paused)}" "$ok"
        done
        call GET "/v1/vms/$A/files/%2Froot%2Fnote.txt"
        check "$lvl: the files API still reads A's file${paused_ok:+ (or 507 while paused)}" \
                "$({ [ "$CODE" = 200 ] && [ "$(printf '%s' "$BODY" | jf 'j.content')" = "${NOTE[$A]}" ]; } ||
                        { [ -n "$paused_ok" ] && [ "$CODE" = 507 ]; } && echo 0 || echo 1)"
        check "$lvl: sproutd runs and /healthz answers 200" "$(alive && healthy && echo 0 || echo 1)"
}

# GET /v1/vms lists exactly the VMs answered as created and not deleted.
list_consistent() { # LEVEL
        local want got
        call GET /v1/vms
        got=$(printf '%s' "$BODY" | jf '(j.vms || []).filter((v) => v.state !== "deleted").map((v) => v.id).sort().join(" ")')
        want=$(printf '%s\n' "${!VMS[@]}" | sort | paste -sd' ')
        [ "$got" = "$want" ] || log "  listed: [$got]; answered as created: [$want]; states: $(printf '%s' "$BODY" |
                jf '(j.vms || []).map((v) => v.id + " " + v.state).join(", ")')"
        check "$1: GET /v1/vms lists exactly the VMs answered as created" "$([ "$CODE" = 200 ] && [ "$got" = "$want" ] && echo 0 || echo 1)"
}

# Grows the filler until the file system has at most TARGET bytes free.
fill_to() { # TARGET
        local target=$1 free size
        free=$(free_bytes)
        [ "$free" -gt "$target" ] || return 0
        size=$(stat -c %s "$MNT/filler" 2>/dev/null || echo 0)
        fallocate -l $((size + free - target)) "$MNT/filler" 2>/dev/null ||
                fallocate -l $((size + free - target - 4 * MiB)) "$MNT/filler" 2>/dev/null
        if [ "$target" -eq 0 ]; then
                # The last blocks, whatever fallocate left.
                dd if=/dev/zero of="$MNT/filler.tail" bs=64k status=none 2>/dev/null
                sync
        fi
}

# New VM with its files: data.bin (1 MiB written in the guest) and note.txt
# (through the files API). Sets NEW.
make_vm() { # WHAT
        local id note
        NEW=
        call POST /v1/vms '{"idleTimeoutSeconds":0}' 300
        id=$(printf '%s' "$BODY" | jf 'j.id')
        if [ "$CODE" != 200 ] || [ -z "$id" ]; then
                log "create $1: $CODE $(short "$BODY")"
                return 1
        fi
        VMS[$id]=$1
        exec_out "$id" 'head -c 1048576 /dev/urandom > /root/data.bin && sync && sha256sum /root/data.bin | cut -d" " -f1'
        [ "$CODE" = 200 ] && [ "$RC" = 0 ] || { log "write in $1: $CODE $(short "$BODY")"; return 1; }
        SHA[$id]=$OUT
        note="note of $1 $(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
        call PUT "/v1/vms/$id/files/%2Froot%2Fnote.txt" "{\"content\":\"$note\"}"
        [ "$CODE" = 200 ] || { log "put note in $1: $CODE $(short "$BODY")"; return 1; }
        NOTE[$id]=$note
        NEW=$id
}

# ------------------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || give_up "needs root (mkfs, mount)"
prepare

# A short path: sockets under the data dir must fit sun_path.
WORK=$(mktemp -d /tmp/sdf.XXXXXX) || exit 1
SCOPE=$WORK
MNT=$WORK/m
DATA=$MNT/d
mkdir -p "$MNT"
truncate -s $((FS_MIB * MiB)) "$WORK/fs.img"
mkfs.ext4 -q -F -m 0 "$WORK/fs.img" >/dev/null 2>&1 &&
        mount -o loop "$WORK/fs.img" "$MNT" && mkdir -p "$DATA"
[ $? -eq 0 ] || give_up "could not make and mount a ${FS_MIB} MiB ext4 file system"
check "a ${FS_MIB} MiB ext4 file system, loop-mounted" 0

KEY=sk-df-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
PORT=$(free_port) || exit 1
URL=http://127.0.0.1:$PORT
ARGS=(--listen "127.0.0.1:$PORT" --data-dir "$DATA" --egress deny --mem-mb "$MEM_MB" --disk-reserve-bytes "$RESERVE")
[ -n "${SPROUT_IMAGE:-}" ] && ARGS+=(--image "$SPROUT_IMAGE")
launch_sproutd
check "sproutd starts on the small file system and becomes healthy (${WAITED}s)" "$(ok_if healthy)"
healthy || { tail -n 20 "$LOG"; cleanup; echo "$PASSED passed, $FAILED failed"; exit 1; }
log "base snapshot made; $(($(free_bytes) / MiB)) MiB free of $FS_MIB"

# ---- 1. VMs with files, a fork and a snapshot while there is room ----

make_vm A
check "create A and write its files" $?
A=$NEW
make_vm B
check "create B and write its files" $?
B=$NEW
make_vm C
check "create C (the VM that writes while the disk is full)" $?
C=$NEW
if [ -z "$A" ] || [ -z "$B" ] || [ -z "$C" ]; then
        tail -n 20 "$LOG"
        cleanup
        echo "$PASSED passed, $FAILED failed"
        exit 1
fi
call POST "/v1/vms/$A/fork" '{"count":1}' 300
F1=$(printf '%s' "$BODY" | jf 'j.forks && j.forks[0] && j.forks[0].id')
check "fork A while there is room ($CODE)" "$([ "$CODE" = 200 ] && [ -n "$F1" ] && echo 0 || echo 1)"
[ -z "$F1" ] || VMS[$F1]="fork of A"
call POST "/v1/vms/$A/snapshot" '{}' 300
S1=$(printf '%s' "$BODY" | jf 'j.snapshotId')
check "snapshot A while there is room ($CODE)" "$([ "$CODE" = 200 ] && [ -n "$S1" ] && echo 0 || echo 1)"
[ -z "$S1" ] || SNAPS[$S1]=$A
log "$(($(free_bytes) / MiB)) MiB free; data dir: $(du -sm "$DATA" | cut -f1) MiB"

# ---- 2. The host fills the file system in steps ----

# Levels of free space: room for some but not all of a new VM's files;
# above the reserve but less than one memory file ($MEM_MB MiB), so an
# operation passes the reserve check and runs out half way; below the
# reserve; nothing at all.
for level in $((MEM_MB * 3 / 2 * MiB)) $((RESERVE + MEM_MB * MiB / 2)) $((RESERVE / 2)) 0; do
        fill_to "$level"
        free=$(free_bytes)
        name="$((free / MiB)) MiB free"
        log "filled to $free bytes free (target $((level / MiB)) MiB; reserve $((RESERVE / MiB)) MiB)"
        try_ops "$name"
        # C writes while space is short (16 MiB through the guest's page
        # cache, then sync): the write may fail in the guest; C must go on
        # answering.
        exec_out "$C" "head -c 16777216 /dev/urandom > /root/w-$((free / MiB)).bin"'; w=$?; sync; echo "done write=$w sync=$? io-errors=$(dmesg | grep -ci "i/o error")"' 120
        log "  a write in C: $CODE $(short "$(printf '%s' "$BODY" | jf '({statusCode: j.statusCode, stdout: j.stdout, stderr: (j.stderr || "").slice(0, 120)})')")"
        # With no room at all QEMU pauses C on the write (werror=enospc)
        # and the request ends with 507; C runs on once there is room.
        check "$name: an exec in C that writes answers (done, or 507 while the disk is full)" \
                "$({ [ "$CODE" = 200 ] && [ "${OUT%% *}" = "done" ]; } || { [ "$CODE" = 507 ] && [ "$level" -eq 0 ]; } && echo 0 || echo 1)"
        if [ "$level" -eq 0 ]; then
                # With no space at all: a file written through the API, a
                # suspend (its state file cannot be written) and the resume
                # of the next exec, and a delete (which frees space) answer
                # cleanly, and the store follows what they answered.
                call PUT "/v1/vms/$C/files/%2Froot%2Ffull.txt" '{"content":"written while full"}'
                log "  PUT a file into C: $CODE $(short "$BODY")"
                check "$name: a file PUT into C answers (200 or a JSON error) ($CODE)" \
                        "$([ "$CODE" = 200 ] || [ -n "$(printf '%s' "$BODY" | jf 'j.code')" ] && echo 0 || echo 1)"
                call POST "/v1/vms/$C/suspend" '' 120
                log "  suspend C: $CODE $(short "$BODY")"
                code=$(printf '%s' "$BODY" | jf 'j.code')
                check "$name: a suspend of C is done or refused with 507 INSUFFICIENT_STORAGE ($CODE ${code:-no JSON error})" \
                        "$([ "$CODE" = 200 ] || { [ "$CODE" = 507 ] && [ "$code" = INSUFFICIENT_STORAGE ]; } && echo 0 || echo 1)"
                exec_out "$C" 'echo c-answers' 120
                log "  exec in C after the suspend: $CODE $(short "$BODY")"
                # Paused and resumed on the full disk, its agent link is
                # made again, which may take a few seconds: 503
                # VM_AGENT_UNREACHABLE meanwhile is a clean answer too.
                code=$(printf '%s' "$BODY" | jf 'j.code')
                check "$name: C answers an exec after that suspend (or 507 while paused, 503 while its link is remade)" \
                        "$({ [ "$CODE" = 200 ] && [ "$OUT" = c-answers ]; } || [ "$CODE" = 507 ] ||
                                { [ "$CODE" = 503 ] && [ "$code" = VM_AGENT_UNREACHABLE ]; } && echo 0 || echo 1)"
                if [ -n "$F1" ]; then
                        call DELETE "/v1/vms/$F1" '' 120
                        log "  delete the fork of A: $CODE $(short "$BODY")"
                        check "$name: deleting a VM answers (200 or a JSON error) ($CODE)" \
                                "$([ "$CODE" = 200 ] || [ -n "$(printf '%s' "$BODY" | jf 'j.code')" ] && echo 0 || echo 1)"
                        # A delete refused for want of space keeps the VM,
                        # stopped (its record could not go).
                        if [ "$CODE" = 200 ]; then
                                unset "VMS[$F1]"
                        else
                                KEPT_STOPPED=$F1
                        fi
                fi
        fi
        vms_intact "$name" "$([ "$level" -eq 0 ] && echo paused-ok)"
        list_consistent "$name"
        alive || break
done

# ---- 3. Space freed ----

rm -f "$MNT/filler" "$MNT/filler.tail"
sync
log "filler deleted: $(($(free_bytes) / MiB)) MiB free"
# A C that QEMU paused on the full disk runs on within a few seconds.
for _ in $(seq 1 20); do
        exec_out "$C" 'echo c-answers'
        [ "$CODE" = 200 ] && break
        sleep 1
done
check "space freed: C still answers exec" "$([ "$CODE" = 200 ] && [ "$OUT" = c-answers ] && echo 0 || echo 1)"
exec_out "$C" 'echo again > /root/after.txt && sync && cat /root/after.txt; grep " / " /proc/mounts; echo "io-errors=$(dmesg | grep -ci "i/o error")"'
log "  C after the host disk was full: $CODE $(short "$BODY")"
check "space freed: C, which wrote while the host was full, writes again" "$([ "${OUT%%$'\n'*}" = again ] && echo 0 || echo 1)"
vms_intact "space freed"
list_consistent "space freed"

# What the store kept (not only what sproutd holds in memory): after a
# restart over the same data dir the same VMs are listed, and they run.
stop_sproutd "restart after the disk was full"
launch_sproutd
check "restart after the disk was full: sproutd becomes healthy again (${WAITED}s)" "$(ok_if healthy)"
list_consistent "after the restart"

# Every VM answered as created runs.
for id in "${!VMS[@]}"; do
        [ "$id" = "$A" ] || [ "$id" = "$B" ] || [ "$id" = "$C" ] || [ "$id" = "${KEPT_STOPPED:-}" ] || {
                exec_out "$id" 'echo alive'
                check "space freed: ${VMS[$id]} execs" "$([ "$CODE" = 200 ] && [ "$OUT" = alive ] && echo 0 || echo 1)"
        }
done
if [ -n "${KEPT_STOPPED:-}" ]; then
        call GET "/v1/vms/$KEPT_STOPPED"
        check "space freed: the VM whose delete was refused is kept, stopped" \
                "$([ "$CODE" = 200 ] && [ "$(printf '%s' "$BODY" | jf 'j.state')" = stopped ] && echo 0 || echo 1)"
fi

# Every listed snapshot restores, with A's files.
call GET /v1/vms/snapshots
listed=$(printf '%s' "$BODY" | jf '(j.snapshots || []).filter((s) => !s.deleted).map((s) => s.snapshotId).sort().join(" ")')
want=$(printf '%s\n' "${!SNAPS[@]}" | sort | paste -sd' ')
[ "$listed" = "$want" ] || log "  snapshots listed: [$listed]; answered as made: [$want]"
check "GET /v1/vms/snapshots lists exactly the snapshots answered as made" "$([ "$listed" = "$want" ] && echo 0 || echo 1)"
for sid in $listed; do
        call POST /v1/vms "{\"snapshotId\":\"$sid\",\"idleTimeoutSeconds\":0}" 300
        id=$(printf '%s' "$BODY" | jf 'j.id')
        ok=1
        if [ "$CODE" = 200 ] && [ -n "$id" ]; then
                exec_out "$id" 'sha256sum /root/data.bin | cut -d" " -f1; cat /root/note.txt'
                [ "$CODE" = 200 ] && [ "$OUT" = "${SHA[$A]}"$'\n'"${NOTE[$A]}" ] && ok=0
                call DELETE "/v1/vms/$id"
        fi
        [ "$ok" -eq 0 ] || log "  restore $sid: $CODE $(short "$BODY")"
        check "space freed: snapshot $sid restores with A's files" "$ok"
done

# Creates, forks and snapshots work again.
make_vm D
check "space freed: create D with its files" $?
D=$NEW
call POST "/v1/vms/$A/fork" '{"count":1}' 300
F2=$(printf '%s' "$BODY" | jf 'j.forks && j.forks[0] && j.forks[0].id')
check "space freed: fork A ($CODE)" "$([ "$CODE" = 200 ] && [ -n "$F2" ] && echo 0 || echo 1)"
if [ -n "$F2" ]; then
        VMS[$F2]="fork of A after freeing"
        exec_out "$F2" 'cat /root/note.txt'
        check "space freed: the fork has A's files" "$([ "$OUT" = "${NOTE[$A]}" ] && echo 0 || echo 1)"
fi
call POST "/v1/vms/$A/snapshot" '{}' 300
S2=$(printf '%s' "$BODY" | jf 'j.snapshotId')
check "space freed: snapshot A ($CODE)" "$([ "$CODE" = 200 ] && [ -n "$S2" ] && echo 0 || echo 1)"
[ -z "$S2" ] || SNAPS[$S2]=$A

# ---- 4. A guest fills its own disk ----

if [ -n "$D" ]; then
        # fallocate takes all but 32 MiB of the guest's free blocks (root's
        # reserve included) without writing them; dd writes the rest.
        exec_out "$D" 'f=$(( $(stat -f -c "%f * %S" /root) - 33554432 )); [ $f -gt 0 ] && fallocate -l $f /root/fill0;
e=$(dd if=/dev/zero of=/root/fill bs=1M 2>&1); echo "dd=$?"; echo "$e" | grep -m1 -i "no space"; df -k /root | tail -n 1' 300
        log "  dd in D: $CODE $(short "$OUT")"
        check "guest disk full: dd in D ends with ENOSPC" "$(case $OUT in *'No space left'*) echo 0 ;; *) echo 1 ;; esac)"
        call PUT "/v1/vms/$D/files/%2Froot%2Fmore.txt" '{"content":"more"}'
        code=$(printf '%s' "$BODY" | jf 'j.code')
        log "  PUT a file into D: $CODE $code $(short "$(printf '%s' "$BODY" | jf 'j.message')")"
        check "guest disk full: the files API answers 507 INSUFFICIENT_STORAGE ($CODE $code)" \
                "$([ "$CODE" = 507 ] && [ "$code" = INSUFFICIENT_STORAGE ] && echo 0 || echo 1)"
        exec_out "$D" 'echo d-answers'
        check "guest disk full: D still answers exec" "$([ "$OUT" = d-answers ] && echo 0 || echo 1)"
        vms_intact "guest disk full"
        exec_out "$D" 'rm -f /root/fill /root/fill0 && echo ok > /root/more.txt && sync && cat /root/more.txt /root/note.txt'
        check "guest disk full: once D deletes its fill it writes again, its files intact" \
                "$([ "$OUT" = "ok"$'\n'"${NOTE[$D]}" ] && echo 0 || echo 1)"
fi

# ---- 5. Clean up through the API; nothing left behind ----

n=0
for id in "${!VMS[@]}"; do
        call DELETE "/v1/vms/$id" '' 120
        [ "$CODE" = 200 ] || { n=1; log "delete ${VMS[$id]}: $CODE $(short "$BODY")"; }
done
for sid in "${!SNAPS[@]}"; do
        call DELETE "/v1/vms/snapshots/$sid" '' 60
        [ "$CODE" = 200 ] || { n=1; log "delete snapshot $sid: $CODE $(short "$BODY")"; }
done
check "delete every VM and snapshot" "$n"
sleep 2
# The warm pool's VMs (their record's account is "sprout:warm-pool") are
# the server's own, not left behind.
pooled=" $(sqlite3 "$DATA/sprout.db" "SELECT v.id FROM vms v JOIN accounts a ON a.id = v.account_id
        WHERE a.name = 'sprout:warm-pool'" 2>/dev/null | tr '\n' ' ') "
left=0
for d in "$DATA"/vms/*; do
        [ -e "$d" ] || continue
        case $pooled in *" $(basename "$d") "*) ;; *) left=$((left + 1)) ;; esac
done
[ "$left" -eq 0 ] || log "  left in vms/: $(ls "$DATA/vms" | head -5 | tr '\n' ' ')"
check "no VM directory is left once every VM is deleted (refused operations left none)" "$([ "$left" -eq 0 ] && echo 0 || echo 1)"
log "data dir after the deletes: $(du -sm "$DATA" | cut -f1) MiB; layers: $(ls "$DATA/layers" 2>/dev/null | wc -l); $(ls "$DATA" | tr '\n' ' ')"

stop_sproutd "the end"
check_no_leftovers

log "refusals and outcomes while space ran short:"
for k in "${!REFUSALS[@]}"; do printf '      %-50s x%s\n' "$k" "${REFUSALS[$k]}"; done | sort
report
cleanup
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]

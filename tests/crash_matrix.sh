# The crash-point matrix, sourced by tests/run.sh (it uses launch_sproutd,
# stop_sproutd, check, log and api from there).
#
# For every crash point in the source (crash_point("name") in src/), sproutd
# is started with SPROUT_CRASH_AT=name, made to pass that point by the
# operation the point belongs to, and must die there. Then it is started
# again without it, and:
#   - the VM made before (whose create had answered) is there and answers
#     exec with its file, whatever state the cut-short operation left it in;
#   - every VM listed answers exec (nothing half-made is listed), and no
#     VM has appeared that the cut-short operation would have made;
#   - every snapshot listed restores, with the file;
#   - every directory under vms/ and layers/ belongs to a listed VM or a
#     recorded layer, and every QEMU running from the data dir is a listed
#     VM's.

# All crash point names, from the source.
crash_points() {
        grep -rhoE 'crash_point\("[a-z0-9_.]+"\)' "$ROOT/src" | sed -E 's/crash_point\("(.*)"\)/\1/' | sort -u
}

cm_json() { # JSON EXPR: evaluates EXPR on the parsed JSON j with node
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{let j;try{j=JSON.parse(s)}catch{j=null};const r=(new Function("j",process.argv[1]))(j);if(r!==undefined)console.log(Array.isArray(r)?r.join(" "):r)})' "$2" <<<"$1"
}

cm_vm_ids() { cm_json "$(api GET /v1/vms)" 'return (j&&j.vms||[]).map(v=>v.id)'; }
cm_snapshot_ids() { cm_json "$(api GET /v1/vms/snapshots)" 'return (j&&j.snapshots||[]).map(v=>v.snapshotId)'; }

# Creates a VM with /root/marker holding its own id; prints its id.
cm_new_vm() {
        local id
        id=$(cm_json "$(api POST /v1/vms '{}')" 'return j&&j.id||""')
        [ -n "$id" ] || return 1
        cm_exec "$id" "echo $id > /root/marker; sync" >/dev/null || return 1
        echo "$id"
}

# Runs a command in a VM; prints its stdout, fails unless it exited 0.
cm_exec() { # ID COMMAND
        local out body
        body=$(node -e 'console.log(JSON.stringify({command: process.argv[1]}))' "$2")
        out=$(api POST "/v1/vms/$1/exec-await" "$body")
        cm_json "$out" 'if(!j||j.statusCode!==0){console.error("exec: "+JSON.stringify(j));process.exit(1)}return (j.stdout||"").trim()'
}

# The operation that passes the named point, run against the crashing
# daemon. $CM_A is the long-lived VM; setup() may make $CM_B and $CM_S.
cm_setup() { # POINT
        CM_B= CM_S=
        case $1 in
        resume.* | start.begin) api POST "/v1/vms/$CM_A/suspend" >/dev/null ;;
        delete.*) CM_B=$(cm_new_vm) || return 1 ;;
        gc.forgotten)
                # A snapshot whose layer only it holds: its delete frees it.
                CM_B=$(cm_new_vm) || return 1
                CM_S=$(cm_json "$(api POST "/v1/vms/$CM_B/snapshot" '{}')" 'return j&&j.snapshotId||""')
                [ -n "$CM_S" ] || return 1
                api DELETE "/v1/vms/$CM_B" >/dev/null
                ;;
        build.*)
                # A build on a snapshot of A: what it makes holds A's marker.
                CM_S=$(cm_json "$(api POST "/v1/vms/$CM_A/snapshot" '{}')" 'return j&&j.snapshotId||""')
                [ -n "$CM_S" ] || return 1
                ;;
        esac
        return 0
}

cm_operation() { # POINT
        case $1 in
        create.*) api POST /v1/vms '{}' ;;
        layer.* | snapshot.*) api POST "/v1/vms/$CM_A/snapshot" '{}' ;;
        fork.*) api POST "/v1/vms/$CM_A/fork" '{"count":2}' ;;
        suspend.*) api POST "/v1/vms/$CM_A/suspend" ;;
        resume.* | start.begin) api POST "/v1/vms/$CM_A/start" ;;
        delete.*) api DELETE "/v1/vms/$CM_B" ;;
        optimize.*) api POST "/v1/vms/$CM_A/optimize" ;;
        resize.*) api POST "/v1/vms/$CM_A/resize" '{"diskSizeGb":12}' ;;
        gc.*) api DELETE "/v1/vms/snapshots/$CM_S" ;;
        build.*)
                api POST /v1/vms/snapshots "{\"template\":{\"snapshotId\":\"$CM_S\",\"discriminator\":\"cm-$1\",
                        \"additionalFiles\":{\"/root/built\":{\"content\":\"yes\"}}}}"
                ;;
        *) return 2 ;;
        esac
}

# Whether what is on disk and running matches what is listed, or is the
# warm pool's (VMs of the account "sprout:warm-pool", which no key names and
# no list shows). A check that fails is made once more a little later: a
# pool VM being made has its directory a moment before its record.
cm_no_orphans() { # VM_IDS
        cm_no_orphans_now "$1" >/dev/null || { sleep 2; cm_no_orphans_now "$1"; }
}

cm_no_orphans_now() { # VM_IDS
        local d pid ok=0 ids
        ids=" $1 $(sqlite3 "$DATA_DIR/sprout.db" "SELECT v.id FROM vms v JOIN accounts a ON a.id = v.account_id
                WHERE a.name = 'sprout:warm-pool'" 2>/dev/null | tr '\n' ' ') "
        for d in "$DATA_DIR"/vms/*; do
                [ -e "$d" ] || continue
                case $ids in *" $(basename "$d") "*) ;; *) log "orphan VM directory $d"; ok=1 ;; esac
        done
        for pid in $(pgrep -f -- "$DATA_DIR/vms/" || true); do
                d=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -o "$DATA_DIR/vms/[a-z0-9]*" | head -1)
                [ -n "$d" ] || continue
                case $ids in *" $(basename "$d") "*) ;; *) log "orphan QEMU $pid for $d"; ok=1 ;; esac
        done
        for d in "$DATA_DIR"/layers/l-*; do
                [ -e "$d" ] || continue
                if [ -z "$(sqlite3 "$DATA_DIR/sprout.db" "SELECT 1 FROM layers WHERE id = '$(basename "$d")'" 2>/dev/null)" ]; then
                        log "orphan layer directory $d"
                        ok=1
                fi
        done
        return $ok
}

# One point: crash there, restart, check. CM_A must run before.
cm_point() { # POINT
        local p=$1 before_vms before_snaps after_vms after_snaps id out ok restored n
        cm_setup "$p" || { check "crash at $p: setup" 1; return; }
        before_vms=" $(cm_vm_ids) "
        before_snaps=" $(cm_snapshot_ids) "
        stop_sproutd >/dev/null
        SPROUTD_ENV=(SPROUT_CRASH_AT="$p")
        if launch_sproutd >/dev/null; then
                cm_operation "$p" >/dev/null 2>&1
                for _ in $(seq 1 100); do kill -0 "$SPROUTD_PID" 2>/dev/null || break; sleep 0.1; done
        fi
        SPROUTD_ENV=()
        if kill -0 "${SPROUTD_PID:-0}" 2>/dev/null; then
                kill -KILL "$SPROUTD_PID"
                wait "$SPROUTD_PID" 2>/dev/null
        fi
        SPROUTD_PID=
        grep -q "crash point $p reached" "$SPROUTD_LOG"
        check "crash at $p: sproutd dies there" $?
        launch_sproutd >/dev/null || { check "crash at $p: sproutd starts again" 1; return; }

        out=$(cm_exec "$CM_A" 'cat /root/marker' 2>&1)
        [ "$out" = "$CM_A" ]
        ok=$?
        [ "$ok" -eq 0 ] || log "after a crash at $p, VM $CM_A: $out; $(api GET "/v1/vms/$CM_A")"
        check "crash at $p: the VM made before runs with its files" "$ok"

        after_vms=$(cm_vm_ids)
        ok=0
        n=0
        for id in $after_vms; do
                [ "$id" = "$CM_A" ] && continue
                case $before_vms in
                *" $id "*) [ "$id" = "$CM_B" ] && continue ;; # a delete cut short may leave it, stopped
                *) log "after a crash at $p: VM $id appeared"; ok=1; continue ;;
                esac
                n=$((n + 1))
        done
        check "crash at $p: nothing half-made is listed" "$ok"

        after_snaps=$(cm_snapshot_ids)
        ok=0
        for id in $after_snaps; do
                case $before_snaps in *" $id "*) continue ;; esac
                restored=$(cm_json "$(api POST /v1/vms "{\"snapshotId\":\"$id\"}")" 'return j&&j.id||""')
                out=$( [ -n "$restored" ] && cm_exec "$restored" 'cat /root/marker' 2>&1)
                [ "$out" = "$CM_A" ] || { log "snapshot $id after a crash at $p: restore '$restored', exec '$out'"; ok=1; }
                [ -z "$restored" ] || api DELETE "/v1/vms/$restored" >/dev/null
                api DELETE "/v1/vms/snapshots/$id" >/dev/null
        done
        check "crash at $p: every snapshot listed restores with its files" "$ok"

        # What the setup made goes; what is left must all be accounted for.
        [ -z "$CM_B" ] || api DELETE "/v1/vms/$CM_B" >/dev/null
        [ -z "$CM_S" ] || api DELETE "/v1/vms/snapshots/$CM_S" >/dev/null
        cm_no_orphans "$(cm_vm_ids)"
        check "crash at $p: no orphan directory, layer or QEMU" $?
}

crash_matrix() {
        local p points
        kill -0 "$SPROUTD_PID" 2>/dev/null || return
        points=$(crash_points)
        log "crash matrix: $(echo "$points" | wc -w) crash points: $(echo $points)"
        CM_A=$(cm_new_vm) || { check "crash matrix: vm create" 1; return; }
        for p in $points; do
                log "crash matrix: $p"
                cm_point "$p"
                # A VM left stopped would fail every point after: start it.
                case $(api GET "/v1/vms/$CM_A") in *'"state":"stopped"'*) api POST "/v1/vms/$CM_A/start" >/dev/null ;; esac
        done
        api DELETE "/v1/vms/$CM_A" >/dev/null
        check "crash matrix: vm delete" $?
}

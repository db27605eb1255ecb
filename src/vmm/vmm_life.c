/*
 * vmm_life: a VM's lifecycle once it exists: boot and halt, suspend and
 * resume, stop, kill, await, snapshot, optimize and resize. Every
 * transition runs with vm->lock held, so a request waits for the one in
 * progress. Depends on qemu, agentc, store and util.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Removes the VM's old disk names (second names of layer files, kept while
 * a QEMU might reopen them). Only while no QEMU runs for it. */
static void vm_prune_disks(struct vm *vm)
{
        DIR *d = opendir(vm->dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                if (!strncmp(de->d_name, "disk", 4) && strstr(de->d_name, ".qcow2") && strcmp(de->d_name, vm->disk))
                        unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
}

int vm_agent_connect(const struct vm *vm, int timeout_ms, struct agentc **ret)
{
        char sock[PATH_MAX], hash[65], seed[64];
        int r = vm_path(vm, sock, "agent.sock");

        if (r == 0)
                r = agentc_connect(sock, timeout_ms, ret);
        if (r < 0)
                return r;
        /* The machine id follows from the VM id: its own, and the same
         * across its restarts and resumes. */
        snprintf(seed, sizeof(seed), "sprout machine-id %s", vm->id);
        sha256_hex(seed, strlen(seed), hash);
        hash[32] = 0;
        agentc_set_identity(*ret, vm->id, hash);
        return 0;
}

/* Connects to a restored guest's agent and pings it. The guest's agent
 * may go on sending a frame it had half sent when the snapshot was taken:
 * the connection that reads those bytes breaks, and a new one starts
 * clean. */
static int agent_reach(const struct vm *vm, int64_t deadline, struct agentc **ret)
{
        struct agentc *a = NULL;
        int r;

        do {
                agentc_unref(a);
                a = NULL;
                r = vm_agent_connect(vm, 5000, &a);
                if (r == 0)
                        r = agentc_ping(a, (int)(deadline - now_ms()));
        } while (r == -ECONNRESET && now_ms() < deadline);
        if (r < 0) {
                agentc_unref(a);
                return r;
        }
        *ret = a;
        return 0;
}

int vm_boot(struct vmm *m, struct vm *vm, const char *state_path)
{
        char disk[PATH_MAX], mem[PATH_MAX], sock[PATH_MAX];
        struct vm_jail *vj = calloc(1, sizeof(*vj));
        struct boot_files files;
        struct qemu_config c;
        struct qemu *q = NULL;
        struct agentc *a = NULL;
        const char *step = "prepare";
        int r, in_ram;

        if (!vj)
                return -ENOMEM;
        /* Each VM owns a shared-mapped memory file, so saving it (suspend,
         * snapshot, fork) is a device-state save: the RAM is already in
         * the file (see vmm_ram.c). */
        in_ram = vm_ram_path(vm, mem);
        if (in_ram < 0 || vm_path(vm, disk, vm->disk) < 0 || vm_path(vm, sock, "agent.sock") < 0 ||
            boot_config(m, vm->dir, disk, mem, vm->mem_mb, vm->vcpus, &files, &c) < 0) {
                free(vj);
                return -ENAMETOOLONG;
        }
        c.incoming = state_path != NULL;
        vm->guest_ran = 0;
        vm_prune_disks(vm);
        /* Guest RAM in the data dir: with every block allocated up front, a
         * full disk later can never fault the guest's memory (SIGBUS). Its
         * own tmpfs is sized to hold all of it. */
        r = in_ram ? 0 : file_allocate(mem, (int64_t)vm->mem_mb << 20);
        if (r == -EOPNOTSUPP)
                r = 0;
        if (r == 0) {
                int64_t t0 = now_ms();

                step = "confine it";
                r = vm_jail_prepare(m, vm, vj);
                if (r == 0)
                        log_info("vm %s: confined in %lld ms (uid %u, cgroup, network namespace)", vm->id,
                                 (long long)(now_ms() - t0), vm->uid);
        }
        if (r == 0)
                c.jail = &vj->jail;
        else if (r == 1)
                r = 0; /* unconfined */
        /* On a loaded host QEMU may take a while to open its QMP socket. */
        if (r == 0) {
                step = "start QEMU";
                r = qemu_spawn(&c, SPAWN_TIMEOUT_MS, &q);
        }
        free(vj);
        if (r < 0) {
                log_err("vm %s: could not %s: %s", vm->id, step, strerror(-r));
                return r;
        }
        if (state_path) {
                step = "restore its device state";
                r = qemu_restore(q, state_path, RESTORE_TIMEOUT_MS);
                /* From here the memory file moves on from the saved state. */
                if (r == 0)
                        vm->guest_ran = 1;
                if (r == 0)
                        r = qemu_cont(q, RESTORE_TIMEOUT_MS);
                if (r == 0) {
                        step = "reach its agent";
                        r = agent_reach(vm, now_ms() + AGENT_TIMEOUT_MS, &a);
                }
        } else {
                step = "boot it";
                r = wait_agent(q, sock, now_ms() + COLD_BOOT_TIMEOUT_MS, NULL, &a);
        }
        if (r < 0) {
                log_err("vm %s: could not %s: %s (%s)", vm->id, step, strerror(-r), qemu_last_error(q));
                agentc_unref(a);
                qemu_stop(q, 0);
                qemu_free(q);
                return r;
        }
        vm->qemu = q;
        vm->agent = a;
        return 0;
}

void vm_halt(struct vmm *m, struct vm *vm, int timeout_ms)
{
        agentc_shutdown(vm->agent);
        agentc_unref(vm->agent);
        vm->agent = NULL;
        vm->agent_down_since = vm->agent_retry_at = 0;
        __atomic_store_n(&vm->disk_full, 0, __ATOMIC_RELAXED); /* a new QEMU starts unpaused */
        if (vm->qemu) {
                qemu_stop(vm->qemu, timeout_ms);
                qemu_free(vm->qemu);
                vm->qemu = NULL;
        }
        /* A QEMU no handle knows of (a daemon that died while it started
         * it, before its pid file) runs as the VM's own uid: it goes too. */
        if (vm->uid && !m->cfg.unconfined && jail_kill_uid(vm->uid) > 0)
                log_warn("vm %s: killed a QEMU of it that was not attached", vm->id);
        if (vm->uid)
                jail_release(m, vm->id, vm->uid - m->cfg.uid_base);
        vm_ram_release(vm->dir);
}

/* How long a suspend waits for the guest operations in flight on the VM
 * to end before it goes ahead (they then fail, as the VM stops under
 * them). New ones wait for vm->lock and resume the VM. */
#define SUSPEND_DRAIN_MS 30000

static void drain_inflight(struct vmm *m, struct vm *vm)
{
        struct timespec until;

        realtime_in(SUSPEND_DRAIN_MS, &until);
        pthread_mutex_lock(&m->lock);
        while (vm->inflight > 0 && !m->stopping)
                if (pthread_cond_timedwait(&m->cond, &m->lock, &until) == ETIMEDOUT)
                        break;
        if (vm->inflight > 0)
                log_warn("vm %s: suspending with %d guest request(s) still running after %d ms", vm->id,
                         vm->inflight, SUSPEND_DRAIN_MS);
        pthread_mutex_unlock(&m->lock);
}

/* Device state saved next to the RAM, both on disk, QEMU ended. */
int vm_suspend(struct vmm *m, struct vm *vm)
{
        char state[PATH_MAX], tmp[PATH_MAX];
        int64_t t0 = now_ms();
        int r;

        if (!vm->qemu)
                return state_of(m, vm) == VM_SUSPENDED ? 0 : -ENOTCONN;
        if (vm_hung(vm))
                return -EHOSTDOWN;
        /* Its state file needs room; it goes on running instead. */
        if (below_reserve(m))
                return -ENOSPC;
        if (vm_path(vm, state, "state") < 0 || vm_path(vm, tmp, "state.tmp") < 0)
                return -ENAMETOOLONG;
        vm_set_state(m, vm, VM_SUSPENDING);
        drain_inflight(m, vm);
        crash_point("suspend.start");
        /* Saved under a temporary name: a "state" file always is whole,
         * and names a memory file that is on disk. */
        r = qemu_save(vm->qemu, tmp, 60000);
        if (r == 0)
                crash_point("suspend.saved");
        if (r == 0)
                r = vm_ram_save(vm);
        if (r == 0 && rename(tmp, state) < 0)
                r = -errno;
        if (r == 0)
                r = fsync_parent(state);
        if (r < 0) {
                unlink(tmp);
                qemu_cont(vm->qemu, 10000);
                vm_set_state(m, vm, VM_RUNNING);
                log_err("vm %s: suspend failed: %s (%s)", vm->id, strerror(-r), qemu_last_error(vm->qemu));
                return r;
        }
        crash_point("suspend.renamed");
        vm_halt(m, vm, 0);
        vm_set_state(m, vm, VM_SUSPENDED);
        histo_add(&m->h_suspend, (now_ms() - t0) * 1000);
        log_info("vm %s: suspended in %lld ms", vm->id, (long long)(now_ms() - t0));
        return 0;
}

void vm_agent_down(struct vmm *m, struct vm *vm, int r)
{
        int64_t now = now_ms();

        (void)m;
        if (!vm->agent_down_since) {
                vm->agent_down_since = wall_ms();
                vm->agent_backoff_ms = 500;
                log_warn("vm %s: its agent link is down (%s); retrying with backoff", vm->id, strerror(-r));
        } else {
                vm->agent_backoff_ms = vm->agent_backoff_ms * 2 > 30000 ? 30000 : vm->agent_backoff_ms * 2;
        }
        vm->agent_error = r;
        vm->agent_tried_at = now;
        vm->agent_retry_at = now + vm->agent_backoff_ms;
}

struct agentc *vm_agent(struct vmm *m, struct vm *vm, int background, int *ret_err)
{
        struct agentc *a = NULL;
        int r;

        if (vm->agent && agentc_alive(vm->agent)) {
                vm->agent_down_since = 0;
                return agentc_ref(vm->agent);
        }
        if (!vm->qemu) {
                *ret_err = -ENOTCONN;
                return NULL;
        }
        /* A link that just died is tried again at once. */
        if (vm->agent) {
                agentc_unref(vm->agent);
                vm->agent = NULL;
        }
        /* The background retry keeps to the backoff; a request tries
         * whenever no try failed in the last second, so a guest whose
         * agent came back is reached at once. */
        if (background ? now_ms() < vm->agent_retry_at : now_ms() - vm->agent_tried_at < 1000) {
                *ret_err = -EHOSTUNREACH;
                return NULL;
        }
        /* A new connection to QEMU's end of the port, and a ping that
         * starts a new session with whatever agent the guest now runs. */
        r = vm_agent_connect(vm, 1000, &a);
        if (r == 0)
                r = agentc_ping(a, 5000);
        if (r < 0) {
                agentc_unref(a);
                vm_agent_down(m, vm, r);
                *ret_err = -EHOSTUNREACH;
                return NULL;
        }
        if (vm->agent_down_since)
                log_info("vm %s: agent link up again", vm->id);
        vm->agent = a;
        vm->agent_down_since = 0;
        vm->agent_retry_at = 0;
        vm->agent_error = 0;
        return agentc_ref(a);
}

/* A cold boot starts from empty RAM on the VM's own disk, with the memory
 * and vCPUs a resize asked for. */
static int vm_cold_boot(struct vmm *m, struct vm *vm)
{
        char state[PATH_MAX], mem[PATH_MAX];
        int r;

        if (vm_path(vm, state, "state") < 0 || vm_path(vm, mem, "mem") < 0)
                return -ENAMETOOLONG;
        if (vm->pending_mem_mb || vm->pending_vcpus) {
                int mem_mb = vm->pending_mem_mb ? vm->pending_mem_mb : vm->mem_mb;
                int vcpus = vm->pending_vcpus ? vm->pending_vcpus : vm->vcpus;

                r = store_vm_set_size(m->store, vm->id, mem_mb, vcpus, 0, 0);
                if (r < 0)
                        return r;
                vm->mem_mb = mem_mb;
                vm->vcpus = vcpus;
                vm->pending_mem_mb = vm->pending_vcpus = 0;
        }
        unlink(mem);
        unlink(state);
        if (vm_path(vm, state, "state.resuming") == 0)
                unlink(state);
        r = vm_ram_prepare(m, vm, NULL);
        if (r >= 0)
                r = vm_boot(m, vm, NULL);
        /* A disk grown while stopped: let the filesystem follow. */
        if (r == 0)
                guest_run(vm->agent, "resize2fs /dev/vda >/dev/null 2>&1", 120000);
        return r;
}

/* Starts a suspended (resume) or stopped (cold boot) VM. */
int vm_start(struct vmm *m, struct vm *vm)
{
        enum vm_state s = state_of(m, vm);
        struct store_limits limits;
        char state[PATH_MAX];
        int64_t t0 = now_ms();
        int r;

        if (vm->qemu)
                return 0;
        if (vm_path(vm, state, "state") < 0)
                return -ENAMETOOLONG;
        /* A VM that starts running counts against its account's running
         * VMs and memory: admitted and marked starting at once. */
        limits = limits_of(m, vm->account);
        pthread_mutex_lock(&m->lock);
        r = vm_admit(m, vm->account, &limits,
                     s != VM_SUSPENDED && vm->pending_mem_mb ? vm->pending_mem_mb : vm->mem_mb, 0, vm);
        if (r == 0)
                vm->state = VM_STARTING;
        pthread_mutex_unlock(&m->lock);
        if (r < 0)
                return r;
        vm_set_state(m, vm, VM_STARTING);
        crash_point("start.begin");
        if (s == VM_SUSPENDED) {
                char used[PATH_MAX];

                /* Once the guest runs, its memory file moves on from what
                 * the saved state describes: the state goes out of the way
                 * first, so that a daemon that dies now never resumes it
                 * again. qemu.pid goes before it: a state.resuming found
                 * at the next start without one never ran, and is
                 * suspended again (see reattach). */
                r = vm_path(vm, used, "qemu.pid");
                if (r == 0 && unlink(used) < 0 && errno != ENOENT)
                        r = -errno;
                if (r == 0)
                        r = vm_path(vm, used, "state.resuming");
                if (r == 0 && rename(state, used) < 0)
                        r = -errno;
                if (r == 0)
                        r = fsync_parent(used);
                if (r == 0)
                        crash_point("resume.begin");
                /* The saved RAM is mapped where it is, not copied to a
                 * tmpfs (see vmm_ram.c): a resume is a request waiting. */
                if (r == 0)
                        r = vm_boot(m, vm, used);
                if (r == 0)
                        crash_point("resume.booted");
                if (r == 0)
                        unlink(used);
                else if (!vm->guest_ran && access(used, F_OK) == 0)
                        rename(used, state);
                else if (access(used, F_OK) == 0) {
                        /* Its memory moved on under a guest that ran: what
                         * the state describes is gone. Stopped, disk kept. */
                        unlink(used);
                        s = VM_STOPPED;
                }
        } else {
                r = vm_cold_boot(m, vm);
        }
        if (r < 0) {
                vm_set_state(m, vm, s);
                log_err("vm %s: start failed: %s", vm->id, strerror(-r));
                return r;
        }
        /* A VM whose create failed runs again: it is a VM like any other
         * from now on, also across restarts. */
        if (vm->error_code) {
                r = store_vm_set_error(m->store, vm->id, 0, NULL);
                if (r < 0)
                        log_err("vm %s: could not clear its create failure: %s", vm->id, strerror(-r));
                pthread_mutex_lock(&m->lock);
                vm->error_code = 0;
                free(vm->error);
                vm->error = NULL;
                pthread_mutex_unlock(&m->lock);
        }
        vm_touch(m, vm); /* a start is a use: its idle timer starts now */
        vm_set_state(m, vm, VM_RUNNING);
        histo_add(s == VM_SUSPENDED ? &m->h_resume : &m->h_cold_boot, (now_ms() - t0) * 1000);
        log_info("vm %s: %s in %lld ms", vm->id, s == VM_SUSPENDED ? "resumed" : "cold-booted",
                 (long long)(now_ms() - t0));
        return 0;
}

int ensure_running(struct vmm *m, struct vm *vm)
{
        if (vm->qemu)
                return 0;
        if (state_of(m, vm) != VM_SUSPENDED)
                return -ENOTCONN;
        return vm_start(m, vm);
}

int vmm_suspend(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_lock(m, account, id);
        int r;

        if (!vm)
                return -ENOENT;
        r = vm_suspend(m, vm);
        vm_unlock(m, vm);
        return r;
}

int vmm_start(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_lock(m, account, id);
        int r;

        if (!vm)
                return -ENOENT;
        r = vm_start(m, vm);
        vm_unlock(m, vm);
        return r;
}

/* Drops a suspended VM's saved device state: its memory is gone, its disk
 * stays. */
static void drop_state(struct vm *vm)
{
        char state[PATH_MAX];

        if (vm_path(vm, state, "state") == 0)
                unlink(state);
}

int vmm_stop(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_lock(m, account, id);
        int r = 0;

        if (!vm)
                return -ENOENT;
        if (vm->qemu) {
                /* A clean shutdown from inside; QEMU exits when the guest
                 * powers off (-no-reboot). */
                guest_run(vm->agent, "systemctl poweroff --no-block", 10000);
                for (int64_t end = now_ms() + 60000; !qemu_reap(vm->qemu) && now_ms() < end;)
                        sleep_ms(50);
                if (!qemu_reap(vm->qemu))
                        log_warn("vm %s: guest did not power off within 60 s; killed", vm->id);
                vm_halt(m, vm, 0);
                vm_set_state(m, vm, VM_STOPPED);
                log_info("vm %s: stopped", vm->id);
        } else if (state_of(m, vm) == VM_SUSPENDED) {
                drop_state(vm);
                vm_set_state(m, vm, VM_STOPPED);
        } else {
                r = -ENOTCONN;
        }
        vm_unlock(m, vm);
        return r;
}

int vmm_kill(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_lock(m, account, id);

        if (!vm)
                return -ENOENT;
        vm_halt(m, vm, 0);
        drop_state(vm);
        vm_set_state(m, vm, VM_STOPPED);
        log_info("vm %s: killed", vm->id);
        vm_unlock(m, vm);
        return 0;
}

int vmm_await(struct vmm *m, const char *account, const char *id, int64_t timeout_ms, char ret_status[16])
{
        struct vm *vm = vm_find(m, account, id);
        struct timespec until;
        int r = 0;

        if (!vm)
                return -ENOENT;
        realtime_in(timeout_ms, &until);
        pthread_mutex_lock(&m->lock);
        while (r == 0 && !vm->removed && vm->state != VM_STOPPED && vm->state != VM_LOST && !m->stopping)
                if (pthread_cond_timedwait(&m->cond, &m->lock, &until) == ETIMEDOUT)
                        r = -ETIMEDOUT;
        if (vm->removed || vm->state == VM_STOPPED || vm->state == VM_LOST)
                r = 0;
        snprintf(ret_status, 16, "%s", vm->removed ? "deleted" : vm_state_name(vm->state));
        pthread_mutex_unlock(&m->lock);
        vm_put(m, vm);
        return r;
}

int vmm_snapshot(struct vmm *m, const char *account, const char *id, const struct vmm_snapshot_opts *o,
                 char ret_snapshot[24])
{
        struct vm *vm = vm_lock(m, account, id);
        struct store_snapshot snap = {0};
        struct reservation *reserved = NULL;
        char layer[24], sid[24];
        int r;

        if (!vm)
                return -ENOENT;
        if (!vm->qemu && state_of(m, vm) != VM_SUSPENDED) {
                vm_unlock(m, vm);
                return -ENOTCONN;
        }
        memcpy(sid, "sc-", 3);
        r = storage_admit(m, account);
        if (r == 0)
                r = snapshot_admit(m, account, &reserved);
        if (r == 0 && o->building_id)
                snprintf(sid, sizeof(sid), "%s", o->building_id);
        else if (r == 0)
                r = random_id(sid + 3, 20);
        if (r == 0)
                r = vm_make_layer(m, vm, layer);
        if (r == 0) {
                snap.id = sid;
                snap.account_id = (char *)account;
                snap.name = (char *)o->name;
                snap.source_vm_id = vm->id;
                snap.layer = layer;
                snap.persist_kind = (char *)vm_persist_name(o->persistence.kind);
                snap.persist_priority = o->persistence.priority;
                snap.created_at = wall_ms();
                snap.mem_mb = vm->mem_mb;
                snap.vcpus = vm->vcpus;
                snap.build_id = (char *)o->build_id;
                snap.template_hash = (char *)o->template_hash;
                crash_point("snapshot.layer");
                r = o->building_id ? store_snapshot_ready(m->store, sid, vm->id, layer, vm->mem_mb, vm->vcpus,
                                                          snap.created_at)
                                   : store_snapshot_insert(m->store, &snap);
        }
        if (r == 0)
                crash_point("snapshot.recorded");
        snapshot_done(m, reserved);
        if (r == 0)
                log_info("vm %s: snapshot %s (layer %s)", vm->id, sid, layer);
        else
                log_err("vm %s: snapshot failed: %s (%s)", vm->id, strerror(-r), qemu_last_error(vm->qemu));
        vm_unlock(m, vm);
        if (r == 0)
                memcpy(ret_snapshot, sid, sizeof(sid));
        return r;
}

int vmm_optimize(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_lock(m, account, id);
        char disk[PATH_MAX], base[PATH_MAX], log[PATH_MAX];
        int64_t t0 = now_ms();
        int r = 0;

        if (!vm)
                return -ENOENT;
        if (vm->qemu)
                r = vm_suspend(m, vm);
        if (r == 0 && vm->layer) {
                /* Rebase the VM's disk straight onto the default snapshot's:
                 * what the layers in between held is copied into it, and
                 * later reads (and forks) walk two files instead of many. */
                if (vm_path(vm, disk, vm->disk) < 0 || layer_path(m, NULL, base, "disk.qcow2") < 0 ||
                    vm_path(vm, log, "qemu-img.log") < 0)
                        r = -ENAMETOOLONG;
                else
                        r = qemu_img_rebase(disk, base, log);
                if (r == 0)
                        r = fsync_path(disk);
                if (r == 0)
                        crash_point("optimize.rebased");
                if (r == 0)
                        r = store_vm_set_layer(m->store, vm->id, NULL);
                if (r == 0) {
                        free(vm->layer);
                        vm->layer = NULL;
                }
        }
        if (r == 0)
                vm_prune_disks(vm);
        if (r == 0)
                log_info("vm %s: optimized (suspended, disk flattened) in %lld ms", vm->id, (long long)(now_ms() - t0));
        else
                log_err("vm %s: optimize failed: %s", vm->id, strerror(-r));
        vm_unlock(m, vm);
        layers_gc(m);
        return r;
}

/* Grows the disk to bytes: live for a running VM (then the filesystem),
 * in the file for a stopped one, whose next boot grows the filesystem. */
static int grow_disk(struct vmm *m, struct vm *vm, const char *disk, uint64_t bytes, const char *log)
{
        int r = 0;

        if (!vm->qemu && state_of(m, vm) == VM_SUSPENDED)
                r = vm_start(m, vm); /* the guest must see the new size */
        if (r < 0)
                return r;
        if (!vm->qemu)
                return qemu_img_resize(disk, bytes, log);
        r = qemu_resize_disk(vm->qemu, bytes, 10000);
        if (r == 0) {
                int k = guest_run(vm->agent, "resize2fs /dev/vda >/dev/null 2>&1", 120000);

                r = k < 0 ? k : k > 0 ? -EIO : 0;
        }
        return r;
}

int vmm_resize(struct vmm *m, const char *account, const char *id, int64_t disk_gb, int64_t mem_gb, int64_t vcpus)
{
        struct vm *vm = vm_lock(m, account, id);
        char disk[PATH_MAX], log[PATH_MAX];
        uint64_t cur = 0, want;
        int r = 0;

        if (!vm)
                return -ENOENT;
        if (vm_path(vm, disk, vm->disk) < 0 || vm_path(vm, log, "qemu-img.log") < 0 ||
            qemu_img_size(disk, &cur) < 0) {
                vm_unlock(m, vm);
                return -EIO;
        }
        want = disk_gb > 0 ? (uint64_t)disk_gb << 30 : cur;
        /* Growing only: shrinking a disk loses data, and a smaller RAM or
         * fewer vCPUs could break what runs inside. */
        if (want < cur || (mem_gb > 0 && mem_gb * 1024 < vm->mem_mb) || (vcpus > 0 && vcpus < vm->vcpus)) {
                vm_unlock(m, vm);
                return -EINVAL;
        }
        if (want > cur)
                r = grow_disk(m, vm, disk, want, log);
        if (r == 0)
                crash_point("resize.grown");
        if (r == 0 && (mem_gb > 0 || vcpus > 0)) {
                int pending_mem = mem_gb > 0 && mem_gb * 1024 != vm->mem_mb ? (int)(mem_gb * 1024) : vm->pending_mem_mb;
                int pending_vcpus = vcpus > 0 && vcpus != vm->vcpus ? (int)vcpus : vm->pending_vcpus;

                r = store_vm_set_size(m->store, vm->id, vm->mem_mb, vm->vcpus, pending_mem, pending_vcpus);
                if (r == 0) {
                        vm->pending_mem_mb = pending_mem;
                        vm->pending_vcpus = pending_vcpus;
                }
        }
        if (r == 0)
                log_info("vm %s: resized (disk %llu GiB, pending memory %d MiB, pending vCPUs %d)", vm->id,
                         (unsigned long long)(want >> 30), vm->pending_mem_mb, vm->pending_vcpus);
        else
                log_err("vm %s: resize failed: %s", vm->id, strerror(-r));
        vm_unlock(m, vm);
        return r;
}

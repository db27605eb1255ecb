/*
 * vmm_monitor: the manager's two background threads. bg_main runs once at
 * start-up: it takes back the VMs that were running before a restart and
 * makes the default snapshot. monitor_main runs until shutdown: it notices
 * QEMU processes that exit, suspends idle VMs, deletes ephemeral VMs that
 * reached their delete event, evicts sticky VMs past the storage quota and
 * saves when VMs were last used. Depends on qemu, agentc, store and util.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Start-up: re-attach                                                 */
/* ------------------------------------------------------------------ */

/* A resume the daemon died in before any QEMU ran from it (vm_start
 * removes qemu.pid first): its saved state is good, and it is suspended
 * again. 0, or -errno when there is no such resume. */
static int resume_undo(struct vm *vm)
{
        char used[PATH_MAX], pid[PATH_MAX], state[PATH_MAX];

        if (vm_path(vm, used, "state.resuming") < 0 || vm_path(vm, pid, "qemu.pid") < 0 ||
            vm_path(vm, state, "state") < 0)
                return -ENAMETOOLONG;
        if (access(used, F_OK) < 0 || access(pid, F_OK) == 0)
                return -ENOENT;
        if (rename(used, state) < 0)
                return -errno;
        log_warn("vm %s: a resume cut short before its guest ran; suspended again", vm->id);
        return fsync_parent(state);
}

/* Finishes what a daemon that died left half done on a VM whose QEMU
 * still runs: a suspend whose state file is complete (the guest still
 * paused) is finished, its QEMU ended (1: the VM is suspended); a save cut
 * short is dropped; a move onto a new layer whose disk.current already
 * names the new overlay is completed in QEMU. 0 otherwise. */
static int finish_interrupted(struct vm *vm, struct qemu *q)
{
        char state[PATH_MAX], tmp[PATH_MAX], disk[PATH_MAX], active[PATH_MAX], backing[PATH_MAX];
        struct stat st_active, st_backing;
        char *base;

        if (vm_path(vm, state, "state") < 0 || vm_path(vm, tmp, "state.tmp") < 0 || vm_path(vm, disk, vm->disk) < 0)
                return 0;
        unlink(tmp);
        if (access(state, F_OK) == 0) {
                if (qemu_paused(q, 2000) == 1) {
                        qemu_stop(q, 2000);
                        log_warn("vm %s: a suspend cut short after its state was saved; finished", vm->id);
                        return 1;
                }
                unlink(state);
        }
        if (qemu_active_disk(q, active, sizeof(active), 2000) < 0)
                return 0;
        base = strrchr(active, '/');
        base = strdup(base ? base + 1 : active);
        if (!base)
                return 0;
        /* disk.current names an overlay made on top of the file QEMU still
         * writes to (the new layer's disk, a second name of that file): QEMU
         * moves onto it, as vm_make_layer would have. */
        if (strcmp(base, vm->disk) && vm_path(vm, active, base) == 0 && stat(active, &st_active) == 0 &&
            qemu_img_backing(disk, backing, sizeof(backing)) == 0 && stat(backing, &st_backing) == 0 &&
            st_active.st_ino == st_backing.st_ino && st_active.st_dev == st_backing.st_dev) {
                int r = qemu_snapshot_disk(q, disk, 10000);

                if (r < 0)
                        log_err("vm %s: could not finish its move onto %s: %s", vm->id, vm->disk, strerror(-r));
                else
                        log_warn("vm %s: a move onto a new layer cut short; finished", vm->id);
        }
        free(base);
        return 0;
}

/* Takes back a VM that was running when the daemon last stopped. A VM
 * whose QEMU runs is never stopped for an agent that does not answer (a
 * busy or broken guest): it stays running, its info says its agent is
 * unreachable and the link is tried again with backoff. Returns 1 for a
 * VM whose create or fork never answered, for the caller to remove. */
static int reattach(struct vmm *m, struct vm *vm)
{
        struct qemu *q = NULL;
        struct agentc *a = NULL;
        int r, unanswered = vm->error_code == CREATE_UNANSWERED;

        pthread_mutex_lock(&vm->lock);
        r = qemu_attach(vm->dir, 2000, &q);
        /* A create the daemon died in: its setup may be half done. */
        if (r == 0 && vm->error_code)
                r = -ECANCELED;
        if (r == 0 && finish_interrupted(vm, q)) {
                qemu_free(q);
                if (vm->uid)
                        jail_release(m, vm->id, vm->uid - m->cfg.uid_base);
                vm_ram_release(vm->dir);
                vm_set_state(m, vm, VM_SUSPENDED);
                pthread_mutex_unlock(&vm->lock);
                return unanswered;
        }
        /* A daemon killed in the middle of a snapshot or suspend leaves the
         * guest paused: let it run again (a no-op for a running guest). */
        if (r == 0)
                qemu_cont(q, 2000);
        if (r == 0) {
                int k = vm_agent_connect(vm, 2000, &a);

                if (k == 0)
                        k = agentc_ping(a, 5000);
                if (k < 0) {
                        agentc_unref(a);
                        a = NULL;
                        vm_agent_down(m, vm, k);
                }
        }
        if (r == 0) {
                vm->qemu = q;
                vm->agent = a;
                vm_set_state(m, vm, VM_RUNNING);
                log_info("vm %s: re-attached to QEMU pid %d%s", vm->id, (int)q->pid,
                         a ? "" : " (its agent does not answer yet)");
        } else {
                char state[PATH_MAX];
                int suspended;

                agentc_unref(a);
                if (q) {
                        qemu_stop(q, 2000);
                        qemu_free(q);
                }
                /* A suspend that finished saving before the daemon died: the
                 * VM is suspended, whatever the record said. */
                suspended = !q && vm_path(vm, state, "state") == 0 && access(state, F_OK) == 0;
                if (!q && !suspended)
                        suspended = resume_undo(vm) == 0;
                vm_ram_release(vm->dir);
                vm_set_state(m, vm, suspended ? VM_SUSPENDED : VM_STOPPED);
                if (unanswered)
                        ;
                else if (r == -ECANCELED)
                        log_warn("vm %s: the daemon stopped during its create; marked stopped, disk kept", vm->id);
                else
                        log_warn("vm %s: its QEMU is gone after the restart (%s); marked %s, disk kept", vm->id,
                                 strerror(-r), suspended ? "suspended" : "stopped");
        }
        pthread_mutex_unlock(&vm->lock);
        return unanswered;
}

/* VMs that were running (or half-way through a transition) when the
 * daemon stopped; they read as starting until re-attached or marked. */
static int was_running(struct vm *vm, void *ud)
{
        (void)ud;
        if (vm->state != VM_RUNNING && vm->state != VM_STARTING && vm->state != VM_BUILDING &&
            vm->state != VM_SUSPENDING)
                return 0;
        vm->state = VM_STARTING;
        return 1;
}

/* Directories under vms/ that no record names: a create or delete that
 * the daemon died in left them. Nothing runs from them (a VM's QEMU
 * starts after its record exists, and stops before the record goes). */
static void vm_dirs_recover(struct vmm *m)
{
        char path[PATH_MAX];
        struct dirent *de;
        DIR *d;

        if (path_fmt(path, sizeof(path), "%s/vms", m->data_dir) < 0 || !(d = opendir(path)))
                return;
        while ((de = readdir(d))) {
                struct vm *vm;

                if (de->d_name[0] == '.')
                        continue;
                pthread_mutex_lock(&m->lock);
                for (vm = m->vms; vm && strcmp(vm->id, de->d_name); vm = vm->next)
                        ;
                pthread_mutex_unlock(&m->lock);
                if (vm || path_fmt(path, sizeof(path), "%s/vms/%s", m->data_dir, de->d_name) < 0)
                        continue;
                log_warn("vm %s: a directory without a record (a create or delete cut short); removed", de->d_name);
                vm_dir_remove(path);
        }
        closedir(d);
}

static int unanswered(struct vm *vm, void *ud)
{
        (void)ud;
        return vm->error_code == CREATE_UNANSWERED;
}

void *bg_main(void *arg)
{
        struct vmm *m = arg;
        size_t n;
        struct vm **list = vms_collect(m, was_running, NULL, &n);

        for (size_t i = 0; i < n && !m->stopping; i++)
                reattach(m, list[i]);
        vms_release(m, list, n);
        /* Creates and forks that never answered: as though never asked. */
        list = vms_collect(m, unanswered, NULL, &n);
        for (size_t i = 0; i < n; i++) {
                log_warn("vm %s: its create or fork never answered before the daemon stopped; removed", list[i]->id);
                vm_destroy(m, list[i]);
        }
        vms_release(m, list, n);
        vm_dirs_recover(m);
        if (!m->stopping && ensure_base(m) == 0) {
                pthread_mutex_lock(&m->lock);
                m->ready = 1;
                snprintf(m->status, sizeof(m->status), "ready");
                pthread_mutex_unlock(&m->lock);
                log_info("ready: default snapshot %s", m->base_dir);
        }
        return NULL;
}

/* ------------------------------------------------------------------ */
/* Idle suspend                                                        */
/* ------------------------------------------------------------------ */

/* Sum of the guest's network byte counters (all interfaces but lo), read
 * from /proc/net/dev through the agent, which starts no process. */
static int guest_net_bytes(struct agentc *a, uint64_t *ret)
{
        struct agentc_result res = {0};
        uint64_t total = 0;
        char *text, *line, *save = NULL;
        int r = agentc_read(a, "/proc/net/dev", NULL, 64 * 1024, 2000, &res);

        if (r == 0 && res.err)
                r = -res.err;
        text = r == 0 ? strndup(res.data.data ? (char *)res.data.data : "", res.data.len) : NULL;
        agentc_result_free(&res);
        if (r < 0)
                return r;
        if (!text)
                return -ENOMEM;
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *colon = strchr(line, ':');
                unsigned long long v[9];

                if (!colon || strstr(line, "lo:"))
                        continue;
                if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                           &v[4], &v[5], &v[6], &v[7], &v[8]) == 9)
                        total += v[0] + v[8];
        }
        free(text);
        *ret = total;
        return 0;
}

static int idle_candidate(struct vm *vm, void *ud)
{
        (void)ud;
        return vm->state == VM_RUNNING && vm->idle_timeout_s > 0;
}

/* How often a VM's network counters are read while it is not yet due to
 * be suspended: an eighth of its idle timeout, within 2 to 30 s, so that
 * an idle guest is not woken every 2 s for them. */
static int64_t net_look_interval_ms(const struct vm *vm)
{
        int64_t ms = vm->idle_timeout_s * 1000 / 8;

        return ms < 2000 ? 2000 : ms > 30000 ? 30000 : ms;
}

/* Suspends VMs idle for longer than their idleTimeoutSeconds: no use
 * through the API and no guest network traffic. The guest's counters are
 * read now and then (net_look_interval_ms) and always once more before it
 * is suspended, without any VM lock held. */
static void idle_check(struct vmm *m)
{
        size_t n;
        struct vm **list = vms_collect(m, idle_candidate, NULL, &n);

        for (size_t i = 0; i < n; i++) {
                struct vm *vm = list[i];
                struct agentc *a = NULL;
                uint64_t bytes;
                int64_t idle_ms, now = now_ms();

                pthread_mutex_lock(&m->lock);
                idle_ms = vm->inflight > 0 ? 0 : now - vm->last_activity; /* a request runs: not idle */
                pthread_mutex_unlock(&m->lock);
                if (idle_ms <= vm->idle_timeout_s * 1000 && now - vm->net_looked < net_look_interval_ms(vm))
                        continue;
                if (pthread_mutex_trylock(&vm->lock) != 0)
                        continue; /* in a transition: not idle */
                if (vm->agent)
                        a = agentc_ref(vm->agent);
                pthread_mutex_unlock(&vm->lock);
                if (a && guest_net_bytes(a, &bytes) == 0) {
                        vm->net_looked = now;
                        if (bytes != vm->net_bytes) {
                                vm->net_bytes = bytes;
                                vm_touch(m, vm);
                        }
                }
                agentc_unref(a);
                pthread_mutex_lock(&m->lock);
                idle_ms = vm->inflight > 0 ? 0 : now_ms() - vm->last_activity;
                pthread_mutex_unlock(&m->lock);
                if (idle_ms <= vm->idle_timeout_s * 1000 || pthread_mutex_trylock(&vm->lock) != 0)
                        continue;
                if (vm->qemu && !vm->removed) {
                        log_info("vm %s: idle for %lld s; suspending", vm->id, (long long)(idle_ms / 1000));
                        vm_suspend(m, vm);
                }
                pthread_mutex_unlock(&vm->lock);
        }
        vms_release(m, list, n);
}

/* ------------------------------------------------------------------ */
/* Ephemeral VMs and the storage quota                                 */
/* ------------------------------------------------------------------ */

static int ephemeral_done(struct vm *vm, void *ud)
{
        (void)ud;
        return vm->persist.kind == VM_PERSIST_EPHEMERAL &&
               (vm->state == VM_STOPPED || vm->state == VM_LOST ||
                (vm->persist.delete_on == VM_SUSPENDED && vm->state == VM_SUSPENDED));
}

/* Deletes ephemeral VMs that reached their delete event. */
static void ephemeral_reap(struct vmm *m)
{
        size_t n;
        struct vm **list = vms_collect(m, ephemeral_done, NULL, &n);

        for (size_t i = 0; i < n; i++) {
                log_info("vm %s: ephemeral and no longer running; deleting", list[i]->id);
                vm_destroy(m, list[i]);
        }
        vms_release(m, list, n);
}

int64_t storage_used(struct vmm *m)
{
        char path[PATH_MAX];
        int64_t total = 0;
        char (*pooled)[PATH_MAX] = NULL;
        int n = 0;

        if (path_fmt(path, sizeof(path), "%s/vms", m->data_dir) == 0)
                total += dir_usage(path, 1);
        /* Nor is the warm pool, which gives way first (see pool_next). */
        pthread_mutex_lock(&m->lock);
        if (m->npool > 0 && (pooled = calloc((size_t)m->npool, sizeof(*pooled))))
                for (struct vm *vm = m->vms; vm && n < m->npool; vm = vm->next)
                        if (vm->pooled)
                                memcpy(pooled[n++], vm->dir, PATH_MAX);
        pthread_mutex_unlock(&m->lock);
        for (int i = 0; i < n; i++)
                total -= dir_usage(pooled[i], 1);
        free(pooled);
        /* The default snapshot is the server's own fixed cost: not counted. */
        if (path_fmt(path, sizeof(path), "%s/layers", m->data_dir) == 0)
                total += dir_usage(path, 0);
        return total;
}

/* The sticky VM of account (NULL: any) to evict first: lowest priority,
 * then least recently used. A reference, or NULL when there is none. */
static struct vm *eviction_pick(struct vmm *m, const char *account)
{
        struct vm *pick = NULL;

        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                if (vm->hidden || vm->persist.kind != VM_PERSIST_STICKY || vm->state == VM_STARTING ||
                    vm->state == VM_SUSPENDING || (account && strcmp(vm->account, account)))
                        continue;
                if (!pick || vm->persist.priority < pick->persist.priority ||
                    (vm->persist.priority == pick->persist.priority && vm->last_activity < pick->last_activity))
                        pick = vm;
        }
        if (pick)
                pick->refs++;
        pthread_mutex_unlock(&m->lock);
        return pick;
}

/* 0, or the delete's failure (a full disk keeps the record): the caller
 * stops evicting then, rather than pick the same VM again. */
static int evict(struct vmm *m, struct vm *vm, const char *why, int64_t over, int64_t limit)
{
        int r;

        log_info("vm %s: evicted (%s: %lld bytes over its limit of %lld; least recently used sticky VM)", vm->id, why,
                 (long long)over, (long long)limit);
        r = vm_destroy(m, vm);
        vm_put(m, vm);
        return r == -ENOENT ? 0 : r;
}

/* The accounts that have VMs (malloc'd names, *ret_n of them). */
static char **accounts_with_vms(struct vmm *m, size_t *ret_n)
{
        size_t n, k = 0;
        struct vm **list = vms_collect(m, NULL, NULL, &n);
        char **names = calloc(n + 1, sizeof(*names));

        for (size_t i = 0; names && i < n; i++) {
                size_t j = 0;

                while (j < k && strcmp(names[j], list[i]->account))
                        j++;
                if (j == k && (names[k] = strdup(list[i]->account)))
                        k++;
        }
        vms_release(m, list, n);
        *ret_n = k;
        return names;
}

/* Each account past its own storage limit loses its own sticky VMs,
 * lowest priority and least recently used first; then, past the server's
 * quota, the account that uses the most does. Persistent and ephemeral
 * VMs are never evicted here, nor one account's VMs for another's use. */
static void evict_for_quota(struct vmm *m)
{
        size_t n = 0;
        char **accounts = accounts_with_vms(m, &n);
        int64_t used;

        for (size_t i = 0; accounts && i < n && !m->stopping; i++) {
                struct store_limits l = limits_of(m, accounts[i]);
                struct vm *vm;

                while (l.storage > 0 && (used = account_usage(m, accounts[i])) > l.storage && !m->stopping &&
                       (vm = eviction_pick(m, accounts[i])))
                        if (evict(m, vm, "account storage", used - l.storage, l.storage) < 0)
                                break;
        }
        while (m->cfg.storage_quota > 0 && (used = storage_used(m)) > m->cfg.storage_quota && !m->stopping) {
                const char *heaviest = NULL;
                int64_t most = -1;
                struct vm *vm;

                for (size_t i = 0; accounts && i < n; i++) {
                        int64_t u = account_usage(m, accounts[i]);
                        struct vm *candidate = eviction_pick(m, accounts[i]);

                        if (candidate && u > most) {
                                most = u;
                                heaviest = accounts[i];
                        }
                        if (candidate)
                                vm_put(m, candidate);
                }
                vm = heaviest ? eviction_pick(m, heaviest) : NULL;
                if (!vm) {
                        if (used != m->quota_warned)
                                log_warn("storage: %lld bytes used, over the quota of %lld, and no sticky VM to evict",
                                         (long long)used, (long long)m->cfg.storage_quota);
                        m->quota_warned = used;
                        break;
                }
                if (evict(m, vm, "server storage quota", used - m->cfg.storage_quota, m->cfg.storage_quota) < 0)
                        break;
        }
        for (size_t i = 0; accounts && i < n; i++)
                free(accounts[i]);
        free(accounts);
}

/* ------------------------------------------------------------------ */
/* Last use                                                            */
/* ------------------------------------------------------------------ */

static int used_since_saved(struct vm *vm, void *ud)
{
        (void)ud;
        return vm->last_activity != vm->saved_activity;
}

/* As wall-clock time, so that a restart keeps it. A write that fails is
 * tried again at the next call. */
void activity_save(struct vmm *m)
{
        size_t n;
        struct vm **list = vms_collect(m, used_since_saved, NULL, &n);

        for (size_t i = 0; i < n; i++) {
                struct vm *vm = list[i];
                int64_t last;
                int r;

                pthread_mutex_lock(&m->lock);
                last = vm->last_activity;
                pthread_mutex_unlock(&m->lock);
                r = store_vm_set_last_active(m->store, vm->id, wall_ms() - (now_ms() - last));
                if (r == 0) {
                        pthread_mutex_lock(&m->lock);
                        vm->saved_activity = last;
                        pthread_mutex_unlock(&m->lock);
                } else if (r != -ENOENT) {
                        log_err("vm %s: could not save its last use: %s", vm->id, strerror(-r));
                }
        }
        vms_release(m, list, n);
}

/* ------------------------------------------------------------------ */
/* QEMU exits                                                          */
/* ------------------------------------------------------------------ */

static int is_running(struct vm *vm, void *ud)
{
        (void)ud;
        return vm->state == VM_RUNNING;
}

/* Notices QEMU processes that exit under running VMs (guest shutdown,
 * crash, kill) and updates their state. A VM in a transition is watched
 * by that transition. */
static void exits_check(struct vmm *m)
{
        size_t n;
        struct vm **list = vms_collect(m, is_running, NULL, &n);

        for (size_t i = 0; i < n; i++) {
                struct vm *vm = list[i];

                if (pthread_mutex_trylock(&vm->lock) != 0)
                        continue;
                if (vm->qemu && !qemu_reap(vm->qemu) && !vm->removed) {
                        int frozen = qemu_frozen(vm->qemu) == 1;

                        if (frozen && !vm->frozen_since) {
                                vm->frozen_since = now_ms();
                        } else if (!frozen && vm->frozen_since) {
                                if (now_ms() - vm->frozen_since >= FROZEN_MS)
                                        log_info("vm %s: its QEMU runs again", vm->id);
                                vm->frozen_since = 0;
                        }
                        if (frozen && now_ms() - vm->frozen_since >= FROZEN_MS &&
                            now_ms() - vm->frozen_since < FROZEN_MS + 500)
                                log_warn("vm %s: its QEMU has been stopped for %d ms (SIGSTOP?); requests to it fail"
                                         " until it runs again",
                                         vm->id, FROZEN_MS);
                }
                if (vm->qemu && qemu_reap(vm->qemu) && !vm->removed) {
                        int st = vm->qemu->status;
                        int clean = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;

                        if (st == -1)
                                log_warn("vm %s: QEMU exited (status unknown); state lost", vm->id);
                        else
                                log_warn("vm %s: QEMU exited (%s %d); state %s", vm->id,
                                         WIFSIGNALED(st) ? "signal" : "status",
                                         WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), clean ? "stopped" : "lost");
                        vm_halt(m, vm, 0);
                        vm_set_state(m, vm, clean ? VM_STOPPED : VM_LOST);
                }
                pthread_mutex_unlock(&vm->lock);
        }
        vms_release(m, list, n);
}

/* A guest writes its serial console as fast as it likes: past this a
 * VM's console.log keeps only its last CONSOLE_KEEP bytes, in
 * console.log.1. */
#define CONSOLE_MAX (1 << 20)
#define CONSOLE_KEEP (64 << 10)

static void console_trim(struct vmm *m)
{
        size_t n;
        struct vm **list = vms_collect(m, is_running, NULL, &n);

        for (size_t i = 0; i < n; i++) {
                char path[PATH_MAX], old[PATH_MAX], tail[CONSOLE_KEEP];
                struct stat st;
                ssize_t got;
                int fd;

                if (vm_path(list[i], path, "console.log") < 0 || vm_path(list[i], old, "console.log.1") < 0 ||
                    stat(path, &st) < 0 || st.st_size <= CONSOLE_MAX)
                        continue;
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                got = pread(fd, tail, sizeof(tail), st.st_size - (off_t)sizeof(tail));
                close(fd);
                if (got > 0)
                        write_file_atomic(old, tail, (size_t)got, 0600);
                /* QEMU appends (O_APPEND): it goes on at the new end. */
                if (truncate(path, 0) < 0)
                        log_warn("vm %s: could not trim its console log: %s", list[i]->id, strerror(errno));
        }
        vms_release(m, list, n);
}

/* Free space a VM paused on a full data dir is resumed at: its writes
 * are retried, and it is paused again should they still not fit. */
#define DISK_RESUME_FREE (8LL << 20)
/* Below this much free space in the data dir every running QEMU is asked
 * whether a write paused it at each disk_full_check; above it, only every
 * DISK_SWEEP_ROUNDS checks (about 30 s). */
#define DISK_LOW (2LL << 30)
#define DISK_SWEEP_ROUNDS 15

/* VMs that QEMU paused on a write the full data dir refused
 * (werror=enospc): requests to them answer 507 meanwhile. The data dir's
 * reserve is given up then, and they run on, their writes retried, as
 * soon as the data dir has room. */
static void disk_full_check(struct vmm *m)
{
        size_t n;
        struct vm **list = vms_collect(m, is_running, NULL, &n);
        int any = 0;

        /* Only a full data dir pauses a VM: each QEMU is asked (QMP
         * query-status, which wakes it) only when room is short, when one
         * is paused already, or every DISK_SWEEP_ROUNDS calls for a VM the
         * data dir filled and emptied under between two looks. */
        int64_t free = data_free(m);
        int ask = free >= 0 && free < DISK_LOW;

        for (size_t i = 0; i < n && !ask; i++)
                ask = __atomic_load_n(&list[i]->disk_full, __ATOMIC_RELAXED);
        if (++m->disk_rounds >= DISK_SWEEP_ROUNDS)
                ask = 1;
        if (ask)
                m->disk_rounds = 0;
        for (size_t i = 0; i < n && ask && !m->stopping; i++) {
                struct vm *vm = list[i];
                char status[32];

                if (pthread_mutex_trylock(&vm->lock) != 0)
                        continue;
                if (vm->qemu && !vm->removed && !vm_hung(vm) &&
                    qemu_status(vm->qemu, status, sizeof(status), 1000) == 0) {
                        int full = !strcmp(status, "io-error");

                        /* Requests in flight would wait on a paused guest
                         * until their deadlines: they end now, with 507. */
                        if (full && !vm->disk_full) {
                                /* The flag first: the requests cut short
                                 * read it to answer 507. */
                                log_warn("vm %s: paused: its disk write met a full data dir", vm->id);
                                __atomic_store_n(&vm->disk_full, 1, __ATOMIC_SEQ_CST);
                                agentc_shutdown(vm->agent);
                        }
                        __atomic_store_n(&vm->disk_full, full, __ATOMIC_RELAXED);
                        any |= full;
                }
                pthread_mutex_unlock(&vm->lock);
        }
        reserve_check(m, any);
        for (size_t i = 0; i < n && any && !m->stopping && data_free(m) >= DISK_RESUME_FREE; i++) {
                struct vm *vm = list[i];

                if (!__atomic_load_n(&vm->disk_full, __ATOMIC_RELAXED) || pthread_mutex_trylock(&vm->lock) != 0)
                        continue;
                if (vm->qemu && !vm->removed && vm->disk_full && qemu_cont(vm->qemu, 5000) == 0) {
                        log_info("vm %s: the data dir has room again; resumed", vm->id);
                        __atomic_store_n(&vm->disk_full, 0, __ATOMIC_RELAXED);
                        /* Its link was cut at the pause, and tries made
                         * while it was paused failed: the next request
                         * reconnects at once rather than after a backoff. */
                        vm->agent_retry_at = vm->agent_tried_at = vm->agent_backoff_ms = 0;
                }
                pthread_mutex_unlock(&vm->lock);
        }
        vms_release(m, list, n);
}

static int agent_down(struct vm *vm, void *ud)
{
        (void)ud;
        return vm->state == VM_RUNNING && __atomic_load_n(&vm->agent_down_since, __ATOMIC_RELAXED) != 0;
}

/* Tries the agent links that are down again, as their backoff allows, so
 * that a VM's info shows its agent back without a request to it. A guest
 * that never answers costs this thread a few seconds per try. */
static void agents_retry(struct vmm *m)
{
        size_t n;
        struct vm **list = vms_collect(m, agent_down, NULL, &n);

        for (size_t i = 0; i < n && !m->stopping; i++) {
                struct agentc *a;
                int err;

                if (pthread_mutex_trylock(&list[i]->lock) != 0)
                        continue;
                if (!list[i]->removed && list[i]->qemu && now_ms() >= list[i]->agent_retry_at) {
                        a = vm_agent(m, list[i], 1, &err);
                        agentc_unref(a);
                }
                pthread_mutex_unlock(&list[i]->lock);
        }
        vms_release(m, list, n);
}

void *idle_main(void *arg)
{
        struct vmm *m = arg;

        while (!m->stopping) {
                for (int i = 0; i < 4 && !m->stopping; i++)
                        sleep_ms(500);
                if (!m->stopping)
                        idle_check(m);
                if (!m->stopping)
                        agents_retry(m);
                if (!m->stopping)
                        disk_full_check(m);
        }
        return NULL;
}

void *monitor_main(void *arg)
{
        struct vmm *m = arg;

        for (unsigned tick = 1; !m->stopping; tick++) {
                sleep_ms(500);
                ephemeral_reap(m);
                if (tick % 10 == 0)
                        evict_for_quota(m);
                if (tick % 120 == 0)
                        activity_save(m);
                exits_check(m);
                console_trim(m);
        }
        return NULL;
}

/*
 * vmm_limits: what an account (and the server) may have: VMs, running
 * VMs, their guest memory, snapshots and storage, and the free space the
 * data dir keeps. Admission is counted under m->lock together with the
 * VMs being created, so concurrent creates never overshoot a limit.
 * Depends on the store and util.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct store_limits limits_of(struct vmm *m, const char *account)
{
        struct store_limits own, l = m->cfg.account_limits;

        if (store_account_limits(m->store, account, &own) == 0) {
                if (own.vms >= 0)
                        l.vms = own.vms;
                if (own.running >= 0)
                        l.running = own.running;
                if (own.snapshots >= 0)
                        l.snapshots = own.snapshots;
                if (own.mem_mb >= 0)
                        l.mem_mb = own.mem_mb;
                if (own.storage >= 0)
                        l.storage = own.storage;
        }
        return l;
}

static int of_account(struct vm *vm, void *ud)
{
        return !strcmp(vm->account, ud);
}

static int add_snapshot_usage(const struct store_snapshot *snap, void *ud)
{
        void **ctx = ud;

        if (!snap->deleted)
                *(int64_t *)ctx[1] += vmm_layer_usage(ctx[0], snap->layer);
        return 0;
}

int64_t account_usage(struct vmm *m, const char *account)
{
        int64_t total = 0;
        void *ctx[2] = {m, &total};
        size_t n;
        struct vm **list = vms_collect(m, of_account, (void *)account, &n);

        for (size_t i = 0; i < n; i++)
                total += dir_usage(list[i]->dir, 1);
        vms_release(m, list, n);
        store_snapshot_foreach(m->store, account, add_snapshot_usage, ctx);
        return total;
}

int64_t data_free(struct vmm *m)
{
        struct statvfs st;

        return statvfs(m->data_dir, &st) == 0 ? (int64_t)st.f_bavail * (int64_t)st.f_frsize : -1;
}

int below_reserve(struct vmm *m)
{
        int64_t free = data_free(m);

        return m->cfg.disk_reserve > 0 && free >= 0 && free < m->cfg.disk_reserve;
}

/* The most of the reserve held as a file, and what must be left free
 * beside the file to hold it again. */
#define RESERVE_HELD_MAX (256LL << 20)
#define RESERVE_MARGIN (16LL << 20)

void reserve_check(struct vmm *m, int disk_full)
{
        int64_t held = m->cfg.disk_reserve < RESERVE_HELD_MAX ? m->cfg.disk_reserve : RESERVE_HELD_MAX;
        int64_t free = data_free(m);
        char path[PATH_MAX];
        struct stat st;

        if (held <= 0 || free < 0 || path_fmt(path, sizeof(path), "%s/reserve", m->data_dir) < 0)
                return;
        if (!m->reserve_held && stat(path, &st) == 0 && (int64_t)st.st_blocks * 512 >= held)
                m->reserve_held = 1; /* kept from an earlier run */
        /* Only a running VM's write releases it: a create or fork that
         * runs out of space half way fails and cleans up, and must not
         * spend what the running VMs are to have. */
        if (m->reserve_held && disk_full) {
                if (unlink(path) < 0 && errno != ENOENT) {
                        log_err("could not release the disk reserve %s: %s", path, strerror(errno));
                        return;
                }
                fsync_parent(path);
                m->reserve_held = 0;
                log_warn("the data dir is full: released its %lld MiB reserve so running VMs go on writing",
                         (long long)(held >> 20));
        } else if (!m->reserve_held && !disk_full && free >= held + RESERVE_MARGIN) {
                int r = file_allocate(path, held);

                if (r < 0) {
                        unlink(path);
                        return;
                }
                fsync_path(path);
                fsync_parent(path);
                m->reserve_held = 1;
                log_info("holding %lld MiB of the data dir in reserve for running VMs (%s)", (long long)(held >> 20),
                         path);
        }
}

int storage_admit(struct vmm *m, const char *account)
{
        struct store_limits l;

        if (below_reserve(m))
                return -ENOSPC;
        l = limits_of(m, account);
        if (l.storage > 0 && account_usage(m, account) >= l.storage)
                return -EDQUOT;
        return 0;
}

/* Whether a VM's QEMU runs or is about to. */
static int holds_memory(const struct vm *vm)
{
        return vm->hidden || vm->state == VM_STARTING || vm->state == VM_RUNNING || vm->state == VM_SUSPENDING;
}

int vm_admit(struct vmm *m, const char *account, const struct store_limits *l, int mem_mb, int new,
             const struct vm *except)
{
        int64_t vms = 0, running = 0, mem = 0;

        /* Pooled VMs are no one's, and one of them becomes this VM. */
        if (new && m->nvms - m->npool >= m->cfg.max_vms)
                return -EUSERS;
        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                if (vm == except || strcmp(vm->account, account))
                        continue;
                vms++;
                if (holds_memory(vm)) {
                        running++;
                        mem += vm->mem_mb;
                }
        }
        if (new && l->vms > 0 && vms >= l->vms)
                return -EUSERS;
        if (l->running > 0 && running >= l->running)
                return -EMLINK;
        if (l->mem_mb > 0 && mem + mem_mb > l->mem_mb)
                return -EOVERFLOW;
        return 0;
}

int snapshot_admit(struct vmm *m, const char *account, struct reservation **ret)
{
        struct store_limits l = limits_of(m, account);
        struct reservation *r = calloc(1, sizeof(*r));
        int64_t taken = 0;
        int k;

        if (!r || !(r->account = strdup(account))) {
                free(r);
                return -ENOMEM;
        }
        pthread_mutex_lock(&m->lock);
        k = l.snapshots > 0 ? store_snapshot_count(m->store, account, &taken) : 0;
        for (struct reservation *x = m->snapshots; x; x = x->next)
                taken += !strcmp(x->account, account);
        if (k == 0 && l.snapshots > 0 && taken >= l.snapshots)
                k = -ETOOMANYREFS;
        if (k == 0) {
                r->next = m->snapshots;
                m->snapshots = r;
        }
        pthread_mutex_unlock(&m->lock);
        if (k < 0) {
                free(r->account);
                free(r);
                return k;
        }
        *ret = r;
        return 0;
}

void snapshot_done(struct vmm *m, struct reservation *r)
{
        if (!r)
                return;
        pthread_mutex_lock(&m->lock);
        for (struct reservation **pp = &m->snapshots; *pp; pp = &(*pp)->next) {
                if (*pp == r) {
                        *pp = r->next;
                        break;
                }
        }
        pthread_mutex_unlock(&m->lock);
        free(r->account);
        free(r);
}

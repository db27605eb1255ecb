/*
 * vmm_pool: the warm pool. VMs restored ahead of any request, from the
 * default snapshot (--warm-pool N) and from each snapshot that creates
 * used lately (one VM each, within --warm-pool-memory-mb), and left idle:
 * a create that matches one claims it (a new record for its account, the
 * request's setup, a ping that sets its clock and brings fresh entropy)
 * rather than copying a memory file and starting a QEMU while the client
 * waits. They idle rather than wait paused: under TCG a guest resumed
 * after a pause is busy for about a second (its first two execs took
 * 185 and 300 ms here, against 100 ms from an idle one), and an idle
 * pooled VM costs 0.8% of a core.
 *
 * A pooled VM is a VM like any other in the list, hidden (never found,
 * listed or counted against an account but the pool's own) and marked in
 * its record as a create that never answered, so that a daemon that dies
 * removes it at its next start. Its id was never shown to anyone: the
 * create that claims it answers with it. The pool fills in a thread of its
 * own at low CPU and I/O priority (its QEMUs inherit it until claimed),
 * and only once no create has been in flight for a moment, so that it
 * does not slow the requests in front of it.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define POOL_ACCOUNT "sprout:warm-pool" /* no key can name it: ':' */
#define POOL_QUIET_MS 1000              /* no create for this long before a fill */
#define POOL_WANT_MS (5 * 60 * 1000)    /* a snapshot's pool lasts this long after its last create */
#define POOL_NICE 10
#define POOL_CHECK_MS 5000 /* how often the wanted snapshots are checked */

/* A snapshot creates used lately: it gets a pooled VM. */
struct pool_want {
        char *account, *snapshot_id, *layer;
        int mem_mb, vcpus;
        int64_t used; /* now_ms() */
        struct pool_want *next;
};

void pool_note(struct vmm *m, const char *account, const char *snapshot_id, const char *layer, int mem_mb,
               int vcpus)
{
        struct pool_want *w;

        if (m->cfg.warm_pool_mem_mb <= 0 || !layer)
                return;
        pthread_mutex_lock(&m->lock);
        for (w = m->pool_wants; w; w = w->next)
                if (!strcmp(w->account, account) && !strcmp(w->snapshot_id, snapshot_id))
                        break;
        if (!w && (w = calloc(1, sizeof(*w)))) {
                w->account = strdup(account);
                w->snapshot_id = strdup(snapshot_id);
                w->layer = strdup(layer);
                if (!w->account || !w->snapshot_id || !w->layer) {
                        free(w->account), free(w->snapshot_id), free(w->layer), free(w);
                        w = NULL;
                } else {
                        /* At the end: the pool's thread walks the list
                         * with the lock let go at times (wants_expire). */
                        struct pool_want **pp = &m->pool_wants;

                        while (*pp)
                                pp = &(*pp)->next;
                        *pp = w;
                }
        }
        if (w) {
                w->mem_mb = mem_mb;
                w->vcpus = vcpus;
                w->used = now_ms();
        }
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
}

static void want_free(struct pool_want *w)
{
        free(w->account);
        free(w->snapshot_id);
        free(w->layer);
        free(w);
}

static int same_layer(const char *a, const char *b)
{
        return (!a && !b) || (a && b && !strcmp(a, b));
}

void create_busy(struct vmm *m, int delta)
{
        pthread_mutex_lock(&m->lock);
        m->creating += delta;
        m->create_quiet_at = now_ms() + POOL_QUIET_MS;
        pthread_mutex_unlock(&m->lock);
}

int pool_claim(struct vmm *m, const char *account, const struct store_limits *l, const char *layer,
               int mem_mb, int vcpus, struct vm **ret)
{
        char *owner = strdup(account);
        struct vm *vm;
        int r = 1;

        if (!owner)
                return -ENOMEM;
        pthread_mutex_lock(&m->lock);
        for (vm = m->vms; vm; vm = vm->next)
                if (vm->pooled && same_layer(vm->layer, layer) && vm->mem_mb == mem_mb && vm->vcpus == vcpus)
                        break;
        if (vm) {
                r = vm_admit(m, account, l, mem_mb, 1, NULL);
                if (r == 0) {
                        /* The account's from now on: the next create of
                         * the same account counts it. */
                        free(vm->account);
                        vm->account = owner;
                        owner = NULL;
                        vm->pooled = 0;
                        m->npool--;
                        vm->refs++;
                        *ret = vm;
                        m->pool_hits++;
                }
        } else if (m->cfg.warm_pool_mem_mb > 0) {
                m->pool_misses++;
        }
        pthread_cond_broadcast(&m->cond); /* the pool fills again */
        pthread_mutex_unlock(&m->lock);
        free(owner);
        return r;
}

int pool_adopt(struct vmm *m, struct vm *vm, const struct store_vm *rec)
{
        char *name = rec->name ? strdup(rec->name) : NULL;
        char *workdir = rec->workdir ? strdup(rec->workdir) : NULL;
        char *snap = rec->snapshot_id ? strdup(rec->snapshot_id) : NULL;
        char *build = rec->build_id ? strdup(rec->build_id) : NULL;
        int r = store_vm_claim(m->store, rec);

        if (r == 0 && ((rec->name && !name) || (rec->workdir && !workdir) || (rec->snapshot_id && !snap) ||
                       (rec->build_id && !build)))
                r = -ENOMEM;
        if (r < 0) {
                free(name), free(workdir), free(snap), free(build);
                return r;
        }
        pthread_mutex_lock(&m->lock);
        free(vm->name), free(vm->workdir), free(vm->snapshot_id), free(vm->build_id);
        vm->name = name;
        vm->workdir = workdir;
        vm->snapshot_id = snap;
        vm->build_id = build;
        vm->internal = rec->internal;
        vm->created_at = rec->created_at;
        vm->idle_timeout_s = rec->idle_timeout_s;
        vm->persist = persistence_of(rec);
        vm->error_code = 0; /* the create-in-progress mark is the record's only */
        vm->last_activity = vm->saved_activity = now_ms();
        pthread_mutex_unlock(&m->lock);
        return 0;
}

/* The pooled VMs' memory files' bytes, as far as their size says. */
static int64_t pool_bytes(struct vmm *m)
{
        int64_t mb = 0;

        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm; vm = vm->next)
                if (vm->pooled)
                        mb += vm->mem_mb;
        pthread_mutex_unlock(&m->lock);
        return mb << 20;
}

/* Gives every thread of pid the normal scheduling policy, the nice value
 * nice and the I/O priority that follows from it. */
static void renice(pid_t pid, int nice)
{
        struct sched_param sp = {0};

        char path[64];
        struct dirent *de;
        DIR *d;

        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        d = opendir(path);
        if (!d)
                return;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.') {
                        sched_setscheduler(atoi(de->d_name), SCHED_OTHER, &sp);
                        setpriority(PRIO_PROCESS, (id_t)atoi(de->d_name), nice);
                        syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, atoi(de->d_name), 0);
                }
        closedir(d);
}

int pool_wake(struct vmm *m, struct vm *vm)
{
        (void)m;
        if (!vm->qemu || !vm->agent)
                return -ENOTCONN;
        /* Its QEMU was started by the pool's thread, at the pool's
         * priority: from now on it serves a request. */
        renice(vm->qemu->pid, 0);
        /* The clock set again, fresh entropy, and proof that it lives. */
        return agentc_ping(vm->agent, 10000);
}

/* Makes one pooled VM from layer (NULL: the default snapshot). */
static int pool_fill(struct vmm *m, const char *layer, int mem_mb, int vcpus)
{
        struct vmm_create opts = {.persistence = VM_PERSISTENCE_DEFAULT, .internal = 1};
        char id[21];
        int r = layer_pin(m, layer);

        if (r < 0)
                return r;
        r = create_vm(m, m->pool_account, &opts, layer, mem_mb, vcpus, CREATE_POOL, id, NULL);
        layer_unpin(m, layer);
        return r;
}

/* The pooled VM to let go, with a reference, or NULL: one whose snapshot
 * is no longer wanted, or past the memory budget. m->lock held. */
static struct vm *pool_surplus(struct vmm *m, int64_t budget)
{
        int64_t mem = 0;

        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                int wanted = !vm->layer;

                if (!vm->pooled)
                        continue;
                for (struct pool_want *w = m->pool_wants; w && !wanted; w = w->next)
                        wanted = !strcmp(w->layer, vm->layer);
                mem += vm->mem_mb;
                if (!wanted || mem > budget) {
                        vm->pooled = 0;
                        m->npool--;
                        vm->refs++;
                        return vm;
                }
        }
        return NULL;
}

/* What to fill next: 1 with the layer (malloc'd, NULL for the default
 * snapshot) and size, or 0 when the pool is full. m->lock held. */
static int pool_next(struct vmm *m, int64_t budget, char **ret_layer, int *ret_mem, int *ret_vcpus)
{
        int64_t mem = 0;
        int base = 0;

        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                if (!vm->pooled)
                        continue;
                mem += vm->mem_mb;
                base += !vm->layer;
        }
        if (m->nvms >= m->cfg.max_vms)
                return 0;
        if (base < m->cfg.warm_pool && mem + m->cfg.mem_mb <= budget) {
                *ret_layer = NULL;
                *ret_mem = m->cfg.mem_mb;
                *ret_vcpus = m->cfg.vcpus;
                return 1;
        }
        for (struct pool_want *w = m->pool_wants; w; w = w->next) {
                int have = 0;

                for (struct vm *vm = m->vms; vm && !have; vm = vm->next)
                        have = vm->pooled && vm->layer && !strcmp(vm->layer, w->layer);
                if (!have && mem + w->mem_mb <= budget) {
                        *ret_layer = strdup(w->layer);
                        *ret_mem = w->mem_mb;
                        *ret_vcpus = w->vcpus;
                        return *ret_layer ? 1 : 0;
                }
        }
        return 0;
}

/* Drops the wants of snapshots unused for a while, or gone. */
static void wants_expire(struct vmm *m)
{
        struct pool_want *gone = NULL;

        pthread_mutex_lock(&m->lock);
        for (struct pool_want **pp = &m->pool_wants; *pp;) {
                struct pool_want *w = *pp;

                if (now_ms() - w->used > POOL_WANT_MS) {
                        *pp = w->next;
                        w->next = gone;
                        gone = w;
                } else {
                        pp = &w->next;
                }
        }
        pthread_mutex_unlock(&m->lock);
        while (gone) {
                struct pool_want *w = gone;

                gone = w->next;
                want_free(w);
        }
        /* A snapshot deleted since: its layer is not to be kept alive. */
        pthread_mutex_lock(&m->lock);
        for (struct pool_want **pp = &m->pool_wants; *pp;) {
                struct pool_want *w = *pp;
                struct store_snapshot s = {0};
                int ok;

                pthread_mutex_unlock(&m->lock);
                ok = store_snapshot_get(m->store, w->account, w->snapshot_id, &s) == 0 && !s.deleted &&
                     !strcmp(s.state, "ready");
                store_snapshot_clear(&s);
                pthread_mutex_lock(&m->lock);
                /* Only this thread removes wants: w is still there. */
                if (!ok) {
                        *pp = w->next;
                        want_free(w);
                } else {
                        pp = &w->next;
                }
        }
        pthread_mutex_unlock(&m->lock);
}

void *pool_main(void *arg)
{
        struct vmm *m = arg;
        int64_t budget = m->cfg.warm_pool_mem_mb, checked = 0;
        int failures = 0;

        /* Below the requests, CPU and disk both; the QEMUs it starts
         * inherit this until a create claims them. Not SCHED_IDLE: under
         * load this thread then held the store's shared connection (a
         * read in progress) long enough for other threads' writes to fail
         * with SQLITE_BUSY. */
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), POOL_NICE);
        syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, 3 << 13 /* IOPRIO_CLASS_IDLE */);
        while (!m->stopping) {
                struct vm *extra;
                char *layer = NULL;
                int mem = 0, vcpus = 0, fill = 0, r;
                int64_t wait_ms = failures ? 1000LL << (failures < 6 ? failures : 6) : 1000;

                /* The thread wakes at every state change of any VM: the
                 * store is asked about the wanted snapshots only now and
                 * then, not each time. */
                if (now_ms() - checked >= POOL_CHECK_MS) {
                        wants_expire(m);
                        checked = now_ms();
                }
                pthread_mutex_lock(&m->lock);
                extra = pool_surplus(m, budget);
                if (!extra && m->ready && !m->creating && now_ms() >= m->create_quiet_at)
                        fill = pool_next(m, budget, &layer, &mem, &vcpus);
                if (!extra && !fill && !m->stopping) {
                        struct timespec ts;

                        clock_gettime(CLOCK_REALTIME, &ts);
                        ts.tv_sec += wait_ms / 1000;
                        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
                }
                pthread_mutex_unlock(&m->lock);
                if (extra) {
                        vm_destroy(m, extra);
                        vm_put(m, extra);
                        continue;
                }
                if (!fill || m->stopping)
                        continue;
                /* Disk for clients' VMs comes first: the data dir's reserve,
                 * and the storage quota with the pool's memory files in it. */
                if (below_reserve(m) ||
                    (m->cfg.storage_quota > 0 &&
                     storage_used(m) + pool_bytes(m) + ((int64_t)mem << 20) > m->cfg.storage_quota)) {
                        free(layer);
                        for (int64_t end = now_ms() + 5000; now_ms() < end && !m->stopping;)
                                sleep_ms(100);
                        continue;
                }
                if (!m->pool_account && store_account_ensure(m->store, POOL_ACCOUNT, &m->pool_account) < 0) {
                        failures++;
                        continue;
                }
                r = pool_fill(m, layer, mem, vcpus);
                if (r < 0) {
                        log_warn("warm pool: restoring a VM from %s failed: %s",
                                 layer ? layer : "the default snapshot", strerror(-r));
                        failures++;
                        /* Back off before the next try. */
                        for (int64_t end = now_ms() + wait_ms; now_ms() < end && !m->stopping;)
                                sleep_ms(100);
                } else {
                        failures = 0;
                }
                free(layer);
        }
        return NULL;
}

void pool_drain(struct vmm *m)
{
        for (;;) {
                struct vm *vm;

                pthread_mutex_lock(&m->lock);
                for (vm = m->vms; vm && !vm->pooled; vm = vm->next)
                        ;
                if (vm) {
                        vm->pooled = 0;
                        m->npool--;
                        vm->refs++;
                }
                pthread_mutex_unlock(&m->lock);
                if (!vm)
                        break;
                vm_destroy(m, vm);
                vm_put(m, vm);
        }
        while (m->pool_wants) {
                struct pool_want *w = m->pool_wants;

                m->pool_wants = w->next;
                want_free(w);
        }
        free(m->pool_account);
        m->pool_account = NULL;
}

void pool_stats(struct vmm *m, struct vmm_stats *s)
{
        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                if (!vm->pooled)
                        continue;
                s->pool_vms++;
                s->pool_mem_mb += vm->mem_mb;
        }
        s->pool_hits = m->pool_hits;
        s->pool_misses = m->pool_misses;
}

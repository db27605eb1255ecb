/*
 * vmm: the registry of VMs and the manager's life: VM objects, lookup and
 * locking, state changes, the one iterator over VMs, VM facts for the
 * API, and start-up and shutdown. Depends on the store and util; the
 * other vmm_*.c files hold the transitions. See vmm_int.h for the locks.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* VM objects and lookup                                               */
/* ------------------------------------------------------------------ */

void vm_free(struct vm *vm)
{
        if (!vm)
                return;
        agentc_unref(vm->agent);
        qemu_free(vm->qemu);
        pthread_mutex_destroy(&vm->lock);
        free(vm->account);
        free(vm->name);
        free(vm->workdir);
        free(vm->layer);
        free(vm->snapshot_id);
        free(vm->error);
        free(vm->build_id);
        free(vm);
}

void vm_put(struct vmm *m, struct vm *vm)
{
        int last;

        pthread_mutex_lock(&m->lock);
        last = --vm->refs == 0;
        pthread_mutex_unlock(&m->lock);
        if (last)
                vm_free(vm);
}

struct vm *vm_find(struct vmm *m, const char *account, const char *id)
{
        struct vm *found = NULL;

        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                if (!vm->hidden && !strcmp(vm->id, id) && (!account || !strcmp(vm->account, account))) {
                        vm->refs++;
                        found = vm;
                        break;
                }
        }
        pthread_mutex_unlock(&m->lock);
        return found;
}

void vm_touch(struct vmm *m, struct vm *vm)
{
        pthread_mutex_lock(&m->lock);
        vm->last_activity = now_ms();
        pthread_mutex_unlock(&m->lock);
}

struct vm *vm_lock(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_find(m, account, id);

        if (!vm)
                return NULL;
        pthread_mutex_lock(&vm->lock);
        if (vm->removed) {
                pthread_mutex_unlock(&vm->lock);
                vm_put(m, vm);
                return NULL;
        }
        return vm;
}

void vm_unlock(struct vmm *m, struct vm *vm)
{
        pthread_mutex_unlock(&vm->lock);
        vm_put(m, vm);
}

enum vm_state state_of(struct vmm *m, struct vm *vm)
{
        enum vm_state s;

        pthread_mutex_lock(&m->lock);
        s = vm->state;
        pthread_mutex_unlock(&m->lock);
        return s;
}

void vm_set_state(struct vmm *m, struct vm *vm, enum vm_state s)
{
        int r;

        pthread_mutex_lock(&m->lock);
        vm->state = s;
        if (s == VM_RUNNING)
                random_id(vm->instance, 20);
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        r = store_vm_set_state(m->store, vm->id, vm_state_name(s));
        /* A VM deleted meanwhile has no record left to update. */
        if (r < 0 && r != -ENOENT)
                log_err("vm %s: could not record state %s: %s", vm->id, vm_state_name(s), strerror(-r));
}

void vm_link(struct vmm *m, struct vm *vm)
{
        struct vm **pp;

        for (pp = &m->vms; *pp; pp = &(*pp)->next)
                ;
        *pp = vm;
        m->nvms++;
}

void vm_unlink(struct vmm *m, struct vm *vm)
{
        pthread_mutex_lock(&m->lock);
        for (struct vm **pp = &m->vms; *pp; pp = &(*pp)->next) {
                if (*pp == vm) {
                        *pp = vm->next;
                        vm->removed = 1;
                        m->nvms--;
                        vm->refs--; /* the list's reference */
                        pthread_cond_broadcast(&m->cond);
                        break;
                }
        }
        pthread_mutex_unlock(&m->lock);
}

struct vm **vms_collect(struct vmm *m, int (*want)(struct vm *vm, void *ud), void *ud, size_t *ret_n)
{
        struct vm **list;
        size_t n = 0;

        pthread_mutex_lock(&m->lock);
        list = calloc((size_t)m->nvms + 1, sizeof(*list));
        for (struct vm *vm = m->vms; list && vm; vm = vm->next) {
                if (!vm->hidden && (!want || want(vm, ud))) {
                        vm->refs++;
                        list[n++] = vm;
                }
        }
        pthread_mutex_unlock(&m->lock);
        *ret_n = n;
        return list;
}

void vms_release(struct vmm *m, struct vm **list, size_t n)
{
        for (size_t i = 0; i < n; i++)
                vm_put(m, list[i]);
        free(list);
}

int vm_path(const struct vm *vm, char out[PATH_MAX], const char *name)
{
        return path_fmt(out, PATH_MAX, "%s/%s", vm->dir, name);
}

int image_path(struct vmm *m, char out[PATH_MAX], const char *name)
{
        return path_fmt(out, PATH_MAX, "%s/%s", m->image_dir, name);
}

/* QEMU reopens disk images by name (after a migration, for instance), so
 * a running VM's files are never renamed: each snapshot starts a new file
 * for the VM's active disk, whose name is kept in disk.current. */
static void vm_load_disk_name(struct vm *vm)
{
        char path[PATH_MAX], *name = NULL;

        snprintf(vm->disk, sizeof(vm->disk), "disk.qcow2");
        if (vm_path(vm, path, "disk.current") == 0 && read_file(path, 63, &name, NULL) == 0) {
                name[strcspn(name, "\n")] = 0;
                if (name[0] && !strchr(name, '/'))
                        snprintf(vm->disk, sizeof(vm->disk), "%s", name);
                free(name);
        }
}

/* A record's persistence; what a record cannot say falls back to the
 * default (sticky, priority 5). */
struct vm_persistence persistence_of(const struct store_vm *s)
{
        struct vm_persistence p = VM_PERSISTENCE_DEFAULT;
        int kind = vm_persist_parse(s->persist_kind);

        if (kind >= 0)
                p.kind = (enum vm_persist)kind;
        if (s->persist_priority >= 0 && s->persist_priority <= 10)
                p.priority = s->persist_priority;
        if (s->persist_delete_on && !strcmp(s->persist_delete_on, "stopped"))
                p.delete_on = VM_STOPPED;
        return p;
}

struct vm *vm_alloc(const struct store_vm *s, const char *data_dir)
{
        struct vm *vm = calloc(1, sizeof(*vm));
        int64_t used_at;

        if (!vm)
                return NULL;
        snprintf(vm->id, sizeof(vm->id), "%s", s->id);
        vm->account = strdup(s->account_id);
        vm->name = s->name ? strdup(s->name) : NULL;
        vm->workdir = s->workdir ? strdup(s->workdir) : NULL;
        vm->created_at = s->created_at;
        vm->mem_mb = s->mem_mb;
        vm->vcpus = s->vcpus;
        vm->layer = s->layer ? strdup(s->layer) : NULL;
        vm->snapshot_id = s->snapshot_id ? strdup(s->snapshot_id) : NULL;
        vm->build_id = s->build_id ? strdup(s->build_id) : NULL;
        vm->internal = s->internal;
        vm->error_code = s->error_code;
        vm->error = s->error ? strdup(s->error) : NULL;
        vm->idle_timeout_s = s->idle_timeout_s;
        vm->persist = persistence_of(s);
        /* Use before a restart still counts (idle time, eviction order);
         * a VM whose use was never saved was last used at its creation. */
        vm->last_activity = now_ms();
        used_at = s->last_active_at > 0 ? s->last_active_at : s->created_at;
        if (used_at > 0 && used_at < wall_ms())
                vm->last_activity -= wall_ms() - used_at;
        vm->saved_activity = vm->last_activity;
        vm->pending_mem_mb = s->pending_mem_mb;
        vm->pending_vcpus = s->pending_vcpus;
        vm->uid = (unsigned)s->uid;
        vm->refs = 1; /* the list's */
        pthread_mutex_init(&vm->lock, NULL);
        if (!vm->account || (s->name && !vm->name) || (s->workdir && !vm->workdir) || (s->layer && !vm->layer) ||
            (s->snapshot_id && !vm->snapshot_id) || (s->error && !vm->error) || (s->build_id && !vm->build_id) ||
            path_fmt(vm->dir, sizeof(vm->dir), "%s/vms/%s", data_dir, s->id) < 0) {
                vm_free(vm);
                return NULL;
        }
        vm_load_disk_name(vm);
        return vm;
}

/* ------------------------------------------------------------------ */
/* VM facts                                                            */
/* ------------------------------------------------------------------ */

void vm_fill_info(const struct vm *vm, struct vmm_info *ret)
{
        memcpy(ret->id, vm->id, sizeof(ret->id));
        ret->name = vm->name ? strdup(vm->name) : NULL;
        ret->workdir = vm->workdir ? strdup(vm->workdir) : NULL;
        ret->snapshot_id = vm->snapshot_id ? strdup(vm->snapshot_id) : NULL;
        ret->build_id = vm->build_id ? strdup(vm->build_id) : NULL;
        ret->state = vm->state;
        ret->created_at = vm->created_at;
        ret->mem_mb = vm->mem_mb;
        ret->vcpus = vm->vcpus;
        ret->pending_mem_mb = vm->pending_mem_mb;
        ret->pending_vcpus = vm->pending_vcpus;
        ret->idle_timeout_s = vm->idle_timeout_s;
        memcpy(ret->instance, vm->instance, sizeof(ret->instance));
        memcpy(ret->dir, vm->dir, sizeof(ret->dir));
        ret->error_code = vm->error_code;
        ret->error = vm->error ? strdup(vm->error) : NULL;
        /* Written under vm->lock; a racy read only shows it a moment early
         * or late. */
        ret->agent_down_since = __atomic_load_n(&vm->agent_down_since, __ATOMIC_RELAXED);
        ret->agent_error = __atomic_load_n(&vm->agent_error, __ATOMIC_RELAXED);
}

void vmm_info_clear(struct vmm_info *i)
{
        if (!i)
                return;
        free(i->name);
        free(i->workdir);
        free(i->snapshot_id);
        free(i->error);
        free(i->build_id);
        i->name = i->workdir = i->snapshot_id = i->error = i->build_id = NULL;
}

int vmm_get(struct vmm *m, const char *account, const char *id, struct vmm_info *ret)
{
        struct vm *vm = vm_find(m, account, id);

        if (!vm)
                return -ENOENT;
        pthread_mutex_lock(&m->lock);
        vm_fill_info(vm, ret);
        pthread_mutex_unlock(&m->lock);
        vm_put(m, vm);
        ret->disk_bytes = dir_usage(ret->dir, 1);
        return 0;
}

static int of_account(struct vm *vm, void *ud)
{
        return !strcmp(vm->account, ud);
}

int vmm_list(struct vmm *m, const char *account, int (*fn)(const struct vmm_info *vm, void *ud), void *ud)
{
        size_t n;
        struct vm **list = vms_collect(m, of_account, (void *)account, &n);
        int r = list ? 0 : -ENOMEM;

        for (size_t i = 0; r == 0 && i < n; i++) {
                struct vmm_info info = {0};

                if (list[i]->internal)
                        continue;
                pthread_mutex_lock(&m->lock);
                vm_fill_info(list[i], &info);
                pthread_mutex_unlock(&m->lock);
                info.disk_bytes = dir_usage(info.dir, 1);
                r = fn(&info, ud);
                vmm_info_clear(&info);
        }
        vms_release(m, list, n);
        return r;
}

/* ------------------------------------------------------------------ */
/* The manager                                                         */
/* ------------------------------------------------------------------ */

static int load_vm(const struct store_vm *s, void *ud)
{
        struct vmm *m = ud;
        struct vm *vm = vm_alloc(s, m->data_dir);
        int st = vm_state_parse(s->state);

        if (!vm)
                return -ENOMEM;
        vm->state = st < 0 ? VM_LOST : (enum vm_state)st;
        pthread_mutex_lock(&m->lock);
        vm_link(m, vm);
        pthread_mutex_unlock(&m->lock);
        return 0;
}

int vmm_new(const struct vmm_config *c, struct store *store, struct vmm **ret)
{
        struct vmm *m = calloc(1, sizeof(*m));
        char path[PATH_MAX];
        int r = 0;

        if (!m)
                return -ENOMEM;
        m->cfg = *c;
        m->store = store;
        m->data_dir = strdup(c->data_dir);
        /* The image's real directory, not the "current" link: disk layers
         * name their backing file by this path, and a rebuilt image must
         * never slide in under existing VMs. */
        m->image_dir = realpath(c->image_dir, NULL);
        if (!m->image_dir)
                m->image_dir = strdup(c->image_dir);
        pthread_mutex_init(&m->lock, NULL);
        pthread_mutex_init(&m->layer_lock, NULL);
        pthread_cond_init(&m->cond, NULL);
        snprintf(m->status, sizeof(m->status), "starting");
        if (!m->data_dir || !m->image_dir) {
                r = -ENOMEM;
                goto fail;
        }
        m->cfg.data_dir = m->data_dir;
        m->cfg.image_dir = m->image_dir;
        r = qemu_kernel_cmdline(m->image_dir, m->cmdline, sizeof(m->cmdline));
        if (r < 0)
                goto fail;
        if (path_fmt(path, sizeof(path), "%s/vms", m->data_dir) < 0 || (r = mkdir_p(path, 0700)) < 0 ||
            path_fmt(path, sizeof(path), "%s/snapshots", m->data_dir) < 0 || (r = mkdir_p(path, 0700)) < 0 ||
            path_fmt(path, sizeof(path), "%s/layers", m->data_dir) < 0 || (r = mkdir_p(path, 0700)) < 0 ||
            path_fmt(path, sizeof(path), "%s/jail", m->data_dir) < 0 || (r = mkdir_p(path, 0755)) < 0)
                goto fail;
        if (!c->unconfined && (r = cgroup_setup(&m->cgroups)) < 0) {
                log_err("no cgroup hierarchy with the memory, cpu and pids controllers (%s): VMs cannot be"
                        " limited; --unconfined runs them without, at your own risk",
                        strerror(-r));
                goto fail;
        }
        if (!c->unconfined) {
                char msg[512] = "";

                r = net_new(&c->net, &m->net, msg, sizeof(msg));
                if (r < 0) {
                        log_err("VMs' networks cannot be isolated here: %s (%s); --unconfined gives them user-mode"
                                " networking that reaches the host, at your own risk",
                                msg, strerror(-r));
                        goto fail;
                }
                log_info("VMs are confined: own uids, namespaces, seccomp, cgroup %s limits; guests reach %s and DNS"
                         " at %s, never the host, other VMs, link-local or private ranges",
                         cgroup_version_name(m->cgroups), c->net.egress ? "the internet" : "only the allowed ranges",
                         net_resolver(m->net)[0] ? net_resolver(m->net) : "(none: the host has no resolver they reach)");
        }
        if (!c->unconfined && (r = jail_supported()) < 0) {
                log_err("VMs cannot be confined here (%s): sproutd must run as root; --unconfined runs them"
                        " as this user, unconfined, at your own risk",
                        strerror(-r));
                goto fail;
        }
        r = store_vm_foreach(store, load_vm, m);
        if (r < 0)
                goto fail;
        layers_recover(m);
        *ret = m;
        return 0;
fail:
        vmm_free(m);
        return r < 0 ? r : -ENAMETOOLONG;
}

int vmm_run(struct vmm *m)
{
        int r = pthread_create(&m->bg, NULL, bg_main, m);

        if (r != 0)
                return -r;
        r = pthread_create(&m->monitor, NULL, monitor_main, m);
        if (r != 0) {
                m->stopping = 1;
                pthread_join(m->bg, NULL);
                return -r;
        }
        r = pthread_create(&m->idler, NULL, idle_main, m);
        if (r == 0) {
                r = pthread_create(&m->pooler, NULL, pool_main, m);
                if (r != 0) {
                        m->stopping = 1;
                        pthread_join(m->idler, NULL);
                }
        }
        if (r != 0) {
                m->stopping = 1;
                pthread_join(m->bg, NULL);
                pthread_join(m->monitor, NULL);
                return -r;
        }
        m->threads_started = 1;
        return 0;
}

int vmm_ready(struct vmm *m, char *buf, size_t size)
{
        int ready;

        pthread_mutex_lock(&m->lock);
        ready = m->ready;
        if (buf)
                snprintf(buf, size, "%s", m->status);
        pthread_mutex_unlock(&m->lock);
        return ready;
}

int vmm_image_id(struct vmm *m, char *buf, size_t size)
{
        const char *base;
        int r = 0;

        pthread_mutex_lock(&m->lock);
        base = strrchr(m->base_dir, '/');
        if (!m->ready || !base)
                r = -EAGAIN;
        else
                snprintf(buf, size, "%s", base + 1);
        pthread_mutex_unlock(&m->lock);
        return r;
}

void vmm_free(struct vmm *m)
{
        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        m->stopping = 1;
        /* A cold boot in progress: its guest requests fail at once and it
         * stops its QEMU on the way out. */
        if (m->base_agent)
                agentc_shutdown(m->base_agent);
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        if (m->threads_started) {
                pthread_join(m->bg, NULL);
                pthread_join(m->monitor, NULL);
                pthread_join(m->idler, NULL);
                pthread_join(m->pooler, NULL);
        }
        creates_drain(m);
        /* Pooled VMs are no one's: they do not outlive the daemon. */
        pool_drain(m);
        activity_save(m);
        while (m->snapshots)
                snapshot_done(m, m->snapshots);
        while (m->vms) {
                struct vm *vm = m->vms;

                m->vms = vm->next;
                vm_free(vm);
        }
        net_free(m->net);
        pthread_mutex_destroy(&m->lock);
        pthread_mutex_destroy(&m->layer_lock);
        pthread_cond_destroy(&m->cond);
        free(m->data_dir);
        free(m->image_dir);
        free(m);
}

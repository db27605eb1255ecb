/*
 * vmm: VM lifecycle and guest operations. Depends on qemu, agentc, store
 * and util. Locking: m->lock protects the VM list, every vm's refs and
 * state; vm->lock serialises transitions of one VM (create, delete) and
 * guards its qemu and agent pointers. Lock order: vm->lock, then m->lock.
 * A guest operation holds its own agent reference, never vm->lock, while
 * it waits on the guest, so many run at once.
 */
#include "vmm.h"
#include "util.h"

#include <jansson.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define COLD_BOOT_TIMEOUT_MS (300 * 1000)
#define COLD_BOOT_TRIES 3
#define RESTORE_TIMEOUT_MS (60 * 1000)
#define AGENT_TIMEOUT_MS (60 * 1000)

static const char *const state_names[VM_STATE_COUNT] = {
        "building", "starting", "running", "suspending", "suspended", "stopped", "lost",
};

const char *vm_state_name(enum vm_state s)
{
        return s < VM_STATE_COUNT ? state_names[s] : "lost";
}

int vm_state_parse(const char *name)
{
        for (int i = 0; i < VM_STATE_COUNT; i++)
                if (!strcmp(name, state_names[i]))
                        return i;
        return -1;
}

struct vm {
        char id[21];
        char *account;
        char *name;
        char *workdir;
        int64_t created_at;
        int mem_mb;
        int vcpus;
        char *layer;         /* layer its disk sits on, NULL: default snapshot; under lock */
        char *snapshot_id;   /* the snapshot it was created from, or NULL */
        char instance[21];   /* changes on every start or resume; under m->lock */
        char disk[64];       /* file name of its active disk in dir; under lock */
        int64_t idle_timeout_s; /* suspend after this long without activity; 0: never */
        int64_t last_activity;  /* now_ms() of the last API request or guest traffic; under m->lock */
        int64_t saved_activity; /* last_activity as last written to the store; under m->lock */
        uint64_t net_bytes;     /* guest interface byte counters at the last look; under lock */
        int pending_mem_mb;     /* applied at the next cold start; 0: none; under lock */
        int pending_vcpus;
        enum { PERSIST_STICKY, PERSIST_EPHEMERAL, PERSIST_PERSISTENT } persist;
        int priority;            /* sticky: 0..10, higher is evicted later */
        enum vm_state delete_on; /* ephemeral: delete on reaching this state */
        enum vm_state state; /* under m->lock */
        int refs;            /* under m->lock */
        int removed;         /* unlinked from the list; under m->lock */
        char dir[PATH_MAX];
        pthread_mutex_t lock;
        struct qemu *qemu;    /* under lock */
        struct agentc *agent; /* under lock */
        /* Create-time setup in progress: the thread running it (which holds
         * lock throughout) and its own reference to the agent; under
         * m->lock. */
        int in_setup;
        pthread_t setup_thread;
        struct agentc *setup_agent;
        char *error; /* why a background create failed (JSON text); set under lock and m->lock */
        int doomed;  /* a delete waits for lock: no setup may begin; under m->lock */
        struct vm *next;
};

struct vmm {
        struct vmm_config cfg;
        char *data_dir;
        char *image_dir;
        struct store *store;
        pthread_mutex_t lock;
        pthread_cond_t cond; /* a VM's state changed */
        /* Held across the layer GC and across recording a new layer and the
         * VM's move onto it, so the GC never sees one without the other. */
        pthread_mutex_t layer_lock;
        struct vm *vms; /* creation order */
        int nvms;
        /* default snapshot */
        char base_dir[PATH_MAX];
        char cmdline[4096]; /* guest kernel command line, made once at start */
        int ready;
        int stopping;
        char status[512];
        pthread_t bg;
        pthread_t monitor;
        int threads_started;
        int64_t quota_warned; /* usage last warned about; monitor thread only */
        int creates; /* background creates still running; under lock */
};

/* ------------------------------------------------------------------ */
/* VM objects and lookup                                               */
/* ------------------------------------------------------------------ */

static void vm_free(struct vm *vm)
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
        free(vm);
}

static void vm_put(struct vmm *m, struct vm *vm)
{
        int last;

        pthread_mutex_lock(&m->lock);
        last = --vm->refs == 0;
        pthread_mutex_unlock(&m->lock);
        if (last)
                vm_free(vm);
}

/* Finds a VM of account (any account when NULL) and takes a reference. */
static struct vm *vm_get(struct vmm *m, const char *account, const char *id)
{
        struct vm *found = NULL;

        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                if (!strcmp(vm->id, id) && (!account || !strcmp(vm->account, account))) {
                        vm->refs++;
                        vm->last_activity = now_ms();
                        found = vm;
                        break;
                }
        }
        pthread_mutex_unlock(&m->lock);
        return found;
}

static void vm_set_state(struct vmm *m, struct vm *vm, enum vm_state s)
{
        pthread_mutex_lock(&m->lock);
        vm->state = s;
        if (s == VM_RUNNING)
                random_id(vm->instance, 20);
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        store_vm_set_state(m->store, vm->id, vm_state_name(s));
}

static void vm_unlink(struct vmm *m, struct vm *vm)
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

static void fill_info(const struct vm *vm, struct vmm_info *ret)
{
        memcpy(ret->id, vm->id, sizeof(ret->id));
        ret->name = vm->name ? strdup(vm->name) : NULL;
        ret->workdir = vm->workdir ? strdup(vm->workdir) : NULL;
        ret->snapshot_id = vm->snapshot_id ? strdup(vm->snapshot_id) : NULL;
        ret->state = vm->state;
        ret->created_at = vm->created_at;
        ret->mem_mb = vm->mem_mb;
        ret->vcpus = vm->vcpus;
        ret->pending_mem_mb = vm->pending_mem_mb;
        ret->pending_vcpus = vm->pending_vcpus;
        ret->idle_timeout_s = vm->idle_timeout_s;
        memcpy(ret->instance, vm->instance, sizeof(ret->instance));
        memcpy(ret->dir, vm->dir, sizeof(ret->dir));
        ret->error = vm->error ? strdup(vm->error) : NULL;
}

void vmm_info_clear(struct vmm_info *i)
{
        if (!i)
                return;
        free(i->name);
        free(i->workdir);
        free(i->snapshot_id);
        free(i->error);
        i->name = i->workdir = i->snapshot_id = i->error = NULL;
}

int vmm_get(struct vmm *m, const char *account, const char *id, struct vmm_info *ret)
{
        int r = -ENOENT;

        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                if (!strcmp(vm->id, id) && !strcmp(vm->account, account)) {
                        vm->last_activity = now_ms();
                        fill_info(vm, ret);
                        r = 0;
                        break;
                }
        }
        pthread_mutex_unlock(&m->lock);
        if (r == 0)
                ret->disk_bytes = dir_usage(ret->dir, 1);
        return r;
}

int vmm_list(struct vmm *m, const char *account, int (*fn)(const struct vmm_info *vm, void *ud), void *ud)
{
        struct vmm_info *infos = NULL;
        size_t n = 0;
        int r = 0;

        /* Copy under the lock, call back without it. */
        pthread_mutex_lock(&m->lock);
        infos = calloc((size_t)m->nvms + 1, sizeof(*infos));
        if (infos)
                for (struct vm *vm = m->vms; vm; vm = vm->next)
                        if (!strcmp(vm->account, account))
                                fill_info(vm, &infos[n++]);
        pthread_mutex_unlock(&m->lock);
        if (!infos)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                infos[i].disk_bytes = dir_usage(infos[i].dir, 1);
                if (r == 0)
                        r = fn(&infos[i], ud);
                vmm_info_clear(&infos[i]);
        }
        free(infos);
        return r;
}

/* ------------------------------------------------------------------ */
/* QEMU configuration                                                  */
/* ------------------------------------------------------------------ */

static int image_path(struct vmm *m, char *out, const char *name)
{
        return path_fmt(out, PATH_MAX, "%s/%s", m->image_dir, name);
}

/* ------------------------------------------------------------------ */
/* Default snapshot                                                    */
/* ------------------------------------------------------------------ */

static void set_status(struct vmm *m, const char *fmt, const char *arg)
{
        pthread_mutex_lock(&m->lock);
        snprintf(m->status, sizeof(m->status), fmt, arg);
        pthread_mutex_unlock(&m->lock);
}

/* Waits for a freshly booted guest's agent: connects, then pings until it
 * answers, the deadline passes or QEMU dies. */
static int wait_agent(struct qemu *q, const char *sock, int64_t deadline, struct agentc **ret)
{
        struct agentc *a = NULL;
        int r;

        r = agentc_connect(sock, 10000, &a);
        if (r < 0)
                return r;
        for (;;) {
                r = agentc_ping(a, 1000);
                if (r == 0) {
                        *ret = a;
                        return 0;
                }
                if (qemu_reap(q)) {
                        r = -ECHILD;
                        break;
                }
                if (now_ms() >= deadline) {
                        r = -ETIMEDOUT;
                        break;
                }
                if (!agentc_alive(a))
                        break;
        }
        agentc_unref(a);
        return r;
}

/* Runs a shell command in the guest and returns its exit code (or -errno). */
static int guest_run(struct agentc *a, const char *cmd, int64_t timeout_ms)
{
        struct proto_buf b = {0};
        struct agentc_reply rep = {0};
        uint32_t code = 0, err = 0;
        int r;

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_EXEC);
        proto_put_str(&b, PROTO_TAG_CMD, cmd);
        proto_put_u64(&b, PROTO_TAG_TIMEOUT_MS, (uint64_t)timeout_ms);
        r = agentc_request(a, &b, NULL, 0, 1 << 20, timeout_ms + 5000, &rep);
        proto_buf_free(&b);
        if (r < 0)
                return r;
        if (proto_get_u32(rep.result, rep.result_len, PROTO_TAG_ERRNO, &err) == 0 && err)
                r = -(int)err;
        else if (proto_get_u32(rep.result, rep.result_len, PROTO_TAG_EXIT_CODE, &code) == 0)
                r = (int)code;
        else
                r = -EBADMSG;
        agentc_reply_free(&rep);
        return r;
}

/* One cold boot of the base image in dir, ending with a saved snapshot:
 * device state in dir/state, RAM in dir/mem, disk in dir/disk.qcow2. */
static int cold_boot_snapshot(struct vmm *m, const char *dir)
{
        char disk[PATH_MAX], mem[PATH_MAX], state[PATH_MAX], sock[PATH_MAX], rootfs[PATH_MAX];
        char kernel[PATH_MAX], initrd[PATH_MAX], log[PATH_MAX];
        struct qemu *q = NULL;
        struct agentc *a = NULL;
        int64_t t0 = now_ms();
        int r;

        if (path_fmt(disk, sizeof(disk), "%s/disk.qcow2", dir) < 0 ||
            path_fmt(mem, sizeof(mem), "%s/mem", dir) < 0 || path_fmt(state, sizeof(state), "%s/state", dir) < 0 ||
            path_fmt(sock, sizeof(sock), "%s/agent.sock", dir) < 0 ||
            path_fmt(log, sizeof(log), "%s/qemu-img.log", dir) < 0 || image_path(m, rootfs, "rootfs.img") < 0 ||
            image_path(m, kernel, "vmlinuz") < 0 || image_path(m, initrd, "initrd.img") < 0)
                return -ENAMETOOLONG;
        if (access(rootfs, R_OK) < 0 || access(kernel, R_OK) < 0 || access(initrd, R_OK) < 0)
                return -ENOENT;
        {
                char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", rootfs, disk, NULL};

                r = run_wait(argv, log);
                if (r != 0)
                        return r < 0 ? r : -EIO;
        }
        struct qemu_config c = {
                .dir = dir,
                .kernel = kernel,
                .initrd = initrd,
                .cmdline = m->cmdline,
                .disk = disk,
                .mem_path = mem,
                .mem_shared = 1,
                .mem_mb = m->cfg.mem_mb,
                .vcpus = m->cfg.vcpus,
                .accel = m->cfg.accel,
        };
        r = qemu_spawn(&c, 10000, &q);
        if (r < 0)
                return r;
        r = wait_agent(q, sock, now_ms() + COLD_BOOT_TIMEOUT_MS, &a);
        if (r < 0)
                goto out;
        log_info("default snapshot: agent answered %lld ms after QEMU start", (long long)(now_ms() - t0));
        /* Snapshot a settled system: boot finished (or failed units are
         * known), and the disk layer holds everything written so far. */
        r = guest_run(a, "systemctl is-system-running --wait >/dev/null 2>&1; sync", 180000);
        if (r < 0)
                goto out;
        r = qemu_save(q, state, 60000);
        if (r < 0)
                goto out;
        log_info("default snapshot: saved %lld ms after QEMU start", (long long)(now_ms() - t0));
out:
        agentc_unref(a);
        qemu_stop(q, 5000);
        qemu_free(q);
        return r;
}

static int snapshot_key(struct vmm *m, char *out, size_t size)
{
        char real[PATH_MAX];
        const char *base;

        if (!realpath(m->image_dir, real))
                return -errno;
        base = strrchr(real, '/');
        base = base ? base + 1 : real;
        return path_fmt(out, size, "base-%s-%s-%dm-%dc", base, qemu_accel_name(m->cfg.accel), m->cfg.mem_mb,
                        m->cfg.vcpus);
}

/* Makes sure the default snapshot exists, cold-booting the image to make it.
 * The snapshot directory appears under its final name only when complete. */
static int ensure_base(struct vmm *m)
{
        char key[256], dir[PATH_MAX], tmp[PATH_MAX], marker[PATH_MAX];
        int r;

        r = snapshot_key(m, key, sizeof(key));
        if (r < 0) {
                set_status(m, "guest image not found at %s (run `make image`)", m->image_dir);
                return r;
        }
        if (path_fmt(dir, sizeof(dir), "%s/snapshots/%s", m->data_dir, key) < 0 ||
            path_fmt(tmp, sizeof(tmp), "%s/snapshots/.tmp-%s", m->data_dir, key) < 0 ||
            path_fmt(marker, sizeof(marker), "%s/ready", dir) < 0)
                return -ENAMETOOLONG;
        memcpy(m->base_dir, dir, sizeof(dir));
        if (access(marker, F_OK) == 0)
                return 0;
        for (int attempt = 1; attempt <= COLD_BOOT_TRIES && !m->stopping; attempt++) {
                set_status(m, "making the default snapshot: cold-booting the guest (%s)", key);
                log_info("default snapshot %s: cold boot, attempt %d of %d, accelerator %s", key, attempt,
                         COLD_BOOT_TRIES, qemu_accel_name(m->cfg.accel));
                rm_rf(tmp);
                r = mkdir_p(tmp, 0700);
                if (r == 0)
                        r = cold_boot_snapshot(m, tmp);
                if (r == 0) {
                        char tmp_marker[PATH_MAX];

                        rm_rf(dir);
                        if (path_fmt(tmp_marker, sizeof(tmp_marker), "%s/ready", tmp) < 0)
                                return -ENAMETOOLONG;
                        r = write_file_atomic(tmp_marker, "ok\n", 3, 0644);
                        if (r == 0 && rename(tmp, dir) < 0)
                                r = -errno;
                        if (r == 0)
                                return 0;
                }
                log_warn("default snapshot %s: attempt %d failed: %s (serial log: %s/console.log)", key, attempt,
                         strerror(-r), tmp);
        }
        set_status(m, "could not make the default snapshot: %s; see the daemon log", strerror(-r));
        return r;
}

/* ------------------------------------------------------------------ */
/* Start-up, re-attach and monitoring                                  */
/* ------------------------------------------------------------------ */

/* QEMU reopens disk images by name (after a migration, for instance), so
 * a running VM's files are never renamed: each snapshot starts a new file
 * for the VM's active disk, whose name is kept in disk.current. */
static void vm_load_disk_name(struct vm *vm)
{
        char path[PATH_MAX], *name = NULL;

        snprintf(vm->disk, sizeof(vm->disk), "disk.qcow2");
        if (path_fmt(path, sizeof(path), "%s/disk.current", vm->dir) == 0 && read_file(path, 63, &name, NULL) == 0) {
                name[strcspn(name, "\n")] = 0;
                if (name[0] && !strchr(name, '/'))
                        snprintf(vm->disk, sizeof(vm->disk), "%s", name);
                free(name);
        }
}

/* Reads the persistence JSON kept with the VM. Default: sticky, priority 5.
 * Ephemeral VMs go when they stop ("OnStop") or suspend ("OnSuspend", the
 * default, so an idle timeout ends them). */
static void vm_parse_persistence(struct vm *vm, const char *text)
{
        json_t *j = text ? json_loads(text, 0, NULL) : NULL;
        const char *type = json_string_value(json_object_get(j, "type"));
        const char *ev = json_string_value(json_object_get(j, "deleteEvent"));
        json_t *prio = json_object_get(j, "priority");

        vm->persist = PERSIST_STICKY;
        vm->priority = 5;
        vm->delete_on = VM_SUSPENDED;
        if (type && !strcmp(type, "ephemeral"))
                vm->persist = PERSIST_EPHEMERAL;
        else if (type && !strcmp(type, "persistent"))
                vm->persist = PERSIST_PERSISTENT;
        if (json_is_integer(prio) && json_integer_value(prio) >= 0 && json_integer_value(prio) <= 10)
                vm->priority = (int)json_integer_value(prio);
        if (ev && !strcmp(ev, "OnStop"))
                vm->delete_on = VM_STOPPED;
        json_decref(j);
}

static struct vm *vm_alloc(const struct store_vm *s, const char *data_dir)
{
        struct vm *vm = calloc(1, sizeof(*vm));

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
        vm->error = s->error ? strdup(s->error) : NULL;
        vm->idle_timeout_s = s->idle_timeout_s;
        vm_parse_persistence(vm, s->persistence);
        vm->last_activity = now_ms();
        /* Use before a restart still counts (idle time, eviction order);
         * a VM whose use was never saved was last used at its creation. */
        int64_t used_at = s->last_active_at > 0 ? s->last_active_at : s->created_at;

        if (used_at > 0 && used_at < wall_ms())
                vm->last_activity -= wall_ms() - used_at;
        vm->saved_activity = vm->last_activity;
        vm->pending_mem_mb = s->pending_mem_mb;
        vm->pending_vcpus = s->pending_vcpus;
        vm->refs = 1; /* the list's */
        pthread_mutex_init(&vm->lock, NULL);
        if (!vm->account || (s->name && !vm->name) || (s->workdir && !vm->workdir) || (s->layer && !vm->layer) ||
            (s->snapshot_id && !vm->snapshot_id) ||
            path_fmt(vm->dir, sizeof(vm->dir), "%s/vms/%s", data_dir, s->id) < 0) {
                vm_free(vm);
                return NULL;
        }
        vm_load_disk_name(vm);
        return vm;
}

static void vm_link(struct vmm *m, struct vm *vm)
{
        struct vm **pp;

        pthread_mutex_lock(&m->lock);
        for (pp = &m->vms; *pp; pp = &(*pp)->next)
                ;
        *pp = vm;
        m->nvms++;
        pthread_mutex_unlock(&m->lock);
}

static int vm_path(const struct vm *vm, char out[PATH_MAX], const char *name)
{
        return path_fmt(out, PATH_MAX, "%s/%s", vm->dir, name);
}

/* Takes back a VM that was running when the daemon last stopped. */
static void reattach(struct vmm *m, struct vm *vm)
{
        char sock[PATH_MAX];
        struct qemu *q = NULL;
        struct agentc *a = NULL;
        int r;

        pthread_mutex_lock(&vm->lock);
        r = qemu_attach(vm->dir, 2000, &q);
        /* A daemon killed in the middle of a snapshot or suspend leaves the
         * guest paused: let it run again (a no-op for a running guest). */
        /* A create the daemon died in: its setup may be half done. */
        if (r == 0 && vm->error)
                r = -ECANCELED;
        if (r == 0)
                qemu_cont(q, 2000);
        if (r == 0 && path_fmt(sock, sizeof(sock), "%s/agent.sock", vm->dir) == 0) {
                r = agentc_connect(sock, 2000, &a);
                if (r == 0)
                        r = agentc_ping(a, 10000);
        }
        if (r == 0) {
                vm->qemu = q;
                vm->agent = a;
                vm_set_state(m, vm, VM_RUNNING);
                log_info("vm %s: re-attached to QEMU pid %d", vm->id, (int)q->pid);
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
                vm_set_state(m, vm, suspended ? VM_SUSPENDED : VM_STOPPED);
                if (r == -ECANCELED)
                        log_warn("vm %s: the daemon stopped during its create; marked stopped, disk kept", vm->id);
                else
                        log_warn("vm %s: could not re-attach after restart (%s); marked %s, disk kept", vm->id,
                                 strerror(-r), suspended ? "suspended" : "stopped");
        }
        pthread_mutex_unlock(&vm->lock);
}

static int load_vm(const struct store_vm *s, void *ud)
{
        struct vmm *m = ud;
        struct vm *vm = vm_alloc(s, m->data_dir);
        int st = vm_state_parse(s->state);

        if (!vm)
                return -ENOMEM;
        vm->state = st < 0 ? VM_LOST : (enum vm_state)st;
        vm_link(m, vm);
        return 0;
}

static void *bg_main(void *arg)
{
        struct vmm *m = arg;
        struct vm *vm;

        /* VMs that were running (or half-way through a transition) when the
         * daemon stopped: take them back or mark them. The list is taken
         * once, as re-attached VMs become running again. */
        struct vm **pending;
        size_t n = 0;

        pthread_mutex_lock(&m->lock);
        pending = calloc((size_t)m->nvms + 1, sizeof(*pending));
        for (vm = m->vms; pending && vm; vm = vm->next) {
                if (vm->state == VM_RUNNING || vm->state == VM_STARTING || vm->state == VM_BUILDING ||
                    vm->state == VM_SUSPENDING) {
                        vm->state = VM_STARTING;
                        vm->refs++;
                        pending[n++] = vm;
                }
        }
        pthread_mutex_unlock(&m->lock);
        for (size_t i = 0; i < n; i++) {
                reattach(m, pending[i]);
                vm_put(m, pending[i]);
        }
        free(pending);
        if (ensure_base(m) == 0) {
                pthread_mutex_lock(&m->lock);
                m->ready = 1;
                snprintf(m->status, sizeof(m->status), "ready");
                pthread_mutex_unlock(&m->lock);
                log_info("ready: default snapshot %s", m->base_dir);
        }
        return NULL;
}

/* Notices QEMU processes that exit under running VMs (guest shutdown,
 * crash, kill) and updates their state within half a second. */
/* Sum of the guest's network byte counters (all interfaces but lo), read
 * from /proc/net/dev through the agent, which starts no process. */
static int guest_net_bytes(struct agentc *a, uint64_t *ret)
{
        struct proto_buf b = {0};
        struct agentc_reply rep = {0};
        uint64_t total = 0;
        char *text, *line, *save = NULL;
        int r;

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_READ);
        proto_put_str(&b, PROTO_TAG_PATH, "/proc/net/dev");
        r = agentc_request(a, &b, NULL, 0, 64 * 1024, 5000, &rep);
        proto_buf_free(&b);
        if (r < 0)
                return r;
        text = strndup(rep.data.data ? (char *)rep.data.data : "", rep.data.len);
        agentc_reply_free(&rep);
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

static int vm_suspend(struct vmm *m, struct vm *vm);

/* Suspends VMs idle for longer than their idleTimeoutSeconds: no API
 * request for them and no guest network traffic. */
static void idle_check(struct vmm *m)
{
        struct vm *list[256];
        int n = 0;

        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm && n < 256; vm = vm->next) {
                if (vm->state == VM_RUNNING && vm->idle_timeout_s > 0) {
                        vm->refs++;
                        list[n++] = vm;
                }
        }
        pthread_mutex_unlock(&m->lock);
        for (int i = 0; i < n; i++) {
                struct vm *vm = list[i];
                uint64_t bytes;
                int64_t idle_ms;

                if (pthread_mutex_trylock(&vm->lock) == 0) {
                        if (vm->agent && guest_net_bytes(vm->agent, &bytes) == 0 && bytes != vm->net_bytes) {
                                vm->net_bytes = bytes;
                                pthread_mutex_lock(&m->lock);
                                vm->last_activity = now_ms();
                                pthread_mutex_unlock(&m->lock);
                        }
                        pthread_mutex_lock(&m->lock);
                        idle_ms = now_ms() - vm->last_activity;
                        pthread_mutex_unlock(&m->lock);
                        if (vm->qemu && !vm->removed && idle_ms > vm->idle_timeout_s * 1000) {
                                log_info("vm %s: idle for %lld s; suspending", vm->id, (long long)(idle_ms / 1000));
                                vm_suspend(m, vm);
                        }
                        pthread_mutex_unlock(&vm->lock);
                }
                vm_put(m, vm);
        }
}

/* Deletes ephemeral VMs that reached their delete event. */
static void ephemeral_reap(struct vmm *m)
{
        char ids[64][21], accounts[64][64];
        int n = 0;

        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm && n < 64; vm = vm->next) {
                int gone = vm->state == VM_STOPPED || vm->state == VM_LOST ||
                           (vm->delete_on == VM_SUSPENDED && vm->state == VM_SUSPENDED);

                if (vm->persist == PERSIST_EPHEMERAL && gone && strlen(vm->account) < 64) {
                        memcpy(ids[n], vm->id, 21);
                        snprintf(accounts[n], 64, "%s", vm->account);
                        n++;
                }
        }
        pthread_mutex_unlock(&m->lock);
        for (int i = 0; i < n; i++) {
                log_info("vm %s: ephemeral and %s; deleting", ids[i], "no longer running");
                vmm_delete(m, accounts[i], ids[i]);
        }
}

static int64_t storage_used(struct vmm *m)
{
        char path[PATH_MAX];
        int64_t total = 0;

        if (path_fmt(path, sizeof(path), "%s/vms", m->data_dir) == 0)
                total += dir_usage(path, 1);
        /* The default snapshot is the server's own fixed cost: not counted. */
        if (path_fmt(path, sizeof(path), "%s/layers", m->data_dir) == 0)
                total += dir_usage(path, 0);
        return total;
}

/* Over the storage quota, deletes sticky VMs: lowest priority first, then
 * the least recently used. Persistent and ephemeral VMs are never evicted
 * here. */
static void evict_for_quota(struct vmm *m)
{
        int64_t used;

        while (m->cfg.storage_quota > 0 && (used = storage_used(m)) > m->cfg.storage_quota && !m->stopping) {
                struct vm *pick = NULL;
                char id[21], account[64];

                pthread_mutex_lock(&m->lock);
                for (struct vm *vm = m->vms; vm; vm = vm->next) {
                        if (vm->persist != PERSIST_STICKY || vm->state == VM_STARTING || vm->state == VM_SUSPENDING)
                                continue;
                        if (!pick || vm->priority < pick->priority ||
                            (vm->priority == pick->priority && vm->last_activity < pick->last_activity))
                                pick = vm;
                }
                if (pick) {
                        memcpy(id, pick->id, 21);
                        snprintf(account, sizeof(account), "%s", pick->account);
                }
                pthread_mutex_unlock(&m->lock);
                if (!pick) {
                        if (used == m->quota_warned)
                                return;
                        m->quota_warned = used;
                        log_warn("storage: %lld bytes used, over the quota of %lld, and no sticky VM to evict",
                                 (long long)used, (long long)m->cfg.storage_quota);
                        return;
                }
                log_info("vm %s: evicted (storage %lld bytes over the quota of %lld; least recently used sticky VM)",
                         id, (long long)(used - m->cfg.storage_quota), (long long)m->cfg.storage_quota);
                vmm_delete(m, account, id);
        }
}

/* Writes the last use of the VMs used since the last call to the store,
 * as wall-clock time, so that a restart keeps it. */
static void activity_save(struct vmm *m)
{
        struct {
                char id[21];
                int64_t at;
        } list[256];
        int n = 0;

        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm && n < 256; vm = vm->next) {
                if (vm->last_activity == vm->saved_activity)
                        continue;
                vm->saved_activity = vm->last_activity;
                memcpy(list[n].id, vm->id, 21);
                list[n++].at = wall_ms() - (now_ms() - vm->last_activity);
        }
        pthread_mutex_unlock(&m->lock);
        for (int i = 0; i < n; i++)
                store_vm_set_last_active(m->store, list[i].id, list[i].at);
}

static void *monitor_main(void *arg)
{
        struct vmm *m = arg;

        for (unsigned tick = 1; !m->stopping; tick++) {
                struct vm *list[256];
                int n = 0;

                sleep_ms(500);
                if (tick % 4 == 0)
                        idle_check(m);
                ephemeral_reap(m);
                if (tick % 10 == 0)
                        evict_for_quota(m);
                if (tick % 120 == 0)
                        activity_save(m);
                pthread_mutex_lock(&m->lock);
                for (struct vm *vm = m->vms; vm && n < 256; vm = vm->next) {
                        if (vm->state == VM_RUNNING) {
                                vm->refs++;
                                list[n++] = vm;
                        }
                }
                pthread_mutex_unlock(&m->lock);
                for (int i = 0; i < n; i++) {
                        struct vm *vm = list[i];

                        /* A VM in a transition is watched by that transition. */
                        if (pthread_mutex_trylock(&vm->lock) == 0) {
                                if (vm->qemu && qemu_reap(vm->qemu) && !vm->removed) {
                                        int st = vm->qemu->status;
                                        int clean = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;

                                        if (st == -1)
                                                log_warn("vm %s: QEMU exited (status unknown); state lost", vm->id);
                                        else
                                                log_warn("vm %s: QEMU exited (%s %d); state %s", vm->id,
                                                         WIFSIGNALED(st) ? "signal" : "status",
                                                         WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
                                                         clean ? "stopped" : "lost");
                                        agentc_shutdown(vm->agent);
                                        agentc_unref(vm->agent);
                                        vm->agent = NULL;
                                        qemu_free(vm->qemu);
                                        vm->qemu = NULL;
                                        vm_set_state(m, vm, clean ? VM_STOPPED : VM_LOST);
                                }
                                pthread_mutex_unlock(&vm->lock);
                        }
                        vm_put(m, vm);
                }
        }
        return NULL;
}

static void layers_recover(struct vmm *m);

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
            path_fmt(path, sizeof(path), "%s/layers", m->data_dir) < 0 || (r = mkdir_p(path, 0700)) < 0)
                goto fail;
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

static void creates_drain(struct vmm *m);

void vmm_free(struct vmm *m)
{
        if (!m)
                return;
        m->stopping = 1;
        if (m->threads_started) {
                /* A cold boot in progress is abandoned by the process exit;
                 * do not wait minutes for it. */
                pthread_cancel(m->bg);
                pthread_join(m->bg, NULL);
                pthread_join(m->monitor, NULL);
        }
        creates_drain(m);
        activity_save(m);
        while (m->vms) {
                struct vm *vm = m->vms;

                m->vms = vm->next;
                vm_free(vm);
        }
        pthread_mutex_destroy(&m->lock);
        pthread_mutex_destroy(&m->layer_lock);
        pthread_cond_destroy(&m->cond);
        free(m->data_dir);
        free(m->image_dir);
        free(m);
}

/* ------------------------------------------------------------------ */
/* Booting, saving and layers                                          */
/* ------------------------------------------------------------------ */

/* A layer's directory; NULL names the default snapshot. */
static int layer_path(struct vmm *m, const char *layer, char out[PATH_MAX], const char *name)
{
        if (!layer)
                return path_fmt(out, PATH_MAX, "%s/%s", m->base_dir, name);
        return path_fmt(out, PATH_MAX, "%s/layers/%s/%s", m->data_dir, layer, name);
}

static void vm_prune_disks(struct vm *vm);

/* Spawns QEMU for vm on its own disk and memory file, either loading the
 * device state at state_path or, when it is NULL, cold-booting the kernel,
 * then waits for the agent. Sets vm->qemu and vm->agent. vm->lock held. */
static int vm_boot(struct vmm *m, struct vm *vm, const char *state_path)
{
        char disk[PATH_MAX], mem[PATH_MAX], sock[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX];
        struct qemu *q = NULL;
        struct agentc *a = NULL;
        int r;

        if (vm_path(vm, disk, vm->disk) < 0 || vm_path(vm, mem, "mem") < 0 ||
            vm_path(vm, sock, "agent.sock") < 0 || image_path(m, kernel, "vmlinuz") < 0 ||
            image_path(m, initrd, "initrd.img") < 0)
                return -ENAMETOOLONG;
        vm_prune_disks(vm);
        /* Each VM owns a shared-mapped memory file, so saving it (suspend,
         * snapshot, fork) is a device-state save: the RAM is already in
         * the file. */
        struct qemu_config c = {
                .dir = vm->dir,
                .kernel = kernel,
                .initrd = initrd,
                .cmdline = m->cmdline,
                .disk = disk,
                .mem_path = mem,
                .mem_shared = 1,
                .mem_mb = vm->mem_mb,
                .vcpus = vm->vcpus,
                .incoming = state_path != NULL,
                .accel = m->cfg.accel,
        };
        r = qemu_spawn(&c, 10000, &q);
        if (r < 0)
                return r;
        if (state_path) {
                r = qemu_restore(q, state_path, RESTORE_TIMEOUT_MS);
                if (r == 0)
                        r = agentc_connect(sock, 5000, &a);
                if (r == 0)
                        r = agentc_ping(a, AGENT_TIMEOUT_MS);
        } else {
                r = wait_agent(q, sock, now_ms() + COLD_BOOT_TIMEOUT_MS, &a);
        }
        if (r < 0) {
                agentc_unref(a);
                qemu_stop(q, 0);
                qemu_free(q);
                return r;
        }
        vm->qemu = q;
        vm->agent = a;
        return 0;
}

/* Ends vm's QEMU (asking it to quit first when timeout_ms > 0) and drops
 * its agent connection. vm->lock held. */
static void vm_halt(struct vm *vm, int timeout_ms)
{
        agentc_shutdown(vm->agent);
        agentc_unref(vm->agent);
        vm->agent = NULL;
        if (vm->qemu) {
                qemu_stop(vm->qemu, timeout_ms);
                qemu_free(vm->qemu);
                vm->qemu = NULL;
        }
}

/* Gives vm a disk overlay and memory file made from layer (NULL: the
 * default snapshot) and restores it from the layer's device state. */
static int vm_from_layer(struct vmm *m, struct vm *vm, const char *layer)
{
        char disk[PATH_MAX], mem[PATH_MAX], ldisk[PATH_MAX], lmem[PATH_MAX], lstate[PATH_MAX], log[PATH_MAX];
        int r;

        if (vm_path(vm, disk, vm->disk) < 0 || vm_path(vm, mem, "mem") < 0 ||
            vm_path(vm, log, "qemu-img.log") < 0 || layer_path(m, layer, ldisk, "disk.qcow2") < 0 ||
            layer_path(m, layer, lmem, "mem") < 0 || layer_path(m, layer, lstate, "state") < 0)
                return -ENAMETOOLONG;
        char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", ldisk, disk, NULL};
        r = run_wait(argv, log);
        if (r != 0)
                return r < 0 ? r : -EIO;
        r = copy_sparse(lmem, mem);
        if (r < 0)
                return r;
        return vm_boot(m, vm, lstate);
}

/* The virtual size of a qcow2 image, from its header. */
static int qcow2_size(const char *path, uint64_t *ret)
{
        uint8_t h[32];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = pread(fd, h, sizeof(h), 0);
        close(fd);
        if (n != (ssize_t)sizeof(h) || memcmp(h, "QFI\xfb", 4))
                return -EBADMSG;
        *ret = 0;
        for (int i = 24; i < 32; i++)
                *ret = *ret << 8 | h[i];
        return 0;
}

/* Freezes vm's memory, device state and disk into a new layer, which the
 * VM's disk then sits on. A running VM is paused for it and resumed after;
 * a suspended one is captured from its files. vm->lock held. */
static void layers_gc(struct vmm *m);

static int vm_make_layer(struct vmm *m, struct vm *vm, char ret_layer[24])
{
        char id[24], dir[PATH_MAX], lstate[PATH_MAX], lmem[PATH_MAX], ldisk[PATH_MAX];
        char disk[PATH_MAX], next[PATH_MAX], mem[PATH_MAX], state[PATH_MAX], size[32], log[PATH_MAX];
        char next_name[64], current[PATH_MAX];
        int running = vm->qemu != NULL, recorded = 0, r;
        uint64_t bytes = 0;
        char *layer = NULL;

        memcpy(id, "l-", 2);
        r = random_id(id + 2, 20);
        if (r < 0)
                return r;
        if (path_fmt(dir, sizeof(dir), "%s/layers/%s", m->data_dir, id) < 0 ||
            layer_path(m, id, lstate, "state") < 0 || layer_path(m, id, lmem, "mem") < 0 ||
            layer_path(m, id, ldisk, "disk.qcow2") < 0 || vm_path(vm, disk, vm->disk) < 0 ||
            path_fmt(next_name, sizeof(next_name), "disk-%s.qcow2", id) < 0 || vm_path(vm, next, next_name) < 0 ||
            vm_path(vm, current, "disk.current") < 0 || vm_path(vm, mem, "mem") < 0 ||
            vm_path(vm, state, "state") < 0 || vm_path(vm, log, "qemu-img.log") < 0)
                return -ENAMETOOLONG;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        if (running)
                r = qemu_save(vm->qemu, lstate, 60000);
        else
                r = copy_sparse(state, lstate);
        /* With the guest paused, the memory file is a consistent image. */
        if (r == 0)
                r = copy_sparse(mem, lmem);
        /* The disk: the VM's overlay becomes the layer's (a second name for
         * the same file), and the VM goes on in a new overlay on top. The
         * old name stays: QEMU may reopen the file by it. */
        if (r == 0 && link(disk, ldisk) < 0)
                r = -errno;
        if (r == 0)
                r = qcow2_size(disk, &bytes);
        if (r == 0) {
                /* -u: QEMU holds the image; the size is given instead. */
                snprintf(size, sizeof(size), "%llu", (unsigned long long)bytes);
                char *argv[] = {"qemu-img", "create", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", ldisk, next,
                                size, NULL};
                r = run_wait(argv, log);
                if (r > 0)
                        r = -EIO;
        }
        /* Crash-safe order: the layer is recorded before any disk in use
         * backs onto it (so a directory without a record can go at the
         * next start), and disk.current names the new overlay before QEMU
         * moves onto it (until then the overlay is empty and backs onto the
         * old one, so booting from it loses nothing). */
        if (r == 0 && !(layer = strdup(id)))
                r = -ENOMEM;
        if (r == 0) {
                pthread_mutex_lock(&m->layer_lock);
                r = store_layer_insert(m->store, id, vm->layer);
                recorded = r == 0;
                if (r == 0)
                        r = store_vm_set_layer(m->store, vm->id, id);
                pthread_mutex_unlock(&m->layer_lock);
        }
        if (r == 0)
                r = write_file_atomic(current, next_name, strlen(next_name), 0644);
        if (r == 0 && running)
                r = qemu_snapshot_disk(vm->qemu, next, 10000);
        if (r < 0 && recorded) {
                /* Back onto the old overlay, in the reverse order. */
                write_file_atomic(current, vm->disk, strlen(vm->disk), 0644);
                store_vm_set_layer(m->store, vm->id, vm->layer);
        }
        if (r == 0) {
                snprintf(vm->disk, sizeof(vm->disk), "%s", next_name);
                free(vm->layer);
                vm->layer = layer;
                layer = NULL;
        }
        free(layer);
        if (running) {
                int k = qemu_cont(vm->qemu, 10000);

                /* The guest's clock stood still while it was paused: the
                 * ping sets it from the host's again. */
                if (k == 0 && vm->agent)
                        agentc_ping(vm->agent, 5000);
                if (r == 0 && k < 0)
                        return k; /* on the new layer all the same: nothing to undo */
        }
        if (r < 0) {
                unlink(next);
                if (recorded)
                        layers_gc(m); /* the record, then the directory */
                else
                        rm_rf(dir);
                return r;
        }
        memcpy(ret_layer, id, sizeof(id));
        return 0;
}

static void gc_layer(const char *id, void *ud)
{
        struct vmm *m = ud;
        char dir[PATH_MAX];

        if (id[0] == 'l' && !strchr(id, '/') && path_fmt(dir, sizeof(dir), "%s/layers/%s", m->data_dir, id) == 0) {
                rm_rf(dir);
                log_info("layer %s: no longer used, removed", id);
        }
}

/* Forgets the layers no VM, live snapshot or live layer needs and removes
 * their directories. */
static void layers_gc(struct vmm *m)
{
        pthread_mutex_lock(&m->layer_lock);
        store_layer_gc(m->store, gc_layer, m);
        pthread_mutex_unlock(&m->layer_lock);
}

/* At start-up, before anything can make a layer: removes the layer
 * directories no record names. vm_make_layer records a layer before any
 * disk in use backs onto it, so such a directory is what a daemon killed
 * while preparing a layer left behind, and nothing needs it. */
static void layers_recover(struct vmm *m)
{
        char path[PATH_MAX];
        struct dirent *de;
        DIR *d;

        if (path_fmt(path, sizeof(path), "%s/layers", m->data_dir) == 0 && (d = opendir(path))) {
                while ((de = readdir(d))) {
                        if (strncmp(de->d_name, "l-", 2) || store_layer_exists(m->store, de->d_name) != 0 ||
                            path_fmt(path, sizeof(path), "%s/layers/%s", m->data_dir, de->d_name) < 0)
                                continue;
                        log_warn("layer %s: left by a snapshot or fork cut short; removed", de->d_name);
                        rm_rf(path);
                }
                closedir(d);
        }
        layers_gc(m);
}

/* ------------------------------------------------------------------ */
/* Create and delete                                                   */
/* ------------------------------------------------------------------ */

/* A create from the moment its VM exists: what create_run needs. */
struct create_job {
        struct vmm *m;
        struct vm *vm;          /* a reference of the job's own */
        char *layer;            /* NULL: the default snapshot */
        struct vmm_setup setup; /* run NULL: none */
        int background;
        int *listed; /* background: set to 1 under m->lock once the VM is listed */
        int64_t t0;
};

/* The API error kept for a background create whose restore failed: the
 * answer a waiting create would have given. */
static char *create_error(int r)
{
        json_t *j = json_pack("{s:s,s:s,s:s+}", "error", "INTERNAL_ERROR", "code", "INTERNAL_ERROR", "message",
                              "could not create the VM: ", strerror(-r));
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;

        json_decref(j);
        return text;
}

/* Lists the job's VM, restores it and runs its setup, holding vm->lock
 * from the moment it is listed until it runs or has failed: requests for
 * it meanwhile see it starting and wait. On failure a foreground create
 * removes the VM; a background one keeps it, stopped, with the error, so
 * that the caller who was not waiting can see what happened. */
static int create_run(struct create_job *j)
{
        struct vmm *m = j->m;
        struct vm *vm = j->vm;
        struct agentc *a;
        char *error = NULL;
        int r;

        pthread_mutex_lock(&vm->lock);
        vm_link(m, vm);
        if (j->listed) {
                pthread_mutex_lock(&m->lock);
                *j->listed = 1;
                j->listed = NULL; /* the creator's: gone once it wakes */
                pthread_cond_broadcast(&m->cond);
                pthread_mutex_unlock(&m->lock);
        }
        r = vm_from_layer(m, vm, j->layer);
        if (r < 0) {
                log_err("vm %s: create failed: %s", vm->id, strerror(-r));
                if (j->background)
                        error = create_error(r);
        } else if (j->setup.run) {
                /* The setup's own guest operations go around vm->lock,
                 * which this thread holds (see agent_for). */
                pthread_mutex_lock(&m->lock);
                vm->in_setup = !vm->doomed;
                vm->setup_thread = pthread_self();
                vm->setup_agent = agentc_ref(vm->agent);
                pthread_mutex_unlock(&m->lock);
                r = vm->in_setup ? j->setup.run(j->setup.ud, vm->id, &error) : -ECANCELED;
                pthread_mutex_lock(&m->lock);
                vm->in_setup = 0;
                a = vm->setup_agent;
                vm->setup_agent = NULL;
                pthread_mutex_unlock(&m->lock);
                agentc_unref(a);
                if (r < 0) {
                        json_t *e = error ? json_loads(error, 0, NULL) : NULL;
                        const char *msg = json_string_value(json_object_get(e, "message"));

                        log_err("vm %s: create-time setup failed: %s", vm->id, msg ? msg : strerror(-r));
                        json_decref(e);
                        r = -ECANCELED;
                }
        }
        if (r < 0 && !j->background) {
                vm_unlink(m, vm);
                vm_halt(vm, 0);
                store_vm_delete(m->store, vm->id);
                rm_rf(vm->dir);
        } else if (r < 0) {
                vm_halt(vm, 0);
                store_vm_set_error(m->store, vm->id, error);
                pthread_mutex_lock(&m->lock);
                vm->error = error;
                error = NULL;
                pthread_mutex_unlock(&m->lock);
                vm_set_state(m, vm, VM_STOPPED);
                log_warn("vm %s: its background create failed; kept, stopped, until deleted", vm->id);
        } else {
                store_vm_set_error(m->store, vm->id, NULL);
                vm_set_state(m, vm, VM_RUNNING);
                log_info("vm %s: created for account %s from %s in %lld ms%s", vm->id, vm->account,
                         j->layer ? j->layer : "the default snapshot", (long long)(now_ms() - j->t0),
                         j->background ? " (in the background)" : "");
        }
        pthread_mutex_unlock(&vm->lock);
        free(error);
        return r;
}

static void create_release(const struct vmm_create *opts)
{
        if (opts->background && opts->setup && opts->setup->release)
                opts->setup->release(opts->setup->ud);
}

static void *create_main(void *arg)
{
        struct create_job *j = arg;
        struct vmm *m = j->m;

        create_run(j);
        if (j->setup.release)
                j->setup.release(j->setup.ud);
        vm_put(m, j->vm);
        free(j->layer);
        free(j);
        pthread_mutex_lock(&m->lock);
        m->creates--;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        return NULL;
}

/* Ends the background creates before the manager goes away: the setups
 * in progress lose their agent (their requests fail at once, and they
 * end as failed creates), restores finish within their own time limits. */
static void creates_drain(struct vmm *m)
{
        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm; vm = vm->next)
                if (vm->setup_agent)
                        agentc_shutdown(vm->setup_agent);
        while (m->creates > 0)
                pthread_cond_wait(&m->cond, &m->lock);
        pthread_mutex_unlock(&m->lock);
}

/* Makes and starts one VM from layer (NULL: the default snapshot). */
static int create_vm(struct vmm *m, const char *account, const struct vmm_create *opts, const char *layer,
                     int mem_mb, int vcpus, char ret_id[21])
{
        struct store_vm rec = {0};
        struct create_job job = {.m = m, .t0 = now_ms(), .background = opts->background};
        struct create_job *bg;
        struct vm *vm;
        pthread_t thread;
        char id[21];
        int r, listed = 0;

        pthread_mutex_lock(&m->lock);
        r = !m->ready ? -EAGAIN : m->nvms >= m->cfg.max_vms ? -EUSERS : 0;
        pthread_mutex_unlock(&m->lock);
        if (r == 0)
                r = random_id(id, 20);
        if (r < 0) {
                create_release(opts);
                return r;
        }
        rec.id = id;
        rec.account_id = (char *)account;
        rec.name = (char *)opts->name;
        rec.state = (char *)"starting";
        rec.workdir = (char *)opts->workdir;
        rec.persistence = (char *)opts->persistence;
        rec.snapshot_id = (char *)opts->snapshot_id;
        rec.created_at = wall_ms();
        rec.idle_timeout_s = opts->idle_timeout_s;
        rec.mem_mb = mem_mb;
        rec.vcpus = vcpus;
        rec.layer = (char *)layer;
        vm = vm_alloc(&rec, m->data_dir);
        if (!vm) {
                create_release(opts);
                return -ENOMEM;
        }
        vm->state = VM_STARTING;
        vm->refs = 2; /* the list's and the job's */
        /* In the record only, cleared once the create is done: a daemon
         * that dies before then finds it at its next start. */
        rec.error = (char *)"{\"error\":\"VM_SETUP_FAILED\",\"code\":\"VM_SETUP_FAILED\","
                            "\"message\":\"sproutd stopped before this VM's create was done\"}";
        r = mkdir_p(vm->dir, 0700);
        if (r == 0)
                r = store_vm_insert(m->store, &rec);
        if (r < 0) {
                rm_rf(vm->dir);
                vm_free(vm);
                create_release(opts);
                return r;
        }
        job.vm = vm;
        job.layer = (char *)layer;
        if (opts->setup)
                job.setup = *opts->setup;
        if (!opts->background) {
                r = create_run(&job);
                vm_put(m, vm);
                if (r == 0)
                        memcpy(ret_id, id, 21);
                return r;
        }
        /* In the background: the thread lists the VM with vm->lock held,
         * so that nothing reaches it half made, and this call returns once
         * it is listed. */
        bg = malloc(sizeof(*bg));
        if (bg) {
                *bg = job;
                bg->listed = &listed;
                bg->layer = layer ? strdup(layer) : NULL;
        }
        pthread_mutex_lock(&m->lock);
        m->creates++;
        pthread_mutex_unlock(&m->lock);
        if (!bg || (layer && !bg->layer) || pthread_create(&thread, NULL, create_main, bg) != 0) {
                pthread_mutex_lock(&m->lock);
                m->creates--;
                pthread_cond_broadcast(&m->cond);
                pthread_mutex_unlock(&m->lock);
                if (bg)
                        free(bg->layer);
                free(bg);
                store_vm_delete(m->store, id);
                rm_rf(vm->dir);
                vm_free(vm);
                create_release(opts);
                return -EAGAIN;
        }
        pthread_detach(thread);
        pthread_mutex_lock(&m->lock);
        while (!listed)
                pthread_cond_wait(&m->cond, &m->lock);
        pthread_mutex_unlock(&m->lock);
        memcpy(ret_id, id, 21);
        return 0;
}

int vmm_create(struct vmm *m, const char *account, const struct vmm_create *opts, char ret_id[21])
{
        struct store_snapshot snap = {0};
        int r;

        if (!opts->snapshot_id)
                return create_vm(m, account, opts, NULL, m->cfg.mem_mb, m->cfg.vcpus, ret_id);
        r = store_snapshot_get(m->store, account, opts->snapshot_id, &snap);
        if (r == 0 && snap.deleted)
                r = -ENOENT;
        if (r == 0) {
                r = create_vm(m, account, opts, snap.layer, snap.mem_mb, snap.vcpus, ret_id);
        } else {
                create_release(opts);
                if (r == -ENOENT)
                        r = -ENOMEDIUM; /* no such snapshot */
        }
        store_snapshot_clear(&snap);
        return r;
}

int vmm_delete(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_get(m, account, id);

        if (!vm)
                return -ENOENT;
        /* A create-time setup holds vm->lock until it ends, which may be
         * minutes away (readySignalTimeoutSeconds): cut it short instead;
         * its guest requests fail at once. */
        pthread_mutex_lock(&m->lock);
        vm->doomed = 1;
        if (vm->in_setup && vm->setup_agent)
                agentc_shutdown(vm->setup_agent);
        pthread_mutex_unlock(&m->lock);
        pthread_mutex_lock(&vm->lock);
        if (vm->removed) {
                pthread_mutex_unlock(&vm->lock);
                vm_put(m, vm);
                return -ENOENT;
        }
        vm_unlink(m, vm);
        vm_halt(vm, 2000);
        store_vm_delete(m->store, vm->id);
        rm_rf(vm->dir);
        pthread_mutex_unlock(&vm->lock);
        log_info("vm %s: deleted", vm->id);
        vm_put(m, vm);
        layers_gc(m);
        return 0;
}

/* ------------------------------------------------------------------ */
/* Lifecycle: suspend, start, stop, kill, await, snapshot, fork        */
/* ------------------------------------------------------------------ */

/* Takes vm (of account) with vm->lock held; -ENOENT if it is gone. */
static struct vm *vm_lock(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_get(m, account, id);

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

static void vm_unlock(struct vmm *m, struct vm *vm)
{
        pthread_mutex_unlock(&vm->lock);
        vm_put(m, vm);
}

static enum vm_state state_of(struct vmm *m, struct vm *vm)
{
        enum vm_state s;

        pthread_mutex_lock(&m->lock);
        s = vm->state;
        pthread_mutex_unlock(&m->lock);
        return s;
}

/* Suspends a running VM: device state saved next to its memory file, QEMU
 * ended. vm->lock held. */
static int vm_suspend(struct vmm *m, struct vm *vm)
{
        char state[PATH_MAX], tmp[PATH_MAX];
        int64_t t0 = now_ms();
        int r;

        if (!vm->qemu)
                return state_of(m, vm) == VM_SUSPENDED ? 0 : -ENOTCONN;
        if (vm_path(vm, state, "state") < 0 || vm_path(vm, tmp, "state.tmp") < 0)
                return -ENAMETOOLONG;
        vm_set_state(m, vm, VM_SUSPENDING);
        /* Saved under a temporary name: a "state" file always is whole. */
        r = qemu_save(vm->qemu, tmp, 60000);
        if (r == 0 && rename(tmp, state) < 0)
                r = -errno;
        if (r < 0) {
                qemu_cont(vm->qemu, 10000);
                vm_set_state(m, vm, VM_RUNNING);
                log_err("vm %s: suspend failed: %s (%s)", vm->id, strerror(-r), qemu_last_error(vm->qemu));
                return r;
        }
        vm_halt(vm, 0);
        vm_set_state(m, vm, VM_SUSPENDED);
        log_info("vm %s: suspended in %lld ms", vm->id, (long long)(now_ms() - t0));
        return 0;
}

/* Starts a suspended (resume) or stopped (cold boot) VM. vm->lock held. */
static int vm_start(struct vmm *m, struct vm *vm)
{
        enum vm_state s = state_of(m, vm);
        char state[PATH_MAX], mem[PATH_MAX];
        int64_t t0 = now_ms();
        int r;

        if (vm->qemu)
                return 0;
        if (vm_path(vm, state, "state") < 0 || vm_path(vm, mem, "mem") < 0)
                return -ENAMETOOLONG;
        vm_set_state(m, vm, VM_STARTING);
        if (s == VM_SUSPENDED) {
                r = vm_boot(m, vm, state);
                if (r == 0)
                        unlink(state);
        } else {
                /* A cold boot starts from empty RAM on the VM's own disk,
                 * with the memory and vCPUs a resize asked for. */
                if (vm->pending_mem_mb || vm->pending_vcpus) {
                        if (vm->pending_mem_mb)
                                vm->mem_mb = vm->pending_mem_mb;
                        if (vm->pending_vcpus)
                                vm->vcpus = vm->pending_vcpus;
                        vm->pending_mem_mb = vm->pending_vcpus = 0;
                        store_vm_set_size(m->store, vm->id, vm->mem_mb, vm->vcpus, 0, 0);
                }
                unlink(mem);
                unlink(state);
                r = vm_boot(m, vm, NULL);
                /* A disk grown while stopped: let the filesystem follow. */
                if (r == 0)
                        guest_run(vm->agent, "resize2fs /dev/vda >/dev/null 2>&1", 120000);
        }
        if (r < 0) {
                vm_set_state(m, vm, s);
                log_err("vm %s: start failed: %s", vm->id, strerror(-r));
                return r;
        }
        vm_set_state(m, vm, VM_RUNNING);
        log_info("vm %s: %s in %lld ms", vm->id, s == VM_SUSPENDED ? "resumed" : "cold-booted",
                 (long long)(now_ms() - t0));
        return 0;
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

int vmm_stop(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_lock(m, account, id);
        char state[PATH_MAX];
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
                vm_halt(vm, 0);
                vm_set_state(m, vm, VM_STOPPED);
                log_info("vm %s: stopped", vm->id);
        } else if (state_of(m, vm) == VM_SUSPENDED) {
                /* Its memory is dropped; the disk stays. */
                if (vm_path(vm, state, "state") == 0)
                        unlink(state);
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
        char state[PATH_MAX];

        if (!vm)
                return -ENOENT;
        vm_halt(vm, 0);
        if (vm_path(vm, state, "state") == 0)
                unlink(state);
        vm_set_state(m, vm, VM_STOPPED);
        log_info("vm %s: killed", vm->id);
        vm_unlock(m, vm);
        return 0;
}

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
                    vm_path(vm, log, "qemu-img.log") < 0) {
                        r = -ENAMETOOLONG;
                } else {
                        char *argv[] = {"qemu-img", "rebase", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, disk, NULL};

                        r = run_wait(argv, log);
                        if (r > 0)
                                r = -EIO;
                }
                if (r == 0) {
                        free(vm->layer);
                        vm->layer = NULL;
                        store_vm_set_layer(m->store, vm->id, NULL);
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

int vmm_resize(struct vmm *m, const char *account, const char *id, int64_t disk_gb, int64_t mem_gb, int64_t vcpus)
{
        struct vm *vm = vm_lock(m, account, id);
        char disk[PATH_MAX], log[PATH_MAX], size[32];
        uint64_t cur = 0, want;
        int r = 0;

        if (!vm)
                return -ENOENT;
        if (vm_path(vm, disk, vm->disk) < 0 || vm_path(vm, log, "qemu-img.log") < 0 || qcow2_size(disk, &cur) < 0) {
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
        if (want > cur) {
                if (!vm->qemu && state_of(m, vm) == VM_SUSPENDED)
                        r = vm_start(m, vm); /* the guest must see the new size */
                if (r == 0 && vm->qemu) {
                        r = qemu_resize_disk(vm->qemu, want, 10000);
                        if (r == 0) {
                                int k = guest_run(vm->agent, "resize2fs /dev/vda >/dev/null 2>&1", 120000);

                                r = k < 0 ? k : k > 0 ? -EIO : 0;
                        }
                } else if (r == 0) {
                        snprintf(size, sizeof(size), "%llu", (unsigned long long)want);
                        char *argv[] = {"qemu-img", "resize", "-q", "-f", "qcow2", disk, size, NULL};
                        r = run_wait(argv, log);
                        if (r > 0)
                                r = -EIO;
                }
        }
        if (r == 0 && (mem_gb > 0 || vcpus > 0)) {
                if (mem_gb > 0 && mem_gb * 1024 != vm->mem_mb)
                        vm->pending_mem_mb = (int)(mem_gb * 1024);
                if (vcpus > 0 && vcpus != vm->vcpus)
                        vm->pending_vcpus = (int)vcpus;
                r = store_vm_set_size(m->store, vm->id, vm->mem_mb, vm->vcpus, vm->pending_mem_mb, vm->pending_vcpus);
        }
        if (r == 0)
                log_info("vm %s: resized (disk %llu GiB, pending memory %d MiB, pending vCPUs %d)", vm->id,
                         (unsigned long long)(want >> 30), vm->pending_mem_mb, vm->pending_vcpus);
        else
                log_err("vm %s: resize failed: %s", vm->id, strerror(-r));
        vm_unlock(m, vm);
        return r;
}

int vmm_await(struct vmm *m, const char *account, const char *id, char ret_status[16])
{
        struct vm *vm = vm_get(m, account, id);

        if (!vm)
                return -ENOENT;
        pthread_mutex_lock(&m->lock);
        while (!vm->removed && vm->state != VM_STOPPED && vm->state != VM_LOST && !m->stopping)
                pthread_cond_wait(&m->cond, &m->lock);
        snprintf(ret_status, 16, "%s", vm->removed ? "deleted" : vm_state_name(vm->state));
        pthread_mutex_unlock(&m->lock);
        vm_put(m, vm);
        return 0;
}

/* Resumes a suspended VM for an operation that needs it running. */
static int ensure_running(struct vmm *m, struct vm *vm)
{
        if (vm->qemu)
                return 0;
        if (state_of(m, vm) != VM_SUSPENDED)
                return -ENOTCONN;
        return vm_start(m, vm);
}

int vmm_snapshot(struct vmm *m, const char *account, const char *id, const char *name, const char *persistence,
                 char ret_snapshot[24])
{
        struct vm *vm = vm_lock(m, account, id);
        struct store_snapshot snap = {0};
        char layer[24], sid[24];
        int r;

        if (!vm)
                return -ENOENT;
        if (!vm->qemu && state_of(m, vm) != VM_SUSPENDED) {
                vm_unlock(m, vm);
                return -ENOTCONN;
        }
        memcpy(sid, "sc-", 3);
        r = random_id(sid + 3, 20);
        if (r == 0)
                r = vm_make_layer(m, vm, layer);
        if (r == 0) {
                snap.id = sid;
                snap.account_id = (char *)account;
                snap.name = (char *)name;
                snap.source_vm_id = vm->id;
                snap.layer = layer;
                snap.persistence = (char *)persistence;
                snap.created_at = wall_ms();
                snap.mem_mb = vm->mem_mb;
                snap.vcpus = vm->vcpus;
                r = store_snapshot_insert(m->store, &snap);
        }
        if (r == 0)
                log_info("vm %s: snapshot %s (layer %s)", vm->id, sid, layer);
        else
                log_err("vm %s: snapshot failed: %s (%s)", vm->id, strerror(-r), qemu_last_error(vm->qemu));
        vm_unlock(m, vm);
        if (r == 0)
                memcpy(ret_snapshot, sid, sizeof(sid));
        return r;
}

struct fork_job {
        struct vmm *m;
        const char *account;
        const struct vmm_create *opts;
        const char *layer;
        int mem_mb, vcpus;
        char id[21];
        int r;
        pthread_t thread;
};

static void *fork_main(void *arg)
{
        struct fork_job *j = arg;

        j->r = create_vm(j->m, j->account, j->opts, j->layer, j->mem_mb, j->vcpus, j->id);
        return NULL;
}

int vmm_fork(struct vmm *m, const char *account, const char *id, int count, char (*ret_ids)[21])
{
        struct vm *vm = vm_lock(m, account, id);
        struct fork_job jobs[VMM_MAX_FORKS];
        struct vmm_info info = {0};
        char layer[24];
        int64_t t0 = now_ms();
        int r, started = 0;

        if (!vm)
                return -ENOENT;
        if (count < 1 || count > VMM_MAX_FORKS) {
                vm_unlock(m, vm);
                return -EINVAL;
        }
        r = ensure_running(m, vm);
        if (r == 0)
                r = vm_make_layer(m, vm, layer);
        fill_info(vm, &info);
        /* The parent runs on; the children restore from the new layer. */
        vm_unlock(m, vm);
        if (r < 0) {
                vmm_info_clear(&info);
                return r;
        }
        struct vmm_create opts = {.name = info.name, .workdir = info.workdir, .idle_timeout_s = 300};
        for (int i = 0; i < count; i++) {
                jobs[i] = (struct fork_job){.m = m, .account = account, .opts = &opts, .layer = layer,
                                            .mem_mb = info.mem_mb, .vcpus = info.vcpus};
                if (pthread_create(&jobs[i].thread, NULL, fork_main, &jobs[i]) != 0) {
                        jobs[i].r = -EAGAIN;
                        break;
                }
                started++;
        }
        for (int i = 0; i < started; i++)
                pthread_join(jobs[i].thread, NULL);
        for (int i = 0; i < count; i++)
                if (i >= started || jobs[i].r < 0)
                        r = i >= started ? -EAGAIN : jobs[i].r;
        if (r < 0) {
                /* All or nothing: remove the forks that did start. */
                for (int i = 0; i < started; i++)
                        if (jobs[i].r == 0)
                                vmm_delete(m, account, jobs[i].id);
                layers_gc(m);
        } else {
                char path[PATH_MAX];

                /* Nothing restores from a fork's layer again: keep only its
                 * disk, which the parent and the forks sit on. */
                if (layer_path(m, layer, path, "mem") == 0)
                        unlink(path);
                if (layer_path(m, layer, path, "state") == 0)
                        unlink(path);
                for (int i = 0; i < count; i++)
                        memcpy(ret_ids[i], jobs[i].id, 21);
                log_info("vm %s: forked into %d in %lld ms", id, count, (long long)(now_ms() - t0));
        }
        vmm_info_clear(&info);
        return r;
}

/* ---- snapshots ---- */

int64_t vmm_layer_usage(struct vmm *m, const char *layer)
{
        char dir[PATH_MAX];

        if (!layer || strchr(layer, '/') || path_fmt(dir, sizeof(dir), "%s/layers/%s", m->data_dir, layer) < 0)
                return 0;
        return dir_usage(dir, 0);
}

int vmm_snapshot_delete(struct vmm *m, const char *account, const char *id)
{
        int r = store_snapshot_delete(m->store, account, id);

        if (r == 0) {
                log_info("snapshot %s: deleted", id);
                layers_gc(m);
        }
        return r;
}

/* ------------------------------------------------------------------ */
/* Guest operations                                                    */
/* ------------------------------------------------------------------ */

void vmm_result_clear(struct vmm_result *r)
{
        if (!r)
                return;
        free(r->errmsg);
        agentc_reply_free(&r->reply);
        memset(r, 0, sizeof(*r));
}

/* Gets a reference to a running VM's agent, waiting for any transition in
 * progress to finish first. */
static int agent_for(struct vmm *m, const char *account, const char *id, struct agentc **ret_agent,
                     char **ret_workdir)
{
        struct vm *vm = vm_get(m, account, id);
        int r = 0, own;

        if (!vm)
                return -ENOENT;
        /* A new VM's create-time setup runs in the thread that holds
         * vm->lock for the whole create: its own requests go around it. */
        pthread_mutex_lock(&m->lock);
        own = vm->in_setup && pthread_equal(vm->setup_thread, pthread_self());
        if (own && m->stopping) {
                r = -ECANCELED;
        } else if (own) {
                *ret_agent = agentc_ref(vm->setup_agent);
                if (ret_workdir)
                        *ret_workdir = vm->workdir ? strdup(vm->workdir) : NULL;
        }
        pthread_mutex_unlock(&m->lock);
        if (own) {
                vm_put(m, vm);
                return r;
        }
        pthread_mutex_lock(&vm->lock);
        if (vm->removed)
                r = -ENOENT;
        else if (vm->error && !vm->qemu)
                r = -ENOTRECOVERABLE;
        else if ((r = ensure_running(m, vm)) < 0)
                ;
        else if (!vm->agent)
                r = -ENOTCONN;
        else {
                *ret_agent = agentc_ref(vm->agent);
                if (ret_workdir)
                        *ret_workdir = vm->workdir ? strdup(vm->workdir) : NULL;
        }
        pthread_mutex_unlock(&vm->lock);
        vm_put(m, vm);
        return r;
}

/* Fills the common result fields from the RESULT TLV. */
static void parse_result(struct vmm_result *ret)
{
        uint32_t v;

        if (proto_get_u32(ret->reply.result, ret->reply.result_len, PROTO_TAG_ERRNO, &v) == 0)
                ret->agent_errno = (int)v;
        proto_get_str(ret->reply.result, ret->reply.result_len, PROTO_TAG_ERRMSG, &ret->errmsg);
        if (proto_get_u32(ret->reply.result, ret->reply.result_len, PROTO_TAG_EXIT_CODE, &v) == 0)
                ret->exit_code = (int)v;
        if (proto_get_u32(ret->reply.result, ret->reply.result_len, PROTO_TAG_TIMED_OUT, &v) == 0)
                ret->timed_out = v != 0;
        if (proto_get_u32(ret->reply.result, ret->reply.result_len, PROTO_TAG_KIND, &v) == 0)
                ret->kind = (int)v;
}

/* Relative paths are taken from the VM's working directory. */
static char *resolve_path(const char *path, const char *workdir)
{
        char *out = NULL;

        if (path[0] == '/')
                return strdup(path);
        if (asprintf(&out, "%s/%s", workdir ? workdir : "/root", path) < 0)
                return NULL;
        return out;
}

int vmm_exec(struct vmm *m, const char *account, const char *id, const struct vmm_exec *e,
             struct vmm_result *ret)
{
        struct proto_buf b = {0};
        struct agentc *a = NULL;
        char *workdir = NULL;
        int r = agent_for(m, account, id, &a, &workdir);

        if (r < 0)
                return r;
        proto_put_u32(&b, PROTO_TAG_OP, e->terminal ? PROTO_OP_TERMINAL : PROTO_OP_EXEC);
        proto_put_str(&b, PROTO_TAG_CMD, e->command);
        if (e->terminal)
                proto_put_str(&b, PROTO_TAG_TERMINAL, e->terminal);
        else if (workdir)
                proto_put_str(&b, PROTO_TAG_CWD, workdir);
        if (e->user)
                proto_put_str(&b, PROTO_TAG_USER, e->user);
        if (e->timeout_ms > 0)
                proto_put_u64(&b, PROTO_TAG_TIMEOUT_MS, (uint64_t)e->timeout_ms);
        proto_put_u64(&b, PROTO_TAG_MAX_OUTPUT, m->cfg.max_output);
        memset(ret, 0, sizeof(*ret));
        /* The agent enforces the timeout and answers; the host waits a little
         * longer so that a dead guest cannot hang the request. */
        r = agentc_request(a, &b, NULL, 0, m->cfg.max_output, e->timeout_ms > 0 ? e->timeout_ms + 10000 : -1,
                           &ret->reply);
        proto_buf_free(&b);
        if (r == 0)
                parse_result(ret);
        else if (r == -ETIMEDOUT)
                ret->timed_out = 1, r = 0;
        free(workdir);
        agentc_unref(a);
        return r;
}

/* Sends a READ or WRITE for path (relative paths taken from the VM's
 * working directory) and collects the answer. */
static int file_op(struct vmm *m, const char *account, const char *id, uint32_t op, const char *path,
                   const char *user, const void *data, size_t len, unsigned mode, struct vmm_result *ret)
{
        struct proto_buf b = {0};
        struct agentc *a = NULL;
        char *workdir = NULL, *full;
        int r = agent_for(m, account, id, &a, &workdir);

        if (r < 0)
                return r;
        full = resolve_path(path, workdir);
        proto_put_u32(&b, PROTO_TAG_OP, op);
        proto_put_str(&b, PROTO_TAG_PATH, full ? full : path);
        proto_put_u64(&b, PROTO_TAG_MAX_SIZE, m->cfg.max_file_size);
        if (op == PROTO_OP_WRITE)
                proto_put_u32(&b, PROTO_TAG_MODE, mode);
        if (user)
                proto_put_str(&b, PROTO_TAG_USER, user);
        memset(ret, 0, sizeof(*ret));
        if (!full)
                r = -ENOMEM;
        else if (op == PROTO_OP_WRITE)
                r = agentc_request(a, &b, data ? data : "", len, 1 << 16, AGENT_TIMEOUT_MS * 5, &ret->reply);
        else
                r = agentc_request(a, &b, NULL, 0, m->cfg.max_file_size, AGENT_TIMEOUT_MS * 5, &ret->reply);
        if (r == 0)
                parse_result(ret);
        else if (r == -ETIMEDOUT)
                agentc_reply_free(&ret->reply);
        proto_buf_free(&b);
        free(full);
        free(workdir);
        agentc_unref(a);
        return r;
}

int vmm_read(struct vmm *m, const char *account, const char *id, const char *path, const char *user,
             struct vmm_result *ret)
{
        return file_op(m, account, id, PROTO_OP_READ, path, user, NULL, 0, 0, ret);
}

int vmm_write(struct vmm *m, const char *account, const char *id, const char *path, const char *user,
              const void *data, size_t len, unsigned mode, struct vmm_result *ret)
{
        return file_op(m, account, id, PROTO_OP_WRITE, path, user, data, len, mode, ret);
}

int vmm_call(struct vmm *m, const char *account, const char *id, struct proto_buf *req, size_t cap,
             struct vmm_result *ret)
{
        struct agentc *a = NULL;
        int r = agent_for(m, account, id, &a, NULL);

        memset(ret, 0, sizeof(*ret));
        if (r < 0)
                return r;
        r = agentc_request(a, req, NULL, 0, cap, AGENT_TIMEOUT_MS, &ret->reply);
        if (r == 0)
                parse_result(ret);
        else if (r == -ETIMEDOUT)
                agentc_reply_free(&ret->reply);
        agentc_unref(a);
        return r;
}

struct vmm_watch {
        struct agentc *agent;
        uint32_t stream;
};

int vmm_watch_open(struct vmm *m, const char *account, const char *id, const char *path, const char *user,
                   struct vmm_watch **ret)
{
        struct proto_buf b = {0};
        struct vmm_watch *w = calloc(1, sizeof(*w));
        char *workdir = NULL, *full = NULL;
        int r;

        if (!w)
                return -ENOMEM;
        r = agent_for(m, account, id, &w->agent, &workdir);
        if (r < 0) {
                free(w);
                return r;
        }
        full = resolve_path(path ? path : workdir ? workdir : "/root", workdir);
        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_WATCH);
        proto_put_str(&b, PROTO_TAG_PATH, full ? full : "/root");
        if (user)
                proto_put_str(&b, PROTO_TAG_USER, user);
        /* Events queue here while the client reads; 4 MiB is a deep queue. */
        r = agentc_stream_open(w->agent, &b, 4 << 20, &w->stream);
        proto_buf_free(&b);
        free(full);
        free(workdir);
        if (r < 0) {
                agentc_unref(w->agent);
                free(w);
                return r;
        }
        *ret = w;
        return 0;
}

long vmm_watch_read(struct vmm_watch *w, void *buf, size_t max, int timeout_ms)
{
        return agentc_stream_read(w->agent, w->stream, buf, max, timeout_ms);
}

void vmm_watch_close(struct vmm_watch *w)
{
        if (!w)
                return;
        agentc_stream_close(w->agent, w->stream);
        agentc_unref(w->agent);
        free(w);
}

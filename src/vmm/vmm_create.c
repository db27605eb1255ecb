/*
 * vmm_create: making and removing VMs: a create restores a snapshot layer
 * (or the default snapshot) into a new VM and runs its create-time setup,
 * in the caller's thread or in one of its own; a fork makes a layer of a
 * running VM and creates its copies from it in parallel; a delete ends a
 * VM and removes its files and record. Depends on qemu, agentc, store and
 * util.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A create from the moment its VM exists: what create_run needs. */
struct create_job {
        struct vmm *m;
        struct vm *vm;          /* a reference of the job's own */
        char *layer;            /* NULL: the default snapshot */
        struct vmm_setup setup; /* run NULL: none */
        int background;
        enum create_kind kind;
        int claimed; /* a pooled VM: restored already, idle */
        int *listed; /* background: set to 1 under m->lock once the VM is listed */
        char *report; /* the setup's report when it failed */
        int64_t t0;
};

/* Logs the last lines of a helper's log in a VM's directory, which a
 * failed create removes. */
static void log_file_tail(const char *id, const char *what, const char *path)
{
        char *text = NULL;
        size_t len = 0;

        if (read_file(path, 1 << 20, &text, &len) < 0 || len == 0) {
                free(text);
                return;
        }
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == 0))
                text[--len] = 0;
        log_err("vm %s: %s said: %s", id, what, len > 400 ? text + len - 400 : text);
        free(text);
}

/* Gives vm a disk overlay and memory file made from layer (NULL: the
 * default snapshot) and restores it from the layer's device state. */
static int vm_from_layer(struct vmm *m, struct vm *vm, const char *layer)
{
        char disk[PATH_MAX], ldisk[PATH_MAX], lmem[PATH_MAX], lstate[PATH_MAX], log[PATH_MAX];
        int r;

        pthread_t net_thread;
        int net_result = 0, net;
        uint64_t bytes = 0;

        if (vm_path(vm, disk, vm->disk) < 0 || vm_path(vm, log, "qemu-img.log") < 0 || layer_path(m, layer, ldisk, "disk.qcow2") < 0 ||
            layer_path(m, layer, lmem, "mem") < 0 || layer_path(m, layer, lstate, "state") < 0)
                return -ENAMETOOLONG;
        /* Its network namespace is made while its files are. */
        net = vm_net_early(m, vm, &net_thread, &net_result);
        if (net < 0)
                return net;
        /* The size from the layer's header: qemu-img then never opens the
         * layer's disk, which a running QEMU may hold locked. */
        r = qemu_img_size(ldisk, &bytes);
        if (r == 0)
                r = qemu_img_create(disk, ldisk, "qcow2", bytes, log);
        if (r < 0)
                log_file_tail(vm->id, "qemu-img", log);
        if (r == 0)
                r = vm_ram_prepare(m, vm, lmem);
        if (r > 0)
                r = 0;
        if (net == 0 && vm_net_wait(vm, net_thread, &net_result) < 0 && r == 0)
                r = net_result;
        if (r == 0) {
                r = vm_boot(m, vm, lstate);
                if (r < 0 && vm_path(vm, log, "qemu.log") == 0)
                        log_file_tail(vm->id, "QEMU", log);
        }
        return r;
}

/* Runs the job's setup with a guest handle of its own, which a delete or
 * the manager stopping closes (see vmm_delete and creates_drain). vm->lock
 * held throughout. */
static int run_setup(struct create_job *j)
{
        struct vmm *m = j->m;
        struct vm *vm = j->vm;
        struct vmm_guest g = {.m = m};
        int r = -ECANCELED, go;

        memcpy(g.id, vm->id, sizeof(g.id));
        g.workdir = vm->workdir;
        g.agent = agentc_ref(vm->agent);
        pthread_mutex_lock(&m->lock);
        go = !vm->doomed && !m->stopping;
        if (go)
                vm->setup_agent = g.agent;
        pthread_mutex_unlock(&m->lock);
        if (go)
                r = j->setup.run(j->setup.ud, &g, &j->report);
        pthread_mutex_lock(&m->lock);
        vm->setup_agent = NULL;
        pthread_mutex_unlock(&m->lock);
        agentc_unref(g.agent);
        if (r < 0) {
                log_err("vm %s: create-time setup failed: %s", vm->id, j->report ? j->report : strerror(-r));
                r = -ECANCELED;
        }
        return r;
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
        int64_t t;
        int r, k;

        pthread_mutex_lock(&vm->lock);
        pthread_mutex_lock(&m->lock);
        if (j->kind != CREATE_POOL)
                vm->hidden = 0; /* listed: requests for it wait for vm->lock */
        if (j->listed) {
                *j->listed = 1;
                j->listed = NULL; /* the creator's: gone once it wakes */
        }
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        crash_point("create.listed");
        t = now_ms();
        r = j->claimed ? pool_wake(m, vm) : vm_from_layer(m, vm, j->layer);
        if (r == 0 && j->kind != CREATE_POOL)
                histo_add(j->claimed ? &m->h_claim : &m->h_restore, (now_ms() - t) * 1000);
        /* A pooled VM first runs what a client's first exec will: under
         * TCG a new QEMU translates that path once, which took ~170 ms of
         * the first exec here, and is done ahead now. */
        if (r == 0 && j->kind == CREATE_POOL)
                for (int i = 0; i < 2 && r == 0; i++)
                        r = guest_run(vm->agent, "true", 10000) < 0 ? -EIO : 0;
        if (r < 0)
                log_err("vm %s: %s failed: %s", vm->id, j->claimed ? "resuming it from the warm pool" : "create",
                        strerror(-r));
        else if (j->setup.run)
                r = run_setup(j);
        if (r == 0)
                crash_point("create.restored");
        /* The record's create-in-progress mark goes once the create is
         * done, whichever way it ended (a fork's, once all its VMs are). */
        k = r == 0 && j->kind != CREATE_USER ? 0 : store_vm_set_error(m->store, vm->id, r < 0 && j->background ? r : 0, j->report);
        if (k < 0 && r == 0) {
                log_err("vm %s: could not record its create as done: %s", vm->id, strerror(-k));
                r = k;
        }
        if (r < 0 && !j->background) {
                /* Halted (its namespace gone) before it is unlinked: its uid,
                 * and so its network's names, are free only then. */
                vm_halt(m, vm, 0);
                vm_unlink(m, vm);
                k = store_vm_delete(m->store, vm->id);
                if (k < 0)
                        log_err("vm %s: could not remove the record of a failed create: %s", vm->id, strerror(-k));
                vm_dir_remove(vm->dir);
        } else if (r < 0) {
                vm_halt(m, vm, 0);
                pthread_mutex_lock(&m->lock);
                vm->error_code = r;
                vm->error = j->report;
                j->report = NULL;
                pthread_mutex_unlock(&m->lock);
                vm_set_state(m, vm, VM_STOPPED);
                log_warn("vm %s: its background create failed; kept, stopped, until deleted", vm->id);
        } else if (j->kind == CREATE_POOL) {
                pthread_mutex_lock(&m->lock);
                vm->pooled = 1;
                m->npool++;
                pthread_mutex_unlock(&m->lock);
                log_info("vm %s: ready in the warm pool, restored from %s in %lld ms", vm->id,
                         j->layer ? j->layer : "the default snapshot", (long long)(now_ms() - j->t0));
        } else {
                vm_set_state(m, vm, VM_RUNNING);
                log_info("vm %s: created for account %s from %s in %lld ms%s", vm->id, vm->account,
                         j->layer ? j->layer : "the default snapshot", (long long)(now_ms() - j->t0),
                         j->claimed ? " (from the warm pool)" : j->background ? " (in the background)" : "");
        }
        pthread_mutex_unlock(&vm->lock);
        return r;
}

static void create_release(const struct vmm_create *opts)
{
        if (opts->background && opts->setup && opts->setup->release)
                opts->setup->release(opts->setup->ud);
}

static void job_free(struct create_job *j)
{
        free(j->layer);
        free(j->report);
        free(j);
}

static void *create_main(void *arg)
{
        struct create_job *j = arg;
        struct vmm *m = j->m;

        create_busy(m, 1);
        create_run(j);
        create_busy(m, -1);
        if (j->setup.release)
                j->setup.release(j->setup.ud);
        vm_put(m, j->vm);
        job_free(j);
        pthread_mutex_lock(&m->lock);
        m->creates--;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        return NULL;
}

/* The setups in progress lose their agent (their requests fail at once,
 * and they end as failed creates); restores finish within their own time
 * limits. */
void creates_drain(struct vmm *m)
{
        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm; vm = vm->next)
                if (vm->setup_agent)
                        agentc_shutdown(vm->setup_agent);
        while (m->creates > 0)
                pthread_cond_wait(&m->cond, &m->lock);
        pthread_mutex_unlock(&m->lock);
}

/* Starts a background create: the thread lists the VM with vm->lock held,
 * so that nothing reaches it half made, and this returns once it is
 * listed. */
static int create_in_background(struct create_job *job)
{
        struct vmm *m = job->m;
        struct create_job *bg = malloc(sizeof(*bg));
        pthread_t thread;
        int listed = 0;

        if (bg) {
                *bg = *job;
                bg->listed = &listed;
                bg->layer = job->layer ? strdup(job->layer) : NULL;
        }
        pthread_mutex_lock(&m->lock);
        m->creates++;
        pthread_mutex_unlock(&m->lock);
        if (!bg || (job->layer && !bg->layer) || pthread_create(&thread, NULL, create_main, bg) != 0) {
                pthread_mutex_lock(&m->lock);
                m->creates--;
                pthread_cond_broadcast(&m->cond);
                pthread_mutex_unlock(&m->lock);
                if (bg)
                        job_free(bg);
                return -EAGAIN;
        }
        pthread_detach(thread);
        pthread_mutex_lock(&m->lock);
        while (!listed)
                pthread_cond_wait(&m->cond, &m->lock);
        pthread_mutex_unlock(&m->lock);
        return 0;
}

/* A new VM's record as opts say; the strings stay the caller's. */
static void fill_record(struct store_vm *rec, const char *id, const char *account, const struct vmm_create *opts,
                        const char *layer, int mem_mb, int vcpus)
{
        rec->id = (char *)id;
        rec->account_id = (char *)account;
        rec->name = (char *)opts->name;
        rec->state = (char *)"starting";
        rec->workdir = (char *)opts->workdir;
        rec->persist_kind = (char *)vm_persist_name(opts->persistence.kind);
        rec->persist_priority = opts->persistence.priority;
        rec->persist_delete_on = (char *)vm_state_name(opts->persistence.delete_on);
        rec->snapshot_id = (char *)opts->snapshot_id;
        rec->created_at = wall_ms();
        rec->idle_timeout_s = opts->idle_timeout_s;
        rec->mem_mb = mem_mb;
        rec->vcpus = vcpus;
        rec->layer = (char *)layer;
        rec->build_id = (char *)opts->build_id;
        rec->internal = opts->internal;
        /* In the record only, cleared once the create is done: a daemon
         * that dies before then finds it at its next start, and removes
         * it unless the create had answered (a background one). */
        rec->error_code = opts->background ? -EINPROGRESS : CREATE_UNANSWERED;
}

/* A VM of its own for rec: listed hidden, admitted, recorded, with its
 * directory; NULL with *ret_r on failure. */
static struct vm *new_vm(struct vmm *m, const struct store_vm *rec, const struct store_limits *limits, int *ret_r)
{
        struct vm *vm = vm_alloc(rec, m->data_dir);
        int r;

        if (!vm) {
                *ret_r = -ENOMEM;
                return NULL;
        }
        vm->state = VM_STARTING;
        vm->error_code = 0; /* the mark is the record's only */
        vm->refs = 2; /* the list's and the job's */
        /* Admitted and counted at once, hidden until create_run lists it,
         * so that concurrent creates see each other. */
        pthread_mutex_lock(&m->lock);
        r = !m->ready ? -EAGAIN : vm_admit(m, rec->account_id, limits, rec->mem_mb, 1, NULL);
        if (r == 0) {
                vm->hidden = 1;
                vm_link(m, vm);
        }
        pthread_mutex_unlock(&m->lock);
        if (r < 0) {
                vm_free(vm);
                *ret_r = r;
                return NULL;
        }
        r = mkdir_p(vm->dir, 0700);
        if (r == 0)
                r = store_vm_insert(m->store, rec);
        if (r == 0)
                crash_point("create.recorded");
        if (r < 0) {
                vm_dir_remove(vm->dir);
                vm_unlink(m, vm);
                vm_free(vm);
                *ret_r = r;
                return NULL;
        }
        return vm;
}

int create_vm(struct vmm *m, const char *account, const struct vmm_create *opts, const char *layer, int mem_mb,
              int vcpus, enum create_kind kind, char ret_id[21], char **ret_report)
{
        struct store_vm rec = {0};
        struct create_job job = {.m = m, .t0 = now_ms(), .background = opts->background, .layer = (char *)layer,
                                 .kind = kind};
        struct store_limits limits = limits_of(m, account);
        struct vm *vm = NULL;
        char id[21];
        int r = storage_admit(m, account);

        /* A client's VM comes from the warm pool when one fits. */
        if (r == 0 && kind == CREATE_USER && !opts->internal && m->ready) {
                r = pool_claim(m, account, &limits, layer, mem_mb, vcpus, &vm);
                if (r == 1)
                        r = 0;
        }
        if (r == 0 && !vm)
                r = random_id(id, 20);
        if (r < 0) {
                create_release(opts);
                return r;
        }
        if (vm)
                memcpy(id, vm->id, sizeof(id));
        fill_record(&rec, id, account, opts, layer, mem_mb, vcpus);
        if (vm) {
                rec.uid = vm->uid;
                r = pool_adopt(m, vm, &rec);
                if (r < 0) {
                        log_err("vm %s: could not take it from the warm pool: %s", id, strerror(-r));
                        vm_destroy(m, vm);
                        vm_put(m, vm);
                        create_release(opts);
                        return r;
                }
                job.claimed = 1;
        } else {
                vm = new_vm(m, &rec, &limits, &r);
                if (!vm) {
                        create_release(opts);
                        return r;
                }
        }
        job.vm = vm;
        if (opts->setup)
                job.setup = *opts->setup;
        if (!opts->background) {
                r = create_run(&job);
                vm_put(m, vm);
                /* A pooled VM that did not wake is gone: a fresh one then
                 * (its setup never ran). */
                if (r < 0 && job.claimed && r != -ECANCELED && !m->stopping) {
                        free(job.report);
                        return create_vm(m, account, opts, layer, mem_mb, vcpus, kind, ret_id, ret_report);
                }
                if (r == 0)
                        memcpy(ret_id, id, 21);
                if (ret_report)
                        *ret_report = job.report;
                else
                        free(job.report);
                return r;
        }
        r = create_in_background(&job);
        if (r < 0) {
                /* Never listed: removed as a VM that never was. */
                vm_destroy(m, vm);
                vm_put(m, vm);
                create_release(opts);
                return r;
        }
        memcpy(ret_id, id, 21);
        return 0;
}

static int vmm_create_from(struct vmm *m, const char *account, const struct vmm_create *opts, char ret_id[21],
                           char **ret_report);

int vmm_create(struct vmm *m, const char *account, const struct vmm_create *opts, char ret_id[21],
               char **ret_report)
{
        int r;

        if (ret_report)
                *ret_report = NULL;
        create_busy(m, 1);
        r = vmm_create_from(m, account, opts, ret_id, ret_report);
        create_busy(m, -1);
        return r;
}

static int vmm_create_from(struct vmm *m, const char *account, const struct vmm_create *opts, char ret_id[21],
                           char **ret_report)
{
        struct store_snapshot snap = {0};
        int r;

        if (!opts->snapshot_id)
                return create_vm(m, account, opts, NULL, m->cfg.mem_mb, m->cfg.vcpus, CREATE_USER, ret_id, ret_report);
        /* The snapshot's layer stays, pinned, until the VM's record sits
         * on it, whatever deletes the snapshot meanwhile. */
        pthread_mutex_lock(&m->layer_lock);
        r = store_snapshot_get(m->store, account, opts->snapshot_id, &snap);
        if (r == 0 && (snap.deleted || strcmp(snap.state, "ready")))
                r = -ENOENT;
        if (r == 0)
                r = layer_pin_locked(m, snap.layer);
        pthread_mutex_unlock(&m->layer_lock);
        if (r == 0) {
                if (!opts->internal)
                        pool_note(m, account, opts->snapshot_id, snap.layer, snap.mem_mb, snap.vcpus);
                r = create_vm(m, account, opts, snap.layer, snap.mem_mb, snap.vcpus, CREATE_USER, ret_id, ret_report);
                layer_unpin(m, snap.layer);
        } else {
                create_release(opts);
                if (r == -ENOENT)
                        r = -ENOMEDIUM; /* no such snapshot */
        }
        store_snapshot_clear(&snap);
        return r;
}

int vm_destroy(struct vmm *m, struct vm *vm)
{
        int r;

        /* A create-time setup holds vm->lock until it ends, which may be
         * minutes away (readySignalTimeoutSeconds): cut it short instead;
         * its guest requests fail at once. */
        pthread_mutex_lock(&m->lock);
        vm->doomed = 1;
        if (vm->setup_agent)
                agentc_shutdown(vm->setup_agent);
        pthread_mutex_unlock(&m->lock);
        pthread_mutex_lock(&vm->lock);
        if (vm->removed) {
                pthread_mutex_unlock(&vm->lock);
                return -ENOENT;
        }
        /* Halted first: the uid it frees with vm_unlink names a network
         * namespace and veth a new VM makes again at once. */
        vm_halt(m, vm, 2000);
        crash_point("delete.halted");
        r = store_vm_delete(m->store, vm->id);
        if (r < 0 && r != -ENOENT) {
                /* A record that stays (a full disk) is a VM that stays:
                 * stopped, and the delete fails, rather than a VM that
                 * comes back after the next restart. */
                log_err("vm %s: could not remove its record: %s; kept, stopped", vm->id, strerror(-r));
                pthread_mutex_lock(&m->lock);
                vm->doomed = 0;
                pthread_mutex_unlock(&m->lock);
                vm_set_state(m, vm, VM_STOPPED);
                pthread_mutex_unlock(&vm->lock);
                return r;
        }
        vm_unlink(m, vm);
        crash_point("delete.unrecorded");
        vm_dir_remove(vm->dir);
        pthread_mutex_unlock(&vm->lock);
        log_info("vm %s: deleted", vm->id);
        layers_gc(m);
        return 0;
}

int vmm_delete(struct vmm *m, const char *account, const char *id)
{
        struct vm *vm = vm_find(m, account, id);
        int r;

        if (!vm)
                return -ENOENT;
        r = vm_destroy(m, vm);
        vm_put(m, vm);
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

struct fork_done {
        struct fork_job *jobs;
        int n;
};

static int fork_commit(struct store *t, void *ud)
{
        struct fork_done *d = ud;
        int r = 0;

        for (int i = 0; r == 0 && i < d->n; i++)
                r = store_vm_set_error(t, d->jobs[i].id, 0, NULL);
        return r;
}

static void *fork_main(void *arg)
{
        struct fork_job *j = arg;

        j->r = create_vm(j->m, j->account, j->opts, j->layer, j->mem_mb, j->vcpus, CREATE_FORK, j->id, NULL);
        return NULL;
}

static int fork_vms(struct vmm *m, const char *account, const char *id, int count, char (*ret_ids)[21])
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
        r = storage_admit(m, account);
        if (r == 0)
                r = ensure_running(m, vm);
        if (r == 0)
                r = vm_make_layer(m, vm, layer);
        /* Until the children's records sit on it, the layer is pinned: a
         * delete of the parent meanwhile must not take it. */
        if (r == 0)
                r = layer_pin(m, layer);
        if (r == 0)
                crash_point("fork.layer");
        pthread_mutex_lock(&m->lock);
        vm_fill_info(vm, &info);
        pthread_mutex_unlock(&m->lock);
        /* The parent runs on; the children restore from the new layer. */
        vm_unlock(m, vm);
        if (r < 0) {
                vmm_info_clear(&info);
                return r;
        }
        struct vmm_create opts = {.name = info.name, .workdir = info.workdir, .idle_timeout_s = 300,
                                  .persistence = VM_PERSISTENCE_DEFAULT};
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
        if (r == 0) {
                /* The children come into being together, or (a daemon that
                 * dies before this) not at all. */
                struct fork_done done = {jobs, count};

                crash_point("fork.children");
                r = store_txn(m->store, fork_commit, &done);
                if (r < 0)
                        log_err("vm %s: could not record its forks: %s", id, strerror(-r));
        }
        layer_unpin(m, layer);
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
                histo_add(&m->h_fork, (now_ms() - t0) * 1000);
                log_info("vm %s: forked into %d in %lld ms", id, count, (long long)(now_ms() - t0));
        }
        vmm_info_clear(&info);
        return r;
}

int vmm_fork(struct vmm *m, const char *account, const char *id, int count, char (*ret_ids)[21])
{
        int r;

        /* The warm pool waits while a fork runs. */
        create_busy(m, 1);
        r = fork_vms(m, account, id, count, ret_ids);
        create_busy(m, -1);
        return r;
}

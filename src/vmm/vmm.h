/*
 * vmm: the VM manager. Owns every VM's state machine and its runtime
 * resources (QEMU process, agent connection, directory), writes state
 * through to the store, and keeps the default snapshot that new VMs are
 * restored from. The API handlers and the guest modules above call in
 * here; this module calls the hypervisor driver (qemu), the agent client
 * (agentc) and the store, never the other way round, and speaks neither
 * HTTP nor JSON: every failure is a -errno, which the API layer maps.
 * All functions are thread-safe. Account scoping is enforced here: a VM of
 * another account is reported as not found (-ENOENT).
 *
 * Its errors: -ENOENT no such VM; -ENOMEDIUM no such snapshot; -ENOTCONN
 * the VM is not in a state the operation applies to; -EUSERS the server's
 * VM limit; -EAGAIN not ready yet (the default snapshot is being made);
 * -ETIMEDOUT the guest did not answer in time; -ECONNRESET the VM went
 * away during the operation; -ENOTRECOVERABLE the VM's create failed
 * (vmm_info.error_code says why); -EALREADY a snapshot already deleted;
 * -EINVAL a request the operation cannot take. Limits: -EUSERS VMs (the
 * server's or the account's), -EMLINK the account's running VMs,
 * -EOVERFLOW the account's guest memory, -ETOOMANYREFS the account's
 * snapshots, -EDQUOT the account's storage, -ENOSPC the data dir's free
 * space is below the reserve. Others are internal.
 */
#ifndef SPROUT_VMM_H
#define SPROUT_VMM_H

#include "agentc/agentc.h"
#include "hv/net.h"
#include "hv/qemu.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

enum vm_state {
        VM_BUILDING,
        VM_STARTING,
        VM_RUNNING,
        VM_SUSPENDING,
        VM_SUSPENDED,
        VM_STOPPED,
        VM_LOST,
        VM_STATE_COUNT,
};

const char *vm_state_name(enum vm_state s);
/* Returns the state for a name, or -1. */
int vm_state_parse(const char *name);

/* What happens to a VM (or snapshot) under storage pressure and when it
 * stops being used. */
enum vm_persist {
        VM_PERSIST_STICKY,     /* evicted past the storage quota, lowest priority first */
        VM_PERSIST_EPHEMERAL,  /* deleted when it reaches delete_on */
        VM_PERSIST_PERSISTENT, /* kept until deleted */
};

struct vm_persistence {
        enum vm_persist kind;
        int priority;            /* sticky: 0..10, higher is evicted later */
        enum vm_state delete_on; /* ephemeral: VM_SUSPENDED or VM_STOPPED */
};

#define VM_PERSISTENCE_DEFAULT ((struct vm_persistence){VM_PERSIST_STICKY, 5, VM_SUSPENDED})

const char *vm_persist_name(enum vm_persist p);
/* Returns the kind for a name ("sticky", "ephemeral", "persistent"), or -1. */
int vm_persist_parse(const char *name);

struct vmm_config {
        const char *data_dir;
        const char *image_dir;
        enum qemu_accel accel;
        int mem_mb;
        int vcpus;
        int max_vms;          /* cap on VMs that exist at once */
        size_t max_file_size; /* cap on one file read or written */
        size_t max_output;    /* cap on an exec's stdout+stderr */
        int64_t max_exec_ms;  /* cap on an exec's run time: one with no timeout, or a longer one, gets this */
        /* Each VM's QEMU runs as a uid of its own, uid_base + n, in a jail
         * (hv/jail.h); with unconfined set it runs as the daemon's user,
         * which an operator accepts explicitly. */
        int unconfined;
        unsigned uid_base;
        /* What confined guests reach on the network (hv/net.h). */
        struct net_policy net;
        int64_t storage_quota; /* bytes; past it sticky VMs are evicted; 0: none */
        /* Every account's limits unless its own say otherwise (-1 or 0 in
         * a field: none). Past its storage limit, an account's own sticky
         * VMs are evicted and it makes nothing new. */
        struct store_limits account_limits;
        /* Creates, forks and snapshots are refused while the data dir has
         * less free space than this, so that a full disk never stops the
         * VMs that run (their RAM is a file there). */
        int64_t disk_reserve;
        /* The warm pool: VMs restored and paused ahead of creates from the
         * default snapshot, and the memory all pooled VMs may take (the
         * snapshots used lately get one each within it; 0: N times the
         * default size). */
        int warm_pool;
        int64_t warm_pool_mem_mb;
};

/* A copy of a VM's public facts, owned by the caller (vmm_info_clear). */
struct vmm_info {
        char id[21];
        char *name;
        char *workdir;
        char *snapshot_id; /* the snapshot it was created from, or NULL */
        char *build_id;    /* the build it came from, or NULL */
        enum vm_state state;
        int64_t created_at; /* wall-clock ms */
        int mem_mb;
        int vcpus;
        char instance[21]; /* id of the current run; "" when not running */
        int pending_mem_mb; /* resize waiting for the next cold start; 0: none */
        int pending_vcpus;
        int64_t idle_timeout_s;
        int64_t disk_bytes; /* allocated by the VM's own files */
        char dir[4096];     /* its directory (for disk use) */
        /* Its create failed (a background one, or one sproutd died in):
         * -ECANCELED its setup failed (error holds the setup's report),
         * -EINPROGRESS sproutd stopped during it, other -errno: the
         * restore failed. 0: it did not fail. */
        int error_code;
        char *error;
        /* Its QEMU runs but its agent does not answer: since when (wall
         * ms; 0: it answers) and why (-errno). */
        int64_t agent_down_since;
        int agent_error;
};

struct vmm;

int vmm_new(const struct vmm_config *c, struct store *store, struct vmm **ret);

/* Starts the background work that makes the manager ready: re-attaching
 * VMs that were running before a restart, and making the default snapshot
 * (a cold boot, tens of seconds under TCG) unless it exists. */
int vmm_run(struct vmm *m);

/* 1 once VMs can be created, else 0. buf (size bytes; may be NULL) gets
 * what the manager is doing, or why it failed to get ready. */
int vmm_ready(struct vmm *m, char *buf, size_t size);

/* The server's figures, for /healthz and /metrics. */
struct vmm_stats {
        int vms_by_state[VM_STATE_COUNT]; /* clients' VMs (not pooled or internal ones) */
        int internal_vms;                 /* builds' temporary VMs */
        int pool_vms;
        int64_t pool_mem_mb;
        int64_t pool_hits, pool_misses;
        int64_t guest_mem_mb; /* of the VMs whose QEMU runs */
};
void vmm_stats(struct vmm *m, struct vmm_stats *ret);
/* Appends the manager's metrics in the Prometheus text format. */
struct strbuf;
void vmm_metrics(struct vmm *m, struct strbuf *b);

/* What new VMs boot from: the default snapshot's name, which names the
 * guest image, accelerator and size (a build's cache keys include it).
 * -EAGAIN until the manager is ready. */
int vmm_image_id(struct vmm *m, char *buf, size_t size);

/* Stops background work and releases connections. QEMU processes are left
 * running so a restarted daemon can take them back. */
void vmm_free(struct vmm *m);

struct vmm_guest;

/* Create-time setup: what a new VM gets (files, users, services...) before
 * it counts as running. */
struct vmm_setup {
        /* Called once the new VM's agent answers, from the thread that
         * restored it, with a guest handle for its operations (valid until
         * run returns; do not close it). Until it returns the VM reads as
         * starting and every other request for the VM waits, as for any
         * transition. A delete of the VM, or the manager stopping, makes
         * the handle's operations fail at once (-ECONNRESET). Returns 0, or
         * < 0 and may set *ret_report to a malloc'd text that says what
         * failed, which is kept as the VM's vmm_info.error. */
        int (*run)(void *ud, struct vmm_guest *g, char **ret_report);
        /* Called once, when ud is no longer needed; may be NULL. The
         * manager calls it only for a background create (see below), on
         * every path, vmm_create's own failures included. */
        void (*release)(void *ud);
        void *ud;
};

struct vmm_create {
        const char *name;    /* may be NULL */
        const char *workdir; /* may be NULL: the agent's default */
        int64_t idle_timeout_s;
        struct vm_persistence persistence;
        const char *snapshot_id; /* restore this snapshot; NULL: the default one */
        const struct vmm_setup *setup; /* may be NULL: none; copied */
        /* Return as soon as the VM is listed (starting): restore and setup
         * go on in a thread of their own. A failure there keeps the VM,
         * stopped, with the error in vmm_info, and its guest operations
         * fail with -ENOTRECOVERABLE until it is started again or deleted. */
        int background;
        const char *build_id; /* the build it comes from; may be NULL */
        int internal;         /* a build's temporary VM: never listed */
};

/* Creates a VM for account from a snapshot (its memory, device state and
 * disk) and returns once it runs, its agent answers and its setup is done
 * (or, with opts->background, once it is listed). -EAGAIN when the manager
 * is not ready, -EUSERS past max_vms, -ENOMEDIUM for an unknown or deleted
 * snapshot, -ECANCELED when setup->run failed (*ret_report, when not NULL,
 * then gets its report, malloc'd), other -errno on failure; without
 * background nothing is left behind on failure. */
int vmm_create(struct vmm *m, const char *account, const struct vmm_create *opts, char ret_id[21],
               char **ret_report);

/* A VM's facts. Reading them is not a use of the VM. */
int vmm_get(struct vmm *m, const char *account, const char *id, struct vmm_info *ret);

/* Calls fn for each VM of account in creation order; stops at and returns
 * fn's first non-zero value. */
int vmm_list(struct vmm *m, const char *account, int (*fn)(const struct vmm_info *vm, void *ud), void *ud);

void vmm_info_clear(struct vmm_info *i);

/* Stops the VM's QEMU, removes its files and its record, and frees the
 * layers nothing uses any more. */
int vmm_delete(struct vmm *m, const char *account, const char *id);

/*
 * Lifecycle. Each is serialised with any other transition of the same VM
 * (a request waits for the one in progress). -ENOENT: no such VM;
 * -ENOTCONN: the VM is not in a state the operation applies to.
 */
/* Saves memory and device state to disk and ends QEMU. */
int vmm_suspend(struct vmm *m, const char *account, const char *id);
/* Resumes a suspended VM, or cold-boots a stopped one from its disk. */
int vmm_start(struct vmm *m, const char *account, const char *id);
/* Clean guest shutdown; the disk is kept. */
int vmm_stop(struct vmm *m, const char *account, const char *id);
/* Ends QEMU at once. */
int vmm_kill(struct vmm *m, const char *account, const char *id);
/* Blocks until the VM is stopped, lost or deleted, and says which; at
 * most timeout_ms (-ETIMEDOUT then). */
int vmm_await(struct vmm *m, const char *account, const char *id, int64_t timeout_ms, char ret_status[16]);
struct vmm_snapshot_opts {
        const char *name; /* may be NULL */
        struct vm_persistence persistence;
        /* A snapshot record a build made ahead (state "building"), which
         * becomes ready; NULL: a new record. */
        const char *building_id;
        const char *build_id;      /* the build that takes it; may be NULL */
        const char *template_hash; /* its layer cache key; may be NULL */
};

/* Captures memory, device state and disk as a snapshot; the VM runs on. */
int vmm_snapshot(struct vmm *m, const char *account, const char *id, const struct vmm_snapshot_opts *o,
                 char ret_snapshot[24]);

/* Suspends the VM and rebases its disk onto the default snapshot's, so
 * its chain is two files deep whatever snapshots it came through. */
int vmm_optimize(struct vmm *m, const char *account, const char *id);
/* Grows the disk now (and the guest filesystem with it); memory and vCPUs
 * take effect at the next cold start. Values <= 0 leave that part alone.
 * -EINVAL for any shrink (nothing is changed). */
int vmm_resize(struct vmm *m, const char *account, const char *id, int64_t disk_gb, int64_t mem_gb, int64_t vcpus);

#define VMM_MAX_FORKS 16
/* Makes count (1..VMM_MAX_FORKS) running copies of a VM; all or none. */
int vmm_fork(struct vmm *m, const char *account, const char *id, int count, char (*ret_ids)[21]);

/* Bytes a snapshot layer's files take on disk. */
int64_t vmm_layer_usage(struct vmm *m, const char *layer);

/* Marks a snapshot deleted (-EALREADY if it was) and frees its layers if
 * nothing else uses them. */
int vmm_snapshot_delete(struct vmm *m, const char *account, const char *id);

/*
 * Guest operations go through a handle, so that what each needs is
 * explicit: vmm_guest_open waits for a transition of the VM in progress,
 * resumes a suspended VM, and takes a reference to its agent; the
 * operations then hold no VM lock while the guest works, so any number run
 * at once. A create-time setup gets its handle from the create itself (see
 * vmm_setup). Opening counts as a use of the VM: its idle timer starts
 * again. Open fails with -ENOENT, -ENOTCONN (stopped), -ENOTRECOVERABLE
 * (its create failed), or what resuming it failed with.
 */
int vmm_guest_open(struct vmm *m, const char *account, const char *id, struct vmm_guest **ret);
/* NULL is a no-op. */
void vmm_guest_close(struct vmm_guest *g);

/* Each operation returns 0 once the agent answered, with the outcome in
 * *ret (a failure inside the guest is ret->err), which the caller frees
 * with agentc_result_free; or -errno when the guest did not answer:
 * -ETIMEDOUT, -ECONNRESET (the VM went away). Relative paths are taken from
 * the VM's working directory. */
struct vmm_exec {
        const char *command;
        const char *terminal; /* run in this persistent PTY session; NULL: a fresh process */
        const char *user;     /* Linux user or NULL for root */
        int64_t timeout_ms;   /* <= 0: none */
};

int vmm_guest_exec(struct vmm_guest *g, const struct vmm_exec *e, struct agentc_result *ret);
/* A file (ret->data, up to the server's file cap: ret->overflow past it)
 * or a directory (ret->is_dir, ret->entries). */
int vmm_guest_read(struct vmm_guest *g, const char *path, const char *user, struct agentc_result *ret);
int vmm_guest_write(struct vmm_guest *g, const char *path, const char *user, const void *data, size_t len,
                    unsigned mode, struct agentc_result *ret);
/* The persistent terminals (ret->entries), and one's scrollback (ret->data). */
int vmm_guest_term_list(struct vmm_guest *g, struct agentc_result *ret);
int vmm_guest_term_log(struct vmm_guest *g, const char *terminal, struct agentc_result *ret);

/* A stream of file-change events (JSON lines) for a directory tree (NULL:
 * the working directory). It holds its own agent reference: it outlives
 * the handle it was opened through. */
struct vmm_watch;
int vmm_guest_watch(struct vmm_guest *g, const char *path, const char *user, struct vmm_watch **ret);
/* As agentc_stream_read: bytes, 0 on timeout, <0 when the stream ended. */
long vmm_watch_read(struct vmm_watch *w, void *buf, size_t max, int timeout_ms);
/* Ends the watch in the guest and frees w; NULL is a no-op. */
void vmm_watch_close(struct vmm_watch *w);

/* An interactive terminal in the guest, attached (see agentc_pty_open):
 * like a watch, it holds its own agent reference. */
struct vmm_pty;
int vmm_guest_pty(struct vmm_guest *g, const struct agentc_pty *p, struct vmm_pty **ret);
/* Output: as agentc_stream_read. */
long vmm_pty_read(struct vmm_pty *t, void *buf, size_t max, int timeout_ms);
/* Input: 0, or -EPIPE once the terminal's stream ended. */
int vmm_pty_write(struct vmm_pty *t, const void *data, size_t len);
int vmm_pty_resize(struct vmm_pty *t, int rows, int cols);
/* Once the stream ended: the shell's exit status (>= 0), -EBUSY when
 * another attach took the terminal over, or another -errno. */
int vmm_pty_status(struct vmm_pty *t);
/* Detaches (an ephemeral terminal ends) and frees t; NULL is a no-op. */
void vmm_pty_close(struct vmm_pty *t);

/*
 * Ingress: a TCP connection (non-blocking, *ret_fd) to port inside the VM
 * id of any account (hosts are public), resuming it when suspended, within
 * timeout_ms, and the VM's instance it was made in; it counts as a use of
 * the VM. -ENOENT: no such VM;
 * -ENOTCONN: stopped; -ECONNREFUSED: nothing listens there; -ETIMEDOUT;
 * -EOPNOTSUPP: unconfined VMs (user-mode networking) cannot be reached;
 * what resuming it failed with.
 */
int vmm_ingress_connect(struct vmm *m, const char *id, int port, int timeout_ms, int *ret_fd,
                        char ret_instance[21]);
/* The same for a connection made before in instance (what connect gave):
 * the VM is resumed if it was suspended since, and used now. 0; 1 when the
 * VM runs another instance now (resumed or started: a connection made
 * before is dead, make another); or what vmm_ingress_connect fails with
 * before connecting. */
int vmm_ingress_wake(struct vmm *m, const char *id, const char instance[21]);
/* The VM is in use now (traffic through the proxy): its idle timer starts
 * again. */
void vmm_ingress_touch(struct vmm *m, const char *id);

#endif

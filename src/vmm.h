/*
 * vmm: the VM manager. Owns every VM's state machine and its runtime
 * resources (QEMU process, agent connection, directory), writes state
 * through to the store, and keeps the default snapshot that new VMs are
 * restored from. HTTP handlers call in here; this module calls the
 * hypervisor driver (qemu) and the agent client (agentc), never the other
 * way round. All functions are thread-safe. Account scoping is enforced
 * here: a VM of another account is reported as not found (-ENOENT).
 */
#ifndef SPROUT_VMM_H
#define SPROUT_VMM_H

#include "agentc.h"
#include "qemu.h"
#include "store.h"

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

struct vmm_config {
        const char *data_dir;
        const char *image_dir;
        enum qemu_accel accel;
        int mem_mb;
        int vcpus;
        int max_vms;          /* cap on VMs that exist at once */
        size_t max_file_size; /* cap on one file read or written */
        size_t max_output;    /* cap on an exec's stdout+stderr */
        int64_t storage_quota; /* bytes; past it sticky VMs are evicted; 0: none */
};

/* A copy of a VM's public facts, owned by the caller (vmm_info_clear). */
struct vmm_info {
        char id[21];
        char *name;
        char *workdir;
        char *snapshot_id; /* the snapshot it was created from, or NULL */
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
        char *error;        /* a background create that failed: the API error as JSON object text; else NULL */
};

struct vmm;

int vmm_new(const struct vmm_config *c, struct store *store, struct vmm **ret);

/* Starts the background work that makes the manager ready: re-attaching
 * VMs that were running before a restart, and making the default snapshot
 * (a cold boot, tens of seconds under TCG) unless it exists. */
int vmm_run(struct vmm *m);

/* 1 once VMs can be created. While not ready, *ret_status (optional) says
 * what it is doing or why it failed; the string stays valid until the next
 * call. */
int vmm_ready(struct vmm *m, char *buf, size_t size);

/* Stops background work and releases connections. QEMU processes are left
 * running so a restarted daemon can take them back. */
void vmm_free(struct vmm *m);

/* Create-time setup: what a new VM gets (files, users, services...) before
 * it counts as running. */
struct vmm_setup {
        /* Called once the new VM's agent answers, from the thread that
         * restored it. Until it returns the VM reads as starting and every
         * other request for the VM waits, as for any transition; the guest
         * operations below that this same thread makes for the VM go
         * through (they fail with -ECANCELED once the manager is stopping).
         * Returns 0, or < 0 and may set *ret_error to a malloc'd JSON object
         * text (the API error: code, message, diagnostics). */
        int (*run)(void *ud, const char *id, char **ret_error);
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
        const char *persistence; /* JSON text, may be NULL */
        const char *snapshot_id; /* restore this snapshot; NULL: the default one */
        const struct vmm_setup *setup; /* may be NULL: none; copied */
        /* Return as soon as the VM is listed (starting): restore and setup
         * go on in a thread of their own. A failure there keeps the VM,
         * stopped, with the error in vmm_info.error, and its guest
         * operations fail with -ENOTRECOVERABLE until it is started again
         * or deleted. */
        int background;
};

/* Creates a VM for account from a snapshot (its memory, device state and
 * disk) and returns once it runs, its agent answers and its setup is done
 * (or, with opts->background, once it is listed). -EAGAIN when the manager
 * is not ready, -EUSERS past max_vms, -ENOMEDIUM for an unknown or deleted
 * snapshot, -ECANCELED when setup->run failed, other -errno on failure;
 * without background nothing is left behind on failure. */
int vmm_create(struct vmm *m, const char *account, const struct vmm_create *opts, char ret_id[21]);

int vmm_get(struct vmm *m, const char *account, const char *id, struct vmm_info *ret);

/* Calls fn for each VM of account in creation order. */
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
/* Blocks until the VM is stopped, lost or deleted; says which. */
int vmm_await(struct vmm *m, const char *account, const char *id, char ret_status[16]);
/* Captures memory, device state and disk as a snapshot; the VM runs on. */
int vmm_snapshot(struct vmm *m, const char *account, const char *id, const char *name, const char *persistence,
                 char ret_snapshot[24]);

/* Suspends the VM and rebases its disk onto the default snapshot's, so
 * its chain is two files deep whatever snapshots it came through. */
int vmm_optimize(struct vmm *m, const char *account, const char *id);
/* Grows the disk now (and the guest filesystem with it); memory and vCPUs
 * take effect at the next cold start. Values <= 0 leave that part alone.
 * -EINVAL for any shrink. */
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
 * Guest operations. Each returns 0 when the agent answered, with the
 * outcome in the result (agent_errno != 0 for a failure inside the guest,
 * with errmsg), or -errno when the VM could not be reached: -ENOENT no such
 * VM, -ENOTCONN not running, -ETIMEDOUT, -ECONNRESET (VM went away),
 * -ENOTRECOVERABLE its background create failed (vmm_info.error says why).
 */
struct vmm_result {
        int agent_errno;
        char *errmsg;       /* from the agent; may be NULL */
        int exit_code;
        int timed_out;
        int kind;           /* PROTO_KIND_* for reads */
        struct agentc_reply reply; /* data/out/err bytes; result TLV */
};

void vmm_result_clear(struct vmm_result *r);

struct vmm_exec {
        const char *command;
        const char *terminal; /* run in this persistent PTY session; NULL: a fresh process */
        const char *user;   /* Linux user or NULL for root */
        int64_t timeout_ms; /* <= 0: none */
};

int vmm_exec(struct vmm *m, const char *account, const char *id, const struct vmm_exec *e,
             struct vmm_result *ret);

/* Reads a file (bytes in reply.data) or a directory (ENTRY records in
 * reply.result; kind says which). Relative paths are taken from the VM's
 * working directory. */
int vmm_read(struct vmm *m, const char *account, const char *id, const char *path, const char *user,
             struct vmm_result *ret);

int vmm_write(struct vmm *m, const char *account, const char *id, const char *path, const char *user,
              const void *data, size_t len, unsigned mode, struct vmm_result *ret);

/* Sends one TLV request to the VM's agent (resuming it first if
 * suspended) and collects the answer, as the operations above do. */
int vmm_call(struct vmm *m, const char *account, const char *id, struct proto_buf *req, size_t cap,
             struct vmm_result *ret);

/* A stream of file-change events (JSON lines) for a directory tree. */
struct vmm_watch;
int vmm_watch_open(struct vmm *m, const char *account, const char *id, const char *path, const char *user,
                   struct vmm_watch **ret);
/* As agentc_stream_read: bytes, 0 on timeout, <0 when the stream ended. */
long vmm_watch_read(struct vmm_watch *w, void *buf, size_t max, int timeout_ms);
/* Ends the watch in the guest and frees w; NULL is a no-op. */
void vmm_watch_close(struct vmm_watch *w);

#endif

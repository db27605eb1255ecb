/*
 * vmm_int: what the VM manager's own files share: the VM and manager
 * structs, the registry, and the steps that more than one file takes.
 * Nothing outside src/vmm/ includes this header.
 *
 * Locking: m->lock protects the VM list, every vm's refs, state, activity
 * and the fields marked "under m->lock"; vm->lock serialises transitions
 * of one VM (create, start, suspend, snapshot, delete...) and guards its
 * qemu and agent pointers and the fields marked "under lock". Lock order:
 * vm->lock, then m->layer_lock, then m->lock. A guest operation holds its
 * own agent reference, never vm->lock, while it waits on the guest, so
 * many run at once and none waits on a transition it is part of.
 */
#ifndef SPROUT_VMM_INT_H
#define SPROUT_VMM_INT_H

#include "agentc/agentc.h"
#include "hv/cgroup.h"
#include "hv/qemu.h"
#include "lib/metrics.h"
#include "lib/util.h"
#include "store/store.h"
#include "vmm/vmm.h"

#include <limits.h>
#include <pthread.h>

#define COLD_BOOT_TIMEOUT_MS (300 * 1000)
#define RESTORE_TIMEOUT_MS (60 * 1000)
#define SPAWN_TIMEOUT_MS (30 * 1000)
#define AGENT_TIMEOUT_MS (60 * 1000)

struct vm {
        char id[21];
        char *account;
        char *name;
        char *workdir;
        int64_t created_at;
        int mem_mb;
        int vcpus;
        char *layer;            /* layer its disk sits on, NULL: default snapshot; under lock */
        char *snapshot_id;      /* the snapshot it was created from, or NULL */
        char instance[21];      /* changes on every start or resume; under m->lock */
        char disk[64];          /* file name of its active disk in dir; under lock */
        int64_t idle_timeout_s; /* suspend after this long without use; 0: never */
        int64_t last_activity;  /* now_ms() of its last use; under m->lock */
        int64_t saved_activity; /* last_activity as last written to the store; under m->lock */
        uint64_t net_bytes;     /* guest interface byte counters at the last look; monitor thread only */
        int64_t net_looked;     /* now_ms() of that look; monitor thread only */
        int pending_mem_mb;     /* applied at the next cold start; 0: none; under lock */
        int pending_vcpus;
        struct vm_persistence persist;
        enum vm_state state; /* under m->lock */
        int refs;            /* under m->lock */
        int removed;         /* unlinked from the list; under m->lock */
        char dir[PATH_MAX];
        unsigned uid; /* its QEMU's uid (and gid); 0: none given yet; under lock */
        pthread_mutex_t lock;
        struct qemu *qemu;    /* under lock */
        struct agentc *agent; /* under lock */
        /* Create-time setup in progress: the agent reference its guest
         * handle uses, which a delete or shutdown closes to cut it short;
         * under m->lock. */
        struct agentc *setup_agent;
        /* Why its create failed: a -errno (0: it did not) and the setup's
         * report (may be NULL); set under lock and m->lock. */
        int error_code;
        char *error;
        int doomed; /* a delete waits for lock: no setup may begin; under m->lock */
        /* Counted against its limits but not to be found yet: a create
         * between its admission and vm->lock; under m->lock. */
        int hidden;
        /* Its network namespace made ahead of its boot (see vm_net_early),
         * so vm_jail_prepare does not make it again; under lock. */
        int net_ready;
        /* Guest operations in flight (handles open): a suspend waits for
         * them, a little; under m->lock. */
        int inflight;
        /* The agent link: when it was found down (0: up), when to try it
         * again and why it failed; under lock. */
        int64_t agent_down_since;
        int64_t agent_retry_at;
        int64_t agent_tried_at;
        int64_t agent_backoff_ms;
        int agent_error;
        /* now_ms() since when its QEMU is seen stopped (SIGSTOP): a hung
         * VM; 0: it runs. Monitor thread, read under lock. */
        int64_t frozen_since;
        int guest_ran; /* the last vm_boot from a saved state resumed the guest; under lock */
        /* QEMU paused the guest on a write the full data dir refused
         * (werror=enospc); the idle thread resumes it once there is room.
         * Idle thread, read anywhere. */
        int disk_full;
        char *build_id; /* the build it came from, or NULL */
        /* A build's temporary VM: not listed (vmm_list). */
        int internal;
        /* In the warm pool: restored, idle, hidden, no account's but the
         * pool's; under m->lock. */
        int pooled;
        struct vm *next;
};

struct vmm {
        struct vmm_config cfg;
        char *data_dir;
        char *image_dir;
        struct store *store;
        pthread_mutex_t lock;
        pthread_cond_t cond; /* a VM's state changed, or a background create ended */
        /* Held across the layer GC and across recording a new layer and the
         * VM's move onto it, so the GC never sees one without the other. */
        pthread_mutex_t layer_lock;
        struct vm *vms; /* creation order */
        int nvms;
        char base_dir[PATH_MAX]; /* the default snapshot */
        char cmdline[4096];      /* guest kernel command line, made once at start */
        int ready;
        int stopping;
        char status[512];
        pthread_t bg;
        pthread_t monitor;
        pthread_t idler; /* asks guests for their traffic; may wait on one */
        int threads_started;
        int64_t quota_warned; /* usage last warned about; monitor thread only */
        int creates;          /* background creates still running; under lock */
        enum cgroup_version cgroups; /* where VMs' resource limits go */
        struct net *net;             /* VMs' network namespaces; NULL: unconfined (user-mode networking) */
        struct reservation *snapshots; /* snapshots being taken, by account; under lock */
        /* Layers an operation is about to put a VM on (a fork before its
         * children's records, a create from a snapshot before its own),
         * which the GC keeps; under layer_lock. */
        struct pin *pins;
        /* The default snapshot's cold boot, which a shutdown cuts short;
         * under lock. */
        struct agentc *base_agent;
        /* The warm pool (vmm_pool.c): its thread, its account's id (that
         * thread's), the snapshots it keeps a VM of, and its VMs, hits and
         * misses; the creates in flight, and when the last one ended (the
         * pool fills only when none ran for a moment). Under lock. */
        pthread_t pooler;
        char *pool_account;
        struct pool_want *pool_wants;
        int npool;
        int64_t pool_hits, pool_misses;
        int creating;
        int64_t create_quiet_at;
        /* How long things took: a create's restore (or its claim from the
         * pool), a fork, a suspend, a resume, a cold boot. */
        struct histo h_restore, h_claim, h_fork, h_suspend, h_resume, h_cold_boot;
        /* Whether the data dir's reserve file is held (idle thread only):
         * space kept back so running VMs go on writing when the host's
         * disk fills, released then (see reserve_check). */
        int reserve_held;
        int disk_rounds; /* disk_full_checks since every QEMU was last asked; its thread only */
        int ram_unmountable; /* guest RAM files stay in VM directories (see vmm_ram.c) */
};

struct pin {
        char id[24];
        struct pin *next;
};

/* The create-in-progress mark in a VM's record (error_code) of a create
 * or fork that has not answered yet: a daemon that dies before then
 * removes the VM at its next start, as though it had never been asked
 * for. A background create, answered at once, is marked -EINPROGRESS
 * instead and is kept, failed, should the daemon die. */
#define CREATE_UNANSWERED (-1000000)

/* A QEMU seen stopped for this long is hung: requests to it fail at once
 * rather than wait out their deadlines. */
#define FROZEN_MS 3000

/* Whether vm's QEMU is hung (see frozen_since). */
static inline int vm_hung(const struct vm *vm)
{
        int64_t since = __atomic_load_n(&vm->frozen_since, __ATOMIC_RELAXED);

        return vm->qemu && since && now_ms() - since >= FROZEN_MS;
}

/* A snapshot being taken, counted against its account's limit until it
 * is recorded. */
struct reservation {
        char *account;
        struct reservation *next;
};

/* The handle a guest operation works through: an agent reference of its
 * own and what it needs of the VM, copied, so that no VM lock is held. */
struct vmm_guest {
        struct vmm *m;
        struct vm *vm; /* a reference, counted in its inflight; NULL: a create's own */
        struct agentc *agent;
        char id[21];
        char *workdir;
};

/* ---- registry (vmm.c) ---- */

void vm_free(struct vm *vm);
void vm_put(struct vmm *m, struct vm *vm);
/* Finds a VM of account (any account when NULL) and takes a reference.
 * Not a use of the VM: see vm_touch. */
struct vm *vm_find(struct vmm *m, const char *account, const char *id);
/* Records a use of the VM now (API request, guest traffic, a start): its
 * idle timer starts again and it is evicted later. */
void vm_touch(struct vmm *m, struct vm *vm);
/* vm_find, then vm->lock; NULL when absent or deleted meanwhile. */
struct vm *vm_lock(struct vmm *m, const char *account, const char *id);
void vm_unlock(struct vmm *m, struct vm *vm);
enum vm_state state_of(struct vmm *m, struct vm *vm);
/* Sets the state (and a new instance id when it becomes running), wakes
 * waiters and writes it through; a failed write is logged. */
void vm_set_state(struct vmm *m, struct vm *vm, enum vm_state s);
struct vm *vm_alloc(const struct store_vm *s, const char *data_dir);
/* Adds vm at the end of the list; m->lock held. */
void vm_link(struct vmm *m, struct vm *vm);
void vm_unlink(struct vmm *m, struct vm *vm);
void vm_fill_info(const struct vm *vm, struct vmm_info *ret);
struct vm_persistence persistence_of(const struct store_vm *s);
int vm_path(const struct vm *vm, char out[PATH_MAX], const char *name);

/* vmm_ram.c. The file QEMU maps as vm's RAM: 1 when it is on the VM's
 * own tmpfs (<dir>/ram/mem), 0 when in its directory (<dir>/mem, also
 * where a suspended VM's RAM is saved), or -errno. */
int vm_ram_path(const struct vm *vm, char out[PATH_MAX]);
/* Makes vm's RAM file ready for a QEMU to start: a fresh tmpfs for it
 * where the daemon may mount one, filled from the memory image from (a
 * layer's, or the VM's saved RAM), or empty for a cold boot (from NULL).
 * Returns what vm_ram_path does. */
int vm_ram_prepare(struct vmm *m, struct vm *vm, const char *from);
/* Saves a paused VM's RAM file as <dir>/mem, on disk (synced). */
int vm_ram_save(const struct vm *vm);
/* Drops the RAM tmpfs of the VM in vm_dir, if it has one. */
void vm_ram_release(const char *vm_dir);
/* Removes a VM's directory, RAM tmpfs first. */
int vm_dir_remove(const char *vm_dir);
int image_path(struct vmm *m, char out[PATH_MAX], const char *name);

/* The one way to walk the VMs without holding m->lock while working on
 * them: takes a reference to every VM (but hidden ones) for which want
 * (called under m->lock; NULL: every VM) says 1, in creation order. Free the list with
 * vms_release. On failure (out of memory) returns NULL and *ret_n = 0. */
struct vm **vms_collect(struct vmm *m, int (*want)(struct vm *vm, void *ud), void *ud, size_t *ret_n);
void vms_release(struct vmm *m, struct vm **list, size_t n);

/* ---- the default snapshot (vmm_base.c) ---- */

void set_status(struct vmm *m, const char *fmt, const char *arg);
/* The kernel and initrd paths a boot config points into. */
struct boot_files {
        char kernel[PATH_MAX], initrd[PATH_MAX];
};
/* QEMU's configuration for a guest in dir on disk, with its RAM in the
 * file mem mapped shared (so saving it is a device-state save): the
 * image's kernel and initrd (paths kept in f) and the manager's command
 * line. */
int boot_config(struct vmm *m, const char *dir, const char *disk, const char *mem, int mem_mb, int vcpus,
                struct boot_files *f, struct qemu_config *ret);
/* Connects to a freshly booted guest's agent and pings until it answers,
 * the deadline passes, QEMU dies or *stop (when stop is not NULL) is set. */
int wait_agent(struct qemu *q, const char *sock, int64_t deadline, const int *stop, struct agentc **ret);
/* Runs a root shell command in the guest; its exit code or -errno. */
int guest_run(struct agentc *a, const char *cmd, int64_t timeout_ms);
/* Makes sure the default snapshot exists, cold-booting the image to make
 * it (tens of seconds under TCG). */
int ensure_base(struct vmm *m);

/* ---- layers (vmm_layer.c) ---- */

/* A layer's directory (NULL: the default snapshot) or a file in it. */
int layer_path(struct vmm *m, const char *layer, char out[PATH_MAX], const char *name);
/* Freezes vm's memory, device state and disk into a new layer, which its
 * disk then sits on. vm->lock held. */
int vm_make_layer(struct vmm *m, struct vm *vm, char ret_layer[24]);
void layers_gc(struct vmm *m);
/* Keeps layer (and what it sits on) from the GC until layer_unpin; a
 * NULL layer (the default snapshot) is a no-op. -ENOMEM. layer_lock held
 * for layer_pin_locked. */
int layer_pin(struct vmm *m, const char *layer);
int layer_pin_locked(struct vmm *m, const char *layer);
void layer_unpin(struct vmm *m, const char *layer);
/* At start-up: removes layer directories that no record names. */
void layers_recover(struct vmm *m);

/* ---- running and stopping a VM (vmm_life.c) ---- */

/* Boots vm from its disk and memory file: restores the device state at
 * state_path, or cold-boots when it is NULL. vm->lock held. */
int vm_boot(struct vmm *m, struct vm *vm, const char *state_path);
/* Ends vm's QEMU (asking it to quit first when timeout_ms > 0), drops
 * its agent and removes its cgroup. vm->lock held. */
void vm_halt(struct vmm *m, struct vm *vm, int timeout_ms);
int vm_suspend(struct vmm *m, struct vm *vm);
int vm_start(struct vmm *m, struct vm *vm);
/* Resumes a suspended VM for an operation that needs it running. */
int ensure_running(struct vmm *m, struct vm *vm);
/* A use of vm (its idle timer starts again) that needs it running: 0 once
 * it runs (resumed if it was suspended), else -ENOTRECOVERABLE (its create
 * failed), -EHOSTDOWN (hung), -ENOSPC (paused on a full disk), -ENOTCONN
 * (stopped) or what resuming failed with. vm->lock held. */
int vm_use(struct vmm *m, struct vm *vm);
/* The VM's agent link, made again when it went down (a guest that broke
 * its agent, a daemon restart it did not answer): for a request unless a
 * try failed in the last second, in the background as its backoff allows.
 * A new reference, or NULL with -errno in *ret_err. vm->lock held. */
struct agentc *vm_agent(struct vmm *m, struct vm *vm, int background, int *ret_err);
/* Connects to vm's agent, which each PING then tells the VM's own host
 * name and machine id (see agentc_set_identity). */
int vm_agent_connect(const struct vm *vm, int timeout_ms, struct agentc **ret);
/* Marks the agent link down after a failure r, for vm_agent to retry. */
void vm_agent_down(struct vmm *m, struct vm *vm, int r);

/* ---- create and delete (vmm_create.c) ---- */

/* Removes a VM that the caller holds a reference to: its QEMU, files and
 * record. -ENOENT when it was removed already. */
int vm_destroy(struct vmm *m, struct vm *vm);
/* Ends the background creates before the manager goes away. */
void creates_drain(struct vmm *m);

enum create_kind {
        CREATE_USER, /* a client's create: claims a pooled VM when one fits */
        CREATE_FORK, /* a fork's child: its maker clears the record's mark */
        CREATE_POOL, /* a pooled VM: left hidden, idle, its record marked */
};
/* Makes and starts one VM from layer (NULL: the default snapshot). */
int create_vm(struct vmm *m, const char *account, const struct vmm_create *opts, const char *layer, int mem_mb,
              int vcpus, enum create_kind kind, char ret_id[21], char **ret_report);

/* ---- the warm pool (vmm_pool.c) ---- */

void *pool_main(void *arg);
/* A create from snapshot_id (on layer) of account: its pool is kept
 * filled for a while. */
void pool_note(struct vmm *m, const char *account, const char *snapshot_id, const char *layer, int mem_mb,
               int vcpus);
/* A create begins (+1) or ends (-1). */
void create_busy(struct vmm *m, int delta);
/* Takes a pooled VM of layer and size for account if one is there and
 * account may have one more: 0 with a reference in *ret (the VM is the
 * account's, still hidden), 1 when there is none, or what vm_admit
 * refused with. */
int pool_claim(struct vmm *m, const char *account, const struct store_limits *l, const char *layer, int mem_mb,
               int vcpus, struct vm **ret);
/* Rewrites a claimed VM's record and facts as rec says. */
int pool_adopt(struct vmm *m, struct vm *vm, const struct store_vm *rec);
/* Makes a claimed VM a client's: its QEMU's priority, and a ping (clock,
 * entropy). vm->lock held. */
int pool_wake(struct vmm *m, struct vm *vm);
/* Removes the pooled VMs; at shutdown, once pool_main ended. */
void pool_drain(struct vmm *m);
/* Adds the pool's figures to s. m->lock held. */
void pool_stats(struct vmm *m, struct vmm_stats *s);

/* ---- confinement (vmm_jail.c) ---- */

#include "hv/jail.h"

/* What a VM's QEMU is confined with, and the strings that points into. */
struct vm_jail {
        struct jail jail;
        const char *ro[40];
        char ro_paths[40][PATH_MAX];
        const char *devices[8];
        char root[PATH_MAX];
        char procs[CGROUP_MAX_FILES][PATH_MAX];
        const char *cgroups[CGROUP_MAX_FILES + 1];
        char netns[PATH_MAX];
};

/* The uid offset (and network number) of the default snapshot's cold
 * boot: the last of the range VMs' uids come from. */
#define BASE_SLOT 65535

/* The fd number QEMU gets its TAP device on. */
#define VM_TAP_FD 100

/* Gives vm its uid (once), makes its directory its own and the layers it
 * reads readable, and fills ret for qemu_config.jail. vm->lock held. With
 * m->cfg.unconfined, fills nothing and returns 1. */
int vm_jail_prepare(struct vmm *m, struct vm *vm, struct vm_jail *ret);
/* Starts making vm's network namespace in a thread of its own, so that
 * it overlaps the disk and memory file copies of a create; the boot that
 * follows waits for it (vm_net_wait). 0, or 1 when there is nothing to
 * do (unconfined), or -errno. vm->lock held. */
int vm_net_early(struct vmm *m, struct vm *vm, pthread_t *ret_thread, int *ret_result);
/* Waits for what vm_net_early started; its result. */
int vm_net_wait(struct vm *vm, pthread_t thread, int *result);
/* The same for the default snapshot's cold boot in dir. */
int base_jail_prepare(struct vmm *m, const char *dir, struct vm_jail *ret);
/* Removes the cgroup and network namespace of name (a VM id, or "base"),
 * numbered k, once its QEMU is gone. */
void jail_release(struct vmm *m, const char *name, unsigned k);
/* Makes a layer's disk, now frozen, readable by every VM's uid. */
int layer_seal(const char *disk);

/* ---- limits (vmm_limits.c) ---- */

/* An account's limits: its own, else the server's defaults. */
struct store_limits limits_of(struct vmm *m, const char *account);
/* Bytes the account's VMs and snapshots take on disk. */
int64_t account_usage(struct vmm *m, const char *account);
/* -ENOSPC when the data dir's free space is below the reserve, -EDQUOT
 * when the account is at its storage limit; else 0. For what makes new
 * files: creates, forks, snapshots. */
int storage_admit(struct vmm *m, const char *account);
/* 1 when the data dir's free space is below --disk-reserve-bytes. */
int below_reserve(struct vmm *m);
/* The data dir's free bytes; -1 when it cannot be read. */
int64_t data_free(struct vmm *m);
/* Keeps the data dir's reserve file: space held back (up to
 * RESERVE_HELD_MAX of --disk-reserve-bytes) while there is room, given
 * up when disk_full (a running VM was paused on a write the full disk
 * refused) so that running VMs, the store and deletes have room to go on,
 * and held again once there is room. Idle thread only. */
void reserve_check(struct vmm *m, int disk_full);
/* Whether one more VM of mem_mb, running, fits the server's and the
 * account's limits (new: it also adds to the VMs that exist). m->lock
 * held; -EUSERS, -EMLINK, -EOVERFLOW or 0. except is a VM not to count. */
int vm_admit(struct vmm *m, const char *account, const struct store_limits *l, int mem_mb, int new,
             const struct vm *except);
/* Counts a snapshot of account being taken; -ETOOMANYREFS past its limit.
 * Free with snapshot_done. */
int snapshot_admit(struct vmm *m, const char *account, struct reservation **ret);
void snapshot_done(struct vmm *m, struct reservation *r);

/* ---- start-up and monitoring (vmm_monitor.c) ---- */

void *bg_main(void *arg);
/* QEMU exits, ephemeral VMs, the storage quota, last use: never waits on
 * a guest. */
void *monitor_main(void *arg);
/* Idle suspend, in a thread of its own: it asks each guest for its
 * traffic, and a guest that stalls delays only that. */
void *idle_main(void *arg);
/* Bytes the server's storage quota counts: VMs' files and layers, not the
 * default snapshot or the warm pool. */
int64_t storage_used(struct vmm *m);
/* Writes the last use of the VMs used since the last call to the store. */
void activity_save(struct vmm *m);

#endif

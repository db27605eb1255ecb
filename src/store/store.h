/*
 * store: the daemon's durable state: accounts, API keys (only their
 * SHA-256 is kept), VM, layer and snapshot records. This header is the
 * whole interface: plain C types in and out, nothing of the database
 * behind it, so another backend (PostgreSQL for several hosts) implements
 * the same functions. The SQLite one keeps a file in the data dir (WAL
 * mode) whose schema is versioned (PRAGMA user_version) and migrated at
 * open. The store never calls out to other modules; the VM manager owns
 * the runtime state and writes through to here. Every function returns 0
 * or -errno and reports every failure it meets; any thread may call any
 * function (one connection, serialised by SQLite's own mutex).
 */
#ifndef SPROUT_STORE_H
#define SPROUT_STORE_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* A VM's durable record. Strings are owned by the struct; free with
 * store_vm_clear. */
struct store_vm {
        char *id;
        char *account_id;
        char *name;        /* may be NULL */
        char *state;       /* a VMState name */
        char *snapshot_id; /* may be NULL */
        char *workdir;     /* may be NULL */
        char *persist_kind;      /* "sticky", "ephemeral" or "persistent" */
        int persist_priority;    /* sticky: 0..10 */
        char *persist_delete_on; /* ephemeral: the state name it is deleted on */
        int64_t created_at;  /* wall-clock ms */
        int64_t idle_timeout_s;
        int mem_mb;
        int vcpus;
        char *layer;       /* the layer its disk overlay sits on; NULL: default snapshot */
        int pending_mem_mb; /* applied at the next cold start; 0: none */
        int pending_vcpus;
        /* A create that failed or was cut short: a -errno (0: none) and
         * the failure's report as its maker gave it (may be NULL). */
        int error_code;
        char *error;
        int64_t last_active_at; /* wall-clock ms of its last use as last saved; 0: never saved */
        int64_t uid; /* the uid its QEMU runs as; 0: none given yet */
        char *build_id; /* the build it came from; may be NULL */
        int internal;   /* a build's temporary VM, never listed */
};

/* A snapshot's record; strings owned (store_snapshot_clear). */
struct store_snapshot {
        char *id;
        char *account_id;
        char *name;
        char *source_vm_id;
        char *layer;
        char *persist_kind;   /* "sticky" or "persistent" */
        int persist_priority; /* sticky: 0..10 */
        int64_t created_at;
        int deleted;
        int mem_mb; /* of the VM it was taken from */
        int vcpus;
        char *state;          /* "building", "ready" or "failed"; only ready ones can be used */
        char *build_id;       /* the build that made it; may be NULL */
        char *template_hash;  /* the layer cache's key for it; may be NULL */
        char *failure_reason; /* failed: why; may be NULL */
};

int store_open(const char *path, struct store **ret);
void store_close(struct store *s);

/* Runs fn as one transaction: every store call it makes on t (not on s)
 * lands together when fn returns 0, or none does when it returns -errno
 * (which store_txn returns). Other threads' calls on s are never part of
 * it. Every commit is on disk before it returns. */
int store_txn(struct store *s, int (*fn)(struct store *t, void *ud), void *ud);

/* Makes sure a key whose plaintext is `key` exists and is the bootstrap
 * admin key of the account named `account` (created when missing); every
 * other bootstrap key is revoked, so a new one replaces the one before.
 * *ret_revoked (may be NULL) says how many were. 0 or -errno. */
int store_ensure_admin_key(struct store *s, const char *key, const char *account, int *ret_revoked);

/* Creates a new random API key for the account named `account`, created if
 * missing, or for a new account with a random name when account is NULL.
 * *ret_key (plaintext, shown once), *ret_account_id, *ret_account_name and
 * *ret_id (the key's id, for listing and revoking; may be NULL) are
 * malloc'd and owned by the caller. 0 or -errno. */
int store_create_key(struct store *s, const char *account, int admin, char **ret_key, char **ret_account_id,
                     char **ret_account_name, char **ret_id);

/* Looks up a key's plaintext. Returns 0 and the account id (malloc'd) and
 * admin flag, -ENOENT when the key is unknown (or revoked), or -errno. */
int store_auth(struct store *s, const char *key, char **ret_account_id, int *ret_admin);

/* An API key as listed: never its plaintext. Strings owned. */
struct store_key {
        char *id;
        char *account_id;
        char *account_name;
        char *prefix; /* the key's first characters, to tell keys apart; may be NULL */
        int admin;
        int bootstrap; /* the daemon's own admin key (SPROUT_BOOTSTRAP_KEY) */
        int64_t created_at;
};

/* Calls fn for each key of account_id (NULL: every account), oldest first;
 * stops at and returns fn's first non-zero value. */
int store_key_foreach(struct store *s, const char *account_id, int (*fn)(const struct store_key *k, void *ud),
                      void *ud);
/* Revokes a key of account_id (NULL: any); -ENOENT when there is none. */
int store_key_delete(struct store *s, const char *account_id, const char *id);

/* An account's own limits; -1 in a field: the server's default. */
struct store_limits {
        int64_t vms;        /* VMs that exist */
        int64_t running;    /* VMs that run (or are starting) */
        int64_t snapshots;  /* live snapshots */
        int64_t mem_mb;     /* guest memory of its running VMs */
        int64_t storage;    /* bytes of its VMs' and snapshots' files */
};

#define STORE_LIMITS_DEFAULT ((struct store_limits){-1, -1, -1, -1, -1})

int store_account_limits(struct store *s, const char *account_id, struct store_limits *ret);
/* The id of the account named name, made when missing; malloc'd. */
int store_account_ensure(struct store *s, const char *name, char **ret_id);
/* Sets the limits of the account named `account` (which must exist). */
int store_account_set_limits(struct store *s, const char *account, const struct store_limits *l);

/* Live (not deleted) snapshots of an account. */
int store_snapshot_count(struct store *s, const char *account_id, int64_t *ret);

/* Record writes: -EEXIST for an id taken, -ENOENT for a record that is
 * not there, -ENOSPC when the disk is full, other -errno. */
int store_vm_insert(struct store *s, const struct store_vm *vm);
int store_vm_set_state(struct store *s, const char *id, const char *state);
int store_vm_delete(struct store *s, const char *id);

/* Calls fn for every VM record, in creation order. Stops and returns fn's
 * value if it is non-zero. */
int store_vm_foreach(struct store *s, int (*fn)(const struct store_vm *vm, void *userdata), void *userdata);

void store_vm_clear(struct store_vm *vm);
int store_vm_set_layer(struct store *s, const char *id, const char *layer);
int store_vm_set_uid(struct store *s, const char *id, int64_t uid);
/* Sets (code < 0) or clears (code 0) a VM's create failure. */
int store_vm_set_error(struct store *s, const char *id, int code, const char *error);
/* Gives the VM id a new life as vm says: account, name, state, snapshot,
 * workdir, persistence, creation time, idle timeout, error mark, build and
 * internal flag (a VM of the warm pool a create claims). */
int store_vm_claim(struct store *s, const struct store_vm *vm);
int store_vm_set_last_active(struct store *s, const char *id, int64_t at);
int store_vm_set_size(struct store *s, const char *id, int mem_mb, int vcpus, int pending_mem_mb,
                      int pending_vcpus);

/* Layers: immutable memory+device+disk images, each on top of a parent
 * layer (NULL: the default snapshot). */
int store_layer_insert(struct store *s, const char *id, const char *parent);
/* 1: a layer id is recorded; 0: not; -errno: could not tell. */
int store_layer_exists(struct store *s, const char *id);
/* A layer's parent (malloc'd; NULL: the default snapshot); -ENOENT for an
 * unknown layer. */
int store_layer_parent(struct store *s, const char *id, char **ret_parent);

/* Finds layers that no VM, no live snapshot, no live layer and none of
 * the npinned ids in pinned (layers an operation in progress is about to
 * use) needs, calls fn for each (to remove its files) and forgets them. */
int store_layer_gc(struct store *s, const char *const *pinned, size_t npinned, void (*fn)(const char *id, void *ud),
                   void *ud);

int store_snapshot_insert(struct store *s, const struct store_snapshot *snap);
/* -ENOENT when absent or of another account. Deleted ones are returned. */
int store_snapshot_get(struct store *s, const char *account, const char *id, struct store_snapshot *ret);
int store_snapshot_foreach(struct store *s, const char *account,
                           int (*fn)(const struct store_snapshot *snap, void *ud), void *ud);
int store_snapshot_set_name(struct store *s, const char *account, const char *id, const char *name);
/* Marks deleted; -ENOENT when absent, -EALREADY when already deleted. */
int store_snapshot_delete(struct store *s, const char *account, const char *id);
void store_snapshot_clear(struct store_snapshot *snap);
/* A snapshot being built (inserted with state "building" and no layer)
 * becomes ready on its layer, or failed with a reason; -ENOENT when it is
 * not building. */
int store_snapshot_ready(struct store *s, const char *id, const char *source_vm_id, const char *layer, int mem_mb,
                         int vcpus, int64_t at);
int store_snapshot_fail(struct store *s, const char *id, const char *reason);
/* The newest ready, live snapshot of account with template_hash (the
 * layer cache); -ENOENT when there is none. */
int store_snapshot_cached(struct store *s, const char *account, const char *template_hash, struct store_snapshot *ret);

/* A build: the record of making a chain of snapshot layers. Strings owned
 * (store_build_clear). */
struct store_build {
        char *id;
        char *account_id;
        char *request_id;     /* may be NULL */
        char *state;          /* "pending", "running", "succeeded" or "failed" */
        char *template_hash;  /* the outermost layer's; may be NULL */
        char *failure_reason; /* may be NULL */
        char *planned_phases; /* a JSON array of phase names, fixed at its start */
        int64_t started_at, finished_at, updated_at; /* wall-clock ms; finished_at 0 while unfinished */
        char *snapshot_id;    /* what it made (the outermost layer); may be NULL */
        char *vm_id;          /* the temporary VM it runs now; may be NULL */
};

/* One entry of a build's append-only phase timeline; strings borrowed. */
struct store_build_phase {
        int seq; /* 1, 2, ... */
        const char *name;
        const char *snapshot_id; /* the snapshot it made or reused; may be NULL */
        int64_t started_at;
};

int store_build_insert(struct store *s, const struct store_build *b);
/* -ENOENT when absent or (account not NULL) of another account. */
int store_build_get(struct store *s, const char *account, const char *id, struct store_build *ret);
/* Calls fn for each build still pending or running, oldest first. */
int store_build_unfinished(struct store *s, int (*fn)(const struct store_build *b, void *ud), void *ud);
/* Calls fn for at most limit builds of account, newest first. */
int store_build_list(struct store *s, const char *account, int limit,
                     int (*fn)(const struct store_build *b, void *ud), void *ud);
/* Sets a build's state (and, when not NULL, its failure reason and the
 * snapshot it made); "succeeded" and "failed" also set finished_at. */
int store_build_set_state(struct store *s, const char *id, const char *state, const char *failure_reason,
                          const char *snapshot_id, int64_t at);
/* The temporary VM a build runs (NULL: none any more). */
int store_build_set_vm(struct store *s, const char *id, const char *vm_id);
/* Appends a phase to a build's timeline. */
int store_build_phase_add(struct store *s, const char *build_id, const char *name, const char *snapshot_id,
                          int64_t at);
int store_build_phase_foreach(struct store *s, const char *build_id,
                              int (*fn)(const struct store_build_phase *p, void *ud), void *ud);
void store_build_clear(struct store_build *b);

/* Ingress: a VM's ports (an external port to its port inside the VM) and
 * custom domains (a host name to a VM port). Both go with the VM's record. */
struct store_port {
        int port, target;
};

/* Replaces the VM's ports with the n in p. */
int store_ports_set(struct store *s, const char *vm_id, const struct store_port *p, size_t n);
/* Up to max of the VM's ports, by external port. */
int store_ports_get(struct store *s, const char *vm_id, struct store_port *ret, size_t max, size_t *ret_n);
/* The VM port that external port reaches; -ENOENT: none. */
int store_port_target(struct store *s, const char *vm_id, int port, int *ret_target);
/* Maps domain (lower case) to the VM's vm_port; -EEXIST: another account
 * has it. */
int store_domain_add(struct store *s, const char *domain, const char *account, const char *vm_id, int vm_port);
/* The VM and port domain maps to; -ENOENT: none. */
int store_domain_route(struct store *s, const char *domain, char vm_id[32], int *ret_port);
/* The VM's custom domains, NULL-terminated (free each and the array). */
int store_domains_of(struct store *s, const char *vm_id, char ***ret);

#endif

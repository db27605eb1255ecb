/*
 * store: the SQLite backend of store.h. Depends on sqlite3 and util.
 * Never logs (callers log with context), never keeps a key's plaintext,
 * and checks every statement it runs: a write that fails is returned as
 * -errno, never dropped.
 */
#include "store/store.h"
#include "store/store_int.h"
#include "lib/util.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


int sq_err(int rc)
{
        switch (rc) {
        case SQLITE_OK:
        case SQLITE_DONE:
        case SQLITE_ROW:
                return 0;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_FULL:
                return -ENOSPC;
        default:
                return -EIO;
        }
}

/* Prepares sql and binds its parameters, one per character of types:
 * 's' a string (NULL binds NULL), 'i' an int, 'I' an int64_t. Numbered
 * parameters (?1, ?2) take them in that order too. */
int sq_prepare(struct store *s, sqlite3_stmt **ret, const char *sql, const char *types, ...)
{
        sqlite3_stmt *st;
        va_list ap;
        int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

        if (rc != SQLITE_OK)
                return sq_err(rc) ? sq_err(rc) : -EIO;
        va_start(ap, types);
        for (int i = 0; rc == SQLITE_OK && types && types[i]; i++) {
                if (types[i] == 's')
                        rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
                else if (types[i] == 'i')
                        rc = sqlite3_bind_int(st, i + 1, va_arg(ap, int));
                else
                        rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        }
        va_end(ap);
        if (rc != SQLITE_OK) {
                sqlite3_finalize(st);
                return sq_err(rc) ? sq_err(rc) : -EIO;
        }
        *ret = st;
        return 0;
}

/* Runs a prepared write to its end and finalizes it. With must_change,
 * a statement that changed no row is -ENOENT. */
int sq_finish(struct store *s, sqlite3_stmt *st, int must_change)
{
        int rc = sqlite3_step(st);
        int r;

        /* The connection is shared by threads: one still reading holds a
         * snapshot that a write of another cannot upgrade once the txn
         * connection has committed (SQLITE_BUSY at once, no busy wait).
         * Outside a transaction the write can simply go again once that
         * read is over. It is reset before it waits: a statement that
         * failed stays active until then and holds the connection's old
         * snapshot itself, so that writers of several threads waiting at
         * once kept it for each other, and failed for good. */
        for (int i = 0; ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) && i < 100 &&
                        sqlite3_get_autocommit(s->db);
             i++) {
                sqlite3_reset(st);
                sleep_ms(50);
                rc = sqlite3_step(st);
        }
        r = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sq_err(rc) ? sq_err(rc) : -EIO;

        if (r == 0 && must_change && sqlite3_changes(s->db) == 0)
                r = -ENOENT;
        sqlite3_finalize(st);
        return r;
}

static int exec_script(struct store *s, const char *sql)
{
        int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

        return rc == SQLITE_OK ? 0 : sq_err(rc) ? sq_err(rc) : -EIO;
}

/* ---- schema and migrations ---- */

/* Version 1: every table as the first versioned release has them. A data
 * dir from before versioning has some of these tables with fewer columns;
 * migrate_v1 adds what is missing. */
static const char schema_v1[] =
        "CREATE TABLE IF NOT EXISTS accounts ("
        "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS api_keys ("
        "  key_hash TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id),"
        "  admin INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS vms ("
        "  id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), name TEXT,"
        "  state TEXT NOT NULL, snapshot_id TEXT, workdir TEXT, persistence TEXT,"
        "  created_at INTEGER NOT NULL, idle_timeout_s INTEGER NOT NULL DEFAULT 300,"
        "  mem_mb INTEGER NOT NULL DEFAULT 1024, vcpus INTEGER NOT NULL DEFAULT 1);"
        "CREATE TABLE IF NOT EXISTS layers (id TEXT PRIMARY KEY, parent TEXT);"
        "CREATE TABLE IF NOT EXISTS snapshots ("
        "  id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), name TEXT,"
        "  source_vm_id TEXT, layer TEXT NOT NULL, persistence TEXT, created_at INTEGER NOT NULL,"
        "  deleted INTEGER NOT NULL DEFAULT 0, mem_mb INTEGER NOT NULL, vcpus INTEGER NOT NULL);";

/* Columns of vms added before the schema was versioned. */
static const struct {
        const char *name, *decl;
} v1_columns[] = {
        {"layer", "TEXT"},
        {"pending_mem_mb", "INTEGER NOT NULL DEFAULT 0"},
        {"pending_vcpus", "INTEGER NOT NULL DEFAULT 0"},
        {"error", "TEXT"},
        {"last_active_at", "INTEGER NOT NULL DEFAULT 0"},
};

/* 1 if table has the column, 0 if not, or -errno. */
static int has_column(struct store *s, const char *table, const char *column)
{
        sqlite3_stmt *st;
        int rc, found = 0;
        int r = sq_prepare(s, &st, "SELECT 1 FROM pragma_table_info(?) WHERE name = ?", "ss", table, column);

        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                found = 1;
        else if (rc != SQLITE_DONE)
                r = sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        return r < 0 ? r : found;
}

static int migrate_v1(struct store *s)
{
        int r = exec_script(s, schema_v1);

        for (size_t i = 0; r == 0 && i < sizeof(v1_columns) / sizeof(v1_columns[0]); i++) {
                char sql[160];

                r = has_column(s, "vms", v1_columns[i].name);
                if (r == 1)
                        r = 0;
                else if (r == 0 && path_fmt(sql, sizeof(sql), "ALTER TABLE vms ADD COLUMN %s %s", v1_columns[i].name,
                                            v1_columns[i].decl) == 0)
                        r = exec_script(s, sql);
        }
        return r;
}

/* Version 2: persistence and create failures as typed columns, not JSON
 * text, so that the VM manager reads them without a JSON parser and any
 * backend can hold them. Rows keep what their JSON said. */
static const char schema_v2[] =
        "ALTER TABLE vms ADD COLUMN persist_kind TEXT NOT NULL DEFAULT 'sticky';"
        "ALTER TABLE vms ADD COLUMN persist_priority INTEGER NOT NULL DEFAULT 5;"
        "ALTER TABLE vms ADD COLUMN persist_delete_on TEXT NOT NULL DEFAULT 'suspended';"
        "ALTER TABLE vms ADD COLUMN error_code INTEGER NOT NULL DEFAULT 0;"
        "UPDATE vms SET"
        "  persist_kind = CASE json_extract(persistence, '$.type') WHEN 'ephemeral' THEN 'ephemeral'"
        "    WHEN 'persistent' THEN 'persistent' ELSE 'sticky' END,"
        "  persist_priority = coalesce(json_extract(persistence, '$.priority'), 5),"
        "  persist_delete_on = CASE json_extract(persistence, '$.deleteEvent') WHEN 'OnStop' THEN 'stopped'"
        "    ELSE 'suspended' END"
        "  WHERE json_valid(persistence);"
        "UPDATE vms SET error_code = -125 WHERE error IS NOT NULL;"
        "ALTER TABLE vms DROP COLUMN persistence;"
        "ALTER TABLE snapshots ADD COLUMN persist_kind TEXT NOT NULL DEFAULT 'sticky';"
        "ALTER TABLE snapshots ADD COLUMN persist_priority INTEGER NOT NULL DEFAULT 5;"
        "UPDATE snapshots SET"
        "  persist_kind = CASE json_extract(persistence, '$.type') WHEN 'persistent' THEN 'persistent'"
        "    ELSE 'sticky' END,"
        "  persist_priority = coalesce(json_extract(persistence, '$.priority'), 5)"
        "  WHERE json_valid(persistence);"
        "ALTER TABLE snapshots DROP COLUMN persistence;";

static int migrate_v2(struct store *s)
{
        return exec_script(s, schema_v2);
}

/* Version 3: keys get an id (listing and revoking them), a prefix to tell
 * them apart and a bootstrap flag (the daemon's own admin key, replaced
 * by the next one); accounts get their own limits (NULL: the server's).
 * Admin keys so far were only ever bootstrap keys. */
static const char schema_v3[] =
        "ALTER TABLE api_keys ADD COLUMN id TEXT;"
        "ALTER TABLE api_keys ADD COLUMN prefix TEXT;"
        "ALTER TABLE api_keys ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0;"
        "UPDATE api_keys SET id = 'key-' || lower(hex(randomblob(10))), bootstrap = admin;"
        "CREATE UNIQUE INDEX api_keys_id ON api_keys(id);"
        "ALTER TABLE accounts ADD COLUMN max_vms INTEGER;"
        "ALTER TABLE accounts ADD COLUMN max_running INTEGER;"
        "ALTER TABLE accounts ADD COLUMN max_snapshots INTEGER;"
        "ALTER TABLE accounts ADD COLUMN max_mem_mb INTEGER;"
        "ALTER TABLE accounts ADD COLUMN max_storage INTEGER;";

static int migrate_v3(struct store *s)
{
        return exec_script(s, schema_v3);
}

/* Version 4: the uid a VM's QEMU runs as, kept so that its files stay its
 * own across restarts. */
static int migrate_v4(struct store *s)
{
        return exec_script(s, "ALTER TABLE vms ADD COLUMN uid INTEGER NOT NULL DEFAULT 0;");
}

/* Version 5: builds, their phases, and what ties snapshots and VMs to
 * them; snapshots get a state (building, ready, failed) and the template
 * hash that the layer cache looks them up by. */
static const char schema_v5[] =
        "ALTER TABLE snapshots ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';"
        "ALTER TABLE snapshots ADD COLUMN build_id TEXT;"
        "ALTER TABLE snapshots ADD COLUMN template_hash TEXT;"
        "ALTER TABLE snapshots ADD COLUMN failure_reason TEXT;"
        "CREATE INDEX snapshots_by_hash ON snapshots (account_id, template_hash);"
        "ALTER TABLE vms ADD COLUMN build_id TEXT;"
        "ALTER TABLE vms ADD COLUMN internal INTEGER NOT NULL DEFAULT 0;"
        "CREATE TABLE builds ("
        "  id TEXT PRIMARY KEY, account_id TEXT NOT NULL, request_id TEXT, state TEXT NOT NULL,"
        "  template_hash TEXT, failure_reason TEXT, planned_phases TEXT NOT NULL, started_at INTEGER NOT NULL,"
        "  finished_at INTEGER, updated_at INTEGER NOT NULL, snapshot_id TEXT, vm_id TEXT);"
        "CREATE TABLE build_phases ("
        "  build_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, snapshot_id TEXT,"
        "  started_at INTEGER NOT NULL, PRIMARY KEY (build_id, seq));";

static int migrate_v5(struct store *s)
{
        return exec_script(s, schema_v5);
}

/* Version 6: ingress. A VM's ports (external port to its port inside the
 * VM) and custom domains (a host name to a VM port), which go with the VM. */
static const char schema_v6[] =
        "CREATE TABLE vm_ports (vm_id TEXT NOT NULL, port INTEGER NOT NULL, target INTEGER NOT NULL,"
        "  PRIMARY KEY (vm_id, port));"
        "CREATE TABLE domains (domain TEXT PRIMARY KEY, account_id TEXT NOT NULL, vm_id TEXT NOT NULL,"
        "  vm_port INTEGER NOT NULL);"
        "CREATE INDEX domains_by_vm ON domains (vm_id);"
        "CREATE TRIGGER vm_routes_go AFTER DELETE ON vms BEGIN"
        "  DELETE FROM vm_ports WHERE vm_id = old.id; DELETE FROM domains WHERE vm_id = old.id; END;";

static int migrate_v6(struct store *s)
{
        return exec_script(s, schema_v6);
}

/* Migrations in order: migrations[i] takes the schema from version i to
 * version i + 1. */
static int (*const migrations[])(struct store *s) = {migrate_v1, migrate_v2, migrate_v3,
                                                     migrate_v4, migrate_v5, migrate_v6};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* Runs a prepared query of one number and finalizes it. */
int sq_scalar(sqlite3_stmt *st, int64_t *ret)
{
        int rc = sqlite3_step(st), r = 0;

        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int64(st, 0);
        else
                r = sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        return r;
}

static int schema_version(struct store *s, int64_t *ret)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st, "PRAGMA user_version", NULL);

        return r < 0 ? r : sq_scalar(st, ret);
}

/* Brings the schema to SCHEMA_VERSION, each step one transaction: a crash
 * or failure in a step leaves the version before it. A database newer than
 * this program is refused (-EPROTONOSUPPORT) rather than misread. */
static int migrate(struct store *s)
{
        int64_t version = 0;
        int r = schema_version(s, &version);

        if (r < 0)
                return r;
        if (version > SCHEMA_VERSION)
                return -EPROTONOSUPPORT;
        for (; version < SCHEMA_VERSION; version++) {
                char set[48];

                snprintf(set, sizeof(set), "PRAGMA user_version = %d", (int)version + 1);
                r = exec_script(s, "BEGIN IMMEDIATE");
                if (r < 0)
                        return r;
                r = migrations[version](s);
                if (r == 0)
                        r = exec_script(s, set);
                if (r == 0)
                        r = exec_script(s, "COMMIT");
                if (r < 0) {
                        exec_script(s, "ROLLBACK");
                        return r;
                }
        }
        return 0;
}

/* FULL: a commit is on disk when it returns, so nothing the daemon has
 * answered for is lost with the power. */
static int connect_db(const char *path, struct store *s)
{
        int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                                 NULL);

        if (rc == SQLITE_OK)
                rc = sqlite3_busy_timeout(s->db, 10000);
        if (rc != SQLITE_OK)
                return sq_err(rc) ? sq_err(rc) : -EIO;
        return exec_script(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
}

int store_open(const char *path, struct store **ret)
{
        struct store *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        pthread_mutex_init(&s->tx_lock, NULL);
        r = connect_db(path, s);
        if (r == 0)
                r = migrate(s);
        if (r == 0 && !(s->tx = calloc(1, sizeof(*s->tx))))
                r = -ENOMEM;
        if (r == 0)
                r = connect_db(path, s->tx);
        if (r < 0) {
                store_close(s);
                return r;
        }
        *ret = s;
        return 0;
}

void store_close(struct store *s)
{
        if (!s)
                return;
        if (s->tx)
                sqlite3_close(s->tx->db);
        free(s->tx);
        sqlite3_close(s->db);
        pthread_mutex_destroy(&s->tx_lock);
        free(s);
}

int store_txn(struct store *s, int (*fn)(struct store *t, void *ud), void *ud)
{
        int r;

        pthread_mutex_lock(&s->tx_lock);
        r = exec_script(s->tx, "BEGIN IMMEDIATE");
        if (r == 0)
                r = fn(s->tx, ud);
        if (r == 0)
                r = exec_script(s->tx, "COMMIT");
        if (r < 0 && !sqlite3_get_autocommit(s->tx->db))
                exec_script(s->tx, "ROLLBACK");
        pthread_mutex_unlock(&s->tx_lock);
        return r;
}

char *sq_col_dup(sqlite3_stmt *st, int i)
{
        const unsigned char *t = sqlite3_column_text(st, i);

        return t ? strdup((const char *)t) : NULL;
}

/* ---- accounts and keys ---- */

/* Finds the account named name, creating it when missing; *ret_id malloc'd. */
static int account_get_or_create(struct store *s, const char *name, char **ret_id)
{
        sqlite3_stmt *st;
        char id[37];
        int r, rc;

        r = sq_prepare(s, &st, "SELECT id FROM accounts WHERE name = ?", "s", name);
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret_id = sq_col_dup(st, 0);
                sqlite3_finalize(st);
                return *ret_id ? 0 : -ENOMEM;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return sq_err(rc) ? sq_err(rc) : -EIO;

        r = random_id(id, 20);
        if (r == 0)
                r = WRITE_ONE(s, "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)", "ssI", id, name,
                              wall_ms());
        if (r < 0)
                return r;
        *ret_id = strdup(id);
        return *ret_id ? 0 : -ENOMEM;
}

int store_account_ensure(struct store *s, const char *name, char **ret_id)
{
        return account_get_or_create(s, name, ret_id);
}

/* Inserts (or, for a known key, updates) a key; *ret_id (may be NULL)
 * gets its id. */
static int key_insert(struct store *s, const char *key, const char *account_id, int admin, int bootstrap,
                      char **ret_id)
{
        char hash[65], id[32], prefix[16];
        sqlite3_stmt *st;
        int r, rc;

        sha256_hex(key, strlen(key), hash);
        memcpy(id, "key-", 4);
        r = random_id(id + 4, 20);
        if (r < 0)
                return r;
        snprintf(prefix, sizeof(prefix), "%.7s", key);
        r = sq_prepare(s, &st,
                    "INSERT INTO api_keys (key_hash, account_id, admin, created_at, id, prefix, bootstrap)"
                    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    " ON CONFLICT(key_hash) DO UPDATE SET account_id = ?2, admin = ?3, bootstrap = ?7"
                    " RETURNING id",
                    "ssiIssi", hash, account_id, admin, wall_ms(), id, prefix, bootstrap);
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && ret_id && !(*ret_id = sq_col_dup(st, 0)))
                r = -ENOMEM;
        else if (rc != SQLITE_ROW)
                r = sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        return r;
}

struct admin_key {
        const char *key, *account;
        int revoked;
};

/* The new bootstrap key and the end of the old one land together. */
static int ensure_admin_key(struct store *t, void *ud)
{
        struct admin_key *k = ud;
        char *account_id = NULL, hash[65];
        sqlite3_stmt *st;
        int r = account_get_or_create(t, k->account, &account_id);

        if (r == 0)
                r = key_insert(t, k->key, account_id, 1, 1, NULL);
        free(account_id);
        if (r < 0)
                return r;
        sha256_hex(k->key, strlen(k->key), hash);
        r = sq_prepare(t, &st, "DELETE FROM api_keys WHERE bootstrap = 1 AND key_hash != ?", "s", hash);
        if (r == 0)
                r = sq_finish(t, st, 0);
        if (r == 0)
                k->revoked = sqlite3_changes(t->db);
        return r;
}

int store_ensure_admin_key(struct store *s, const char *key, const char *account, int *ret_revoked)
{
        struct admin_key k = {.key = key, .account = account};
        int r = store_txn(s, ensure_admin_key, &k);

        if (r == 0 && ret_revoked)
                *ret_revoked = k.revoked;
        return r;
}

int store_create_key(struct store *s, const char *account, int admin, char **ret_key, char **ret_account_id,
                     char **ret_account_name, char **ret_id)
{
        char key[48], name[32];
        char *account_id = NULL, *k = NULL, *n = NULL, *id = NULL;
        int r;

        /* "sk-" and 40 random characters: about 206 bits. */
        memcpy(key, "sk-", 3);
        r = random_id(key + 3, 40);
        if (r < 0)
                return r;
        if (!account) {
                memcpy(name, "acct-", 5);
                r = random_id(name + 5, 12);
                if (r < 0)
                        return r;
                account = name;
        }
        r = account_get_or_create(s, account, &account_id);
        if (r < 0)
                return r;
        r = key_insert(s, key, account_id, admin, 0, &id);
        if (r < 0)
                goto fail;
        k = strdup(key);
        n = strdup(account);
        if (!k || !n) {
                r = -ENOMEM;
                goto fail;
        }
        *ret_key = k;
        *ret_account_id = account_id;
        *ret_account_name = n;
        if (ret_id)
                *ret_id = id;
        else
                free(id);
        return 0;
fail:
        free(k);
        free(n);
        free(id);
        free(account_id);
        return r;
}

int store_key_foreach(struct store *s, const char *account_id, int (*fn)(const struct store_key *k, void *ud),
                      void *ud)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st,
                        "SELECT k.id, k.account_id, a.name, k.prefix, k.admin, k.bootstrap, k.created_at"
                        " FROM api_keys k JOIN accounts a ON a.id = k.account_id"
                        " WHERE ?1 IS NULL OR k.account_id = ?1 ORDER BY k.created_at, k.id",
                        "s", account_id),
            rc = SQLITE_DONE;

        if (r < 0)
                return r;
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct store_key k = {
                        .id = sq_col_dup(st, 0),
                        .account_id = sq_col_dup(st, 1),
                        .account_name = sq_col_dup(st, 2),
                        .prefix = sq_col_dup(st, 3),
                        .admin = sqlite3_column_int(st, 4),
                        .bootstrap = sqlite3_column_int(st, 5),
                        .created_at = sqlite3_column_int64(st, 6),
                };

                r = k.id && k.account_id && k.account_name ? fn(&k, ud) : -ENOMEM;
                free(k.id);
                free(k.account_id);
                free(k.account_name);
                free(k.prefix);
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        return r;
}

int store_key_delete(struct store *s, const char *account_id, const char *id)
{
        return WRITE_ONE(s, "DELETE FROM api_keys WHERE id = ?1 AND (?2 IS NULL OR account_id = ?2)", "ss", id,
                         account_id);
}

/* A limit column: NULL reads as -1 (the server's default). */
static int64_t col_limit(sqlite3_stmt *st, int i)
{
        return sqlite3_column_type(st, i) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, i);
}

int store_account_limits(struct store *s, const char *account_id, struct store_limits *ret)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st,
                        "SELECT max_vms, max_running, max_snapshots, max_mem_mb, max_storage FROM accounts WHERE id = ?",
                        "s", account_id),
            rc;

        if (r < 0)
                return r;
        *ret = STORE_LIMITS_DEFAULT;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = (struct store_limits){col_limit(st, 0), col_limit(st, 1), col_limit(st, 2), col_limit(st, 3),
                                             col_limit(st, 4)};
        else
                r = rc == SQLITE_DONE ? -ENOENT : sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        return r;
}

int store_account_set_limits(struct store *s, const char *account, const struct store_limits *l)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st,
                        "UPDATE accounts SET max_vms = nullif(?1, -1), max_running = nullif(?2, -1),"
                        " max_snapshots = nullif(?3, -1), max_mem_mb = nullif(?4, -1), max_storage = nullif(?5, -1)"
                        " WHERE name = ?6",
                        "IIIIIs", l->vms, l->running, l->snapshots, l->mem_mb, l->storage, account);

        return r < 0 ? r : sq_finish(s, st, 1);
}

int store_auth(struct store *s, const char *key, char **ret_account_id, int *ret_admin)
{
        char hash[65];
        sqlite3_stmt *st;
        int r, rc;

        sha256_hex(key, strlen(key), hash);
        r = sq_prepare(s, &st, "SELECT account_id, admin FROM api_keys WHERE key_hash = ?", "s", hash);
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                sqlite3_finalize(st);
                return rc == SQLITE_DONE ? -ENOENT : sq_err(rc) ? sq_err(rc) : -EIO;
        }
        *ret_account_id = sq_col_dup(st, 0);
        *ret_admin = sqlite3_column_int(st, 1);
        sqlite3_finalize(st);
        return *ret_account_id ? 0 : -ENOMEM;
}

/* ---- VMs ---- */

int store_vm_insert(struct store *s, const struct store_vm *vm)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st,
                        "INSERT INTO vms (id, account_id, name, state, snapshot_id, workdir, persist_kind,"
                        " persist_priority, persist_delete_on, created_at, idle_timeout_s, mem_mb, vcpus, layer,"
                        " error_code, error, uid, build_id, internal)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        "sssssssisIIiisisIsi", vm->id, vm->account_id, vm->name, vm->state, vm->snapshot_id,
                        vm->workdir, vm->persist_kind ? vm->persist_kind : "sticky", vm->persist_priority,
                        vm->persist_delete_on ? vm->persist_delete_on : "suspended", vm->created_at,
                        vm->idle_timeout_s, vm->mem_mb, vm->vcpus, vm->layer, vm->error_code, vm->error, vm->uid,
                        vm->build_id, vm->internal);

        return r < 0 ? r : sq_finish(s, st, 1);
}

int store_vm_claim(struct store *s, const struct store_vm *vm)
{
        return WRITE_ONE(s,
                         "UPDATE vms SET account_id = ?, name = ?, state = ?, snapshot_id = ?, workdir = ?,"
                         " persist_kind = ?, persist_priority = ?, persist_delete_on = ?, created_at = ?,"
                         " idle_timeout_s = ?, error_code = ?, error = NULL, build_id = ?, internal = ?,"
                         " last_active_at = 0 WHERE id = ?",
                         "ssssssisIIisis", vm->account_id, vm->name, vm->state, vm->snapshot_id, vm->workdir,
                         vm->persist_kind ? vm->persist_kind : "sticky", vm->persist_priority,
                         vm->persist_delete_on ? vm->persist_delete_on : "suspended", vm->created_at,
                         vm->idle_timeout_s, vm->error_code, vm->build_id, vm->internal, vm->id);
}

int store_vm_set_error(struct store *s, const char *id, int code, const char *error)
{
        return WRITE_ONE(s, "UPDATE vms SET error_code = ?, error = ? WHERE id = ?", "iss", code, code ? error : NULL,
                         id);
}

int store_vm_set_last_active(struct store *s, const char *id, int64_t at)
{
        return WRITE_ONE(s, "UPDATE vms SET last_active_at = ? WHERE id = ?", "Is", at, id);
}

int store_vm_set_state(struct store *s, const char *id, const char *state)
{
        return WRITE_ONE(s, "UPDATE vms SET state = ? WHERE id = ?", "ss", state, id);
}

int store_vm_delete(struct store *s, const char *id)
{
        return WRITE_ONE(s, "DELETE FROM vms WHERE id = ?", "s", id);
}

int store_vm_foreach(struct store *s, int (*fn)(const struct store_vm *vm, void *userdata), void *userdata)
{
        sqlite3_stmt *st;
        int r, rc;

        r = sq_prepare(s, &st,
                    "SELECT id, account_id, name, state, snapshot_id, workdir, persist_kind, persist_priority,"
                    " persist_delete_on, created_at, idle_timeout_s, mem_mb, vcpus, layer, pending_mem_mb,"
                    " pending_vcpus, error_code, error, last_active_at, uid, build_id, internal FROM vms ORDER BY created_at, id",
                    NULL);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct store_vm vm = {
                        .id = sq_col_dup(st, 0),
                        .account_id = sq_col_dup(st, 1),
                        .name = sq_col_dup(st, 2),
                        .state = sq_col_dup(st, 3),
                        .snapshot_id = sq_col_dup(st, 4),
                        .workdir = sq_col_dup(st, 5),
                        .persist_kind = sq_col_dup(st, 6),
                        .persist_priority = sqlite3_column_int(st, 7),
                        .persist_delete_on = sq_col_dup(st, 8),
                        .created_at = sqlite3_column_int64(st, 9),
                        .idle_timeout_s = sqlite3_column_int64(st, 10),
                        .mem_mb = sqlite3_column_int(st, 11),
                        .vcpus = sqlite3_column_int(st, 12),
                        .layer = sq_col_dup(st, 13),
                        .pending_mem_mb = sqlite3_column_int(st, 14),
                        .pending_vcpus = sqlite3_column_int(st, 15),
                        .error_code = sqlite3_column_int(st, 16),
                        .error = sq_col_dup(st, 17),
                        .last_active_at = sqlite3_column_int64(st, 18),
                        .uid = sqlite3_column_int64(st, 19),
                        .build_id = sq_col_dup(st, 20),
                        .internal = sqlite3_column_int(st, 21),
                };

                r = vm.id && vm.account_id && vm.state && vm.persist_kind && vm.persist_delete_on ? fn(&vm, userdata)
                                                                                                 : -ENOMEM;
                store_vm_clear(&vm);
                if (r != 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        return r;
}

void store_vm_clear(struct store_vm *vm)
{
        if (!vm)
                return;
        free(vm->id);
        free(vm->account_id);
        free(vm->name);
        free(vm->state);
        free(vm->snapshot_id);
        free(vm->workdir);
        free(vm->persist_kind);
        free(vm->persist_delete_on);
        free(vm->layer);
        free(vm->error);
        free(vm->build_id);
        memset(vm, 0, sizeof(*vm));
}

int store_vm_set_size(struct store *s, const char *id, int mem_mb, int vcpus, int pending_mem_mb,
                      int pending_vcpus)
{
        return WRITE_ONE(s, "UPDATE vms SET mem_mb = ?, vcpus = ?, pending_mem_mb = ?, pending_vcpus = ? WHERE id = ?",
                         "iiiis", mem_mb, vcpus, pending_mem_mb, pending_vcpus, id);
}

int store_vm_set_layer(struct store *s, const char *id, const char *layer)
{
        return WRITE_ONE(s, "UPDATE vms SET layer = ? WHERE id = ?", "ss", layer, id);
}

int store_vm_set_uid(struct store *s, const char *id, int64_t uid)
{
        return WRITE_ONE(s, "UPDATE vms SET uid = ? WHERE id = ?", "Is", uid, id);
}

/* ---- layers ---- */

/* The layer ids as a JSON array of strings, for json_each. Ids are the
 * daemon's own ("l-" and base32): anything that would need escaping is
 * refused. */
static int pins_json(const char *const *ids, size_t n, char **ret)
{
        struct strbuf b = {0};

        strbuf_add(&b, "[", 1);
        for (size_t i = 0; i < n; i++) {
                if (strpbrk(ids[i], "\"\\")) {
                        free(b.s);
                        return -EINVAL;
                }
                if (i)
                        strbuf_add(&b, ",", 1);
                strbuf_add(&b, "\"", 1);
                strbuf_add(&b, ids[i], strlen(ids[i]));
                strbuf_add(&b, "\"", 1);
        }
        if (strbuf_add(&b, "]", 1) < 0 || b.oom) {
                free(b.s);
                return -ENOMEM;
        }
        *ret = b.s;
        return 0;
}

int store_layer_insert(struct store *s, const char *id, const char *parent)
{
        return WRITE_ONE(s, "INSERT INTO layers (id, parent) VALUES (?, ?)", "ss", id, parent);
}

int store_layer_exists(struct store *s, const char *id)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st, "SELECT 1 FROM layers WHERE id = ?", "s", id);

        if (r < 0)
                return r;
        r = sqlite3_step(st);
        r = r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : sq_err(r) ? sq_err(r) : -EIO;
        sqlite3_finalize(st);
        return r;
}

int store_layer_parent(struct store *s, const char *id, char **ret_parent)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st, "SELECT parent FROM layers WHERE id = ?", "s", id), rc;

        if (r < 0)
                return r;
        *ret_parent = NULL;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret_parent = sq_col_dup(st, 0);
                if (sqlite3_column_type(st, 0) != SQLITE_NULL && !*ret_parent)
                        r = -ENOMEM;
        } else {
                r = rc == SQLITE_DONE ? -ENOENT : sq_err(rc) ? sq_err(rc) : -EIO;
        }
        sqlite3_finalize(st);
        return r;
}

int store_layer_gc(struct store *s, const char *const *pinned, size_t npinned, void (*fn)(const char *id, void *ud),
                   void *ud)
{
        /* A layer is live if a VM or a live snapshot sits on it, or a live
         * layer has it as an ancestor. */
        static const char sql[] =
                "WITH RECURSIVE live(id) AS ("
                "  SELECT layer FROM vms WHERE layer IS NOT NULL"
                "  UNION SELECT layer FROM snapshots WHERE deleted = 0"
                "  UNION SELECT value FROM json_each(?)"
                "  UNION SELECT l.parent FROM layers l JOIN live ON l.id = live.id WHERE l.parent IS NOT NULL)"
                " SELECT id FROM layers WHERE id NOT IN (SELECT id FROM live)";
        char **dead = NULL, *pins = NULL;
        size_t n = 0;
        sqlite3_stmt *st;
        int r, rc;

        r = pins_json(pinned, npinned, &pins);
        if (r == 0)
                r = sq_prepare(s, &st, sql, "s", pins);
        free(pins);
        if (r < 0)
                return r;
        /* Collect first: a layer's record goes before its files, so that a
         * crash in between leaves files no record names, which the next
         * start removes, never a record whose files are gone. */
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                char **grown = realloc(dead, (n + 1) * sizeof(*dead));

                if (!grown || !(grown[n] = sq_col_dup(st, 0))) {
                        dead = grown ? grown : dead;
                        r = -ENOMEM;
                        break;
                }
                dead = grown;
                n++;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        for (size_t i = 0; r == 0 && i < n; i++) {
                r = WRITE_ONE(s, "DELETE FROM layers WHERE id = ?", "s", dead[i]);
                if (r == 0)
                        fn(dead[i], ud);
        }
        for (size_t i = 0; i < n; i++)
                free(dead[i]);
        free(dead);
        return r;
}

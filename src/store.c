/*
 * store: SQLite-backed durable state (accounts, hashed API keys, VMs).
 * Depends on sqlite3 and util. Never logs (callers log with context) and
 * never keeps a key's plaintext.
 */
#include "store.h"
#include "util.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

struct store {
        sqlite3 *db;
};

static const char schema[] =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=NORMAL;"
        "PRAGMA foreign_keys=ON;"
        "CREATE TABLE IF NOT EXISTS accounts ("
        "  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS api_keys ("
        "  key_hash TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id),"
        "  admin INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS vms ("
        "  id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), name TEXT,"
        "  state TEXT NOT NULL, snapshot_id TEXT, workdir TEXT, persistence TEXT,"
        "  created_at INTEGER NOT NULL, idle_timeout_s INTEGER NOT NULL DEFAULT 300,"
        "  mem_mb INTEGER NOT NULL DEFAULT 1024, vcpus INTEGER NOT NULL DEFAULT 1, layer TEXT,"
        "  pending_mem_mb INTEGER NOT NULL DEFAULT 0, pending_vcpus INTEGER NOT NULL DEFAULT 0, error TEXT,"
        "  last_active_at INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE IF NOT EXISTS layers (id TEXT PRIMARY KEY, parent TEXT);"
        "CREATE TABLE IF NOT EXISTS snapshots ("
        "  id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), name TEXT,"
        "  source_vm_id TEXT, layer TEXT NOT NULL, persistence TEXT, created_at INTEGER NOT NULL,"
        "  deleted INTEGER NOT NULL DEFAULT 0, mem_mb INTEGER NOT NULL, vcpus INTEGER NOT NULL);";

static const char *const migrations[] = {
        "ALTER TABLE vms ADD COLUMN layer TEXT",
        "ALTER TABLE vms ADD COLUMN pending_mem_mb INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE vms ADD COLUMN pending_vcpus INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE vms ADD COLUMN error TEXT",
        "ALTER TABLE vms ADD COLUMN last_active_at INTEGER NOT NULL DEFAULT 0",
};

static int sql_err(int rc)
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

int store_open(const char *path, struct store **ret)
{
        struct store *s = calloc(1, sizeof(*s));
        int rc;

        if (!s)
                return -ENOMEM;
        rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                             NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_busy_timeout(s->db, 5000);
        if (rc == SQLITE_OK)
                rc = sqlite3_exec(s->db, schema, NULL, NULL, NULL);
        /* Columns added since a data dir was first made. ALTER fails with
         * "duplicate column" where one is already there, which is fine. */
        for (size_t i = 0; rc == SQLITE_OK && i < sizeof(migrations) / sizeof(migrations[0]); i++)
                sqlite3_exec(s->db, migrations[i], NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                store_close(s);
                return sql_err(rc) ? sql_err(rc) : -EIO;
        }
        *ret = s;
        return 0;
}

void store_close(struct store *s)
{
        if (!s)
                return;
        sqlite3_close(s->db);
        free(s);
}

/* Prepares sql and binds the NULL-terminated list of text arguments. */
static int prepare(struct store *s, sqlite3_stmt **ret, const char *sql, const char *const *args)
{
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

        if (rc != SQLITE_OK)
                return sql_err(rc) ? sql_err(rc) : -EIO;
        for (int i = 0; args && args[i]; i++)
                sqlite3_bind_text(st, i + 1, args[i], -1, SQLITE_TRANSIENT);
        *ret = st;
        return 0;
}

static int exec_text(struct store *s, const char *sql, const char *const *args)
{
        sqlite3_stmt *st;
        int r = prepare(s, &st, sql, args);

        if (r < 0)
                return r;
        r = sql_err(sqlite3_step(st));
        sqlite3_finalize(st);
        return r;
}

/* Finds the account named name, creating it when missing; *ret_id malloc'd. */
static int account_get_or_create(struct store *s, const char *name, char **ret_id)
{
        const char *args[] = {name, NULL};
        sqlite3_stmt *st;
        char id[37];
        int r;

        r = prepare(s, &st, "SELECT id FROM accounts WHERE name = ?", args);
        if (r < 0)
                return r;
        if (sqlite3_step(st) == SQLITE_ROW) {
                *ret_id = strdup((const char *)sqlite3_column_text(st, 0));
                sqlite3_finalize(st);
                return *ret_id ? 0 : -ENOMEM;
        }
        sqlite3_finalize(st);

        r = random_id(id, 20);
        if (r < 0)
                return r;
        r = prepare(s, &st, "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
                    (const char *[]){id, name, NULL});
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 3, wall_ms());
        r = sql_err(sqlite3_step(st));
        sqlite3_finalize(st);
        if (r < 0)
                return r;
        *ret_id = strdup(id);
        return *ret_id ? 0 : -ENOMEM;
}

static int key_insert(struct store *s, const char *key, const char *account_id, int admin)
{
        char hash[65];
        sqlite3_stmt *st;
        int r;

        sha256_hex(key, strlen(key), hash);
        r = prepare(s, &st,
                    "INSERT INTO api_keys (key_hash, account_id, admin, created_at) VALUES (?, ?, 0, 0)"
                    " ON CONFLICT(key_hash) DO UPDATE SET account_id = excluded.account_id",
                    (const char *[]){hash, account_id, NULL});
        if (r < 0)
                return r;
        r = sql_err(sqlite3_step(st));
        sqlite3_finalize(st);
        if (r < 0)
                return r;
        r = prepare(s, &st, "UPDATE api_keys SET admin = ?, created_at = ? WHERE key_hash = ?", NULL);
        if (r < 0)
                return r;
        sqlite3_bind_int(st, 1, admin);
        sqlite3_bind_int64(st, 2, wall_ms());
        sqlite3_bind_text(st, 3, hash, -1, SQLITE_TRANSIENT);
        r = sql_err(sqlite3_step(st));
        sqlite3_finalize(st);
        return r;
}

int store_ensure_admin_key(struct store *s, const char *key, const char *account)
{
        char *account_id = NULL;
        int r = account_get_or_create(s, account, &account_id);

        if (r == 0)
                r = key_insert(s, key, account_id, 1);
        free(account_id);
        return r;
}

int store_create_key(struct store *s, const char *account, int admin, char **ret_key, char **ret_account_id,
                     char **ret_account_name)
{
        char key[48], name[32];
        char *account_id = NULL, *k = NULL, *n = NULL;
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
        r = key_insert(s, key, account_id, admin);
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
        return 0;
fail:
        free(k);
        free(n);
        free(account_id);
        return r;
}

int store_auth(struct store *s, const char *key, char **ret_account_id, int *ret_admin)
{
        char hash[65];
        sqlite3_stmt *st;
        int r;

        sha256_hex(key, strlen(key), hash);
        r = prepare(s, &st, "SELECT account_id, admin FROM api_keys WHERE key_hash = ?",
                    (const char *[]){hash, NULL});
        if (r < 0)
                return r;
        if (sqlite3_step(st) != SQLITE_ROW) {
                sqlite3_finalize(st);
                return -ENOENT;
        }
        *ret_account_id = strdup((const char *)sqlite3_column_text(st, 0));
        *ret_admin = sqlite3_column_int(st, 1);
        sqlite3_finalize(st);
        return *ret_account_id ? 0 : -ENOMEM;
}

int store_vm_insert(struct store *s, const struct store_vm *vm)
{
        sqlite3_stmt *st;
        int r;

        r = prepare(s, &st,
                    "INSERT INTO vms (id, account_id, name, state, snapshot_id, workdir, persistence,"
                    " created_at, idle_timeout_s, mem_mb, vcpus, layer, error)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    NULL);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, vm->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, vm->account_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, vm->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, vm->state, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, vm->snapshot_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, vm->workdir, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 7, vm->persistence, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 8, vm->created_at);
        sqlite3_bind_int64(st, 9, vm->idle_timeout_s);
        sqlite3_bind_int(st, 10, vm->mem_mb);
        sqlite3_bind_int(st, 11, vm->vcpus);
        sqlite3_bind_text(st, 12, vm->layer, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 13, vm->error, -1, SQLITE_TRANSIENT);
        r = sql_err(sqlite3_step(st));
        sqlite3_finalize(st);
        return r;
}

int store_vm_set_error(struct store *s, const char *id, const char *error)
{
        /* id first: a NULL error ends the list and stays unbound (NULL). */
        return exec_text(s, "UPDATE vms SET error = ?2 WHERE id = ?1", (const char *[]){id, error, NULL});
}

int store_vm_set_last_active(struct store *s, const char *id, int64_t at)
{
        sqlite3_stmt *st;
        int r = prepare(s, &st, "UPDATE vms SET last_active_at = ?2 WHERE id = ?1", (const char *[]){id, NULL});

        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 2, at);
        r = sql_err(sqlite3_step(st));
        sqlite3_finalize(st);
        return r;
}

int store_vm_set_state(struct store *s, const char *id, const char *state)
{
        return exec_text(s, "UPDATE vms SET state = ? WHERE id = ?", (const char *[]){state, id, NULL});
}

int store_vm_delete(struct store *s, const char *id)
{
        return exec_text(s, "DELETE FROM vms WHERE id = ?", (const char *[]){id, NULL});
}

static char *col_dup(sqlite3_stmt *st, int i)
{
        const unsigned char *t = sqlite3_column_text(st, i);

        return t ? strdup((const char *)t) : NULL;
}

int store_vm_foreach(struct store *s, int (*fn)(const struct store_vm *vm, void *userdata), void *userdata)
{
        sqlite3_stmt *st;
        int r, rc;

        r = prepare(s, &st,
                    "SELECT id, account_id, name, state, snapshot_id, workdir, persistence, created_at,"
                    " idle_timeout_s, mem_mb, vcpus, layer, pending_mem_mb, pending_vcpus, error, last_active_at FROM vms"
                    " ORDER BY created_at, id",
                    NULL);
        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct store_vm vm = {
                        .id = col_dup(st, 0),
                        .account_id = col_dup(st, 1),
                        .name = col_dup(st, 2),
                        .state = col_dup(st, 3),
                        .snapshot_id = col_dup(st, 4),
                        .workdir = col_dup(st, 5),
                        .persistence = col_dup(st, 6),
                        .created_at = sqlite3_column_int64(st, 7),
                        .idle_timeout_s = sqlite3_column_int64(st, 8),
                        .mem_mb = sqlite3_column_int(st, 9),
                        .vcpus = sqlite3_column_int(st, 10),
                        .layer = col_dup(st, 11),
                        .pending_mem_mb = sqlite3_column_int(st, 12),
                        .pending_vcpus = sqlite3_column_int(st, 13),
                        .error = col_dup(st, 14),
                        .last_active_at = sqlite3_column_int64(st, 15),
                };

                r = vm.id && vm.account_id && vm.state ? fn(&vm, userdata) : -ENOMEM;
                store_vm_clear(&vm);
                if (r != 0)
                        break;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sql_err(rc) ? sql_err(rc) : -EIO;
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
        free(vm->persistence);
        free(vm->layer);
        free(vm->error);
        memset(vm, 0, sizeof(*vm));
}

int store_vm_set_size(struct store *s, const char *id, int mem_mb, int vcpus, int pending_mem_mb,
                      int pending_vcpus)
{
        sqlite3_stmt *st;
        int r = prepare(s, &st,
                        "UPDATE vms SET mem_mb = ?, vcpus = ?, pending_mem_mb = ?, pending_vcpus = ? WHERE id = ?",
                        NULL);

        if (r < 0)
                return r;
        sqlite3_bind_int(st, 1, mem_mb);
        sqlite3_bind_int(st, 2, vcpus);
        sqlite3_bind_int(st, 3, pending_mem_mb);
        sqlite3_bind_int(st, 4, pending_vcpus);
        sqlite3_bind_text(st, 5, id, -1, SQLITE_TRANSIENT);
        r = sql_err(sqlite3_step(st));
        sqlite3_finalize(st);
        return r;
}

int store_vm_set_layer(struct store *s, const char *id, const char *layer)
{
        /* id first: a NULL layer ends the list and stays unbound, which binds NULL. */
        return exec_text(s, "UPDATE vms SET layer = ?2 WHERE id = ?1", (const char *[]){id, layer, NULL});
}

int store_layer_insert(struct store *s, const char *id, const char *parent)
{
        sqlite3_stmt *st;
        int r = prepare(s, &st, "INSERT INTO layers (id, parent) VALUES (?, ?)", NULL);

        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, parent, -1, SQLITE_TRANSIENT);
        r = sql_err(sqlite3_step(st));
        sqlite3_finalize(st);
        return r;
}

int store_layer_exists(struct store *s, const char *id)
{
        sqlite3_stmt *st;
        int r = prepare(s, &st, "SELECT 1 FROM layers WHERE id = ?", (const char *[]){id, NULL});

        if (r < 0)
                return r;
        r = sqlite3_step(st);
        r = r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : sql_err(r);
        sqlite3_finalize(st);
        return r;
}

int store_layer_gc(struct store *s, void (*fn)(const char *id, void *ud), void *ud)
{
        /* A layer is live if a VM or a live snapshot sits on it, or a live
         * layer has it as an ancestor. */
        static const char sql[] =
                "WITH RECURSIVE live(id) AS ("
                "  SELECT layer FROM vms WHERE layer IS NOT NULL"
                "  UNION SELECT layer FROM snapshots WHERE deleted = 0"
                "  UNION SELECT l.parent FROM layers l JOIN live ON l.id = live.id WHERE l.parent IS NOT NULL)"
                " SELECT id FROM layers WHERE id NOT IN (SELECT id FROM live)";
        sqlite3_stmt *st;
        int r = prepare(s, &st, sql, NULL);

        if (r < 0)
                return r;
        while (sqlite3_step(st) == SQLITE_ROW) {
                const char *id = (const char *)sqlite3_column_text(st, 0);

                fn(id, ud);
                exec_text(s, "DELETE FROM layers WHERE id = ?", (const char *[]){id, NULL});
        }
        sqlite3_finalize(st);
        return 0;
}

int store_snapshot_insert(struct store *s, const struct store_snapshot *snap)
{
        sqlite3_stmt *st;
        int r = prepare(s, &st,
                        "INSERT INTO snapshots (id, account_id, name, source_vm_id, layer, persistence, created_at,"
                        " mem_mb, vcpus) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        NULL);

        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, snap->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, snap->account_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, snap->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, snap->source_vm_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, snap->layer, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, snap->persistence, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 7, snap->created_at);
        sqlite3_bind_int(st, 8, snap->mem_mb);
        sqlite3_bind_int(st, 9, snap->vcpus);
        r = sql_err(sqlite3_step(st));
        sqlite3_finalize(st);
        return r;
}

#define SNAPSHOT_COLS "id, account_id, name, source_vm_id, layer, persistence, created_at, deleted, mem_mb, vcpus"

static void snapshot_row(sqlite3_stmt *st, struct store_snapshot *ret)
{
        ret->id = col_dup(st, 0);
        ret->account_id = col_dup(st, 1);
        ret->name = col_dup(st, 2);
        ret->source_vm_id = col_dup(st, 3);
        ret->layer = col_dup(st, 4);
        ret->persistence = col_dup(st, 5);
        ret->created_at = sqlite3_column_int64(st, 6);
        ret->deleted = sqlite3_column_int(st, 7);
        ret->mem_mb = sqlite3_column_int(st, 8);
        ret->vcpus = sqlite3_column_int(st, 9);
}

int store_snapshot_get(struct store *s, const char *account, const char *id, struct store_snapshot *ret)
{
        sqlite3_stmt *st;
        int r = prepare(s, &st, "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE id = ? AND account_id = ?",
                        (const char *[]){id, account, NULL});

        if (r < 0)
                return r;
        r = -ENOENT;
        if (sqlite3_step(st) == SQLITE_ROW) {
                snapshot_row(st, ret);
                r = ret->id && ret->account_id && ret->layer ? 0 : -ENOMEM;
        }
        sqlite3_finalize(st);
        return r;
}

int store_snapshot_foreach(struct store *s, const char *account,
                           int (*fn)(const struct store_snapshot *snap, void *ud), void *ud)
{
        sqlite3_stmt *st;
        int r = prepare(s, &st, "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE account_id = ? ORDER BY created_at, id",
                        (const char *[]){account, NULL});

        if (r < 0)
                return r;
        while (r == 0 && sqlite3_step(st) == SQLITE_ROW) {
                struct store_snapshot snap = {0};

                snapshot_row(st, &snap);
                r = snap.id ? fn(&snap, ud) : -ENOMEM;
                store_snapshot_clear(&snap);
        }
        sqlite3_finalize(st);
        return r;
}

int store_snapshot_set_name(struct store *s, const char *account, const char *id, const char *name)
{
        sqlite3_stmt *st;
        int r = prepare(s, &st, "UPDATE snapshots SET name = ? WHERE id = ? AND account_id = ? AND deleted = 0", NULL);

        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, account, -1, SQLITE_TRANSIENT);
        r = sql_err(sqlite3_step(st));
        if (r == 0 && sqlite3_changes(s->db) == 0)
                r = -ENOENT;
        sqlite3_finalize(st);
        return r;
}

int store_snapshot_delete(struct store *s, const char *account, const char *id)
{
        struct store_snapshot snap = {0};
        int r = store_snapshot_get(s, account, id, &snap);

        if (r == 0 && snap.deleted)
                r = -EALREADY;
        if (r == 0)
                r = exec_text(s, "UPDATE snapshots SET deleted = 1 WHERE id = ?", (const char *[]){id, NULL});
        store_snapshot_clear(&snap);
        return r;
}

void store_snapshot_clear(struct store_snapshot *snap)
{
        if (!snap)
                return;
        free(snap->id);
        free(snap->account_id);
        free(snap->name);
        free(snap->source_vm_id);
        free(snap->layer);
        free(snap->persistence);
        memset(snap, 0, sizeof(*snap));
}

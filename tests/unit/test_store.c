/* Unit tests for the SQLite store: keys are kept hashed and map to their
 * account; VM records round-trip. */
#include "store/store.h"

#include <sqlite3.h>
#include "unit.h"
#include "lib/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct collect {
        int n;
        char ids[4][21];
        char states[4][16];
};

static int collect_vm(const struct store_vm *vm, void *ud)
{
        struct collect *c = ud;

        if (c->n < 4) {
                snprintf(c->ids[c->n], 21, "%s", vm->id);
                snprintf(c->states[c->n], 16, "%s", vm->state);
        }
        c->n++;
        return 0;
}

static struct store *open_tmp(char *dir)
{
        char path[256];
        struct store *s = NULL;

        if (!mkdtemp(dir))
                return NULL;
        snprintf(path, sizeof(path), "%s/db", dir);
        return store_open(path, &s) == 0 ? s : NULL;
}

TEST(store_keys_and_accounts)
{
        char dir[] = "/tmp/sprout-store-XXXXXX";
        struct store *s = open_tmp(dir);
        char *acct = NULL, *key = NULL, *aid = NULL, *aname = NULL, *acct2 = NULL;
        int admin = -1;

        CHECK(s);
        CHECK(store_ensure_admin_key(s, "boot-key", "admin", NULL) == 0);
        CHECK(store_ensure_admin_key(s, "boot-key", "admin", NULL) == 0); /* idempotent */
        CHECK(store_auth(s, "boot-key", &acct, &admin) == 0 && admin == 1);
        CHECK(store_auth(s, "wrong", &acct2, &admin) == -ENOENT);
        CHECK(store_create_key(s, "team", 0, &key, &aid, &aname, NULL) == 0);
        CHECK(!strncmp(key, "sk-", 3) && !strcmp(aname, "team") && strcmp(aid, acct) != 0);
        CHECK(store_auth(s, key, &acct2, &admin) == 0 && admin == 0 && !strcmp(acct2, aid));
        free(acct2);
        acct2 = NULL;
        free(key);
        free(aname);
        /* A second key for the same named account maps to the same id. */
        CHECK(store_create_key(s, "team", 0, &key, &acct2, &aname, NULL) == 0 && !strcmp(acct2, aid));
        store_close(s);
        free(acct);
        free(acct2);
        free(key);
        free(aid);
        free(aname);
        rm_rf(dir);
}

TEST(store_vm_records)
{
        char dir[] = "/tmp/sprout-store-XXXXXX";
        struct store *s = open_tmp(dir);
        struct collect c = {0};
        char *aid = NULL, *key = NULL, *aname = NULL;

        CHECK(s);
        CHECK(store_create_key(s, NULL, 0, &key, &aid, &aname, NULL) == 0);
        struct store_vm a = {.id = "aaaaaaaaaaaaaaaaaaaa", .account_id = aid, .state = "starting",
                             .created_at = 1, .mem_mb = 1024, .vcpus = 1};
        struct store_vm b = {.id = "bbbbbbbbbbbbbbbbbbbb", .account_id = aid, .name = "n", .state = "running",
                             .created_at = 2, .mem_mb = 1024, .vcpus = 1};
        CHECK(store_vm_insert(s, &a) == 0 && store_vm_insert(s, &b) == 0);
        CHECK(store_vm_insert(s, &a) == -EEXIST);
        CHECK(store_vm_set_state(s, a.id, "running") == 0);
        CHECK(store_vm_foreach(s, collect_vm, &c) == 0 && c.n == 2);
        CHECK(!strcmp(c.ids[0], a.id) && !strcmp(c.states[0], "running"));
        CHECK(store_vm_delete(s, a.id) == 0);
        c.n = 0;
        CHECK(store_vm_foreach(s, collect_vm, &c) == 0 && c.n == 1 && !strcmp(c.ids[0], b.id));
        store_close(s);
        free(aid);
        free(key);
        free(aname);
        rm_rf(dir);
}

static int find_claimed(const struct store_vm *vm, void *ud)
{
        struct store_vm *want = ud;

        if (strcmp(vm->id, want->id))
                return 0;
        return !strcmp(vm->account_id, want->account_id) && vm->name && !strcmp(vm->name, want->name) &&
                       vm->workdir && !strcmp(vm->workdir, want->workdir) && !strcmp(vm->state, "starting") &&
                       vm->idle_timeout_s == want->idle_timeout_s && vm->error_code == want->error_code &&
                       vm->uid == 70001 && !vm->internal && vm->mem_mb == 1024
                   ? 1
                   : 2;
}

TEST(store_warm_pool_account_and_claim)
{
        char dir[] = "/tmp/sprout-store-XXXXXX";
        struct store *s = open_tmp(dir);
        char *pool = NULL, *again = NULL, *aid = NULL, *key = NULL, *aname = NULL;

        CHECK(s);
        CHECK(store_account_ensure(s, "sprout:warm-pool", &pool) == 0 && pool);
        CHECK(store_account_ensure(s, "sprout:warm-pool", &again) == 0 && !strcmp(pool, again));
        CHECK(store_create_key(s, NULL, 0, &key, &aid, &aname, NULL) == 0 && strcmp(aid, pool));
        struct store_vm v = {.id = "cccccccccccccccccccc", .account_id = pool, .state = "starting", .created_at = 1,
                             .mem_mb = 1024, .vcpus = 1, .internal = 1, .error_code = -1000000, .uid = 70001};
        CHECK(store_vm_insert(s, &v) == 0);
        struct store_vm c = {.id = v.id, .account_id = aid, .name = "claimed", .workdir = "/w", .state = "starting",
                             .created_at = 2, .idle_timeout_s = 42, .error_code = -1000000};
        CHECK(store_vm_claim(s, &c) == 0);
        CHECK(store_vm_foreach(s, find_claimed, &c) == 1);
        c.id = "dddddddddddddddddddd";
        CHECK(store_vm_claim(s, &c) == -ENOENT);
        store_close(s);
        free(pool), free(again), free(aid), free(key), free(aname);
        rm_rf(dir);
}

struct gc_seen {
        int n;
        char ids[4][24];
};

static void gc_seen(const char *id, void *ud)
{
        struct gc_seen *g = ud;

        if (g->n < 4)
                snprintf(g->ids[g->n], sizeof(g->ids[0]), "%s", id);
        g->n++;
}

static int layer_of_first(const struct store_vm *vm, void *ud)
{
        *(char **)ud = vm->layer ? strdup(vm->layer) : NULL;
        return 1;
}

struct txn_case {
        const char *vm_id, *layer;
        int fail;
};

static int txn_body(struct store *t, void *ud)
{
        struct txn_case *c = ud;
        int r = store_layer_insert(t, c->layer, NULL);

        if (r == 0)
                r = store_vm_set_layer(t, c->vm_id, c->layer);
        return r < 0 ? r : c->fail;
}

/* A transaction lands whole or not at all. */
TEST(store_txn_all_or_nothing)
{
        char dir[] = "/tmp/sprout-store-XXXXXX";
        struct store *s = open_tmp(dir);
        char *aid = NULL, *key = NULL, *aname = NULL;
        char *layer = NULL;

        CHECK(s);
        CHECK(store_create_key(s, NULL, 0, &key, &aid, &aname, NULL) == 0);
        struct store_vm v = {.id = "tttttttttttttttttttt", .account_id = aid, .state = "running",
                             .created_at = 1, .mem_mb = 1024, .vcpus = 1};
        CHECK(store_vm_insert(s, &v) == 0);
        struct txn_case bad = {v.id, "l-x", -EIO}, missing = {"nosuchvm", "l-y", 0}, good = {v.id, "l-z", 0};
        CHECK(store_txn(s, txn_body, &bad) == -EIO);
        CHECK(store_layer_exists(s, "l-x") == 0);
        CHECK(store_txn(s, txn_body, &missing) == -ENOENT);
        CHECK(store_layer_exists(s, "l-y") == 0);
        CHECK(store_txn(s, txn_body, &good) == 0);
        CHECK(store_layer_exists(s, "l-z") == 1);
        CHECK(store_vm_foreach(s, layer_of_first, &layer) == 1 && layer && !strcmp(layer, "l-z"));
        free(layer);
        store_close(s);
        free(aid);
        free(key);
        free(aname);
        rm_rf(dir);
}

/* The layer GC frees exactly what no VM and no layer above needs. */
TEST(store_layer_gc_follows_parents)
{
        char dir[] = "/tmp/sprout-store-XXXXXX";
        struct store *s = open_tmp(dir);
        char *aid = NULL, *key = NULL, *aname = NULL;
        struct gc_seen g = {0};

        CHECK(s);
        CHECK(store_create_key(s, NULL, 0, &key, &aid, &aname, NULL) == 0);
        struct store_vm v = {.id = "vvvvvvvvvvvvvvvvvvvv", .account_id = aid, .state = "running",
                             .created_at = 1, .mem_mb = 1024, .vcpus = 1};
        CHECK(store_vm_insert(s, &v) == 0);
        CHECK(store_layer_exists(s, "l-a") == 0);
        CHECK(store_layer_insert(s, "l-a", NULL) == 0 && store_layer_insert(s, "l-b", "l-a") == 0);
        CHECK(store_layer_insert(s, "l-c", "l-a") == 0);
        CHECK(store_layer_insert(s, "l-a", NULL) == -EEXIST);
        CHECK(store_vm_set_layer(s, v.id, "l-b") == 0);
        CHECK(store_layer_gc(s, NULL, 0, gc_seen, &g) == 0 && g.n == 1 && !strcmp(g.ids[0], "l-c"));
        CHECK(store_layer_exists(s, "l-c") == 0 && store_layer_exists(s, "l-a") == 1);
        CHECK(store_vm_set_layer(s, v.id, NULL) == 0);
        /* A pinned layer (a fork between its layer and its children's
         * records) keeps itself and its parents. */
        const char *pins[] = {"l-b"}, *bad[] = {"l-\"x"};
        g.n = 0;
        CHECK(store_layer_gc(s, pins, 1, gc_seen, &g) == 0 && g.n == 0);
        CHECK(store_layer_gc(s, bad, 1, gc_seen, &g) == -EINVAL && g.n == 0);
        CHECK(store_layer_gc(s, NULL, 0, gc_seen, &g) == 0 && g.n == 2);
        CHECK(store_layer_exists(s, "l-a") == 0 && store_layer_exists(s, "l-b") == 0);
        store_close(s);
        free(aid);
        free(key);
        free(aname);
        rm_rf(dir);
}

/* Makes a database at dir/db (into path) with sql run on it, as an older
 * sproutd left it. 0 or -1. */
static int old_db(char *dir, char path[256], const char *sql)
{
        sqlite3 *db;
        int ok;

        if (!mkdtemp(dir))
                return -1;
        snprintf(path, 256, "%s/db", dir);
        if (sqlite3_open(path, &db) != SQLITE_OK)
                return -1;
        ok = sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
        sqlite3_close(db);
        return ok ? 0 : -1;
}

TEST(store_migrates_an_old_schema)
{
        char dir[] = "/tmp/sprout-store-XXXXXX", path[256];
        struct store *s = NULL;

        /* The first released vms table, without the later columns. */
        CHECK(old_db(dir, path,
                           "CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);"
                           "CREATE TABLE vms (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, name TEXT, state TEXT NOT NULL,"
                           " snapshot_id TEXT, workdir TEXT, persistence TEXT, created_at INTEGER NOT NULL,"
                           " idle_timeout_s INTEGER NOT NULL DEFAULT 300, mem_mb INTEGER NOT NULL DEFAULT 1024,"
                           " vcpus INTEGER NOT NULL DEFAULT 1);"
                           "INSERT INTO accounts VALUES ('a', 'admin', 0);"
                           "INSERT INTO vms (id, account_id, state, created_at) VALUES ('cccccccccccccccccccc', 'a', 'stopped', 1);") == 0);
        CHECK(store_open(path, &s) == 0);
        struct collect c = {0};
        CHECK(store_vm_foreach(s, collect_vm, &c) == 0 && c.n == 1 && !strcmp(c.ids[0], "cccccccccccccccccccc"));
        store_close(s);
        rm_rf(dir);
}

static int first_vm(const struct store_vm *vm, void *ud)
{
        struct store_vm *out = ud;

        out->persist_kind = strdup(vm->persist_kind);
        out->persist_priority = vm->persist_priority;
        out->persist_delete_on = strdup(vm->persist_delete_on);
        out->error_code = vm->error_code;
        out->error = vm->error ? strdup(vm->error) : NULL;
        return 1;
}

static int user_version(const char *path)
{
        sqlite3 *db;
        sqlite3_stmt *st;
        int v = -1;

        if (sqlite3_open(path, &db) != SQLITE_OK)
                return -1;
        if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
                if (sqlite3_step(st) == SQLITE_ROW)
                        v = sqlite3_column_int(st, 0);
                sqlite3_finalize(st);
        }
        sqlite3_close(db);
        return v;
}

TEST(store_schema_v2_types_persistence_and_errors)
{
        char dir[] = "/tmp/sprout-store-XXXXXX", path[256];
        struct store_vm vm = {0};
        struct store_snapshot snap = {0};
        struct store *s = NULL;
        sqlite3 *db;

        /* A data dir from before versioning, with persistence and errors
         * as JSON text. */
        CHECK(old_db(dir, path,
                           "CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);"
                           "CREATE TABLE vms (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, name TEXT, state TEXT NOT NULL,"
                           " snapshot_id TEXT, workdir TEXT, persistence TEXT, created_at INTEGER NOT NULL,"
                           " idle_timeout_s INTEGER NOT NULL DEFAULT 300, mem_mb INTEGER NOT NULL DEFAULT 1024,"
                           " vcpus INTEGER NOT NULL DEFAULT 1, error TEXT);"
                           "CREATE TABLE snapshots (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, name TEXT,"
                           " source_vm_id TEXT, layer TEXT NOT NULL, persistence TEXT, created_at INTEGER NOT NULL,"
                           " deleted INTEGER NOT NULL DEFAULT 0, mem_mb INTEGER NOT NULL, vcpus INTEGER NOT NULL);"
                           "INSERT INTO accounts VALUES ('a', 'admin', 0);"
                           "INSERT INTO vms (id, account_id, state, created_at, persistence, error) VALUES"
                           " ('dddddddddddddddddddd', 'a', 'stopped', 1,"
                           " '{\"type\":\"ephemeral\",\"deleteEvent\":\"OnStop\"}', '{\"message\":\"m\"}');"
                           "INSERT INTO snapshots VALUES ('sc-aaaaaaaaaaaaaaaaaaaa', 'a', NULL, NULL, 'l-x',"
                           " '{\"type\":\"sticky\",\"priority\":8}', 1, 0, 1024, 1);") == 0);
        CHECK(store_open(path, &s) == 0);
        CHECK(user_version(path) >= 2);
        CHECK(store_vm_foreach(s, first_vm, &vm) == 1);
        CHECK(!strcmp(vm.persist_kind, "ephemeral") && !strcmp(vm.persist_delete_on, "stopped"));
        CHECK(vm.error_code < 0 && vm.error && !strcmp(vm.error, "{\"message\":\"m\"}"));
        CHECK(store_snapshot_get(s, "a", "sc-aaaaaaaaaaaaaaaaaaaa", &snap) == 0);
        CHECK(!strcmp(snap.persist_kind, "sticky") && snap.persist_priority == 8);
        CHECK(store_vm_set_error(s, "dddddddddddddddddddd", 0, "ignored") == 0);
        CHECK(store_vm_set_error(s, "nonexistentvmxxxxxxx", 0, NULL) == -ENOENT);
        store_vm_clear(&vm);
        store_snapshot_clear(&snap);
        store_close(s);
        /* Opening again changes nothing; a schema newer than this program
         * is refused, not misread. */
        CHECK(store_open(path, &s) == 0 && user_version(path) >= 2);
        store_close(s);
        CHECK(sqlite3_open(path, &db) == SQLITE_OK);
        CHECK(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
        sqlite3_close(db);
        s = NULL;
        CHECK(store_open(path, &s) == -EPROTONOSUPPORT && s == NULL);
        rm_rf(dir);
}

static int phase_names(const struct store_build_phase *p, void *ud)
{
        char *out = ud;

        snprintf(out + strlen(out), 256 - strlen(out), "%d:%s%s%s;", p->seq, p->name, p->snapshot_id ? "@" : "",
                 p->snapshot_id ? p->snapshot_id : "");
        return 0;
}

static int count_unfinished(const struct store_build *b, void *ud)
{
        (void)b;
        (*(int *)ud)++;
        return 0;
}

static int build_ids(const struct store_build *b, void *ud)
{
        strcat(ud, b->id);
        strcat(ud, ";");
        return 0;
}

TEST(store_builds_phases_and_the_layer_cache)
{
        char dir[] = "/tmp/sprout-store-XXXXXX", names[256] = "";
        struct store *s = open_tmp(dir);
        char *aid = NULL, *key = NULL, *aname = NULL, *other = NULL;
        struct store_build b = {0};
        struct store_snapshot snap = {0};
        int64_t count = -1;
        int unfinished = 0;

        CHECK(s);
        CHECK(store_create_key(s, NULL, 0, &key, &aid, &aname, NULL) == 0);
        free(key);
        free(aname);
        CHECK(store_create_key(s, NULL, 0, &key, &other, &aname, NULL) == 0);
        struct store_build rec = {.id = "bd-1", .account_id = aid, .state = "pending", .template_hash = "h1",
                                  .planned_phases = "[\"boot\",\"snapshot\"]", .started_at = 10};
        CHECK(store_build_insert(s, &rec) == 0);
        CHECK(store_build_insert(s, &rec) == -EEXIST);
        CHECK(store_build_get(s, other, "bd-1", &b) == -ENOENT);
        CHECK(store_build_get(s, aid, "bd-1", &b) == 0 && !strcmp(b.state, "pending") && b.finished_at == 0 &&
              !strcmp(b.planned_phases, "[\"boot\",\"snapshot\"]"));
        store_build_clear(&b);
        CHECK(store_build_set_state(s, "bd-1", "running", NULL, NULL, 11) == 0);
        CHECK(store_build_set_vm(s, "bd-1", "vvvv") == 0);
        CHECK(store_build_unfinished(s, count_unfinished, &unfinished) == 0 && unfinished == 1);
        /* A snapshot being built is not used, listed as ready or counted. */
        struct store_snapshot bs = {.id = "sc-1", .account_id = aid, .layer = "", .state = "building",
                                    .build_id = "bd-1", .template_hash = "h1", .created_at = 12};
        CHECK(store_snapshot_insert(s, &bs) == 0);
        CHECK(store_snapshot_cached(s, aid, "h1", &snap) == -ENOENT);
        CHECK(store_snapshot_count(s, aid, &count) == 0 && count == 0);
        CHECK(store_build_phase_add(s, "bd-1", "boot", NULL, 13) == 0);
        CHECK(store_build_phase_add(s, "bd-1", "snapshot", "sc-1", 14) == 0);
        CHECK(store_build_phase_foreach(s, "bd-1", phase_names, names) == 0 &&
              !strcmp(names, "1:boot;2:snapshot@sc-1;"));
        CHECK(store_snapshot_ready(s, "sc-1", "vvvv", "l-1", 1024, 1, 15) == 0);
        CHECK(store_snapshot_ready(s, "sc-1", "vvvv", "l-1", 1024, 1, 15) == -ENOENT); /* only once */
        CHECK(store_build_set_state(s, "bd-1", "succeeded", NULL, "sc-1", 16) == 0);
        CHECK(store_build_get(s, NULL, "bd-1", &b) == 0 && b.finished_at == 16 && !strcmp(b.snapshot_id, "sc-1") &&
              !strcmp(b.vm_id, "vvvv"));
        store_build_clear(&b);
        unfinished = 0;
        CHECK(store_build_unfinished(s, count_unfinished, &unfinished) == 0 && unfinished == 0);
        /* The list: the account's own, newest first, as many as asked. */
        struct store_build rec2 = {.id = "bd-2", .account_id = aid, .state = "failed", .planned_phases = "[]",
                                   .started_at = 17};
        CHECK(store_build_insert(s, &rec2) == 0);
        names[0] = 0;
        CHECK(store_build_list(s, aid, 10, build_ids, names) == 0 && !strcmp(names, "bd-2;bd-1;"));
        names[0] = 0;
        CHECK(store_build_list(s, aid, 1, build_ids, names) == 0 && !strcmp(names, "bd-2;"));
        names[0] = 0;
        CHECK(store_build_list(s, other, 10, build_ids, names) == 0 && !strcmp(names, ""));
        /* The cache: per account, the newest ready and live one. */
        CHECK(store_snapshot_cached(s, other, "h1", &snap) == -ENOENT);
        CHECK(store_snapshot_cached(s, aid, "h1", &snap) == 0 && !strcmp(snap.id, "sc-1") &&
              !strcmp(snap.state, "ready") && !strcmp(snap.layer, "l-1"));
        store_snapshot_clear(&snap);
        struct store_snapshot newer = {.id = "sc-2", .account_id = aid, .layer = "l-2", .template_hash = "h1",
                                       .created_at = 20};
        CHECK(store_snapshot_insert(s, &newer) == 0);
        CHECK(store_snapshot_cached(s, aid, "h1", &snap) == 0 && !strcmp(snap.id, "sc-2"));
        store_snapshot_clear(&snap);
        CHECK(store_snapshot_delete(s, aid, "sc-2") == 0);
        CHECK(store_snapshot_cached(s, aid, "h1", &snap) == 0 && !strcmp(snap.id, "sc-1"));
        store_snapshot_clear(&snap);
        /* A failed one keeps its reason and is never a cache hit. */
        struct store_snapshot f = {.id = "sc-3", .account_id = aid, .state = "building", .template_hash = "h3",
                                   .created_at = 30};
        CHECK(store_snapshot_insert(s, &f) == 0 && store_snapshot_fail(s, "sc-3", "step x: boom") == 0);
        CHECK(store_snapshot_get(s, aid, "sc-3", &snap) == 0 && !strcmp(snap.state, "failed") &&
              !strcmp(snap.failure_reason, "step x: boom"));
        store_snapshot_clear(&snap);
        CHECK(store_snapshot_cached(s, aid, "h3", &snap) == -ENOENT);
        store_close(s);
        free(aid);
        free(other);
        free(key);
        free(aname);
        rm_rf(dir);
}

TEST(store_ingress_ports_and_domains_go_with_their_vm)
{
        char dir[] = "/tmp/sprout-store-XXXXXX";
        struct store *s = open_tmp(dir);
        char *aid = NULL, *key = NULL, *aname = NULL, vm[32] = "", **doms = NULL;
        struct store_port ports[] = {{443, 3000}, {8081, 4000}}, got[4];
        size_t n = 0;
        int port = 0;

        CHECK(s);
        CHECK(store_create_key(s, NULL, 0, &key, &aid, &aname, NULL) == 0);
        struct store_vm a = {.id = "aaaaaaaaaaaaaaaaaaaa",
                             .account_id = aid,
                             .state = "running",
                             .created_at = 1,
                             .mem_mb = 1024,
                             .vcpus = 1};
        CHECK(store_vm_insert(s, &a) == 0);
        CHECK(store_ports_set(s, a.id, ports, 2) == 0);
        CHECK(store_ports_get(s, a.id, got, 4, &n) == 0 && n == 2 && got[1].port == 8081 &&
              got[1].target == 4000);
        CHECK(store_port_target(s, a.id, 443, &port) == 0 && port == 3000);
        CHECK(store_port_target(s, a.id, 80, &port) == -ENOENT);
        CHECK(store_ports_set(s, a.id, ports + 1, 1) == 0);
        CHECK(store_port_target(s, a.id, 443, &port) == -ENOENT);
        CHECK(store_domain_add(s, "app.example.com", aid, a.id, 3000) == 0);
        CHECK(store_domain_add(s, "app.example.com", aid, a.id, 3001) == 0); /* the owner moves it */
        CHECK(store_domain_add(s, "app.example.com", "another-account", "bbbbbbbbbbbbbbbbbbbb", 80) ==
              -EEXIST);
        CHECK(store_domain_route(s, "app.example.com", vm, &port) == 0 && !strcmp(vm, a.id) && port == 3001);
        CHECK(store_domain_route(s, "nope.example.com", vm, &port) == -ENOENT);
        CHECK(store_domains_of(s, a.id, &doms) == 0 && doms[0] && !strcmp(doms[0], "app.example.com") &&
              !doms[1]);
        free(doms[0]);
        free(doms);
        CHECK(store_vm_delete(s, a.id) == 0);
        CHECK(store_port_target(s, a.id, 8081, &port) == -ENOENT);
        CHECK(store_domain_route(s, "app.example.com", vm, &port) == -ENOENT);
        store_close(s);
        free(aid);
        free(key);
        free(aname);
        rm_rf(dir);
}

/* ---- writers of several threads while a read holds an old snapshot ---- */

struct slow_read {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int reading, release;
};

static int hold_first_row(const struct store_vm *vm, void *ud)
{
        struct slow_read *sr = ud;

        (void)vm;
        pthread_mutex_lock(&sr->lock);
        sr->reading = 1;
        pthread_cond_broadcast(&sr->cond);
        while (!sr->release)
                pthread_cond_wait(&sr->cond, &sr->lock);
        pthread_mutex_unlock(&sr->lock);
        return 1; /* stop: one row is enough */
}

struct reader {
        struct store *s;
        struct slow_read *sr;
};

static void *read_slowly(void *arg)
{
        struct reader *r = arg;

        store_vm_foreach(r->s, hold_first_row, r->sr);
        return NULL;
}

struct writer {
        struct store *s;
        char id[21];
        int r;
};

static void *write_state(void *arg)
{
        struct writer *w = arg;

        w->r = store_vm_set_state(w->s, w->id, "suspended");
        return NULL;
}

TEST(store_writers_of_many_threads_outlast_a_read_of_an_old_snapshot)
{
        /* A transaction (the second connection) commits while a read of
         * the shared one is open: writes on the shared one then fail
         * (SQLITE_BUSY) until the read ends, and must all go through once
         * it has, however many threads wait to write at once. */
        char dir[] = "/tmp/sprout-store-XXXXXX";
        struct store *s = open_tmp(dir);
        char *aid = NULL, *key = NULL, *aname = NULL;
        struct slow_read sr = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
        struct reader rd = {s, &sr};
        struct writer w[4];
        struct store_port port = {443, 3000};
        pthread_t reader, writers[4];

        CHECK(s);
        CHECK(store_create_key(s, NULL, 0, &key, &aid, &aname, NULL) == 0);
        for (int i = 0; i < 4; i++) {
                struct store_vm v = {.id = w[i].id,
                                     .account_id = aid,
                                     .state = "running",
                                     .created_at = i,
                                     .mem_mb = 1024,
                                     .vcpus = 1};

                snprintf(w[i].id, sizeof(w[i].id), "%020d", i);
                w[i].s = s;
                w[i].r = 1;
                CHECK(store_vm_insert(s, &v) == 0);
        }
        CHECK(pthread_create(&reader, NULL, read_slowly, &rd) == 0);
        pthread_mutex_lock(&sr.lock);
        while (!sr.reading)
                pthread_cond_wait(&sr.cond, &sr.lock);
        pthread_mutex_unlock(&sr.lock);
        CHECK(store_ports_set(s, w[0].id, &port, 1) == 0);
        for (int i = 0; i < 4; i++)
                CHECK(pthread_create(&writers[i], NULL, write_state, &w[i]) == 0);
        sleep_ms(300); /* every writer has failed once and waits */
        pthread_mutex_lock(&sr.lock);
        sr.release = 1;
        pthread_cond_broadcast(&sr.cond);
        pthread_mutex_unlock(&sr.lock);
        pthread_join(reader, NULL);
        for (int i = 0; i < 4; i++) {
                pthread_join(writers[i], NULL);
                CHECK(w[i].r == 0);
        }
        store_close(s);
        free(aid);
        free(key);
        free(aname);
        rm_rf(dir);
}

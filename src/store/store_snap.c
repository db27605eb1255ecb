/*
 * store_snap: snapshot and build records of the SQLite store (store.h).
 */
#include "store/store.h"
#include "store/store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- snapshots ---- */

int store_snapshot_insert(struct store *s, const struct store_snapshot *snap)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st,
                           "INSERT INTO snapshots (id, account_id, name, source_vm_id, layer, persist_kind,"
                           " persist_priority, created_at, mem_mb, vcpus, state, build_id, template_hash)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           "ssssssiIiisss", snap->id, snap->account_id, snap->name, snap->source_vm_id,
                           snap->layer ? snap->layer : "", snap->persist_kind ? snap->persist_kind : "sticky",
                           snap->persist_priority, snap->created_at, snap->mem_mb, snap->vcpus,
                           snap->state ? snap->state : "ready", snap->build_id, snap->template_hash);

        return r < 0 ? r : sq_finish(s, st, 1);
}

#define SNAPSHOT_COLS                                                                                        \
        "id, account_id, name, source_vm_id, layer, persist_kind, persist_priority, created_at, deleted, "   \
        "mem_mb,"                                                                                            \
        " vcpus, state, build_id, template_hash, failure_reason"

static int snapshot_row(sqlite3_stmt *st, struct store_snapshot *ret)
{
        ret->id = sq_col_dup(st, 0);
        ret->account_id = sq_col_dup(st, 1);
        ret->name = sq_col_dup(st, 2);
        ret->source_vm_id = sq_col_dup(st, 3);
        ret->layer = sq_col_dup(st, 4);
        ret->persist_kind = sq_col_dup(st, 5);
        ret->persist_priority = sqlite3_column_int(st, 6);
        ret->created_at = sqlite3_column_int64(st, 7);
        ret->deleted = sqlite3_column_int(st, 8);
        ret->mem_mb = sqlite3_column_int(st, 9);
        ret->vcpus = sqlite3_column_int(st, 10);
        ret->state = sq_col_dup(st, 11);
        ret->build_id = sq_col_dup(st, 12);
        ret->template_hash = sq_col_dup(st, 13);
        ret->failure_reason = sq_col_dup(st, 14);
        if (ret->id && ret->account_id && ret->layer && ret->persist_kind && ret->state)
                return 0;
        store_snapshot_clear(ret);
        return -ENOMEM;
}

/* Reads the one row of a prepared query with row_fn (-ENOENT when there
 * is none) and finalizes it. */
static int one_row(struct store *s, sqlite3_stmt *st, int r, int (*row_fn)(sqlite3_stmt *st, void *ret),
                   void *ret)
{
        int rc;

        (void)s;
        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                r = row_fn(st, ret);
        else
                r = rc == SQLITE_DONE ? -ENOENT : sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        return r;
}

/* Reads every row of a prepared query into *ret (n elements of size
 * bytes, each filled by row_fn from zero) and finalizes it, so that the
 * read ends before the caller acts on the rows, however slowly (writes
 * of other threads wait while a read is open, see sq_finish). On failure
 * the rows read so far are still returned, to be cleared. */
static int all_rows(sqlite3_stmt *st, int r, size_t size, int (*row_fn)(sqlite3_stmt *st, void *ret),
                    void **ret, size_t *ret_n)
{
        char *rows = NULL;
        size_t n = 0;
        int rc = SQLITE_DONE;

        if (r < 0)
                return r;
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                char *grown = realloc(rows, (n + 1) * size);

                if (!grown) {
                        r = -ENOMEM;
                        break;
                }
                rows = grown;
                memset(rows + n * size, 0, size);
                r = row_fn(st, rows + n * size);
                if (r == 0)
                        n++;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        *ret = rows;
        *ret_n = n;
        return r;
}

static int snapshot_row_fn(sqlite3_stmt *st, void *ret)
{
        return snapshot_row(st, ret);
}

int store_snapshot_get(struct store *s, const char *account, const char *id, struct store_snapshot *ret)
{
        sqlite3_stmt *st = NULL;
        int r = sq_prepare(s, &st, "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE id = ? AND account_id = ?",
                           "ss", id, account);

        return one_row(s, st, r, snapshot_row_fn, ret);
}

int store_snapshot_foreach(struct store *s, const char *account,
                           int (*fn)(const struct store_snapshot *snap, void *ud), void *ud)
{
        struct store_snapshot *rows = NULL;
        size_t n = 0;
        sqlite3_stmt *st = NULL;
        int r = sq_prepare(
            s, &st, "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE account_id = ? ORDER BY created_at, id",
            "s", account);

        r = all_rows(st, r, sizeof(*rows), snapshot_row_fn, (void **)&rows, &n);
        for (size_t i = 0; i < n; i++) {
                if (r == 0)
                        r = fn(&rows[i], ud);
                store_snapshot_clear(&rows[i]);
        }
        free(rows);
        return r;
}

int store_snapshot_count(struct store *s, const char *account_id, int64_t *ret)
{
        sqlite3_stmt *st;
        int r = sq_prepare(
            s, &st, "SELECT count(*) FROM snapshots WHERE account_id = ? AND deleted = 0 AND state = 'ready'",
            "s", account_id);

        return r < 0 ? r : sq_scalar(st, ret);
}

int store_snapshot_set_name(struct store *s, const char *account, const char *id, const char *name)
{
        return WRITE_ONE(s, "UPDATE snapshots SET name = ? WHERE id = ? AND account_id = ? AND deleted = 0",
                         "sss", name, id, account);
}

int store_snapshot_delete(struct store *s, const char *account, const char *id)
{
        struct store_snapshot snap = {0};
        int r = store_snapshot_get(s, account, id, &snap);

        if (r == 0 && snap.deleted)
                r = -EALREADY;
        if (r == 0)
                r = WRITE_ONE(s, "UPDATE snapshots SET deleted = 1 WHERE id = ? AND deleted = 0", "s", id);
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
        free(snap->persist_kind);
        free(snap->state);
        free(snap->build_id);
        free(snap->template_hash);
        free(snap->failure_reason);
        memset(snap, 0, sizeof(*snap));
}

int store_snapshot_ready(struct store *s, const char *id, const char *source_vm_id, const char *layer,
                         int mem_mb, int vcpus, int64_t at)
{
        return WRITE_ONE(
            s,
            "UPDATE snapshots SET state = 'ready', source_vm_id = ?, layer = ?, mem_mb = ?, vcpus = ?,"
            " created_at = ? WHERE id = ? AND state = 'building'",
            "ssiiIs", source_vm_id, layer, mem_mb, vcpus, at, id);
}

int store_snapshot_fail(struct store *s, const char *id, const char *reason)
{
        return WRITE_ONE(
            s,
            "UPDATE snapshots SET state = 'failed', failure_reason = ? WHERE id = ? AND state = 'building'",
            "ss", reason, id);
}

int store_snapshot_cached(struct store *s, const char *account, const char *template_hash,
                          struct store_snapshot *ret)
{
        sqlite3_stmt *st = NULL;
        int r =
            sq_prepare(s, &st,
                       "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE account_id = ? AND template_hash = ?"
                       " AND state = 'ready' AND deleted = 0 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                       "ss", account, template_hash);

        return one_row(s, st, r, snapshot_row_fn, ret);
}

/* ---- builds ---- */

int store_build_insert(struct store *s, const struct store_build *b)
{
        sqlite3_stmt *st;
        int r =
            sq_prepare(s, &st,
                       "INSERT INTO builds (id, account_id, request_id, state, template_hash, planned_phases,"
                       " started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       "ssssssII", b->id, b->account_id, b->request_id, b->state, b->template_hash,
                       b->planned_phases, b->started_at, b->started_at);

        return r < 0 ? r : sq_finish(s, st, 1);
}

#define BUILD_COLS                                                                                           \
        "id, account_id, request_id, state, template_hash, failure_reason, planned_phases, started_at,"      \
        " finished_at, updated_at, snapshot_id, vm_id"

static int build_row(sqlite3_stmt *st, struct store_build *ret)
{
        ret->id = sq_col_dup(st, 0);
        ret->account_id = sq_col_dup(st, 1);
        ret->request_id = sq_col_dup(st, 2);
        ret->state = sq_col_dup(st, 3);
        ret->template_hash = sq_col_dup(st, 4);
        ret->failure_reason = sq_col_dup(st, 5);
        ret->planned_phases = sq_col_dup(st, 6);
        ret->started_at = sqlite3_column_int64(st, 7);
        ret->finished_at = sqlite3_column_int64(st, 8);
        ret->updated_at = sqlite3_column_int64(st, 9);
        ret->snapshot_id = sq_col_dup(st, 10);
        ret->vm_id = sq_col_dup(st, 11);
        if (ret->id && ret->account_id && ret->state && ret->planned_phases)
                return 0;
        store_build_clear(ret);
        return -ENOMEM;
}

static int build_row_fn(sqlite3_stmt *st, void *ret)
{
        return build_row(st, ret);
}

int store_build_get(struct store *s, const char *account, const char *id, struct store_build *ret)
{
        sqlite3_stmt *st = NULL;
        int r = sq_prepare(
            s, &st, "SELECT " BUILD_COLS " FROM builds WHERE id = ?1 AND (?2 IS NULL OR account_id = ?2)",
            "ss", id, account);

        return one_row(s, st, r, build_row_fn, ret);
}

/* Calls fn for each build a prepared statement yields, once it has read
 * them all. */
static int build_each(sqlite3_stmt *st, int r, int (*fn)(const struct store_build *b, void *ud), void *ud)
{
        struct store_build *rows = NULL;
        size_t n = 0;

        r = all_rows(st, r, sizeof(*rows), build_row_fn, (void **)&rows, &n);
        for (size_t i = 0; i < n; i++) {
                if (r == 0)
                        r = fn(&rows[i], ud);
                store_build_clear(&rows[i]);
        }
        free(rows);
        return r;
}

int store_build_unfinished(struct store *s, int (*fn)(const struct store_build *b, void *ud), void *ud)
{
        sqlite3_stmt *st = NULL;
        int r = sq_prepare(s, &st,
                           "SELECT " BUILD_COLS
                           " FROM builds WHERE state IN ('pending', 'running') ORDER BY started_at",
                           NULL);

        return build_each(st, r, fn, ud);
}

int store_build_list(struct store *s, const char *account, int limit,
                     int (*fn)(const struct store_build *b, void *ud), void *ud)
{
        sqlite3_stmt *st = NULL;
        int r = sq_prepare(s, &st,
                           "SELECT " BUILD_COLS " FROM builds WHERE account_id = ?1"
                           " ORDER BY started_at DESC, id LIMIT ?2",
                           "si", account, limit);

        return build_each(st, r, fn, ud);
}

int store_build_set_state(struct store *s, const char *id, const char *state, const char *failure_reason,
                          const char *snapshot_id, int64_t at)
{
        int done = !strcmp(state, "succeeded") || !strcmp(state, "failed");

        return WRITE_ONE(s,
                         "UPDATE builds SET state = ?1, failure_reason = coalesce(?2, failure_reason),"
                         " snapshot_id = coalesce(?3, snapshot_id), updated_at = ?4,"
                         " finished_at = CASE WHEN ?5 THEN ?4 ELSE finished_at END WHERE id = ?6",
                         "sssIis", state, failure_reason, snapshot_id, at, done, id);
}

int store_build_set_vm(struct store *s, const char *id, const char *vm_id)
{
        return WRITE_ONE(s, "UPDATE builds SET vm_id = ? WHERE id = ?", "ss", vm_id, id);
}

int store_build_phase_add(struct store *s, const char *build_id, const char *name, const char *snapshot_id,
                          int64_t at)
{
        sqlite3_stmt *st;
        int r = sq_prepare(
            s, &st,
            "INSERT INTO build_phases (build_id, seq, name, snapshot_id, started_at)"
            " SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4 FROM build_phases WHERE build_id = ?1",
            "sssI", build_id, name, snapshot_id, at);

        if (r == 0)
                r = sq_finish(s, st, 1);
        if (r == 0)
                r = WRITE_ONE(s, "UPDATE builds SET updated_at = ? WHERE id = ?", "Is", at, build_id);
        return r;
}

int store_build_phase_foreach(struct store *s, const char *build_id,
                              int (*fn)(const struct store_build_phase *p, void *ud), void *ud)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st,
                           "SELECT seq, name, snapshot_id, started_at FROM build_phases WHERE build_id = ?"
                           " ORDER BY seq",
                           "s", build_id),
            rc = SQLITE_DONE;

        if (r < 0)
                return r;
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct store_build_phase p = {
                    .seq = sqlite3_column_int(st, 0),
                    .name = (const char *)sqlite3_column_text(st, 1),
                    .snapshot_id = (const char *)sqlite3_column_text(st, 2),
                    .started_at = sqlite3_column_int64(st, 3),
                };

                r = p.name ? fn(&p, ud) : -ENOMEM;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = sq_err(rc) ? sq_err(rc) : -EIO;
        sqlite3_finalize(st);
        return r;
}

void store_build_clear(struct store_build *b)
{
        if (!b)
                return;
        free(b->id);
        free(b->account_id);
        free(b->request_id);
        free(b->state);
        free(b->template_hash);
        free(b->failure_reason);
        free(b->planned_phases);
        free(b->snapshot_id);
        free(b->vm_id);
        memset(b, 0, sizeof(*b));
}

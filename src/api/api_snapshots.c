/*
 * api_snapshots: /v1/vms/{vm_id}/snapshot and /v1/vms/snapshots: taking,
 * listing, reading, renaming and deleting snapshots. Depends on the VM
 * manager (taking and deleting) and the store (reading).
 */
#include "api/api_int.h"
#include "lib/json.h"
#include "lib/util.h"
#include "store/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void api_snapshot_vm(struct api_call *c)
{
        struct vmm_snapshot_opts o = {.persistence = VM_PERSISTENCE_DEFAULT};
        char sid[24];
        json_t *body = api_body(c, "INVALID_PARAMETERS");
        int r;

        if (!body)
                return;
        if (api_opt_string(c, body, "name", &o.name, "INVALID_PARAMETERS") < 0 ||
            api_persistence(c, body, 1u << VM_PERSIST_STICKY | 1u << VM_PERSIST_PERSISTENT, "INVALID_PARAMETERS",
                            &o.persistence) < 0)
                goto out;
        if (o.name && strlen(o.name) > 256) {
                api_error(c, 400, "INVALID_PARAMETERS", "name is longer than 256 bytes");
                goto out;
        }
        r = vmm_snapshot(c->a->vmm, c->account, c->vm_id, &o, sid);
        if (r < 0) {
                api_fail(c, r, API_VM, c->vm_id, NULL);
                goto out;
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:s,s:s,s:n}", "snapshotId", sid, "sourceVmId", c->vm_id, "sourceVmInstanceId");
out:
        json_decref(body);
}

static json_t *snapshot_json(struct api_call *c, const struct store_snapshot *s)
{
        struct vm_persistence p = VM_PERSISTENCE_DEFAULT;
        char created[32];

        if (vm_persist_parse(s->persist_kind) == VM_PERSIST_PERSISTENT)
                p.kind = VM_PERSIST_PERSISTENT;
        p.priority = s->persist_priority;
        format_time(s->created_at, created);
        return json_pack("{s:s,s:s,s:o,s:s,s:s,s:o,s:b,s:b,s:b,s:o,s:b,s:o,s:o,s:o,s:I,s:i,s:i}", "snapshotId", s->id,
                         "state", s->state, "sourceVmId", json_str_or_null(s->source_vm_id), "accountId",
                         s->account_id, "createdAt", created, "name", json_str_or_null(s->name), "failed",
                         !strcmp(s->state, "failed"), "cancelled", 0, "lost", 0, "failureReason",
                         json_str_or_null(s->failure_reason), "deleted", s->deleted, "snapshotPersistence",
                         api_persistence_json(&p, 1), "buildId", json_str_or_null(s->build_id), "templateHash",
                         json_str_or_null(s->template_hash), "diskUsageBytes",
                         (json_int_t)(s->deleted || !s->layer[0] ? 0 : vmm_layer_usage(c->a->vmm, s->layer)),
                         "memSizeMib", s->mem_mb, "vcpuCount", s->vcpus);
}

struct snap_list {
        struct api_call *c;
        json_t *arr;
        int include_deleted, include_failed, include_building;
        int64_t total, deleted, building, ready, failed;
};

static int snap_one(const struct store_snapshot *s, void *ud)
{
        struct snap_list *l = ud;
        int building = !strcmp(s->state, "building"), failed = !strcmp(s->state, "failed");

        if (s->deleted)
                l->deleted++;
        else if (building)
                l->building++;
        else if (failed)
                l->failed++;
        else
                l->ready++;
        if ((s->deleted && !l->include_deleted) || (building && !l->include_building) || (failed && !l->include_failed))
                return 0;
        l->total++;
        return json_array_append_new(l->arr, snapshot_json(l->c, s)) < 0 ? -ENOMEM : 0;
}

static int query_true(struct api_call *c, const char *name)
{
        char *v = http_query(c->req, name);
        int yes = v && (!strcmp(v, "true") || !strcmp(v, "1"));

        free(v);
        return yes;
}

void api_list_snapshots(struct api_call *c)
{
        struct snap_list l = {.c = c,
                              .arr = json_array(),
                              .include_deleted = query_true(c, "includeDeleted"),
                              .include_failed = query_true(c, "includeFailed"),
                              .include_building = query_true(c, "includeBuilding")};
        int r;

        r = l.arr ? store_snapshot_foreach(c->a->store, c->account, snap_one, &l) : -ENOMEM;
        if (r < 0) {
                json_decref(l.arr);
                api_error(c, 500, "INTERNAL_ERROR", "could not list snapshots: %s", strerror(-r));
                return;
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:o,s:I,s:I,s:I,s:I,s:i,s:i,s:I}", "snapshots", l.arr, "totalCount",
                                  (json_int_t)l.total, "buildingCount", (json_int_t)l.building, "readyCount",
                                  (json_int_t)l.ready, "failedCount", (json_int_t)l.failed, "cancelledCount", 0,
                                  "lostCount", 0, "deletedCount", (json_int_t)l.deleted);
}

/* The route's snapshot of the caller's account; answers 404 when there is
 * none. */
static int find_snapshot(struct api_call *c, char **ret_id, struct store_snapshot *ret)
{
        char *sid = api_param(c);
        int r = sid && api_parse_snapshot_id(sid) == 0 ? store_snapshot_get(c->a->store, c->account, sid, ret)
                                                       : -ENOENT;

        if (r < 0) {
                api_fail(c, r, API_SNAPSHOT, sid ? sid : "", NULL);
                free(sid);
                return r;
        }
        *ret_id = sid;
        return 0;
}

void api_get_snapshot(struct api_call *c)
{
        struct store_snapshot snap = {0};
        char *sid = NULL;

        if (find_snapshot(c, &sid, &snap) < 0)
                return;
        c->resp->status = 200;
        c->resp->body = snapshot_json(c, &snap);
        store_snapshot_clear(&snap);
        free(sid);
}

void api_delete_snapshot(struct api_call *c)
{
        struct store_snapshot snap = {0};
        char *sid = NULL;
        int r;

        if (find_snapshot(c, &sid, &snap) < 0)
                return;
        store_snapshot_clear(&snap);
        r = vmm_snapshot_delete(c->a->vmm, c->account, sid);
        if (r < 0) {
                api_fail(c, r, API_SNAPSHOT, sid, NULL);
        } else {
                c->resp->status = 200;
                c->resp->body = json_pack("{s:s}", "snapshot_id", sid);
        }
        free(sid);
}

void api_update_snapshot(struct api_call *c)
{
        struct store_snapshot snap = {0};
        const char *name = NULL;
        char *sid = NULL;
        json_t *body;
        int r;

        if (find_snapshot(c, &sid, &snap) < 0)
                return;
        store_snapshot_clear(&snap);
        body = api_body(c, "INVALID_PARAMETERS");
        if (!body || api_opt_string(c, body, "name", &name, "INVALID_PARAMETERS") < 0)
                goto out;
        if (name && strlen(name) > 256) {
                api_error(c, 400, "INVALID_PARAMETERS", "name is longer than 256 bytes");
                goto out;
        }
        r = store_snapshot_set_name(c->a->store, c->account, sid, name);
        if (r < 0) {
                /* The snapshot was there a moment ago: it is deleted. */
                api_fail(c, r == -ENOENT ? -EALREADY : r, API_SNAPSHOT, sid, NULL);
                goto out;
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:s,s:o}", "snapshot_id", sid, "name", json_str_or_null(name));
out:
        free(sid);
        json_decref(body);
}

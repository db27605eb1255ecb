/*
 * api_vms: /v1/vms and /v1/vms/{vm_id}: create, list, get and delete.
 * Depends on the VM manager and the create-time setup engine.
 */
#include "api/api_int.h"
#include "guest/setup.h"
#include "lib/json.h"
#include "lib/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static json_t *vm_json(struct api *a, const struct vmm_info *i, int full)
{
        char created[32];
        json_t *j;

        format_time(i->created_at, created);
        j = json_pack("{s:s,s:o,s:s,s:s,s:n,s:n}", "id", i->id, "name", json_str_or_null(i->name), "state",
                      vm_state_name(i->state), "createdAt", created, "lastNetworkActivity", "cpuTimeSeconds");
        if (!j)
                return NULL;
        json_object_set_new(j, "workdir", json_str_or_null(i->workdir));
        json_object_set_new(j, "memSizeMb", json_integer(i->mem_mb));
        json_object_set_new(j, "vcpuCount", json_integer(i->vcpus));
        json_object_set_new(j, "pendingMemSizeMb", i->pending_mem_mb ? json_integer(i->pending_mem_mb) : json_null());
        json_object_set_new(j, "pendingVcpuCount", i->pending_vcpus ? json_integer(i->pending_vcpus) : json_null());
        json_object_set_new(j, "idleTimeoutSeconds", json_integer(i->idle_timeout_s));
        json_object_set_new(j, "diskUsageBytes", json_integer(i->disk_bytes));
        if (full) {
                json_object_set_new(j, "vmInstanceId", i->instance[0] ? json_string(i->instance) : json_null());
                json_object_set_new(j, "buildId", json_str_or_null(i->build_id));
        } else {
                json_object_set_new(j, "deleted", json_false());
                json_object_set_new(j, "createdDeclaratively", json_false());
                json_object_set_new(j, "metrics", json_null());
        }
        json_object_set_new(j, "snapshotId", json_str_or_null(i->snapshot_id));
        json_object_set_new(j, "domains", api_domains_json(a, i->id));
        /* Why a create that did not wait (waitForReadySignal: false)
         * failed: the error it would have answered. */
        if (i->error_code)
                json_object_set_new(j, "error", api_create_failure(i->error_code, i->error));
        /* A guest that broke its agent: the VM runs, sproutd keeps trying. */
        json_object_set_new(j, "agentReachable", json_boolean(i->agent_down_since == 0));
        if (i->agent_down_since) {
                char since[32];

                format_time(i->agent_down_since, since);
                json_object_set_new(j, "agentUnreachableSince", json_string(since));
                json_object_set_new(j, "agentError", json_string(strerror(-i->agent_error)));
        }
        return j;
}

/* The create request's own fields, checked. */
struct create_req {
        struct vmm_create opts;
        struct api_routes routes;
        int64_t ready_timeout_s;
        int wait;
};

static int parse_create(struct api_call *c, json_t *body, struct create_req *q)
{
        const char *code = "CREATE_VM_BAD_REQUEST";
        char msg[1024];

        if (api_opt_string(c, body, "name", &q->opts.name, code) < 0 ||
            api_opt_string(c, body, "workdir", &q->opts.workdir, code) < 0 ||
            api_opt_string(c, body, "snapshotId", &q->opts.snapshot_id, code) < 0 ||
            api_opt_int(c, body, "idleTimeoutSeconds", 0, 365 * 86400, &q->opts.idle_timeout_s, code) < 0 ||
            api_opt_int(c, body, "readySignalTimeoutSeconds", 0, 3600, &q->ready_timeout_s, code) < 0 ||
            api_opt_bool(c, body, "waitForReadySignal", &q->wait, code) < 0 ||
            api_persistence(c, body, 1u << VM_PERSIST_STICKY | 1u << VM_PERSIST_EPHEMERAL | 1u << VM_PERSIST_PERSISTENT,
                            code, &q->opts.persistence) < 0)
                return -EINVAL;
        if (q->opts.name && strlen(q->opts.name) > 256)
                return api_error(c, 400, code, "name is longer than 256 bytes"), -EINVAL;
        if (q->opts.workdir && (q->opts.workdir[0] != '/' || strlen(q->opts.workdir) > 1024))
                return api_error(c, 400, code, "workdir must be an absolute path"), -EINVAL;
        if (q->opts.snapshot_id && api_parse_snapshot_id(q->opts.snapshot_id) < 0)
                return api_error(c, 404, "SNAPSHOT_NOT_FOUND", "snapshot %.40s not found", q->opts.snapshot_id), -EINVAL;
        /* Every malformed setup entry is answered now, before a VM exists:
         * a create that does not wait cannot answer it later. */
        if (setup_check(body, &code, msg, sizeof(msg)) < 0)
                return api_error(c, 400, code, "%s", msg), -EINVAL;
        return api_routes_parse(c, body, "CREATE_VM_BAD_REQUEST", &q->routes);
}

void api_create_vm(struct api_call *c)
{
        struct create_req q = {.opts = {.idle_timeout_s = 300, .persistence = VM_PERSISTENCE_DEFAULT},
                               .ready_timeout_s = 120,
                               .wait = 1};
        struct setup *setup = NULL;
        struct vmm_setup vs;
        char id[21], *report = NULL, built[24] = "", build[24] = "";
        json_t *body = api_body(c, "CREATE_VM_BAD_REQUEST"), *chain = NULL;
        int r;

        if (!body || api_vm_chain(c, body, &chain) < 0 || parse_create(c, body, &q) < 0)
                goto out;
        /* A template or spec: its snapshot, from the cache or built now. */
        if (chain) {
                if (api_vm_build(c, chain, built, build) < 0)
                        goto out;
                q.opts.snapshot_id = built;
                q.opts.build_id = build;
        }
        setup = setup_new(body, q.ready_timeout_s);
        if (!setup) {
                api_error(c, 500, "INTERNAL_ERROR", "out of memory");
                goto out;
        }
        /* waitForReadySignal: false answers once the VM is listed; the
         * manager then owns the setup and frees it. */
        setup_bind(setup, !q.wait, &vs);
        q.opts.setup = &vs;
        q.opts.background = !q.wait;
        r = vmm_create(c->a->vmm, c->account, &q.opts, id, &report);
        if (!q.wait)
                setup = NULL;
        if (r == -ECANCELED) {
                /* Nothing is left half set up: the manager removed it. */
                c->resp->status = 500;
                c->resp->body = api_create_failure(r, report);
        } else if (r < 0) {
                api_fail(c, r, r == -ENOMEDIUM ? API_SNAPSHOT : API_VM, q.opts.snapshot_id ? q.opts.snapshot_id : "",
                         NULL);
        } else if (api_routes_save(c, id, &q.routes) < 0) {
                /* A domain another account took meanwhile: no VM then. */
                vmm_delete(c->a->vmm, c->account, id);
        } else {
                c->resp->status = 200;
                c->resp->body = json_pack("{s:s,s:o,s:n,s:o}", "id", id, "domains", api_domains_json(c->a, id),
                                          "consoleUrl", "snapshotId", json_str_or_null(q.opts.snapshot_id));
        }
out:
        free(report);
        setup_free(setup);
        json_decref(body);
}

struct list_ctx {
        json_t *vms;
        int state_filter; /* -1: any */
        const char *search;
        struct api *a;
        int64_t limit, offset;
        int64_t matched;
        int64_t counts[VM_STATE_COUNT];
};

static int list_one(const struct vmm_info *i, void *ud)
{
        struct list_ctx *l = ud;

        l->counts[i->state]++;
        if (l->state_filter >= 0 && (int)i->state != l->state_filter)
                return 0;
        if (l->search && !strstr(i->id, l->search) && !(i->name && strstr(i->name, l->search)))
                return 0;
        if (l->matched++ < l->offset)
                return 0;
        if (l->limit >= 0 && (int64_t)json_array_size(l->vms) >= l->limit)
                return 0;
        return json_array_append_new(l->vms, vm_json(l->a, i, 0)) < 0 ? -ENOMEM : 0;
}

void api_list_vms(struct api_call *c)
{
        struct list_ctx l = {.a = c->a, .state_filter = -1, .limit = -1};
        char *state = NULL, *search = NULL;
        int r;

        if (api_query_int(c, "limit", &l.limit) < 0 || api_query_int(c, "offset", &l.offset) < 0)
                return;
        state = http_query(c->req, "vmState");
        if (state && *state && (l.state_filter = vm_state_parse(state)) < 0) {
                api_error(c, 400, "INVALID_PARAMETERS", "unknown vmState '%s'", state);
                goto out;
        }
        search = http_query(c->req, "search");
        l.search = search && *search ? search : NULL;
        l.vms = json_array();
        r = l.vms ? vmm_list(c->a->vmm, c->account, list_one, &l) : -ENOMEM;
        if (r < 0) {
                api_error(c, 500, "INTERNAL_ERROR", "could not list VMs: %s", strerror(-r));
                json_decref(l.vms);
                goto out;
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:n}", "vms", l.vms, "totalCount",
                                  (json_int_t)l.matched, "buildingCount", (json_int_t)l.counts[VM_BUILDING],
                                  "runningCount", (json_int_t)l.counts[VM_RUNNING], "startingCount",
                                  (json_int_t)l.counts[VM_STARTING], "suspendingCount",
                                  (json_int_t)l.counts[VM_SUSPENDING], "suspendedCount",
                                  (json_int_t)l.counts[VM_SUSPENDED], "stoppedCount", (json_int_t)l.counts[VM_STOPPED],
                                  "lostCount", (json_int_t)l.counts[VM_LOST], "userId");
out:
        free(state);
        free(search);
}

void api_get_vm(struct api_call *c)
{
        struct vmm_info i = {0};
        int r = vmm_get(c->a->vmm, c->account, c->vm_id, &i);

        if (r < 0) {
                api_fail(c, r, API_VM, c->vm_id, NULL);
                return;
        }
        c->resp->status = 200;
        c->resp->body = vm_json(c->a, &i, 1);
        vmm_info_clear(&i);
}

void api_delete_vm(struct api_call *c)
{
        int r = vmm_delete(c->a->vmm, c->account, c->vm_id);

        if (r < 0) {
                api_fail(c, r, API_VM, c->vm_id, NULL);
                return;
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:s}", "id", c->vm_id);
}

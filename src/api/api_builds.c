/*
 * api_builds: templates and builds: POST /v1/vms/snapshots (a template or
 * spec made into a snapshot), the build records and their phases, and the
 * template part of a VM create. A request that says
 * x-freestyle-background-after-secs (as the SDK does with a logger) is
 * answered 202 {requestId} once that long has passed, and its outcome and
 * progress are read from /auth/v1/background-requests/{id} and
 * /observability/v1/logs?requestId=. Depends on the builder and the store.
 */
#include "api/api_int.h"
#include "build/build.h"
#include "lib/json.h"
#include "lib/util.h"
#include "store/store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BACKGROUND_HEADER "x-freestyle-background-after-secs"

static json_t *build_json(const struct store_build *b)
{
        char started[32], updated[32], finished[32];
        json_t *planned = json_loads(b->planned_phases, 0, NULL);

        format_time(b->started_at, started);
        format_time(b->updated_at, updated);
        format_time(b->finished_at, finished);
        return json_pack("{s:s,s:s,s:o,s:s,s:o,s:o,s:o,s:s,s:o,s:s,s:o}", "buildId", b->id, "accountId",
                         b->account_id, "requestId", json_str_or_null(b->request_id), "state", b->state,
                         "templateHash", json_str_or_null(b->template_hash), "failureReason",
                         json_str_or_null(b->failure_reason), "plannedPhases",
                         planned ? planned : json_array(), "startedAt", started, "finishedAt",
                         b->finished_at ? json_string(finished) : json_null(), "updatedAt", updated,
                         "snapshotId", json_str_or_null(b->snapshot_id));
}

static int build_one(const struct store_build *b, void *ud)
{
        return json_array_append_new(ud, build_json(b));
}

/* GET /v1/vms/builds (an extension: the spec reads builds one by one):
 * the account's builds, newest first, failed ones too, which left no
 * snapshot to find them by. */
void api_list_builds(struct api_call *c)
{
        int64_t limit = 100;
        json_t *arr;
        int r;

        if (api_query_int(c, "limit", &limit) < 0)
                return;
        if (limit < 1 || limit > 1000) {
                api_error(c, 400, "INVALID_PARAMETERS", "limit must be from 1 to 1000");
                return;
        }
        arr = json_array();
        r = arr ? store_build_list(c->a->store, c->account, (int)limit, build_one, arr) : -ENOMEM;
        if (r < 0) {
                json_decref(arr);
                api_error(c, 500, "INTERNAL_ERROR", "could not list builds: %s", strerror(-r));
                return;
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:o}", "builds", arr);
}

/* The route's build of the caller's account; answers 404 when none. */
static int find_build(struct api_call *c, const char *id, struct store_build *ret)
{
        int r = id && api_parse_build_id(id) == 0 ? store_build_get(c->a->store, c->account, id, ret) : -ENOENT;

        if (r == -ENOENT)
                api_error(c, 404, "BUILD_NOT_FOUND", "build %.40s not found", id ? id : "");
        else if (r < 0)
                api_error(c, 500, "INTERNAL_ERROR", "could not read the build: %s", strerror(-r));
        return r;
}

void api_get_build(struct api_call *c)
{
        struct store_build b = {0};
        char *id = api_param(c);

        if (find_build(c, id, &b) == 0) {
                c->resp->status = 200;
                c->resp->body = build_json(&b);
        }
        store_build_clear(&b);
        free(id);
}

static int phase_one(const struct store_build_phase *p, void *ud)
{
        json_t *arr = ((json_t **)ud)[0], *build = ((json_t **)ud)[1];
        char at[32], pid[96];

        format_time(p->started_at, at);
        snprintf(pid, sizeof(pid), "%s-%d", json_string_value(build), p->seq);
        return json_array_append_new(arr, json_pack("{s:s,s:O,s:s,s:o,s:s}", "phaseId", pid, "buildId", build,
                                                    "name", p->name, "snapshotId",
                                                    json_str_or_null(p->snapshot_id), "startedAt", at));
}

void api_list_build_phases(struct api_call *c)
{
        struct store_build b = {0};
        char *id = api_param(c);
        json_t *ud[2] = {json_array(), NULL};
        int r;

        if (find_build(c, id, &b) == 0) {
                ud[1] = json_string(b.id);
                r = ud[0] && ud[1] ? store_build_phase_foreach(c->a->store, b.id, phase_one, ud) : -ENOMEM;
                if (r < 0) {
                        api_error(c, 500, "INTERNAL_ERROR", "could not read the phases: %s", strerror(-r));
                } else {
                        c->resp->status = 200;
                        c->resp->body = json_pack("{s:O}", "phases", ud[0]);
                }
        }
        json_decref(ud[0]);
        json_decref(ud[1]);
        store_build_clear(&b);
        free(id);
}

void api_get_vm_build(struct api_call *c)
{
        struct store_build b = {0};
        struct vmm_info info = {0};
        int r = vmm_get(c->a->vmm, c->account, c->vm_id, &info);

        if (r < 0) {
                api_fail(c, r, API_VM, c->vm_id, NULL);
                return;
        }
        if (!info.build_id) {
                api_error(c, 404, "BUILD_NOT_FOUND_FOR_VM", "VM %s was not made from a template or spec",
                          c->vm_id);
        } else if (find_build(c, info.build_id, &b) == 0) {
                c->resp->status = 200;
                c->resp->body = build_json(&b);
        }
        store_build_clear(&b);
        vmm_info_clear(&info);
}

/* ------------------------------------------------------------------ */
/* Making snapshots                                                    */
/* ------------------------------------------------------------------ */

/* The answer of an ended build that failed: code, its failure (the
 * failing step and its output) and the build's id. */
static json_t *failure_json(const char *code, const char *build, const char *reason)
{
        return json_pack("{s:s,s:s,s:s,s:s}", "error", code, "code", code, "message",
                         reason && reason[0] ? reason : "the build failed", "buildId", build);
}

/* Starts a build of chain, answering any refusal; NULL then. */
static struct build *start(struct api_call *c, json_t *chain, struct build_opts *o, const char *bad_code)
{
        struct build *x = NULL;
        const char *code = bad_code;
        char msg[1024];
        int r;

        o->max_mem_gb = c->a->max_vm_mem_mb / 1024;
        o->max_vcpus = c->a->max_vm_vcpus;
        o->max_disk_gb = c->a->max_vm_disk_gb;
        r = build_start(c->a->builder, c->account, chain, o, bad_code, &x, &code, msg, sizeof(msg));

        if (r == -EINVAL)
                api_error(c, 400, code, "%s", msg);
        else if (r == -EFBIG)
                api_error(c, 413, code, "%s", msg);
        else if (r == -EBUSY)
                api_error(c, 429, "TOO_MANY_REQUESTS", "%s", msg);
        else if (r == -ENOMEDIUM)
                api_error(c, 404, "SNAPSHOT_NOT_FOUND", "%s", msg);
        else if (r == -EAGAIN)
                api_error(c, 503, "SERVICE_UNAVAILABLE", "the server is starting: try again shortly");
        else if (r < 0)
                api_fail(c, r, API_SNAPSHOT, "", NULL);
        return r < 0 ? NULL : x;
}

/* The chain a request asks for: `spec` or `template`, not both; NULL
 * (answered) when it is malformed, *ret NULL when there is none. */
static int chain_of(struct api_call *c, json_t *body, const char *code, json_t **ret)
{
        json_t *spec = json_object_get(body, "spec"), *tpl = json_object_get(body, "template");

        *ret = NULL;
        if (spec && json_is_null(spec))
                spec = NULL;
        if (tpl && json_is_null(tpl))
                tpl = NULL;
        if ((spec && !json_is_object(spec)) || (tpl && !json_is_object(tpl))) {
                api_error(c, 400, code, "'%s' must be an object",
                          spec && !json_is_object(spec) ? "spec" : "template");
                return -EINVAL;
        }
        if (spec && tpl) {
                api_error(c, 400, code, "'spec' and 'template' are mutually exclusive");
                return -EINVAL;
        }
        *ret = spec ? spec : tpl;
        return 0;
}

/* A build that failed because the account or the server had no room for
 * its VM or snapshot answers as that limit does (429, 507), with its id;
 * 1 then, else 0. */
static int answer_limit(struct api_call *c, const struct build *x)
{
        int r = build_outcome(x);

        if (r != -EUSERS && r != -EMLINK && r != -EOVERFLOW && r != -ETOOMANYREFS && r != -EDQUOT &&
            r != -ENOSPC)
                return 0;
        api_fail(c, r, API_VM, "", NULL);
        if (json_is_object(c->resp->body))
                json_object_set_new(c->resp->body, "buildId", json_string(build_id(x)));
        return 1;
}

static json_t *snapshot_answer(const char *sid, const char *build)
{
        return json_pack("{s:s,s:s}", "snapshotId", sid, "buildId", build);
}

/* The answer of a create_snapshot whose build ended, from its record. */
static void ended_answer(struct api_call *c, const struct store_build *b)
{
        if (!strcmp(b->state, "succeeded") && b->snapshot_id) {
                c->resp->status = 200;
                c->resp->body = snapshot_answer(b->snapshot_id, b->id);
        } else {
                c->resp->status = 500;
                c->resp->body = failure_json("SNAPSHOT_SETUP_FAILED", b->id, b->failure_reason);
        }
}

void api_create_snapshot(struct api_call *c)
{
        const char *code = "CREATE_SNAPSHOT_BAD_REQUEST";
        struct build_opts o = {.persistence = VM_PERSISTENCE_DEFAULT};
        json_t *body = api_body(c, code), *chain = NULL;
        char *after = http_header(c->req, BACKGROUND_HEADER);
        struct build *x = NULL;
        struct store_build rec = {0};
        int64_t wait_ms = -1;
        int r;

        if (!body)
                goto out;
        if (api_opt_string(c, body, "name", &o.name, code) < 0 ||
            api_persistence(c, body, 1u << VM_PERSIST_STICKY | 1u << VM_PERSIST_PERSISTENT, code,
                            &o.persistence) < 0 ||
            chain_of(c, body, code, &chain) < 0)
                goto out;
        if (o.name && strlen(o.name) > 256) {
                api_error(c, 400, code, "name is longer than 256 bytes");
                goto out;
        }
        if (!chain) {
                api_error(c, 400, code, "a snapshot is made from a 'spec' or a 'template'");
                goto out;
        }
        if (after) {
                char *end;
                long s = strtol(after, &end, 10);

                if (end == after || *end || s < 0 || s > 86400) {
                        api_error(c, 400, code, "%s must be a number of seconds", BACKGROUND_HEADER);
                        goto out;
                }
                wait_ms = s * 1000;
        }
        x = start(c, chain, &o, code);
        if (!x)
                goto out;
        if (build_wait(x, wait_ms) < 0) {
                /* Goes on in the background: its outcome is read later. */
                c->resp->status = 202;
                c->resp->body = json_pack("{s:s,s:s}", "requestId", build_id(x), "buildId", build_id(x));
                goto out;
        }
        r = store_build_get(c->a->store, c->account, build_id(x), &rec);
        if (r < 0)
                api_error(c, 500, "INTERNAL_ERROR", "could not read the build: %s", strerror(-r));
        else if (!answer_limit(c, x))
                ended_answer(c, &rec);
out:
        store_build_clear(&rec);
        build_put(x);
        free(after);
        json_decref(body);
}

/* GET /auth/v1/background-requests/{id}: 202 while the build runs, then
 * what the request would have answered. */
void api_background_request(struct api_call *c)
{
        struct store_build b = {0};
        char *id = api_param(c);

        if (find_build(c, id, &b) == 0) {
                if (!strcmp(b.state, "pending") || !strcmp(b.state, "running")) {
                        c->resp->status = 202;
                        c->resp->body = json_pack("{s:s,s:s}", "requestId", b.id, "state", b.state);
                } else {
                        ended_answer(c, &b);
                }
        }
        store_build_clear(&b);
        free(id);
}

static int log_one(const struct store_build_phase *p, void *ud)
{
        char at[32];

        format_time(p->started_at, at);
        return json_array_append_new(ud, json_pack("{s:s,s:s++}", "timestamp", at, "message", p->name,
                                                   p->snapshot_id ? " " : "",
                                                   p->snapshot_id ? p->snapshot_id : ""));
}

/* GET /observability/v1/logs?requestId=: a background build's progress. */
void api_request_logs(struct api_call *c)
{
        struct store_build b = {0};
        char *id = http_query(c->req, "requestId");
        json_t *logs = json_array();

        if (!id) {
                api_error(c, 400, "INVALID_PARAMETERS", "requestId is required");
        } else if (find_build(c, id, &b) == 0) {
                int r = logs ? store_build_phase_foreach(c->a->store, b.id, log_one, logs) : -ENOMEM;

                if (r == 0 && b.failure_reason)
                        json_array_append_new(
                            logs, json_pack("{s:s,s:s}", "timestamp", "", "message", b.failure_reason));
                if (r < 0) {
                        api_error(c, 500, "INTERNAL_ERROR", "could not read the logs: %s", strerror(-r));
                } else {
                        c->resp->status = 200;
                        c->resp->body = json_pack("{s:O}", "logs", logs);
                }
        }
        json_decref(logs);
        store_build_clear(&b);
        free(id);
}

/* ------------------------------------------------------------------ */
/* Creating a VM from a template or spec                               */
/* ------------------------------------------------------------------ */

int api_vm_chain(struct api_call *c, json_t *body, json_t **ret)
{
        static const char *const inherited[] = {"workdir", "idleTimeoutSeconds", "readySignalTimeoutSeconds",
                                                "waitForReadySignal"};
        json_t *sid = json_object_get(body, "snapshotId");

        if (chain_of(c, body, "CREATE_VM_BAD_REQUEST", ret) < 0)
                return -EINVAL;
        if (!*ret)
                return 0;
        if (sid && !json_is_null(sid)) {
                api_error(c, 400, "CREATE_VM_BAD_REQUEST",
                          "'snapshotId' and a 'template' or 'spec' are mutually exclusive: put the "
                          "snapshotId inside it");
                return -EINVAL;
        }
        /* What the template says about the VM, unless the request does. */
        for (size_t i = 0; i < sizeof(inherited) / sizeof(inherited[0]); i++) {
                json_t *v = json_object_get(*ret, inherited[i]), *own = json_object_get(body, inherited[i]);

                if (v && !json_is_null(v) && (!own || json_is_null(own)))
                        json_object_set(body, inherited[i], v);
        }
        /* Nothing to build ({workdir: ...} alone): a plain create. */
        if (build_chain_trivial(*ret))
                *ret = NULL;
        return 0;
}

int api_vm_build(struct api_call *c, json_t *chain, char ret_snapshot[24], char ret_build[24])
{
        struct build_opts o = {.persistence = VM_PERSISTENCE_DEFAULT};
        struct store_build rec = {0};
        struct build *x = start(c, chain, &o, "CREATE_VM_BAD_REQUEST");
        int r;

        if (!x)
                return -EINVAL;
        build_wait(x, -1);
        snprintf(ret_build, 24, "%s", build_id(x));
        r = store_build_get(c->a->store, c->account, build_id(x), &rec);
        if (r == 0 && !strcmp(rec.state, "succeeded") && rec.snapshot_id) {
                snprintf(ret_snapshot, 24, "%s", rec.snapshot_id);
        } else if (r == 0) {
                if (!answer_limit(c, x)) {
                        c->resp->status = 500;
                        c->resp->body = failure_json("BUILD_FAILED", rec.id, rec.failure_reason);
                }
                r = -EINVAL;
        } else {
                api_error(c, 500, "INTERNAL_ERROR", "could not read the build: %s", strerror(-r));
        }
        store_build_clear(&rec);
        build_put(x);
        return r;
}

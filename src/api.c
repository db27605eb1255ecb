/*
 * api: request routing and handlers. Depends on http (request access and
 * error bodies), vmm, store, jansson, util. It must never reveal whether a
 * VM of another account exists (always VM_NOT_FOUND), never pass a request
 * value to a host path, and answer every bad input with a JSON error.
 */
#include "api.h"
#include "store.h"
#include "systemd.h"
#include "util.h"
#include "vmm.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define USER_HEADER "X-Freestyle-Vm-Linux-User-Id"

/* The caller, once authenticated. */
struct caller {
        char *account;
        int admin;
};

int api_parse_vm_id(const char *s, char out[21])
{
        size_t n = strlen(s);

        if (n == 0 || n > 20)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i])))
                        return -EINVAL;
        memcpy(out, s, n);
        memset(out + n, '0', 20 - n);
        out[20] = 0;
        return 0;
}

int api_parse_snapshot_id(const char *s)
{
        if (strncmp(s, "sc-", 3) || strlen(s) != 23)
                return -EINVAL;
        for (int i = 3; i < 23; i++)
                if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i])))
                        return -EINVAL;
        return 0;
}

static json_t *str_or_null(const char *s)
{
        return s ? json_string(s) : json_null();
}

/* Parses the body as a JSON object; an empty body counts as {}. */
static json_t *parse_body(const struct http_req *req, struct http_resp *resp, const char *code)
{
        json_error_t err;
        json_t *j;

        if (req->body_len == 0)
                return json_object();
        j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &err);
        if (!j) {
                http_error(resp, 400, code, "malformed JSON body: %s (line %d, column %d)", err.text, err.line,
                           err.column);
                return NULL;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                http_error(resp, 400, code, "the request body must be a JSON object");
                return NULL;
        }
        return j;
}

/* Fetches an optional string field; 0 ok (absent or null gives NULL),
 * -EINVAL when it has another type (resp is set). */
static int opt_string(json_t *obj, const char *key, const char **ret, struct http_resp *resp, const char *code)
{
        json_t *v = json_object_get(obj, key);

        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v)) {
                http_error(resp, 400, code, "field '%s' must be a string", key);
                return -EINVAL;
        }
        *ret = json_string_value(v);
        return 0;
}

static int opt_int(json_t *obj, const char *key, int64_t min, int64_t max, int64_t *ret, struct http_resp *resp,
                   const char *code)
{
        json_t *v = json_object_get(obj, key);

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
                http_error(resp, 400, code, "field '%s' must be an integer from %lld to %lld", key,
                           (long long)min, (long long)max);
                return -EINVAL;
        }
        *ret = json_integer_value(v);
        return 0;
}

/* Maps a failure to reach a VM onto the API's errors. */
static void vm_error(struct http_resp *resp, int r, const char *id)
{
        switch (r) {
        case -ENOENT:
                http_error(resp, 404, "VM_NOT_FOUND", "VM %s not found", id);
                break;
        case -ENOTCONN:
                http_error(resp, 400, "VM_NOT_RUNNING", "VM %s is not running", id);
                break;
        case -ECONNRESET:
        case -EPIPE:
                http_error(resp, 500, "VM_CONNECTION_LOST", "lost the connection to VM %s (it stopped or was deleted)",
                           id);
                break;
        case -ETIMEDOUT:
                http_error(resp, 504, "AGENT_TIMEOUT", "VM %s did not answer in time", id);
                break;
        case -ENOTRECOVERABLE:
                http_error(resp, 409, "VM_SETUP_FAILED",
                           "VM %s never finished its create (its setup failed, or sproutd stopped during it) and is"
                           " stopped; GET /v1/vms/%s has the error; delete it, or start it to look inside",
                           id, id);
                break;
        default:
                http_error(resp, 500, "INTERNAL_ERROR", "VM %s: %s", id, strerror(-r));
                break;
        }
}

/* A Linux user name from the header, validated; NULL when absent. */
static int linux_user(const struct http_req *req, char **ret, struct http_resp *resp)
{
        char *u = http_header(req, USER_HEADER);

        *ret = NULL;
        if (!u || !*u) {
                free(u);
                return 0;
        }
        for (size_t i = 0; u[i]; i++) {
                unsigned char c = (unsigned char)u[i];

                if (i >= 32 || !(islower(c) || c == '_' || (i > 0 && (isdigit(c) || c == '-' || c == '.')))) {
                        http_error(resp, 400, "INVALID_PARAMETERS", "invalid Linux user name in %s", USER_HEADER);
                        free(u);
                        return -EINVAL;
                }
        }
        *ret = u;
        return 0;
}

/* ---- /healthz and auth ---- */

static void handle_healthz(struct sprout *d, struct http_resp *resp)
{
        char status[256];

        if (vmm_ready(d->vmm, status, sizeof(status))) {
                resp->status = 200;
                resp->body = json_pack("{s:s}", "status", "ok");
        } else {
                http_error(resp, 503, "NOT_READY", "%s", status);
        }
}

static int authenticate(struct sprout *d, const struct http_req *req, struct caller *c, struct http_resp *resp)
{
        char *h = http_header(req, "Authorization");
        const char *key = NULL;
        int r = -EACCES;

        if (h && !strncasecmp(h, "Bearer ", 7)) {
                key = h + 7;
                while (*key == ' ')
                        key++;
        }
        if (key && *key && strlen(key) <= 256)
                r = store_auth(d->store, key, &c->account, &c->admin);
        free(h);
        if (r == 0)
                return 0;
        if (r == -ENOENT || r == -EACCES)
                http_error(resp, 401, "UNAUTHORIZED", "a valid API key is required (Authorization: Bearer KEY)");
        else
                http_error(resp, 500, "INTERNAL_ERROR", "could not check the API key: %s", strerror(-r));
        return -EACCES;
}

static void handle_create_key(struct sprout *d, const struct http_req *req, const struct caller *c,
                              struct http_resp *resp)
{
        const char *account = NULL;
        char *key = NULL, *account_id = NULL, *account_name = NULL;
        json_t *body;
        int r;

        if (!c->admin) {
                http_error(resp, 403, "FORBIDDEN", "creating API keys needs an admin key");
                return;
        }
        body = parse_body(req, resp, "INVALID_PARAMETERS");
        if (!body)
                return;
        if (opt_string(body, "account", &account, resp, "INVALID_PARAMETERS") < 0)
                goto out;
        if (account) {
                size_t n = strlen(account);
                int ok = n > 0 && n <= 64;

                for (size_t i = 0; ok && i < n; i++)
                        ok = isalnum((unsigned char)account[i]) || strchr("._-@", account[i]);
                if (!ok) {
                        http_error(resp, 400, "INVALID_PARAMETERS",
                                   "account names are 1 to 64 letters, digits, '.', '_', '-' or '@'");
                        goto out;
                }
        }
        r = store_create_key(d->store, account, 0, &key, &account_id, &account_name);
        if (r < 0) {
                http_error(resp, 500, "INTERNAL_ERROR", "could not create a key: %s", strerror(-r));
                goto out;
        }
        log_info("api key created for account %s (%s)", account_name, account_id);
        resp->status = 200;
        resp->body = json_pack("{s:s,s:s,s:s}", "key", key, "accountId", account_id, "account", account_name);
out:
        free(key);
        free(account_id);
        free(account_name);
        json_decref(body);
}

/* ---- VMs ---- */

static json_t *vm_json(const struct vmm_info *i, int full)
{
        char created[32];
        json_t *j;

        format_time(i->created_at, created);
        j = json_pack("{s:s,s:o,s:s,s:s,s:n,s:n}", "id", i->id, "name", str_or_null(i->name), "state",
                      vm_state_name(i->state), "createdAt", created, "lastNetworkActivity", "cpuTimeSeconds");
        if (!j)
                return NULL;
        json_object_set_new(j, "workdir", str_or_null(i->workdir));
        json_object_set_new(j, "memSizeMb", json_integer(i->mem_mb));
        json_object_set_new(j, "vcpuCount", json_integer(i->vcpus));
        json_object_set_new(j, "pendingMemSizeMb", i->pending_mem_mb ? json_integer(i->pending_mem_mb) : json_null());
        json_object_set_new(j, "pendingVcpuCount", i->pending_vcpus ? json_integer(i->pending_vcpus) : json_null());
        json_object_set_new(j, "idleTimeoutSeconds", json_integer(i->idle_timeout_s));
        json_object_set_new(j, "diskUsageBytes", json_integer(i->disk_bytes));
        if (full) {
                json_object_set_new(j, "vmInstanceId", i->instance[0] ? json_string(i->instance) : json_null());
                json_object_set_new(j, "buildId", json_null());
        } else {
                json_object_set_new(j, "deleted", json_false());
                json_object_set_new(j, "createdDeclaratively", json_false());
                json_object_set_new(j, "metrics", json_null());
        }
        json_object_set_new(j, "snapshotId", str_or_null(i->snapshot_id));
        /* Why a create that did not wait (waitForReadySignal: false)
         * failed: the error it would have answered. */
        if (i->error) {
                json_t *e = json_loads(i->error, 0, NULL);

                json_object_set_new(j, "error", e ? e : json_string(i->error));
        }
        return j;
}

/* Create-time fields this server does not act on yet. Refusing them is
 * better than creating a VM that silently lacks what was asked for. */
static int refuse_unsupported(json_t *body, struct http_resp *resp)
{
        static const char *const fields[] = {"template", "spec"};
        json_t *git = json_object_get(body, "git");

        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
                json_t *v = json_object_get(body, fields[i]);

                if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0) &&
                    !(json_is_object(v) && json_object_size(v) == 0)) {
                        /* The SDK always sends systemd: {services: []}-like empties. */
                        if (json_is_object(v)) {
                                const char *k;
                                json_t *x;
                                int empty = 1;

                                json_object_foreach(v, k, x) if (!json_is_null(x) &&
                                                                 !(json_is_array(x) && json_array_size(x) == 0))
                                        empty = 0;
                                if (empty)
                                        continue;
                        }
                        http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "'%s' is not supported by this server yet",
                                   fields[i]);
                        return -EINVAL;
                }
        }
        if (git && !json_is_null(git) && !json_is_object(git)) {
                http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "'git' must be an object");
                return -EINVAL;
        }
        return 0;
}

/* The bytes of a {content, encoding} object (a file to write): base64
 * decoded, or the text itself for "utf8"/"utf-8"/no encoding. *ret_data is
 * malloc'd. -EINVAL with *ret_why set when it is malformed. */
static int file_content(json_t *obj, uint8_t **ret_data, size_t *ret_len, const char **ret_why)
{
        json_t *cv = json_object_get(obj, "content"), *ev = json_object_get(obj, "encoding");
        const char *content = json_string_value(cv), *enc = json_string_value(ev);

        if (!content) {
                *ret_why = "'content' must be a string";
                return -EINVAL;
        }
        if (ev && !json_is_null(ev) && (!enc || (strcmp(enc, "base64") && strcmp(enc, "utf8") && strcmp(enc, "utf-8")))) {
                *ret_why = "'encoding' must be 'utf8' or 'base64'";
                return -EINVAL;
        }
        if (enc && !strcmp(enc, "base64")) {
                if (base64_decode(content, strlen(content), ret_data, ret_len) < 0) {
                        *ret_why = "'content' is not valid base64";
                        return -EINVAL;
                }
                return 0;
        }
        *ret_len = json_string_length(cv);
        *ret_data = malloc(*ret_len + 1);
        if (!*ret_data) {
                *ret_why = "out of memory";
                return -ENOMEM;
        }
        memcpy(*ret_data, content, *ret_len);
        return 0;
}

/* additionalFiles: {path: {content, encoding?, executable?}} written into
 * the new VM first thing in its create-time setup. */
static int write_additional_files(struct sprout *d, const struct caller *c, const char *id, json_t *files,
                                  struct http_resp *resp)
{
        const char *path;
        json_t *f;

        json_object_foreach(files, path, f) {
                int exe = json_is_true(json_object_get(f, "executable"));
                struct vmm_result res = {0};
                const char *why = NULL;
                uint8_t *data = NULL;
                size_t len = 0;
                int r;

                if (file_content(f, &data, &len, &why) < 0) {
                        http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "additionalFiles['%s']: %s", path, why);
                        return -EINVAL;
                }
                r = vmm_write(d->vmm, c->account, id, path, NULL, data, len, exe ? 0755 : 0644, &res);
                free(data);
                if (r < 0 || res.agent_errno) {
                        http_error(resp, 400, "VM_SETUP_FAILED", "writing additional file %s failed: %s", path,
                                   r < 0 ? strerror(-r) : res.errmsg ? res.errmsg : strerror(res.agent_errno));
                        vmm_result_clear(&res);
                        return -EIO;
                }
                vmm_result_clear(&res);
        }
        return 0;
}

/* The create-time setup a create hands to the VM manager (see the
 * create-time setup section below). */
struct create_setup;
static int check_setup(json_t *body, struct http_resp *resp);
static struct create_setup *create_setup_new(struct sprout *d, const struct caller *c, json_t *body,
                                             int64_t timeout_s);
static int create_setup_run(void *ud, const char *id, char **ret_error);
static void create_setup_free(void *ud);
static void create_setup_answer(struct create_setup *x, struct http_resp *resp);

static void handle_create_vm(struct sprout *d, const struct http_req *req, const struct caller *c,
                             struct http_resp *resp)
{
        const char *name = NULL, *workdir = NULL, *snapshot = NULL;
        int64_t idle = 300, ready_timeout = 120;
        char id[21], *persistence = NULL;
        struct create_setup *setup = NULL;
        json_t *body, *v, *files;
        int r, wait;

        body = parse_body(req, resp, "CREATE_VM_BAD_REQUEST");
        if (!body)
                return;
        if (opt_string(body, "name", &name, resp, "CREATE_VM_BAD_REQUEST") < 0 ||
            opt_string(body, "workdir", &workdir, resp, "CREATE_VM_BAD_REQUEST") < 0 ||
            opt_string(body, "snapshotId", &snapshot, resp, "CREATE_VM_BAD_REQUEST") < 0 ||
            opt_int(body, "idleTimeoutSeconds", 0, 365 * 86400, &idle, resp, "CREATE_VM_BAD_REQUEST") < 0 ||
            opt_int(body, "readySignalTimeoutSeconds", 0, 3600, &ready_timeout, resp, "CREATE_VM_BAD_REQUEST") < 0 ||
            refuse_unsupported(body, resp) < 0)
                goto out;
        if (name && strlen(name) > 256) {
                http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "name is longer than 256 bytes");
                goto out;
        }
        if (workdir && (workdir[0] != '/' || strlen(workdir) > 1024)) {
                http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "workdir must be an absolute path");
                goto out;
        }
        if (snapshot && api_parse_snapshot_id(snapshot) < 0) {
                http_error(resp, 404, "SNAPSHOT_NOT_FOUND", "snapshot %.40s not found", snapshot);
                goto out;
        }
        v = json_object_get(body, "waitForReadySignal");
        if (v && !json_is_null(v) && !json_is_boolean(v)) {
                http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "field 'waitForReadySignal' must be a boolean");
                goto out;
        }
        wait = !json_is_false(v);
        files = json_object_get(body, "additionalFiles");
        if (files && !json_is_null(files) && !json_is_object(files)) {
                http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "field 'additionalFiles' must be an object");
                goto out;
        }
        v = json_object_get(body, "persistence");
        if (v && !json_is_null(v)) {
                const char *type = json_string_value(json_object_get(v, "type"));

                json_t *prio = json_object_get(v, "priority");
                const char *ev = json_string_value(json_object_get(v, "deleteEvent"));
                json_t *evj = json_object_get(v, "deleteEvent");

                if (!json_is_object(v) || !type ||
                    (strcmp(type, "sticky") && strcmp(type, "ephemeral") && strcmp(type, "persistent"))) {
                        http_error(resp, 400, "CREATE_VM_BAD_REQUEST",
                                   "persistence.type must be sticky, ephemeral or persistent");
                        goto out;
                }
                if (prio && !json_is_null(prio) &&
                    (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > 10)) {
                        http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "persistence.priority must be 0 to 10");
                        goto out;
                }
                if (evj && !json_is_null(evj) && (!ev || (strcmp(ev, "OnStop") && strcmp(ev, "OnSuspend")))) {
                        http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "persistence.deleteEvent must be OnStop or OnSuspend");
                        goto out;
                }
                persistence = json_dumps(v, JSON_COMPACT);
        }
        /* Every malformed setup entry is answered now, before a VM exists:
         * a create that does not wait cannot answer it later. */
        if (check_setup(body, resp) < 0)
                goto out;
        setup = create_setup_new(d, c, body, ready_timeout);
        if (!setup) {
                http_error(resp, 500, "INTERNAL_ERROR", "out of memory");
                goto out;
        }

        /* waitForReadySignal: false answers once the VM is listed; the
         * manager then owns the setup and frees it. */
        struct vmm_setup vs = {.run = create_setup_run, .release = wait ? NULL : create_setup_free, .ud = setup};
        struct vmm_create opts = {
                .name = name,
                .workdir = workdir,
                .idle_timeout_s = idle,
                .persistence = persistence,
                .snapshot_id = snapshot,
                .setup = &vs,
                .background = !wait,
        };
        r = vmm_create(d->vmm, c->account, &opts, id);
        if (!wait)
                setup = NULL;
        if (r == -ECANCELED) {
                /* Nothing is left half set up: the manager removed it. */
                create_setup_answer(setup, resp);
                goto out;
        }
        if (r == -ENOMEDIUM) {
                http_error(resp, 404, "SNAPSHOT_NOT_FOUND", "snapshot %s not found", snapshot);
                goto out;
        }
        if (r == -EAGAIN) {
                http_error(resp, 503, "NOT_READY", "the server is still preparing its base snapshot; retry shortly");
                goto out;
        }
        if (r == -EUSERS) {
                http_error(resp, 429, "VM_LIMIT_REACHED", "this server's limit on VMs is reached");
                goto out;
        }
        if (r < 0) {
                http_error(resp, 500, "INTERNAL_ERROR", "could not create the VM: %s", strerror(-r));
                goto out;
        }
        resp->status = 200;
        resp->body = json_pack("{s:s,s:[],s:n,s:o}", "id", id, "domains", "consoleUrl", "snapshotId",
                               str_or_null(snapshot));
out:
        create_setup_free(setup);
        free(persistence);
        json_decref(body);
}

struct list_ctx {
        json_t *vms;
        int state_filter; /* -1: any */
        const char *search;
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
        return json_array_append_new(l->vms, vm_json(i, 0)) < 0 ? -ENOMEM : 0;
}

static int query_int(const struct http_req *req, const char *name, int64_t *ret, struct http_resp *resp)
{
        char *v = http_query(req, name), *end;
        long long x;

        if (!v || !*v) {
                free(v);
                return 0;
        }
        errno = 0;
        x = strtoll(v, &end, 10);
        if (*end || errno || x < 0 || x > 1000000000) {
                http_error(resp, 400, "INVALID_PARAMETERS", "query parameter '%s' must be a non-negative integer",
                           name);
                free(v);
                return -EINVAL;
        }
        free(v);
        *ret = x;
        return 0;
}

static void handle_list_vms(struct sprout *d, const struct http_req *req, const struct caller *c,
                            struct http_resp *resp)
{
        struct list_ctx l = {.state_filter = -1, .limit = -1};
        char *state = NULL, *search = NULL;
        int r;

        if (query_int(req, "limit", &l.limit, resp) < 0 || query_int(req, "offset", &l.offset, resp) < 0)
                return;
        state = http_query(req, "vmState");
        if (state && *state && (l.state_filter = vm_state_parse(state)) < 0) {
                http_error(resp, 400, "INVALID_PARAMETERS", "unknown vmState '%s'", state);
                goto out;
        }
        search = http_query(req, "search");
        l.search = search && *search ? search : NULL;
        l.vms = json_array();
        r = vmm_list(d->vmm, c->account, list_one, &l);
        if (r < 0 || !l.vms) {
                http_error(resp, 500, "INTERNAL_ERROR", "could not list VMs");
                json_decref(l.vms);
                goto out;
        }
        resp->status = 200;
        resp->body = json_pack("{s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:n}", "vms", l.vms, "totalCount",
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

static void handle_get_vm(struct sprout *d, const struct caller *c, const char *id, struct http_resp *resp)
{
        struct vmm_info i = {0};
        int r = vmm_get(d->vmm, c->account, id, &i);

        if (r < 0) {
                vm_error(resp, r, id);
                return;
        }
        resp->status = 200;
        resp->body = vm_json(&i, 1);
        vmm_info_clear(&i);
}

static void handle_delete_vm(struct sprout *d, const struct caller *c, const char *id, struct http_resp *resp)
{
        int r = vmm_delete(d->vmm, c->account, id);

        if (r < 0) {
                vm_error(resp, r, id);
                return;
        }
        resp->status = 200;
        resp->body = json_pack("{s:s}", "id", id);
}

/* Puts guest output into a JSON string, replacing invalid UTF-8. */
static json_t *output_json(const struct proto_buf *b)
{
        size_t n;
        char *s = utf8_sanitize(b->data ? (const char *)b->data : "", b->len, &n);
        json_t *j = s ? json_stringn_nocheck(s, n) : NULL;

        free(s);
        return j;
}

static void handle_exec(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                        struct http_resp *resp)
{
        struct vmm_result res = {0};
        const char *command = NULL, *terminal = NULL;
        int64_t timeout = 0;
        char *user = NULL;
        json_t *body;
        int r;

        body = parse_body(req, resp, "INVALID_PARAMETERS");
        if (!body)
                return;
        if (opt_string(body, "command", &command, resp, "INVALID_PARAMETERS") < 0 ||
            opt_string(body, "terminal", &terminal, resp, "INVALID_PARAMETERS") < 0 ||
            opt_int(body, "timeoutMs", 0, 24LL * 3600 * 1000, &timeout, resp, "INVALID_PARAMETERS") < 0 ||
            linux_user(req, &user, resp) < 0)
                goto out;
        if (!command) {
                http_error(resp, 400, "INVALID_PARAMETERS", "field 'command' is required");
                goto out;
        }
        struct vmm_exec e = {.command = command, .terminal = terminal, .user = user, .timeout_ms = timeout};
        r = vmm_exec(d->vmm, c->account, id, &e, &res);
        if (r < 0) {
                vm_error(resp, r, id);
                goto out;
        }
        if (res.timed_out) {
                http_error(resp, 408, "EXEC_TIMED_OUT", "command did not finish within %lld ms", (long long)timeout);
                json_object_set_new(resp->body, "stdout", output_json(&res.reply.out));
                json_object_set_new(resp->body, "stderr", output_json(&res.reply.err));
        } else if (res.agent_errno == E2BIG || res.reply.overflow) {
                http_error(resp, 400, "EXEC_OUTPUT_TOO_LARGE", "%s; redirect large output to a file",
                           res.errmsg ? res.errmsg : "command output exceeds the limit");
        } else if (res.agent_errno == ESRCH) {
                http_error(resp, 404, "USER_NOT_FOUND", "%s", res.errmsg ? res.errmsg : "Linux user not found");
        } else if (terminal && res.agent_errno == EBUSY) {
                http_error(resp, 409, "TERMINAL_BUSY", "terminal %s is running another command", terminal);
        } else if (terminal && res.agent_errno == EPERM) {
                http_error(resp, 403, "FORBIDDEN", "%s", res.errmsg ? res.errmsg : "terminal of another user");
        } else if (terminal && (res.agent_errno == EINVAL || res.agent_errno == E2BIG || res.agent_errno == EAGAIN)) {
                http_error(resp, 400, "INVALID_PARAMETERS", "%s", res.errmsg ? res.errmsg : strerror(res.agent_errno));
        } else if (res.agent_errno) {
                http_error(resp, 500, "EXEC_FAILED", "%s", res.errmsg ? res.errmsg : strerror(res.agent_errno));
        } else {
                resp->status = 200;
                resp->body = json_pack("{s:o,s:o,s:i}", "stdout", output_json(&res.reply.out), "stderr",
                                       output_json(&res.reply.err), "statusCode", res.exit_code);
        }
out:
        vmm_result_clear(&res);
        free(user);
        json_decref(body);
}

/* Maps a file operation's errno inside the guest onto the API's errors. */
static void file_error(struct http_resp *resp, const struct vmm_result *res, const char *path)
{
        const char *msg = res->errmsg ? res->errmsg : strerror(res->agent_errno);

        switch (res->agent_errno) {
        case ENOENT:
                http_error(resp, 404, "FILE_NOT_FOUND", "%s: no such file or directory", path);
                break;
        case EFBIG:
                http_error(resp, 413, "FILE_TOO_LARGE", "%s: %s", path, msg);
                break;
        case EACCES:
        case EPERM:
                http_error(resp, 403, "FORBIDDEN", "%s: permission denied", path);
                break;
        case ESRCH:
                http_error(resp, 404, "USER_NOT_FOUND", "%s", msg);
                break;
        case EISDIR:
        case ENOTDIR:
        case EINVAL:
        case ENAMETOOLONG:
        case ELOOP:
                http_error(resp, 400, "FILES_BAD_REQUEST", "%s: %s", path, msg);
                break;
        default:
                http_error(resp, 500, "INTERNAL_ERROR", "%s: %s", path, msg);
                break;
        }
}

static json_t *dir_json(const struct vmm_result *res)
{
        json_t *files = json_array();
        struct proto_iter it;
        struct proto_tlv t;

        proto_iter_init(&it, res->reply.result, res->reply.result_len);
        while (files && proto_iter_next(&it, &t) > 0) {
                size_t n;
                char *name;

                if (t.tag != PROTO_TAG_ENTRY || t.len < 2)
                        continue;
                name = utf8_sanitize(t.val + 1, t.len - 1, &n);
                if (!name)
                        continue;
                json_array_append_new(files, json_pack("{s:s%,s:s}", "name", name, n, "kind",
                                                       t.val[0] == PROTO_KIND_DIR ? "directory" : "file"));
                free(name);
        }
        return json_pack("{s:o}", "files", files);
}

static void handle_read_file(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                             const char *path, struct http_resp *resp)
{
        struct vmm_result res = {0};
        char *user = NULL;
        int r;

        if (linux_user(req, &user, resp) < 0)
                return;
        r = vmm_read(d->vmm, c->account, id, path, user, &res);
        free(user);
        if (r < 0) {
                vm_error(resp, r, id);
                return;
        }
        if (res.agent_errno) {
                file_error(resp, &res, path);
        } else if (res.reply.overflow) {
                http_error(resp, 413, "FILE_TOO_LARGE", "%s is larger than the server's limit", path);
        } else if (res.kind == PROTO_KIND_DIR) {
                resp->status = 200;
                resp->body = dir_json(&res);
        } else {
                const struct proto_buf *b = &res.reply.data;
                const char *bytes = b->data ? (const char *)b->data : "";

                resp->status = 200;
                if (utf8_valid(bytes, b->len)) {
                        resp->body = json_pack("{s:s%,s:s}", "content", bytes, b->len, "encoding", "utf8");
                } else {
                        char *enc = base64_encode(bytes, b->len);

                        resp->body = enc ? json_pack("{s:s,s:s}", "content", enc, "encoding", "base64") : NULL;
                        free(enc);
                }
                if (!resp->body)
                        http_error(resp, 500, "INTERNAL_ERROR", "out of memory");
        }
        vmm_result_clear(&res);
}

static void handle_write_file(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                              const char *path, struct http_resp *resp)
{
        struct vmm_result res = {0};
        const char *why = NULL;
        uint8_t *data = NULL;
        size_t len = 0;
        char *user = NULL;
        json_t *body, *exe;
        int r;

        body = parse_body(req, resp, "FILES_BAD_REQUEST");
        if (!body)
                return;
        if (linux_user(req, &user, resp) < 0)
                goto out;
        exe = json_object_get(body, "executable");
        if (file_content(body, &data, &len, &why) < 0) {
                http_error(resp, 400, "FILES_BAD_REQUEST", "%s", why);
                goto out;
        }
        if (exe && !json_is_boolean(exe)) {
                http_error(resp, 400, "FILES_BAD_REQUEST", "field 'executable' must be a boolean");
                goto out;
        }
        r = vmm_write(d->vmm, c->account, id, path, user, data, len, json_is_true(exe) ? 0755 : 0644, &res);
        if (r < 0)
                vm_error(resp, r, id);
        else if (res.agent_errno)
                file_error(resp, &res, path);
        else {
                resp->status = 200;
                resp->body = json_object();
        }
out:
        vmm_result_clear(&res);
        free(data);
        free(user);
        json_decref(body);
}

static int method_is(const struct http_req *req, const char *m)
{
        return !strcmp(req->method, m);
}

/* ---- lifecycle ---- */

/* Answers a lifecycle call that failed. */
static void lifecycle_error(struct http_resp *resp, int r, const char *id, const char *what)
{
        if (r == -ENOTCONN)
                http_error(resp, 400, "VM_NOT_RUNNING", "VM %s is not in a state that can be %s", id, what);
        else if (r == -ENOENT)
                http_error(resp, 404, "VM_NOT_FOUND", "VM %s not found", id);
        else
                http_error(resp, 500, "INTERNAL_ERROR", "VM %s could not be %s: %s", id, what, strerror(-r));
}

static json_t *instance_json(struct sprout *d, const struct caller *c, const char *id)
{
        struct vmm_info i = {0};
        json_t *j = json_null();

        if (vmm_get(d->vmm, c->account, id, &i) == 0 && i.instance[0])
                j = json_string(i.instance);
        vmm_info_clear(&i);
        return j;
}

static void handle_lifecycle(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                             const char *op, struct http_resp *resp)
{
        char status[16];
        json_t *body = parse_body(req, resp, "INVALID_PARAMETERS"), *inst;
        int r;

        if (!body)
                return;
        json_decref(body);
        if (!strcmp(op, "suspend")) {
                inst = instance_json(d, c, id);
                r = vmm_suspend(d->vmm, c->account, id);
                if (r < 0) {
                        json_decref(inst);
                        lifecycle_error(resp, r, id, "suspended");
                        return;
                }
                resp->body = json_pack("{s:s,s:o,s:n}", "id", id, "vmInstanceId", inst, "snapshotLayerId");
        } else if (!strcmp(op, "start")) {
                r = vmm_start(d->vmm, c->account, id);
                if (r < 0) {
                        lifecycle_error(resp, r, id, "started");
                        return;
                }
                resp->body = json_pack("{s:s,s:[],s:n}", "id", id, "domains", "console_url");
        } else if (!strcmp(op, "stop")) {
                inst = instance_json(d, c, id);
                r = vmm_stop(d->vmm, c->account, id);
                if (r < 0) {
                        json_decref(inst);
                        lifecycle_error(resp, r, id, "stopped");
                        return;
                }
                resp->body = json_pack("{s:s,s:o}", "vmId", id, "vmInstanceId", inst);
        } else if (!strcmp(op, "kill")) {
                r = vmm_kill(d->vmm, c->account, id);
                if (r < 0) {
                        lifecycle_error(resp, r, id, "killed");
                        return;
                }
                resp->body = json_pack("{s:s}", "id", id);
        } else {
                r = vmm_await(d->vmm, c->account, id, status);
                if (r < 0) {
                        lifecycle_error(resp, r, id, "awaited");
                        return;
                }
                resp->body = json_pack("{s:s,s:s}", "id", id, "exitStatus", status);
        }
        resp->status = 200;
}

/* Validates a persistence object ({type: ...}) and returns it as JSON text
 * (malloc'd) in *ret, NULL when absent. */
static int persistence_text(json_t *body, const char *const *types, const char *code, char **ret,
                            struct http_resp *resp)
{
        json_t *v = json_object_get(body, "persistence");
        const char *type;

        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        type = json_string_value(json_object_get(v, "type"));
        for (int i = 0; type && types[i]; i++) {
                if (!strcmp(type, types[i])) {
                        *ret = json_dumps(v, JSON_COMPACT);
                        return 0;
                }
        }
        http_error(resp, 400, code, "persistence.type must be one of the documented kinds");
        return -EINVAL;
}

static void handle_snapshot_vm(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                               struct http_resp *resp)
{
        static const char *const kinds[] = {"sticky", "persistent", NULL};
        const char *name = NULL;
        char sid[24], *persistence = NULL;
        json_t *body = parse_body(req, resp, "INVALID_PARAMETERS");
        int r;

        if (!body)
                return;
        if (opt_string(body, "name", &name, resp, "INVALID_PARAMETERS") < 0 ||
            persistence_text(body, kinds, "INVALID_PARAMETERS", &persistence, resp) < 0)
                goto out;
        if (name && strlen(name) > 256) {
                http_error(resp, 400, "INVALID_PARAMETERS", "name is longer than 256 bytes");
                goto out;
        }
        r = vmm_snapshot(d->vmm, c->account, id, name, persistence, sid);
        if (r < 0) {
                lifecycle_error(resp, r, id, "snapshotted");
                goto out;
        }
        resp->status = 200;
        resp->body = json_pack("{s:s,s:s,s:n}", "snapshotId", sid, "sourceVmId", id, "sourceVmInstanceId");
out:
        free(persistence);
        json_decref(body);
}

static void handle_fork(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                        struct http_resp *resp)
{
        char ids[VMM_MAX_FORKS][21];
        int64_t count = 1;
        json_t *body = parse_body(req, resp, "INVALID_PARAMETERS"), *forks;
        int r;

        if (!body)
                return;
        r = opt_int(body, "count", 1, VMM_MAX_FORKS, &count, resp, "INVALID_PARAMETERS");
        json_decref(body);
        if (r < 0)
                return;
        r = vmm_fork(d->vmm, c->account, id, (int)count, ids);
        if (r == -EUSERS) {
                http_error(resp, 429, "VM_LIMIT_REACHED", "this server's limit on VMs is reached");
                return;
        }
        if (r < 0) {
                lifecycle_error(resp, r, id, "forked");
                return;
        }
        forks = json_array();
        for (int i = 0; i < count; i++)
                json_array_append_new(forks, json_pack("{s:s,s:[],s:n}", "id", ids[i], "domains", "consoleUrl"));
        resp->status = 200;
        resp->body = json_pack("{s:s,s:o}", "vmId", id, "forks", forks);
}

static void handle_optimize(struct sprout *d, const struct caller *c, const char *id, struct http_resp *resp)
{
        int r = vmm_optimize(d->vmm, c->account, id);

        if (r < 0) {
                lifecycle_error(resp, r, id, "optimized");
                return;
        }
        resp->status = 200;
        resp->body = json_pack("{s:s,s:s}", "id", id, "message",
                               "suspended; its disk now sits directly on the default snapshot");
}

static void handle_resize(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                          struct http_resp *resp)
{
        int64_t disk = 0, mem = 0, vcpus = 0;
        json_t *body = parse_body(req, resp, "INVALID_PARAMETERS");
        int r;

        if (!body)
                return;
        r = opt_int(body, "rootfsSizeGb", 0, 2048, &disk, resp, "INVALID_PARAMETERS");
        if (r == 0)
                r = opt_int(body, "memSizeGb", 0, 64, &mem, resp, "INVALID_PARAMETERS");
        if (r == 0)
                r = opt_int(body, "vcpuCount", 0, 64, &vcpus, resp, "INVALID_PARAMETERS");
        json_decref(body);
        if (r < 0)
                return;
        r = vmm_resize(d->vmm, c->account, id, disk, mem, vcpus);
        if (r == -EINVAL) {
                http_error(resp, 400, "INVALID_PARAMETERS", "resize only grows a VM: disk, memory and vCPUs cannot shrink");
                return;
        }
        if (r < 0) {
                lifecycle_error(resp, r, id, "resized");
                return;
        }
        resp->status = 200;
        resp->body = json_object();
}

/* ---- snapshots ---- */

static json_t *snapshot_json(struct sprout *d, const struct store_snapshot *s)
{
        char created[32];
        json_t *pers = s->persistence ? json_loads(s->persistence, 0, NULL) : NULL;

        format_time(s->created_at, created);
        if (!pers)
                pers = json_pack("{s:s,s:i}", "type", "sticky", "priority", 5);
        return json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:b,s:b,s:b,s:n,s:b,s:o,s:n,s:I}", "snapshotId", s->id, "state",
                         "ready", "sourceVmId", s->source_vm_id ? s->source_vm_id : "", "accountId", s->account_id,
                         "createdAt", created, "name", str_or_null(s->name), "failed", 0, "cancelled", 0, "lost", 0,
                         "failureReason", "deleted", s->deleted, "snapshotPersistence", pers, "buildId",
                         "diskUsageBytes", (json_int_t)(s->deleted ? 0 : vmm_layer_usage(d->vmm, s->layer)));
}

struct snap_list {
        struct sprout *d;
        json_t *arr;
        int include_deleted;
        int64_t total, deleted;
};

static int snap_one(const struct store_snapshot *s, void *ud)
{
        struct snap_list *l = ud;

        if (s->deleted)
                l->deleted++;
        if (s->deleted && !l->include_deleted)
                return 0;
        l->total++;
        return json_array_append_new(l->arr, snapshot_json(l->d, s)) < 0 ? -ENOMEM : 0;
}

static void handle_list_snapshots(struct sprout *d, const struct http_req *req, const struct caller *c,
                                  struct http_resp *resp)
{
        char *inc = http_query(req, "includeDeleted");
        struct snap_list l = {.d = d, .arr = json_array(), .include_deleted = inc && !strcmp(inc, "true")};
        int r;

        free(inc);
        r = store_snapshot_foreach(d->store, c->account, snap_one, &l);
        if (r < 0 || !l.arr) {
                json_decref(l.arr);
                http_error(resp, 500, "INTERNAL_ERROR", "could not list snapshots");
                return;
        }
        resp->status = 200;
        resp->body = json_pack("{s:o,s:I,s:i,s:I,s:i,s:i,s:i,s:I}", "snapshots", l.arr, "totalCount",
                               (json_int_t)l.total, "buildingCount", 0, "readyCount",
                               (json_int_t)(l.total - (l.include_deleted ? l.deleted : 0)), "failedCount", 0,
                               "cancelledCount", 0, "lostCount", 0, "deletedCount", (json_int_t)l.deleted);
}

static void handle_snapshot(struct sprout *d, const struct http_req *req, const struct caller *c, const char *sid,
                            struct http_resp *resp)
{
        struct store_snapshot snap = {0};
        const char *name = NULL;
        json_t *body;
        int r;

        if (api_parse_snapshot_id(sid) < 0 || store_snapshot_get(d->store, c->account, sid, &snap) < 0) {
                http_error(resp, 404, "SNAPSHOT_NOT_FOUND", "snapshot %.40s not found", sid);
                return;
        }
        if (method_is(req, "GET")) {
                resp->status = 200;
                resp->body = snapshot_json(d, &snap);
        } else if (method_is(req, "DELETE")) {
                r = vmm_snapshot_delete(d->vmm, c->account, sid);
                if (r == -EALREADY)
                        http_error(resp, 409, "SNAPSHOT_ALREADY_DELETED", "snapshot %s is already deleted", sid);
                else if (r < 0)
                        http_error(resp, 500, "INTERNAL_ERROR", "could not delete snapshot %s: %s", sid, strerror(-r));
                else {
                        resp->status = 200;
                        resp->body = json_pack("{s:s}", "snapshot_id", sid);
                }
        } else if (method_is(req, "PATCH")) {
                body = parse_body(req, resp, "INVALID_PARAMETERS");
                if (body && opt_string(body, "name", &name, resp, "INVALID_PARAMETERS") == 0) {
                        if (name && strlen(name) > 256)
                                http_error(resp, 400, "INVALID_PARAMETERS", "name is longer than 256 bytes");
                        else if ((r = store_snapshot_set_name(d->store, c->account, sid, name)) < 0)
                                http_error(resp, r == -ENOENT ? 409 : 500, r == -ENOENT ? "SNAPSHOT_ALREADY_DELETED"
                                                                                        : "INTERNAL_ERROR",
                                           "could not rename snapshot %s", sid);
                        else {
                                resp->status = 200;
                                resp->body = json_pack("{s:s,s:o}", "snapshot_id", sid, "name", str_or_null(name));
                        }
                }
                json_decref(body);
        } else {
                http_error(resp, 405, "METHOD_NOT_ALLOWED", "use GET, PATCH or DELETE");
        }
        store_snapshot_clear(&snap);
}

/* ---- systemd ---- */

/* Runs a root shell command in the guest for the systemd endpoints, for
 * at most timeout_ms; on success returns 0 with its stdout (malloc'd) and
 * exit code. Failures to reach the VM are answered in resp. */
static int guest_sh_for(struct sprout *d, const struct caller *c, const char *id, const char *cmd, int64_t timeout_ms,
                        char **ret_out, int *ret_code, struct http_resp *resp)
{
        struct vmm_result res = {0};
        struct vmm_exec e = {.command = cmd, .timeout_ms = timeout_ms};
        int r = vmm_exec(d->vmm, c->account, id, &e, &res);

        if (r < 0) {
                vm_error(resp, r, id);
                return r;
        }
        if (res.agent_errno || res.timed_out) {
                http_error(resp, 500, "INTERNAL_ERROR", "systemd command failed in VM %s: %s", id,
                           res.timed_out ? "timed out" : res.errmsg ? res.errmsg : strerror(res.agent_errno));
                vmm_result_clear(&res);
                return -EIO;
        }
        *ret_code = res.exit_code;
        *ret_out = strndup(res.reply.out.data ? (char *)res.reply.out.data : "", res.reply.out.len);
        if (!*ret_out) {
                vmm_result_clear(&res);
                http_error(resp, 500, "INTERNAL_ERROR", "out of memory");
                return -ENOMEM;
        }
        /* Keep stderr visible to callers that report it. */
        if (res.reply.err.len) {
                char *both = NULL;

                if (asprintf(&both, "%s%.*s", *ret_out, (int)res.reply.err.len, (char *)res.reply.err.data) >= 0) {
                        free(*ret_out);
                        *ret_out = both;
                }
        }
        vmm_result_clear(&res);
        return 0;
}

static int guest_sh(struct sprout *d, const struct caller *c, const char *id, const char *cmd, char **ret_out,
                    int *ret_code, struct http_resp *resp)
{
        return guest_sh_for(d, c, id, cmd, 120000, ret_out, ret_code, resp);
}

/* Validates a service id from a URL or body into its bare name. */
static char *service_name(const char *raw, struct http_resp *resp)
{
        char msg[160];
        const char *code = sysd_check_name(raw, msg, sizeof(msg));

        if (code) {
                http_error(resp, 400, code, "%s", msg);
                return NULL;
        }
        return sysd_base_name(raw);
}

/* Checks spec (a service, or with patch set a drop-in over one) and
 * renders its unit text; *ret_name is the bare name. Answers 400 in resp
 * when spec is malformed. */
static char *service_unit(json_t *spec, const char *user, int patch, char **ret_name, struct http_resp *resp)
{
        const char *code, *raw = json_string_value(json_object_get(spec, "name"));
        char msg[256], *name, *unit;

        *ret_name = NULL;
        name = service_name(raw ? raw : "", resp);
        if (!name)
                return NULL;
        unit = sysd_render(spec, user, patch, &code, msg, sizeof(msg));
        if (!unit) {
                http_error(resp, 400, code, "service %s: %s", name, msg);
                free(name);
                return NULL;
        }
        *ret_name = name;
        return unit;
}

/* Writes the unit file of the service described by spec, refusing to
 * replace one (-EEXIST, 409); *ret_name is its bare name (malloc'd).
 * Failures are answered in resp. */
static int install_service(struct sprout *d, const struct caller *c, const char *id, json_t *spec, const char *user,
                           char **ret_name, struct http_resp *resp)
{
        char *name = NULL, *unit = NULL, *path = NULL, *cmd = NULL, *out = NULL;
        struct vmm_result res = {0};
        int r = -EINVAL, exit_code;

        unit = service_unit(spec, user, 0, &name, resp);
        if (!unit)
                goto out;
        if (asprintf(&path, SYSD_UNIT_DIR "/%s.service", name) < 0 ||
            asprintf(&cmd, "test -e %s && exit 17; exit 0", path) < 0) {
                http_error(resp, 500, "INTERNAL_ERROR", "out of memory");
                r = -ENOMEM;
                goto out;
        }
        r = guest_sh(d, c, id, cmd, &out, &exit_code, resp);
        if (r < 0)
                goto out;
        if (exit_code == 17) {
                http_error(resp, 409, "SERVICE_ALREADY_EXISTS", "service %s already exists", name);
                r = -EEXIST;
                goto out;
        }
        r = vmm_write(d->vmm, c->account, id, path, NULL, unit, strlen(unit), 0644, &res);
        if (r < 0 || res.agent_errno) {
                if (r < 0)
                        vm_error(resp, r, id);
                else
                        http_error(resp, 500, "INTERNAL_ERROR", "writing %s: %s", path, strerror(res.agent_errno));
                r = r < 0 ? r : -EIO;
                goto out;
        }
        *ret_name = name;
        name = NULL;
        r = 0;
out:
        vmm_result_clear(&res);
        free(name);
        free(unit);
        free(path);
        free(cmd);
        free(out);
        return r;
}

/* Writes and starts one service described by spec. On success fills
 * resp; returns -EEXIST when the unit already exists. */
static int create_service(struct sprout *d, const struct caller *c, const char *id, json_t *spec, const char *user,
                          struct http_resp *resp)
{
        char *name = NULL, *cmd = NULL, *out = NULL;
        int r, exit_code;

        r = install_service(d, c, id, spec, user, &name, resp);
        if (r < 0)
                goto out;
        /* A oneshot may run long: start it without waiting for it to end.
         * The name was checked: it needs no quoting. */
        {
                int enable = sysd_wants_enable(spec);
                int oneshot = !strcmp(json_string_value(json_object_get(spec, "mode")), "oneshot");

                /* A service that dies at once still "starts": look again a
                 * moment later and report it failed. */
                if (asprintf(&cmd,
                             "systemctl daemon-reload && %s%s%s systemctl start %s %s.service && "
                             "{ %s ! systemctl is-failed -q %s.service || "
                             "{ echo 'the service failed right after starting'; exit 1; }; }",
                             enable ? "systemctl enable -q " : "", enable ? name : "", enable ? ".service 2>&1 &&" : "",
                             oneshot ? "--no-block" : "", name, oneshot ? "" : "sleep 0.5;", name) < 0) {
                        cmd = NULL;
                        r = -ENOMEM;
                        goto out;
                }
        }
        r = guest_sh(d, c, id, cmd, &out, &exit_code, resp);
        if (r < 0)
                goto out;
        resp->status = 200;
        if (exit_code == 0)
                resp->body = json_pack("{s:b,s:s,s:s+}", "success", 1, "message", "service created and started",
                                       "serviceName", name, ".service");
        else
                resp->body = json_pack("{s:b,s:s,s:s+}", "success", 0, "message", out, "serviceName", name, ".service");
        r = 0;
out:
        free(name);
        free(cmd);
        free(out);
        return r;
}

static void handle_services(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                            struct http_resp *resp)
{
        char *out = NULL, *user = NULL, *line, *save = NULL;
        json_t *body, *list;
        int code;

        if (method_is(req, "POST")) {
                if (linux_user(req, &user, resp) < 0)
                        return;
                body = parse_body(req, resp, "INVALID_PARAMETERS");
                if (body)
                        create_service(d, c, id, body, user, resp);
                json_decref(body);
                free(user);
                return;
        }
        if (!method_is(req, "GET")) {
                http_error(resp, 405, "METHOD_NOT_ALLOWED", "use GET or POST");
                return;
        }
        if (guest_sh(d, c, id, "grep -l -x '" SYSD_MARKER "' " SYSD_UNIT_DIR "/*.service 2>/dev/null; exit 0", &out,
                     &code, resp) < 0)
                return;
        list = json_array();
        for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *base = strrchr(line, '/'), *n;

                base = base ? base + 1 : line;
                n = sysd_base_name(base);
                if (n)
                        json_array_append_new(list, json_pack("{s:s}", "name", n));
                free(n);
        }
        free(out);
        resp->status = 200;
        resp->body = json_pack("{s:o}", "services", list);
}

static void handle_service(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                           const char *sid, const char *what, struct http_resp *resp)
{
        char *name = service_name(sid, resp), *cmd = NULL, *out = NULL;
        int code;

        if (!name)
                return;
        if (!what && method_is(req, "DELETE")) {
                if (asprintf(&cmd,
                             "f=" SYSD_UNIT_DIR "/%1$s.service; grep -q -x '" SYSD_MARKER "' \"$f\" 2>/dev/null || exit 44;"
                             " systemctl disable --now -q %1$s.service 2>/dev/null; rm -rf \"$f\" \"$f.d\";"
                             " systemctl daemon-reload; systemctl reset-failed %1$s.service 2>/dev/null; exit 0",
                             name) < 0)
                        goto out;
                if (guest_sh(d, c, id, cmd, &out, &code, resp) < 0)
                        goto out;
                if (code == 44) {
                        http_error(resp, 404, "SERVICE_NOT_FOUND", "service %s not found", name);
                } else {
                        resp->status = 200;
                        resp->body = json_pack("{s:b,s:s}", "success", 1, "message", "service deleted");
                }
        } else if (what && !strcmp(what, "status") && method_is(req, "GET")) {
                if (asprintf(&cmd, "systemctl show %s.service -p LoadState -p ActiveState -p SubState -p Description",
                             name) < 0)
                        goto out;
                if (guest_sh(d, c, id, cmd, &out, &code, resp) < 0)
                        goto out;
                json_t *st = json_pack("{s:s}", "name", name);
                char *line, *save = NULL;

                for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                        char *eq = strchr(line, '=');
                        size_t n;
                        char *v;

                        if (!eq)
                                continue;
                        *eq = 0;
                        v = utf8_sanitize(eq + 1, strlen(eq + 1), &n);
                        if (!strcmp(line, "LoadState"))
                                json_object_set_new(st, "loadState", json_string(v));
                        else if (!strcmp(line, "ActiveState"))
                                json_object_set_new(st, "activeState", json_string(v));
                        else if (!strcmp(line, "SubState"))
                                json_object_set_new(st, "subState", json_string(v));
                        else if (!strcmp(line, "Description"))
                                json_object_set_new(st, "description", json_string(v));
                        free(v);
                }
                const char *load = json_string_value(json_object_get(st, "loadState"));
                if (!load || !strcmp(load, "not-found")) {
                        json_decref(st);
                        http_error(resp, 404, "SERVICE_NOT_FOUND", "service %s not found", name);
                } else {
                        resp->status = 200;
                        resp->body = st;
                }
        } else if (what && !strcmp(what, "logs") && method_is(req, "GET")) {
                int64_t lines = 100;
                char *since = http_query(req, "since"), *q = NULL;

                if (query_int(req, "lines", &lines, resp) < 0) {
                        free(since);
                        goto out;
                }
                if (since && *since)
                        q = sysd_shell_quote(since);
                if (asprintf(&cmd,
                             "[ \"$(systemctl show -p LoadState --value %s.service)\" = not-found ] && exit 44;"
                             " journalctl -u %s.service -o json --no-pager -n %lld %s%s 2>/dev/null; exit 0",
                             name, name, (long long)(lines > 10000 ? 10000 : lines), q ? "--since " : "",
                             q ? q : "") < 0)
                        cmd = NULL;
                free(since);
                free(q);
                if (!cmd || guest_sh(d, c, id, cmd, &out, &code, resp) < 0)
                        goto out;
                if (code == 44) {
                        http_error(resp, 404, "SERVICE_NOT_FOUND", "service %s not found", name);
                        goto out;
                }
                json_t *logs = json_array();
                char *line, *save = NULL;

                for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                        json_t *e = json_loads(line, 0, NULL);
                        const char *msg = json_string_value(json_object_get(e, "MESSAGE"));
                        const char *ts = json_string_value(json_object_get(e, "__REALTIME_TIMESTAMP"));
                        char when[32];

                        if (msg && ts) {
                                format_time(strtoll(ts, NULL, 10) / 1000, when);
                                json_array_append_new(logs, json_pack("{s:s,s:s,s:o,s:o}", "message", msg, "timestamp",
                                                                      when, "priority",
                                                                      str_or_null(json_string_value(json_object_get(e, "PRIORITY"))),
                                                                      "unit", str_or_null(json_string_value(json_object_get(e, "_SYSTEMD_UNIT")))));
                        }
                        json_decref(e);
                }
                resp->status = 200;
                resp->body = json_pack("{s:o}", "logs", logs);
        } else {
                http_error(resp, 405, "METHOD_NOT_ALLOWED", "no such operation on a service");
        }
out:
        free(name);
        free(cmd);
        free(out);
}

static void handle_service_batch(struct sprout *d, const struct http_req *req, const struct caller *c,
                                 const char *id, const char *op, struct http_resp *resp)
{
        json_t *body = parse_body(req, resp, "INVALID_PARAMETERS"), *list, *results, *item;
        size_t i;

        if (!body)
                return;
        list = json_object_get(body, "services");
        if (!json_is_array(list) || json_array_size(list) > 64) {
                http_error(resp, 400, "INVALID_PARAMETERS", "'services' must be a list of at most 64 {id}");
                json_decref(body);
                return;
        }
        results = json_array();
        json_array_foreach(list, i, item) {
                const char *sid = json_string_value(json_object_get(item, "id"));
                struct http_resp sub = {0};
                char *name = service_name(sid ? sid : "", &sub), *cmd = NULL, *out = NULL;
                int code = -1;

                if (name && asprintf(&cmd, "systemctl %s %s.service 2>&1", op, name) >= 0 &&
                    guest_sh(d, c, id, cmd, &out, &code, &sub) == 0) {
                        json_array_append_new(results, json_pack("{s:s,s:b,s:s}", "serviceId", sid, "success", code == 0,
                                                                 "message", code == 0 ? "ok" : out));
                } else if (sub.status == 404 && !strcmp(json_string_value(json_object_get(sub.body, "code")), "VM_NOT_FOUND")) {
                        *resp = sub;
                        sub.body = NULL;
                        free(name), free(cmd), free(out);
                        json_decref(results);
                        json_decref(body);
                        return;
                } else {
                        const char *m = json_string_value(json_object_get(sub.body, "message"));

                        json_array_append_new(results, json_pack("{s:s,s:b,s:s}", "serviceId", sid ? sid : "", "success",
                                                                 0, "message", m ? m : "failed"));
                }
                json_decref(sub.body);
                free(name);
                free(cmd);
                free(out);
        }
        json_decref(body);
        resp->status = 200;
        resp->body = json_pack("{s:o}", "results", results);
}

/* ---- create-time setup ---- */

static int valid_unix_name(const char *s)
{
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > 32 || !(islower((unsigned char)s[0]) || s[0] == '_'))
                return 0;
        for (size_t i = 1; i < n; i++)
                if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_' || s[i] == '-'))
                        return 0;
        return 1;
}

static int valid_package(const char *s)
{
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > 128 || !isalnum((unsigned char)s[0]))
                return 0;
        for (size_t i = 0; i < n; i++)
                if (!(isalnum((unsigned char)s[i]) || strchr("+-.:=~_", s[i])))
                        return 0;
        return 1;
}

/* Appends a shell-quoted word (with a leading space) to a command. */
static int add_word(char **cmd, const char *word)
{
        char *q = sysd_shell_quote(word), *n = NULL;
        int r = q && asprintf(&n, "%s %s", *cmd, q) >= 0 ? 0 : -ENOMEM;

        free(q);
        if (r == 0) {
                free(*cmd);
                *cmd = n;
        }
        return r;
}

/* Builds the shell script for groups, users, git and apt packages, or
 * answers 400 for a malformed entry. The script stops at the first failing
 * step and names it on stderr. */
static char *setup_script(json_t *body, struct http_resp *resp)
{
        json_t *groups = json_object_get(body, "groups"), *users = json_object_get(body, "users");
        json_t *git = json_object_get(body, "git"), *apt = json_object_get(body, "aptDeps"), *v;
        char *cmd = strdup("set -e; step() { echo \"setup step: $*\" >&2; };");
        size_t i;

#define BAD(...)                                                                                                       \
        do {                                                                                                           \
                http_error(resp, 400, "CREATE_VM_BAD_REQUEST", __VA_ARGS__);                                           \
                free(cmd);                                                                                             \
                return NULL;                                                                                           \
        } while (0)
#define ADD(s)                                                                                                         \
        do {                                                                                                           \
                char *n_ = NULL;                                                                                       \
                if (!cmd || asprintf(&n_, "%s%s", cmd, (s)) < 0)                                                       \
                        BAD("out of memory");                                                                          \
                free(cmd);                                                                                             \
                cmd = n_;                                                                                              \
        } while (0)
#define WORD(w)                                                                                                        \
        do {                                                                                                           \
                if (add_word(&cmd, (w)) < 0)                                                                           \
                        BAD("out of memory");                                                                          \
        } while (0)

        if (groups && !json_is_null(groups)) {
                if (!json_is_array(groups))
                        BAD("'groups' must be a list");
                json_array_foreach(groups, i, v) {
                        const char *name = json_string_value(json_object_get(v, "name"));
                        json_t *gid = json_object_get(v, "gid");
                        char num[32];

                        if (!valid_unix_name(name))
                                BAD("groups[%zu].name is not a valid group name", i);
                        ADD(" step group");
                        WORD(name);
                        ADD("; getent group");
                        WORD(name);
                        ADD(" >/dev/null || groupadd");
                        if (json_is_true(json_object_get(v, "system")))
                                ADD(" -r");
                        if (json_is_integer(gid) && json_integer_value(gid) >= 0 && json_integer_value(gid) < 65536) {
                                snprintf(num, sizeof(num), " -g %lld", (long long)json_integer_value(gid));
                                ADD(num);
                        }
                        WORD(name);
                        ADD(";");
                }
        }
        if (users && !json_is_null(users)) {
                if (!json_is_array(users))
                        BAD("'users' must be a list");
                json_array_foreach(users, i, v) {
                        const char *name = json_string_value(json_object_get(v, "name"));
                        const char *gecos = json_string_value(json_object_get(v, "gecos"));
                        const char *home = json_string_value(json_object_get(v, "home"));
                        const char *shell = json_string_value(json_object_get(v, "shell"));
                        json_t *uid = json_object_get(v, "uid"), *ug = json_object_get(v, "groups"), *g;
                        int sys = json_is_true(json_object_get(v, "system"));
                        char num[32];
                        size_t k;

                        if (!valid_unix_name(name))
                                BAD("users[%zu].name is not a valid user name", i);
                        if ((home && home[0] != '/') || (shell && shell[0] != '/') || (gecos && strpbrk(gecos, ":\n")))
                                BAD("users[%zu]: home and shell must be absolute paths, gecos one line without ':'", i);
                        ADD(" step user");
                        WORD(name);
                        ADD("; id -u");
                        WORD(name);
                        ADD(" >/dev/null 2>&1 || useradd");
                        ADD(sys ? " -r" : " -m");
                        if (json_is_integer(uid) && json_integer_value(uid) >= 0 && json_integer_value(uid) < 65536) {
                                snprintf(num, sizeof(num), " -u %lld", (long long)json_integer_value(uid));
                                ADD(num);
                        }
                        if (gecos) {
                                ADD(" -c");
                                WORD(gecos);
                        }
                        if (home) {
                                ADD(" -d");
                                WORD(home);
                        }
                        ADD(" -s");
                        WORD(shell ? shell : sys ? "/usr/sbin/nologin" : "/bin/bash");
                        WORD(name);
                        ADD(";");
                        json_array_foreach(ug, k, g) {
                                if (!valid_unix_name(json_string_value(g)))
                                        BAD("users[%zu].groups has an invalid group name", i);
                                ADD(" usermod -aG");
                                WORD(json_string_value(g));
                                WORD(name);
                                ADD(";");
                        }
                }
        }
        if (git && json_is_object(git)) {
                json_t *gu = json_object_get(json_object_get(git, "config"), "user");
                json_t *repos = json_object_get(git, "repos");
                static const char *const keys[] = {"name", "email", "signingkey"};

                for (size_t k = 0; k < 3; k++) {
                        const char *val = json_string_value(json_object_get(gu, keys[k]));

                        if (!val)
                                continue;
                        ADD(" step git config; git config --system");
                        WORD(k == 0 ? "user.name" : k == 1 ? "user.email" : "user.signingkey");
                        WORD(val);
                        ADD(";");
                }
                json_array_foreach(repos, i, v) {
                        const char *repo = json_string_value(json_object_get(v, "repo"));
                        const char *path = json_string_value(json_object_get(v, "path"));
                        const char *rev = json_string_value(json_object_get(v, "rev"));

                        if (!repo || !*repo || !path || path[0] != '/' || (rev && (!*rev || rev[0] == '-')))
                                BAD("git.repos[%zu] needs a repo, an absolute path and an optional rev", i);
                        ADD(" step git clone");
                        WORD(repo);
                        ADD("; git clone -q --");
                        WORD(repo);
                        WORD(path);
                        ADD(";");
                        if (rev) {
                                ADD(" git -C");
                                WORD(path);
                                ADD(" -c advice.detachedHead=false checkout -q");
                                WORD(rev);
                                ADD(" --;");
                        }
                }
        }
        if (apt && !json_is_null(apt)) {
                if (!json_is_array(apt))
                        BAD("'aptDeps' must be a list of package names");
                if (json_array_size(apt) > 0) {
                        ADD(" step apt-get install; export DEBIAN_FRONTEND=noninteractive;"
                            " apt-get -q update >/dev/null && apt-get install -y -q --no-install-recommends");
                        json_array_foreach(apt, i, v) {
                                if (!valid_package(json_string_value(v)))
                                        BAD("aptDeps[%zu] is not a valid package name", i);
                                WORD(json_string_value(v));
                        }
                        ADD(" >/dev/null;");
                }
        }
        return cmd;
#undef BAD
#undef ADD
#undef WORD
}

#define SETUP_MAX_SERVICES 64

/* Answers 400 for a malformed create-time setup entry (additionalFiles,
 * groups, users, git, aptDeps, systemd), so that a create never starts a
 * VM for a request it then refuses. */
static int check_setup(json_t *body, struct http_resp *resp)
{
        static const char *const lists[] = {"services", "patchedServices"};
        json_t *files = json_object_get(body, "additionalFiles"), *sd = json_object_get(body, "systemd"), *v;
        const char *path;
        char *text;
        size_t i;

        json_object_foreach(files, path, v) {
                const char *why = "must be an object with a 'content'";
                uint8_t *data = NULL;
                size_t len = 0;

                if (!json_is_object(v) || file_content(v, &data, &len, &why) < 0) {
                        http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "additionalFiles['%s']: %s", path, why);
                        free(data);
                        return -EINVAL;
                }
                free(data);
        }
        text = setup_script(body, resp);
        if (!text)
                return -EINVAL;
        free(text);
        if (sd && !json_is_null(sd) && !json_is_object(sd)) {
                http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "'systemd' must be an object");
                return -EINVAL;
        }
        for (size_t k = 0; k < 2; k++) {
                json_t *list = json_object_get(sd, lists[k]);

                if (!list || json_is_null(list))
                        continue;
                if (!json_is_array(list) || json_array_size(list) > SETUP_MAX_SERVICES) {
                        http_error(resp, 400, "CREATE_VM_BAD_REQUEST", "systemd.%s must be a list of at most %d services",
                                   lists[k], SETUP_MAX_SERVICES);
                        return -EINVAL;
                }
                json_array_foreach(list, i, v) {
                        struct http_resp sub = {0};
                        char *name = NULL, *unit = service_unit(v, NULL, k == 1, &name, &sub);
                        const char *code = json_string_value(json_object_get(sub.body, "code"));
                        const char *msg = json_string_value(json_object_get(sub.body, "message"));
                        int bad = !unit;

                        if (bad)
                                http_error(resp, 400, code ? code : "CREATE_VM_BAD_REQUEST", "systemd.%s[%zu]: %s",
                                           lists[k], i, msg ? msg : "invalid");
                        json_decref(sub.body);
                        free(name);
                        free(unit);
                        if (bad)
                                return -EINVAL;
                }
        }
        return 0;
}

/* How long the next setup step may take: at most cap ms (0: no cap) and
 * no later than deadline (now_ms(); 0: none), in *ret_ms (0: unbounded).
 * Answers VM_SETUP_FAILED once the deadline has passed. */
static int setup_time(int64_t deadline, int64_t cap, int64_t *ret_ms, struct http_resp *resp)
{
        int64_t left = deadline ? deadline - now_ms() : 0;

        if (deadline && left <= 0) {
                http_error(resp, 500, "VM_SETUP_FAILED", "VM setup timed out (readySignalTimeoutSeconds)");
                return -ETIMEDOUT;
        }
        *ret_ms = !deadline ? cap : cap && cap < left ? cap : left;
        return 0;
}

/* guest_sh for a setup step: bounded by the deadline as setup_time says,
 * and any failure answered as VM_SETUP_FAILED. */
static int setup_sh(struct sprout *d, const struct caller *c, const char *id, const char *cmd, int64_t deadline,
                    int64_t cap, char **ret_out, int *ret_code, struct http_resp *resp)
{
        struct http_resp sub = {0};
        int64_t ms;
        const char *m;
        int r = setup_time(deadline, cap, &ms, resp);

        if (r < 0)
                return r;
        r = guest_sh_for(d, c, id, cmd, ms, ret_out, ret_code, &sub);
        if (r < 0) {
                m = json_string_value(json_object_get(sub.body, "message"));
                http_error(resp, 500, "VM_SETUP_FAILED", "VM setup failed: %s", m ? m : "error");
        }
        json_decref(sub.body);
        return r;
}

/* Appends " NAME.service" to a list of units; NAME was checked. */
static int add_unit(char **list, const char *name)
{
        char *n = NULL;

        if (asprintf(&n, "%s %s.service", *list ? *list : "", name) < 0)
                return -ENOMEM;
        free(*list);
        *list = n;
        return 0;
}

/* Answers VM_SETUP_FAILED for a service that did not come up, with its
 * last log lines as diagnostics. */
static void service_failed(struct sprout *d, const struct caller *c, const char *id, const char *name,
                           const char *why, struct http_resp *resp)
{
        struct http_resp sub = {0};
        char *logs = NULL, *cmd = NULL;
        int k = 0;

        if (asprintf(&cmd, "journalctl -u %s.service --no-pager -n 50 2>&1", name) >= 0)
                guest_sh(d, c, id, cmd, &logs, &k, &sub);
        json_decref(sub.body);
        http_error(resp, 500, "VM_SETUP_FAILED", "service %s failed to start: %s", name, why);
        json_object_set_new(resp->body, "diagnostics",
                            json_pack("{s:[{s:s,s:s?}]}", "failedUnits", "name", name, "logs", logs));
        free(cmd);
        free(logs);
}

/* systemd.patchedServices: a drop-in over each unit (one the image has),
 * a reload, and a restart of the patched units that are running, since a
 * VM restored from a snapshot started them before the patch existed; the
 * patch then takes effect as if the VM had booted with it. */
static int apply_patches(struct sprout *d, const struct caller *c, const char *id, json_t *patched,
                         int64_t deadline, struct http_resp *resp)
{
        char *units = NULL, *cmd = NULL, *out = NULL;
        int r = -EIO, code = 0;
        size_t i;
        json_t *v;

        json_array_foreach(patched, i, v) {
                struct http_resp sub = {0};
                struct vmm_result res = {0};
                char *name = NULL, *unit = service_unit(v, NULL, 1, &name, &sub), *path = NULL;
                int k = unit ? 0 : -EINVAL; /* check_setup passed it */

                json_decref(sub.body);
                if (k == 0 && asprintf(&path, SYSD_UNIT_DIR "/%s.service.d/50-sprout.conf", name) < 0) {
                        path = NULL;
                        k = -ENOMEM;
                }
                if (k == 0)
                        k = vmm_write(d->vmm, c->account, id, path, NULL, unit, strlen(unit), 0644, &res);
                if (k == 0 && res.agent_errno)
                        k = -res.agent_errno;
                if (k == 0)
                        k = add_unit(&units, name);
                if (k < 0)
                        http_error(resp, 500, "VM_SETUP_FAILED", "writing systemd.patchedServices[%zu] failed: %s", i,
                                   res.errmsg ? res.errmsg : strerror(-k));
                vmm_result_clear(&res);
                free(name);
                free(unit);
                free(path);
                if (k < 0)
                        goto out;
        }
        if (!units) {
                r = 0;
                goto out;
        }
        if (asprintf(&cmd, "systemctl daemon-reload && systemctl try-restart%s 2>&1", units) < 0) {
                cmd = NULL;
                http_error(resp, 500, "VM_SETUP_FAILED", "out of memory");
                goto out;
        }
        if (setup_sh(d, c, id, cmd, deadline, 120000, &out, &code, resp) < 0)
                goto out;
        if (code != 0) {
                http_error(resp, 500, "VM_SETUP_FAILED", "restarting the patched services failed: %s", out);
                goto out;
        }
        r = 0;
out:
        free(units);
        free(cmd);
        free(out);
        return r;
}

/* systemd.services: every unit is written first, then all are started in
 * one transaction, as a boot starts them. Units that require each other
 * then each run once, in order, even when one deletes itself after success
 * (deleteAfterSuccess, as in the SDK's runCommands chains) before the next
 * one starts. A oneshot may run long and is not waited for; for a
 * long-running service the create waits until its start is done (after
 * the units it is ordered after) and checks that it came up. */
static int start_services(struct sprout *d, const struct caller *c, const char *id, json_t *services,
                          int64_t deadline, struct http_resp *resp)
{
        size_t n = json_array_size(services), i;
        char **names = calloc(n + 1, sizeof(*names)), *enable = NULL, *start = NULL, *cmd = NULL, *out = NULL;
        int r = -EIO, code = 0;
        json_t *v;

        if (!names) {
                http_error(resp, 500, "VM_SETUP_FAILED", "out of memory");
                return -ENOMEM;
        }
        json_array_foreach(services, i, v) {
                struct http_resp sub = {0};

                if (install_service(d, c, id, v, NULL, &names[i], &sub) < 0) {
                        const char *m = json_string_value(json_object_get(sub.body, "message"));

                        http_error(resp, 500, "VM_SETUP_FAILED", "systemd.services[%zu] could not be written: %s", i,
                                   m ? m : "error");
                        json_decref(sub.body);
                        goto out;
                }
                if ((sysd_wants_enable(v) && add_unit(&enable, names[i]) < 0) || add_unit(&start, names[i]) < 0) {
                        http_error(resp, 500, "VM_SETUP_FAILED", "out of memory");
                        goto out;
                }
        }
        if (asprintf(&cmd, "systemctl daemon-reload && %s%s%s systemctl start --no-block%s 2>&1",
                     enable ? "systemctl enable -q" : "", enable ? enable : "", enable ? " 2>&1 &&" : "", start) < 0) {
                cmd = NULL;
                http_error(resp, 500, "VM_SETUP_FAILED", "out of memory");
                goto out;
        }
        if (setup_sh(d, c, id, cmd, deadline, 120000, &out, &code, resp) < 0)
                goto out;
        if (code != 0) {
                http_error(resp, 500, "VM_SETUP_FAILED", "starting the services failed: %s", out);
                json_object_set_new(resp->body, "diagnostics", json_pack("{s:s}", "stderr", out));
                goto out;
        }
        json_array_foreach(services, i, v) {
                if (!strcmp(json_string_value(json_object_get(v, "mode")), "oneshot"))
                        continue;
                free(cmd);
                free(out);
                out = NULL;
                /* Its start job ends once it runs (or failed, or a unit it
                 * requires did); a service that dies at once still
                 * "started": look again a moment later. */
                if (asprintf(&cmd,
                             "u=%s.service; while [ -n \"$(systemctl show -p Job --value $u)\" ]; do sleep 0.2; done;"
                             " sleep 0.5; systemctl is-failed -q $u && { echo 'the service failed right after starting';"
                             " exit 1; }; [ \"$(systemctl show -p ActiveState --value $u)\" = inactive ] &&"
                             " [ \"$(systemctl show -p ExecMainStartTimestampMonotonic --value $u)\" = 0 ] &&"
                             " { echo 'the service never started (did a unit it requires fail?)'; exit 1; }; exit 0",
                             names[i]) < 0) {
                        cmd = NULL;
                        http_error(resp, 500, "VM_SETUP_FAILED", "out of memory");
                        goto out;
                }
                if (setup_sh(d, c, id, cmd, deadline, 0, &out, &code, resp) < 0)
                        goto out;
                if (code != 0) {
                        out[strcspn(out, "\n")] = 0;
                        service_failed(d, c, id, names[i], out, resp);
                        goto out;
                }
        }
        r = 0;
out:
        for (i = 0; i < n; i++)
                free(names[i]);
        free(names);
        free(enable);
        free(start);
        free(cmd);
        free(out);
        return r;
}

/* Applies create-time setup to a new VM: groups, users, git, packages,
 * then systemd drop-ins and services (which may need all of those), all
 * before deadline (now_ms(); 0: none). On failure answers VM_SETUP_FAILED
 * with what failed and returns -1. The body passed check_setup. */
static int run_setup(struct sprout *d, const struct caller *c, const char *id, json_t *body, int64_t deadline,
                     struct http_resp *resp)
{
        json_t *sd = json_object_get(body, "systemd"), *services = json_object_get(sd, "services");
        json_t *patched = json_object_get(sd, "patchedServices");
        char *script = setup_script(body, resp);
        struct vmm_result res = {0};
        int64_t ms = 0;
        int r;

        if (!script)
                return -1;
        if (setup_time(deadline, 0, &ms, resp) < 0) {
                free(script);
                return -1;
        }
        struct vmm_exec e = {.command = script, .timeout_ms = ms};
        /* Most creates ask for no setup: spare them a process in the guest. */
        r = strstr(script, " step ") ? vmm_exec(d->vmm, c->account, id, &e, &res) : 0;
        free(script);
        if (r < 0 || res.agent_errno || res.timed_out || res.exit_code != 0) {
                size_t n = 0;
                char *err = utf8_sanitize(res.reply.err.data ? (char *)res.reply.err.data : "", res.reply.err.len, &n);

                http_error(resp, 500, "VM_SETUP_FAILED", "VM setup failed: %s",
                           r < 0 ? strerror(-r) : res.timed_out ? "timed out" : err ? err : "error");
                json_object_set_new(resp->body, "diagnostics", json_pack("{s:s?}", "stderr", err));
                free(err);
                vmm_result_clear(&res);
                return -1;
        }
        vmm_result_clear(&res);
        if (json_array_size(patched) > 0 && apply_patches(d, c, id, patched, deadline, resp) < 0)
                return -1;
        if (json_array_size(services) > 0 && start_services(d, c, id, services, deadline, resp) < 0)
                return -1;
        return 0;
}

/* A create's setup as handed to the VM manager: all it needs, since a
 * create that does not wait has answered its request before it runs. */
struct create_setup {
        struct sprout *d;
        struct caller c;       /* the account is a copy */
        json_t *body;          /* a reference; only read */
        int64_t timeout_s;     /* readySignalTimeoutSeconds: bounds the setup; 0: no bound */
        struct http_resp resp; /* the answer when it failed */
};

static struct create_setup *create_setup_new(struct sprout *d, const struct caller *c, json_t *body,
                                             int64_t timeout_s)
{
        struct create_setup *x = calloc(1, sizeof(*x));

        if (!x)
                return NULL;
        x->c.account = strdup(c->account);
        if (!x->c.account) {
                free(x);
                return NULL;
        }
        x->d = d;
        x->c.admin = c->admin;
        x->body = json_incref(body);
        x->timeout_s = timeout_s;
        return x;
}

/* vmm_setup.run: additionalFiles, then run_setup. */
static int create_setup_run(void *ud, const char *id, char **ret_error)
{
        struct create_setup *x = ud;
        json_t *files = json_object_get(x->body, "additionalFiles");
        int64_t deadline = x->timeout_s > 0 ? now_ms() + x->timeout_s * 1000 : 0;

        if ((json_is_object(files) && write_additional_files(x->d, &x->c, id, files, &x->resp) < 0) ||
            run_setup(x->d, &x->c, id, x->body, deadline, &x->resp) < 0) {
                if (!x->resp.body)
                        http_error(&x->resp, 500, "VM_SETUP_FAILED", "VM setup failed");
                *ret_error = json_dumps(x->resp.body, JSON_COMPACT);
                return -EIO;
        }
        return 0;
}

/* Moves the failure answer of a setup that ran (and failed) into resp. */
static void create_setup_answer(struct create_setup *x, struct http_resp *resp)
{
        json_decref(resp->body);
        *resp = x->resp;
        memset(&x->resp, 0, sizeof(x->resp));
        if (!resp->body)
                http_error(resp, 500, "VM_SETUP_FAILED", "VM setup failed");
}

/* vmm_setup.release; NULL is a no-op. */
static void create_setup_free(void *ud)
{
        struct create_setup *x = ud;

        if (!x)
                return;
        json_decref(x->body);
        json_decref(x->resp.body);
        free(x->c.account);
        free(x);
}

/* ---- stats stream ---- */

struct stats_stream {
        struct sprout *d;
        char *account;
        char id[21];
        int interval_ms;
        int samples;
        unsigned long long prev_total, prev_idle;
};

/* Reads a small /proc file in the guest through the agent (no process is
 * started). Returns a malloc'd NUL-terminated text or NULL. */
static char *guest_proc(struct stats_stream *s, const char *path, int *ret_err)
{
        struct vmm_result res = {0};
        char *text = NULL;
        int r = vmm_read(s->d->vmm, s->account, s->id, path, NULL, &res);

        *ret_err = r;
        if (r == 0 && !res.agent_errno)
                text = strndup(res.reply.data.data ? (char *)res.reply.data.data : "", res.reply.data.len);
        vmm_result_clear(&res);
        return text;
}

static unsigned long long meminfo_kb(const char *text, const char *key)
{
        const char *p = text ? strstr(text, key) : NULL;

        return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

static long stats_next(void *ctx, char *buf, size_t max)
{
        struct stats_stream *s = ctx;
        unsigned long long v[10] = {0}, total = 0, idle, mem_total, mem_avail;
        char *mem, *stat, *load, when[32], *line;
        double cpu_pct = 0, l1 = 0, l5 = 0, l15 = 0;
        int err, cpus = 0;
        json_t *j;
        long n;

        if (s->samples++ > 0)
                sleep_ms(s->interval_ms);
        mem = guest_proc(s, "/proc/meminfo", &err);
        if (err < 0)
                return -1; /* the VM is gone: end the stream */
        stat = guest_proc(s, "/proc/stat", &err);
        load = guest_proc(s, "/proc/loadavg", &err);
        if (stat) {
                sscanf(stat, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                       &v[6], &v[7]);
                for (const char *p = stat; (p = strstr(p, "\ncpu")); p++)
                        cpus++;
        }
        for (int i = 0; i < 8; i++)
                total += v[i];
        idle = v[3] + v[4];
        /* Usage since the previous sample (since boot for the first). */
        if (total > s->prev_total)
                cpu_pct = 100.0 * (double)((total - s->prev_total) - (idle - s->prev_idle)) / (double)(total - s->prev_total);
        s->prev_total = total;
        s->prev_idle = idle;
        if (load)
                sscanf(load, "%lf %lf %lf", &l1, &l5, &l15);
        mem_total = meminfo_kb(mem, "MemTotal:") * 1024;
        mem_avail = meminfo_kb(mem, "MemAvailable:") * 1024;
        format_time(wall_ms(), when);
        j = json_pack("{s:s,s:s,s:{s:I,s:I,s:I,s:f},s:{s:f,s:i},s:[f,f,f]}", "vmId", s->id, "timestamp", when, "memory",
                      "totalBytes", (json_int_t)mem_total, "availableBytes", (json_int_t)mem_avail, "usedBytes",
                      (json_int_t)(mem_total - mem_avail), "usedPercent",
                      mem_total ? 100.0 * (double)(mem_total - mem_avail) / (double)mem_total : 0.0, "cpu",
                      "usagePercent", cpu_pct, "count", cpus, "loadAverage", l1, l5, l15);
        free(mem);
        free(stat);
        free(load);
        line = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!line)
                return -1;
        n = (long)strlen(line);
        if ((size_t)n + 1 > max) {
                free(line);
                return -1;
        }
        memcpy(buf, line, (size_t)n);
        buf[n++] = '\n';
        free(line);
        return n;
}

static void stats_done(void *ctx)
{
        struct stats_stream *s = ctx;

        free(s->account);
        free(s);
}

static void handle_stats_stream(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                                struct http_resp *resp)
{
        struct vmm_info info = {0};
        struct stats_stream *s;
        int64_t interval = 1000;

        if (query_int(req, "interval_ms", &interval, resp) < 0)
                return;
        if (vmm_get(d->vmm, c->account, id, &info) < 0) {
                http_error(resp, 404, "VM_NOT_FOUND", "VM %s not found", id);
                return;
        }
        vmm_info_clear(&info);
        s = calloc(1, sizeof(*s));
        if (!s || !(s->account = strdup(c->account))) {
                free(s);
                http_error(resp, 500, "INTERNAL_ERROR", "out of memory");
                return;
        }
        s->d = d;
        memcpy(s->id, id, 21);
        s->interval_ms = (int)(interval < 100 ? 100 : interval > 10000 ? 10000 : interval);
        resp->status = 200;
        resp->stream = stats_next;
        resp->stream_ctx = s;
        resp->stream_done = stats_done;
}

/* ---- terminals and file watching ---- */

/* Removes ANSI escape sequences (CSI and OSC) and carriage returns, for
 * terminal output given as plain lines. In place. */
static void strip_escapes(char *s)
{
        char *o = s;

        for (char *p = s; *p;) {
                if (p[0] == '\033' && p[1] == '[') {
                        p += 2;
                        while (*p && !(*p >= 0x40 && *p <= 0x7e))
                                p++;
                        if (*p)
                                p++;
                } else if (p[0] == '\033' && p[1] == ']') {
                        p += 2;
                        while (*p && *p != '\007' && !(p[0] == '\033' && p[1] == '\\'))
                                p++;
                        if (*p == '\007')
                                p++;
                        else if (*p)
                                p += 2;
                } else if (*p == '\r' || *p == '\033') {
                        p++;
                } else {
                        *o++ = *p++;
                }
        }
        *o = 0;
}

static void handle_terminals(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                             const char *tid, const char *what, struct http_resp *resp)
{
        struct proto_buf b = {0};
        struct vmm_result res = {0};
        int r;

        if (!method_is(req, "GET")) {
                http_error(resp, 405, "METHOD_NOT_ALLOWED", "use GET");
                return;
        }
        if (tid && (!what || (strcmp(what, "logs") && strcmp(what, "xterm-256color")))) {
                http_error(resp, 404, "NOT_FOUND", "no such endpoint: %s %s", req->method, req->path);
                return;
        }
        proto_put_u32(&b, PROTO_TAG_OP, tid ? PROTO_OP_TERM_LOG : PROTO_OP_TERM_LIST);
        if (tid)
                proto_put_str(&b, PROTO_TAG_TERMINAL, tid);
        r = vmm_call(d->vmm, c->account, id, &b, 1 << 20, &res);
        proto_buf_free(&b);
        if (r < 0) {
                vm_error(resp, r, id);
                return;
        }
        if (res.agent_errno == ENOENT || res.agent_errno == EINVAL) {
                http_error(resp, 404, "TERMINAL_NOT_FOUND", "terminal %s not found", tid ? tid : "");
        } else if (res.agent_errno) {
                http_error(resp, 500, "INTERNAL_ERROR", "%s", res.errmsg ? res.errmsg : strerror(res.agent_errno));
        } else if (!tid) {
                json_t *list = json_array();
                struct proto_iter it;
                struct proto_tlv t;

                proto_iter_init(&it, res.reply.result, res.reply.result_len);
                while (proto_iter_next(&it, &t) > 0)
                        if (t.tag == PROTO_TAG_ENTRY && t.len > 1)
                                json_array_append_new(list, json_pack("{s:s%,s:s,s:n}", "name", t.val + 1,
                                                                      (size_t)t.len - 1, "status", "running", "created"));
                resp->status = 200;
                resp->body = json_pack("{s:o}", "terminals", list);
        } else {
                size_t n;
                char *text = utf8_sanitize(res.reply.data.data ? (char *)res.reply.data.data : "", res.reply.data.len, &n);

                resp->status = 200;
                if (text && !strcmp(what, "xterm-256color")) {
                        resp->body = json_pack("{s:s}", "output", text);
                } else if (text) {
                        json_t *lines = json_array();
                        char *line, *save = NULL;

                        strip_escapes(text);
                        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                                json_array_append_new(lines, json_pack("{s:s,s:n}", "line", line, "timestamp"));
                        resp->body = json_pack("{s:o}", "logs", lines);
                }
                free(text);
                if (!resp->body)
                        http_error(resp, 500, "INTERNAL_ERROR", "out of memory");
        }
        vmm_result_clear(&res);
}

struct watch_stream {
        struct vmm_watch *w;
};

static long watch_next(void *ctx, char *buf, size_t max)
{
        struct watch_stream *s = ctx;

        for (;;) {
                long n = vmm_watch_read(s->w, buf, max, 10000);

                if (n > 0)
                        return n;
                if (n < 0)
                        return -1;
                /* Nothing for 10 s: an empty line (which NDJSON readers
                 * skip) finds out whether the client is still there. */
                buf[0] = '\n';
                return 1;
        }
}

static void watch_done(void *ctx)
{
        struct watch_stream *s = ctx;

        vmm_watch_close(s->w);
        free(s);
}

static void handle_watch(struct sprout *d, const struct http_req *req, const struct caller *c, const char *id,
                         struct http_resp *resp)
{
        struct watch_stream *s = calloc(1, sizeof(*s));
        char *user = NULL;
        int r;

        if (!s || linux_user(req, &user, resp) < 0) {
                if (!s)
                        http_error(resp, 500, "INTERNAL_ERROR", "out of memory");
                free(s);
                return;
        }
        r = vmm_watch_open(d->vmm, c->account, id, NULL, user, &s->w);
        free(user);
        if (r < 0) {
                free(s);
                vm_error(resp, r, id);
                return;
        }
        resp->status = 200;
        resp->stream = watch_next;
        resp->stream_ctx = s;
        resp->stream_done = watch_done;
}

/* ---- routing ---- */

/* Splits the raw path into at most max segments (still encoded); the last
 * one keeps any remaining '/'. Returns the count. */
static int split_path(const char *path, char *buf, size_t size, char **segs, int max)
{
        int n = 0;
        char *p;

        if (path_fmt(buf, size, "%s", path[0] == '/' ? path + 1 : path) < 0)
                return -1;
        p = buf;
        while (*p && n < max) {
                segs[n++] = p;
                if (n == max)
                        break;
                p = strchr(p, '/');
                if (!p)
                        break;
                *p++ = 0;
        }
        /* A trailing slash leaves an empty last segment: drop it. */
        if (n > 0 && n < max && segs[n - 1][0] == 0)
                n--;
        return n;
}

void api_handle(struct sprout *d, const struct http_req *req, struct http_resp *resp)
{
        char buf[8192], *seg[8], id[21];
        struct caller c = {0};
        int n = split_path(req->path, buf, sizeof(buf), seg, 8);

        if (n < 0) {
                http_error(resp, 414, "URI_TOO_LONG", "the request path is too long");
                return;
        }
        if (n == 1 && !strcmp(seg[0], "healthz")) {
                handle_healthz(d, resp);
                return;
        }
        if (authenticate(d, req, &c, resp) < 0)
                return;

        if (n == 3 && !strcmp(seg[0], "admin") && !strcmp(seg[1], "v1") && !strcmp(seg[2], "keys")) {
                if (method_is(req, "POST"))
                        handle_create_key(d, req, &c, resp);
                else
                        http_error(resp, 405, "METHOD_NOT_ALLOWED", "use POST");
                goto out;
        }
        if (n < 2 || strcmp(seg[0], "v1") || strcmp(seg[1], "vms")) {
                http_error(resp, 404, "NOT_FOUND", "no such endpoint: %s %s", req->method, req->path);
                goto out;
        }
        if (n == 2) {
                if (method_is(req, "GET"))
                        handle_list_vms(d, req, &c, resp);
                else if (method_is(req, "POST"))
                        handle_create_vm(d, req, &c, resp);
                else
                        http_error(resp, 405, "METHOD_NOT_ALLOWED", "use GET or POST");
                goto out;
        }
        if (!strcmp(seg[2], "snapshots")) {
                if (n == 3 && method_is(req, "GET"))
                        handle_list_snapshots(d, req, &c, resp);
                else if (n == 4)
                        handle_snapshot(d, req, &c, seg[3], resp);
                else
                        http_error(resp, 404, "NOT_FOUND", "no such endpoint: %s %s", req->method, req->path);
                goto out;
        }
        if (api_parse_vm_id(seg[2], id) < 0) {
                http_error(resp, 404, "VM_NOT_FOUND", "VM %.40s not found", seg[2]);
                goto out;
        }
        if (n == 3) {
                if (method_is(req, "GET"))
                        handle_get_vm(d, &c, id, resp);
                else if (method_is(req, "DELETE"))
                        handle_delete_vm(d, &c, id, resp);
                else
                        http_error(resp, 405, "METHOD_NOT_ALLOWED", "use GET or DELETE");
                goto out;
        }
        if (n == 4 && !strcmp(seg[3], "exec-await")) {
                if (method_is(req, "POST"))
                        handle_exec(d, req, &c, id, resp);
                else
                        http_error(resp, 405, "METHOD_NOT_ALLOWED", "use POST");
                goto out;
        }
        if (n == 4 && (!strcmp(seg[3], "suspend") || !strcmp(seg[3], "start") || !strcmp(seg[3], "stop") ||
                       !strcmp(seg[3], "kill") || !strcmp(seg[3], "await") || !strcmp(seg[3], "snapshot") ||
                       !strcmp(seg[3], "fork") || !strcmp(seg[3], "optimize") || !strcmp(seg[3], "resize"))) {
                if (!method_is(req, "POST"))
                        http_error(resp, 405, "METHOD_NOT_ALLOWED", "use POST");
                else if (!strcmp(seg[3], "optimize"))
                        handle_optimize(d, &c, id, resp);
                else if (!strcmp(seg[3], "resize"))
                        handle_resize(d, req, &c, id, resp);
                else if (!strcmp(seg[3], "snapshot"))
                        handle_snapshot_vm(d, req, &c, id, resp);
                else if (!strcmp(seg[3], "fork"))
                        handle_fork(d, req, &c, id, resp);
                else
                        handle_lifecycle(d, req, &c, id, seg[3], resp);
                goto out;
        }
        if (n == 4 && !strcmp(seg[3], "watch-files")) {
                if (method_is(req, "POST"))
                        handle_watch(d, req, &c, id, resp);
                else
                        http_error(resp, 405, "METHOD_NOT_ALLOWED", "use POST");
                goto out;
        }
        if ((n == 4 || n == 6) && !strcmp(seg[3], "terminals")) {
                char *tid = n == 6 ? http_decode(seg[4], strlen(seg[4]), 0) : NULL;

                if (n == 6 && !tid)
                        http_error(resp, 404, "TERMINAL_NOT_FOUND", "malformed terminal id");
                else
                        handle_terminals(d, req, &c, id, tid, n == 6 ? seg[5] : NULL, resp);
                free(tid);
                goto out;
        }
        if (n == 5 && !strcmp(seg[3], "stats") && !strcmp(seg[4], "stream")) {
                if (method_is(req, "GET"))
                        handle_stats_stream(d, req, &c, id, resp);
                else
                        http_error(resp, 405, "METHOD_NOT_ALLOWED", "use GET");
                goto out;
        }
        if (n >= 5 && !strcmp(seg[3], "systemd")) {
                if (n == 5 && !strcmp(seg[4], "services"))
                        handle_services(d, req, &c, id, resp);
                else if (n == 5 && (!strcmp(seg[4], "start") || !strcmp(seg[4], "stop") || !strcmp(seg[4], "restart")) &&
                         method_is(req, "POST"))
                        handle_service_batch(d, req, &c, id, seg[4], resp);
                else if ((n == 6 || n == 7) && !strcmp(seg[4], "services")) {
                        char *sid = http_decode(seg[5], strlen(seg[5]), 0);

                        if (!sid)
                                http_error(resp, 400, "SERVICE_NAME_INVALID_CHARS", "malformed service id");
                        else
                                handle_service(d, req, &c, id, sid, n == 7 ? seg[6] : NULL, resp);
                        free(sid);
                } else
                        http_error(resp, 404, "NOT_FOUND", "no such endpoint: %s %s", req->method, req->path);
                goto out;
        }
        if (n >= 4 && !strcmp(seg[3], "files")) {
                /* Everything after "files/" is the path: usually one segment
                 * with "%2F" inside, but plain slashes work too. */
                const char *raw = n >= 5 ? req->path + (req->path[0] == '/') + (seg[4] - buf) : "";
                char *path = http_decode(raw, strlen(raw), 0);

                if (!path) {
                        http_error(resp, 400, "FILES_BAD_REQUEST",
                                   "the file path has a malformed %%-escape or an encoded NUL byte");
                } else if (!*path) {
                        http_error(resp, 400, "FILES_BAD_REQUEST", "a file path is required after /files/");
                } else if (strlen(path) > 4096) {
                        http_error(resp, 400, "FILES_BAD_REQUEST", "the file path is too long");
                } else if (method_is(req, "GET")) {
                        handle_read_file(d, req, &c, id, path, resp);
                } else if (method_is(req, "PUT")) {
                        handle_write_file(d, req, &c, id, path, resp);
                } else {
                        http_error(resp, 405, "METHOD_NOT_ALLOWED", "use GET or PUT");
                }
                free(path);
                goto out;
        }
        http_error(resp, 404, "NOT_FOUND", "no such endpoint: %s %s", req->method, req->path);
out:
        free(c.account);
}

/*
 * api: the route table and dispatch. Depends on http (request access),
 * the store (API keys) and the handler files. Every answer for a path or
 * method the table lacks (404, 405 with Allow) comes from the table; a
 * handler is only called for its own route, with the caller
 * authenticated and the {vm_id} checked. It must never reveal whether a
 * VM of another account exists (always VM_NOT_FOUND).
 */
#include "api/api_int.h"
#include "lib/util.h"
#include "store/store.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define API_MAX_SEGS 16

enum {
        ROUTE_PUBLIC = 1, /* answered without an API key */
        ROUTE_LONG = 2,   /* may last long: counted against the account's long requests */
};

struct route {
        struct api_route_info info;
        api_fn fn;
        unsigned flags;
};

#define ROUTE(m, p, op, f) {{m, p, op}, f, 0}
#define LONG_ROUTE(m, p, op, f) {{m, p, op}, f, ROUTE_LONG}
#define PUBLIC_ROUTE(m, p, op, f) {{m, p, op}, f, ROUTE_PUBLIC}

/* One row per operation. Literal segments win over parameters where both
 * match ("/v1/vms/snapshots" is not a VM id). */
static const struct route routes[] = {
        PUBLIC_ROUTE("GET", "/healthz", "healthz", api_healthz),
        ROUTE("GET", "/metrics", "metrics", api_metrics),
        PUBLIC_ROUTE("GET", "/", "console", api_console),
        PUBLIC_ROUTE("GET", "/ui/{path*}", "console_file", api_console_file),
        ROUTE("POST", "/admin/v1/keys", "create_key", api_create_key),
        ROUTE("GET", "/admin/v1/keys", "list_keys", api_list_keys),
        ROUTE("DELETE", "/admin/v1/keys/{key_id}", "revoke_key", api_revoke_key),
        ROUTE("GET", "/v1/vms", "list_vms", api_list_vms),
        ROUTE("POST", "/v1/vms", "create_vm", api_create_vm),
        ROUTE("GET", "/v1/vms/snapshots", "list_snapshots", api_list_snapshots),
        LONG_ROUTE("POST", "/v1/vms/snapshots", "create_snapshot", api_create_snapshot),
        ROUTE("GET", "/v1/vms/builds", "list_builds", api_list_builds),
        ROUTE("GET", "/v1/vms/builds/{build_id}", "get_build", api_get_build),
        ROUTE("GET", "/v1/vms/builds/{build_id}/phases", "list_build_phases", api_list_build_phases),
        ROUTE("GET", "/v1/vms/{vm_id}/build", "get_build_for_vm", api_get_vm_build),
        ROUTE("GET", "/auth/v1/background-requests/{request_id}", "get_background_request", api_background_request),
        ROUTE("GET", "/observability/v1/logs", "get_request_logs", api_request_logs),
        ROUTE("GET", "/v1/vms/snapshots/{snapshot_id}", "get_snapshot", api_get_snapshot),
        ROUTE("PATCH", "/v1/vms/snapshots/{snapshot_id}", "update_snapshot", api_update_snapshot),
        ROUTE("DELETE", "/v1/vms/snapshots/{snapshot_id}", "delete_snapshot", api_delete_snapshot),
        ROUTE("GET", "/v1/vms/{vm_id}", "get_vm", api_get_vm),
        ROUTE("DELETE", "/v1/vms/{vm_id}", "delete_vm", api_delete_vm),
        ROUTE("POST", "/v1/vms/{vm_id}/suspend", "suspend_vm", api_suspend),
        ROUTE("POST", "/v1/vms/{vm_id}/start", "start_vm", api_start),
        ROUTE("POST", "/v1/vms/{vm_id}/stop", "stop_vm", api_stop),
        ROUTE("POST", "/v1/vms/{vm_id}/kill", "kill_vm", api_kill),
        LONG_ROUTE("POST", "/v1/vms/{vm_id}/await", "wait_vm", api_await),
        ROUTE("POST", "/v1/vms/{vm_id}/snapshot", "snapshot_vm", api_snapshot_vm),
        ROUTE("POST", "/v1/vms/{vm_id}/fork", "fork_vm", api_fork),
        ROUTE("POST", "/v1/vms/{vm_id}/optimize", "optimize_vm", api_optimize),
        ROUTE("POST", "/v1/vms/{vm_id}/resize", "resize_vm", api_resize),
        LONG_ROUTE("POST", "/v1/vms/{vm_id}/exec-await", "exec_await", api_exec),
        ROUTE("GET", "/v1/vms/{vm_id}/files/{filepath*}", "get_file", api_get_file),
        ROUTE("PUT", "/v1/vms/{vm_id}/files/{filepath*}", "put_file", api_put_file),
        LONG_ROUTE("POST", "/v1/vms/{vm_id}/watch-files", "watch_files", api_watch_files),
        LONG_ROUTE("GET", "/v1/vms/{vm_id}/stats/stream", "stats_stream", api_stats_stream),
        ROUTE("GET", "/v1/vms/{vm_id}/terminals", "list_terminals", api_list_terminals),
        ROUTE("GET", "/v1/vms/{vm_id}/terminals/{terminal_id}/logs", "get_terminal_logs", api_terminal_logs),
        ROUTE("GET", "/v1/vms/{vm_id}/terminals/{terminal_id}/xterm-256color", "get_terminal_xterm",
              api_terminal_xterm),
        LONG_ROUTE("GET", "/v1/vms/{vm_id}/terminals/{terminal_id}/ws", "terminal_websocket", api_terminal_ws),
        ROUTE("GET", "/v1/vms/{vm_id}/systemd/services", "list_services", api_list_services),
        ROUTE("POST", "/v1/vms/{vm_id}/systemd/services", "create_service", api_create_service),
        ROUTE("DELETE", "/v1/vms/{vm_id}/systemd/services/{service_id}", "delete_service", api_delete_service),
        ROUTE("GET", "/v1/vms/{vm_id}/systemd/services/{service_id}/status", "get_service_status",
              api_service_status),
        ROUTE("GET", "/v1/vms/{vm_id}/systemd/services/{service_id}/logs", "get_service_logs", api_service_logs),
        ROUTE("POST", "/v1/vms/{vm_id}/systemd/start", "batch_start_services", api_services_start),
        ROUTE("POST", "/v1/vms/{vm_id}/systemd/stop", "batch_stop_services", api_services_stop),
        ROUTE("POST", "/v1/vms/{vm_id}/systemd/restart", "batch_restart_services", api_services_restart),
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

const struct api_route_info *api_route(size_t i)
{
        return i < NROUTES ? &routes[i].info : NULL;
}

size_t api_route_count(void)
{
        return NROUTES;
}

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

/* PREFIX then 20 of [a-z0-9], as snapshot and build ids are. */
static int parse_prefixed_id(const char *s, const char *prefix)
{
        if (strncmp(s, prefix, 3) || strlen(s) != 23)
                return -EINVAL;
        for (int i = 3; i < 23; i++)
                if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i])))
                        return -EINVAL;
        return 0;
}

int api_parse_snapshot_id(const char *s)
{
        return parse_prefixed_id(s, "sc-");
}

int api_parse_build_id(const char *s)
{
        return parse_prefixed_id(s, "bd-");
}

/* ---- matching ---- */

/* A request path split into its segments (still %-encoded). */
struct path {
        char buf[8192];
        const char *raw; /* the path as sent, without its leading '/' */
        char *seg[API_MAX_SEGS];
        size_t off[API_MAX_SEGS]; /* where each segment starts in raw */
        int n;
};

/* Splits path; a trailing slash adds no empty segment. -1 when it is too
 * long. Segments past API_MAX_SEGS are not split off: no route but a
 * {name*} one has that many, and that one takes the raw rest. */
static int split_path(const char *path, struct path *p)
{
        char *s;

        p->raw = path[0] == '/' ? path + 1 : path;
        if (path_fmt(p->buf, sizeof(p->buf), "%s", p->raw) < 0)
                return -1;
        p->n = 0;
        for (s = p->buf; *s && p->n < API_MAX_SEGS;) {
                char *slash = strchr(s, '/');

                p->off[p->n] = (size_t)(s - p->buf);
                p->seg[p->n++] = s;
                if (!slash)
                        break;
                *slash = 0;
                s = slash + 1;
        }
        return 0;
}

/* What a route's pattern made of a path. */
struct match {
        int literals; /* literal segments matched: the more, the better the match */
        const char *vm_id, *param, *rest;
};

/* 1 if pattern matches p, filling m; 0 if not. */
static int match_route(const char *pattern, const struct path *p, struct match *m)
{
        char pat[256], *save = NULL, *tok;
        int i = 0;

        memset(m, 0, sizeof(*m));
        snprintf(pat, sizeof(pat), "%s", pattern + 1);
        for (tok = strtok_r(pat, "/", &save); tok; tok = strtok_r(NULL, "/", &save), i++) {
                size_t len = strlen(tok);

                if (tok[0] == '{' && len > 2 && tok[len - 2] == '*') {
                        m->rest = i < p->n ? p->raw + p->off[i] : "";
                        return 1;
                }
                if (i >= p->n)
                        return 0;
                if (tok[0] != '{') {
                        if (strcmp(tok, p->seg[i]))
                                return 0;
                        m->literals++;
                } else if (!strcmp(tok, "{vm_id}")) {
                        m->vm_id = p->seg[i];
                } else {
                        m->param = p->seg[i];
                }
        }
        return i == p->n;
}

/* The rows whose pattern matches best; NULL when none. *ret_allow lists
 * their methods. */
static const struct route *find_route(const char *method, const struct path *p, struct match *ret, char *allow,
                                      size_t allow_size)
{
        const struct route *found = NULL;
        struct match m;
        int best = -1;

        for (size_t i = 0; i < NROUTES; i++)
                if (match_route(routes[i].info.pattern, p, &m) && m.literals > best)
                        best = m.literals;
        allow[0] = 0;
        for (size_t i = 0; best >= 0 && i < NROUTES; i++) {
                if (!match_route(routes[i].info.pattern, p, &m) || m.literals != best)
                        continue;
                if (strlen(allow) + strlen(routes[i].info.method) + 3 < allow_size)
                        snprintf(allow + strlen(allow), allow_size - strlen(allow), "%s%s", allow[0] ? ", " : "",
                                 routes[i].info.method);
                if (!found && !strcmp(routes[i].info.method, method)) {
                        found = &routes[i];
                        *ret = m;
                }
        }
        return found;
}

/* ---- long requests ---- */

/* Long requests open, per account. */
struct slot {
        char *account;
        int open;
        struct slot *next;
};

struct api_slots {
        pthread_mutex_t lock;
        struct slot *list;
};

int api_init(struct api *a)
{
        a->slots = calloc(1, sizeof(*a->slots));
        if (!a->slots || api_metrics_init(a) < 0) {
                free(a->slots);
                a->slots = NULL;
                return -ENOMEM;
        }
        pthread_mutex_init(&a->slots->lock, NULL);
        return 0;
}

void api_free(struct api *a)
{
        free(a->metrics);
        a->metrics = NULL;
        if (!a->slots)
                return;
        while (a->slots->list) {
                struct slot *x = a->slots->list;

                a->slots->list = x->next;
                free(x->account);
                free(x);
        }
        pthread_mutex_destroy(&a->slots->lock);
        free(a->slots);
        a->slots = NULL;
}

/* Takes one of the account's long-request slots; -EBUSY when it has none
 * left, -ENOMEM. An account's entry stays once made (there is one per
 * account that ever held a slot). */
static int slot_take(struct api *a, const char *account, struct slot **ret)
{
        struct slot *x;
        int r = 0;

        pthread_mutex_lock(&a->slots->lock);
        for (x = a->slots->list; x && strcmp(x->account, account); x = x->next)
                ;
        if (!x && (x = calloc(1, sizeof(*x)))) {
                x->account = strdup(account);
                if (x->account) {
                        x->next = a->slots->list;
                        a->slots->list = x;
                } else {
                        free(x);
                        x = NULL;
                }
        }
        if (!x)
                r = -ENOMEM;
        else if (a->max_long_requests > 0 && x->open >= a->max_long_requests)
                r = -EBUSY;
        else
                x->open++;
        pthread_mutex_unlock(&a->slots->lock);
        *ret = r == 0 ? x : NULL;
        return r;
}

static void slot_give(struct api *a, struct slot *x)
{
        if (!x)
                return;
        pthread_mutex_lock(&a->slots->lock);
        x->open--;
        pthread_mutex_unlock(&a->slots->lock);
}

/* A streamed answer (or a WebSocket) keeps its slot until the connection
 * ends: its callbacks go through this. */
struct held_stream {
        struct api *a;
        struct slot *slot;
        http_stream_fn next;
        void *ctx;
        void (*done)(void *ctx);
        void (*upgrade)(void *ctx, int fd, const char *extra, size_t extra_len);
};

static void held_upgrade(void *ctx, int fd, const char *extra, size_t extra_len)
{
        struct held_stream *h = ctx;

        h->upgrade(h->ctx, fd, extra, extra_len);
}

static long held_next(void *ctx, char *buf, size_t max)
{
        struct held_stream *h = ctx;

        return h->next(h->ctx, buf, max);
}

static void held_done(void *ctx)
{
        struct held_stream *h = ctx;

        if (h->done)
                h->done(h->ctx);
        slot_give(h->a, h->slot);
        free(h);
}

/* Gives the slot back now, or, for a stream, when it ends. */
static void slot_release(struct api *a, struct slot *x, struct http_resp *resp)
{
        struct held_stream *h;

        if (!x || (!resp->stream && !resp->upgrade)) {
                slot_give(a, x);
                return;
        }
        h = malloc(sizeof(*h));
        if (!h) {
                /* The stream runs all the same; its slot is given back now. */
                slot_give(a, x);
                return;
        }
        if (resp->upgrade) {
                *h = (struct held_stream){a, x, NULL, resp->upgrade_ctx, resp->upgrade_done, resp->upgrade};
                resp->upgrade = held_upgrade;
                resp->upgrade_ctx = h;
                resp->upgrade_done = held_done;
                return;
        }
        *h = (struct held_stream){a, x, resp->stream, resp->stream_ctx, resp->stream_done, NULL};
        resp->stream = held_next;
        resp->stream_ctx = h;
        resp->stream_done = held_done;
}

/* ---- dispatch ---- */

static int authenticate(struct api_call *c, char **ret_account)
{
        char *h = http_header(c->req, "Authorization");
        const char *key = NULL;
        int r = -EACCES;

        if (h && !strncasecmp(h, "Bearer ", 7)) {
                key = h + 7;
                while (*key == ' ')
                        key++;
        } else if (!h) {
                /* A browser's WebSocket can set no header but this one. */
                h = api_ws_key(c->req);
                key = h;
        }
        if (key && *key && strlen(key) <= 256)
                r = store_auth(c->a->store, key, ret_account, &c->admin);
        free(h);
        if (r == 0)
                return 0;
        if (r == -ENOENT || r == -EACCES)
                api_error(c, 401, "UNAUTHORIZED", "a valid API key is required (Authorization: Bearer KEY)");
        else
                api_error(c, 500, "INTERNAL_ERROR", "could not check the API key: %s", strerror(-r));
        return -EACCES;
}

void api_handle(void *ud, const struct http_req *req, struct http_resp *resp)
{
        struct api_call c = {.a = ud, .req = req, .resp = resp};
        struct path *p = malloc(sizeof(*p));
        const struct route *route = NULL;
        char allow[sizeof(resp->allow)], *account = NULL;
        struct match m = {0};
        int64_t t0 = now_us();

        if (!p) {
                api_error(&c, 500, "INTERNAL_ERROR", "out of memory");
                return;
        }
        if (split_path(req->path, p) < 0) {
                api_error(&c, 414, "URI_TOO_LONG", "the request path is too long");
                goto out;
        }
        route = find_route(req->method, p, &m, allow, sizeof(allow));
        if (!(route && (route->flags & ROUTE_PUBLIC))) {
                if (authenticate(&c, &account) < 0)
                        goto out;
                c.account = account;
        }
        if (!route && !allow[0]) {
                api_error(&c, 404, "NOT_FOUND", "no such endpoint: %s %s", req->method, req->path);
                goto out;
        }
        if (!route) {
                snprintf(resp->allow, sizeof(resp->allow), "%s", allow);
                api_error(&c, 405, "METHOD_NOT_ALLOWED", "%s is not allowed here; use %s", req->method, allow);
                goto out;
        }
        if (m.vm_id && api_parse_vm_id(m.vm_id, c.vm_id) < 0) {
                api_error(&c, 404, "VM_NOT_FOUND", "VM %.40s not found", m.vm_id);
                goto out;
        }
        c.param = m.param;
        c.rest = m.rest;
        if (route->flags & ROUTE_LONG) {
                struct slot *x = NULL;
                int r = slot_take(c.a, c.account, &x);

                if (r == -EBUSY)
                        api_error(&c, 429, "TOO_MANY_REQUESTS",
                                  "this account has %d long requests open (exec, await, watch, stats, terminals); let one end first",
                                  c.a->max_long_requests);
                else if (r < 0)
                        api_error(&c, 500, "INTERNAL_ERROR", "out of memory");
                else {
                        route->fn(&c);
                        slot_release(c.a, x, resp);
                }
                goto out;
        }
        route->fn(&c);
out:
        api_metrics_record(c.a, route ? (size_t)(route - routes) : (size_t)-1, resp->status, now_us() - t0);
        free(account);
        free(p);
}

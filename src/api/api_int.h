/*
 * api_int: what the API's files share: the call a handler answers, the
 * handlers the route table names, request parsing helpers and the one map
 * from errors to answers (api_json.c). Nothing outside src/api/ includes
 * this header.
 */
#ifndef SPROUT_API_INT_H
#define SPROUT_API_INT_H

#include "api/api.h"
#include "vmm/vmm.h"

#include <jansson.h>
#include <stdint.h>

#define USER_HEADER "X-Freestyle-Vm-Linux-User-Id"

/* One request being answered. */
struct api_call {
        struct api *a;
        const struct http_req *req;
        struct http_resp *resp;
        const char *account; /* the caller's account id */
        int admin;           /* the caller's key is an admin key */
        char vm_id[21];      /* the route's {vm_id}, canonical; "" when it has none */
        const char *param;   /* the route's other {name} segment, still %-encoded; NULL when none */
        const char *rest;    /* the route's {name*}: the rest of the path, still %-encoded */
};

typedef void (*api_fn)(struct api_call *c);

/* ---- handlers, by resource family ---- */

/* api_keys.c */
void api_healthz(struct api_call *c);
void api_metrics(struct api_call *c);
/* api_metrics.c: the per-operation counts (route: a row of the table,
 * or past its end for requests no route took). */
int api_metrics_init(struct api *a);
void api_metrics_record(struct api *a, size_t route, unsigned status, int64_t us);
/* The warm pool's figures: {vms, memoryBytes, hits, misses}. */
json_t *api_pool_json(struct api *a);
void api_create_key(struct api_call *c);
void api_list_keys(struct api_call *c);
void api_revoke_key(struct api_call *c);
/* api_vms.c */
void api_list_vms(struct api_call *c);
void api_create_vm(struct api_call *c);
void api_get_vm(struct api_call *c);
void api_delete_vm(struct api_call *c);
/* api_lifecycle.c */
void api_suspend(struct api_call *c);
void api_start(struct api_call *c);
void api_stop(struct api_call *c);
void api_kill(struct api_call *c);
void api_await(struct api_call *c);
void api_fork(struct api_call *c);
void api_optimize(struct api_call *c);
void api_resize(struct api_call *c);
/* api_snapshots.c */
void api_snapshot_vm(struct api_call *c);
void api_list_snapshots(struct api_call *c);
void api_get_snapshot(struct api_call *c);
void api_update_snapshot(struct api_call *c);
void api_delete_snapshot(struct api_call *c);
/* api_files.c */
void api_exec(struct api_call *c);
void api_get_file(struct api_call *c);
void api_put_file(struct api_call *c);
/* api_services.c */
void api_list_services(struct api_call *c);
void api_create_service(struct api_call *c);
void api_delete_service(struct api_call *c);
void api_service_status(struct api_call *c);
void api_service_logs(struct api_call *c);
void api_services_start(struct api_call *c);
void api_services_stop(struct api_call *c);
void api_services_restart(struct api_call *c);
/* api_terminals.c */
void api_list_terminals(struct api_call *c);
/* api_static.c: the web console's page (/) and files (/ui/...) */
void api_console(struct api_call *c);
void api_console_file(struct api_call *c);
/* api_pty.c: the WebSocket terminal, and the key a browser sends as the
 * subprotocol "bearer.KEY" (malloc'd, NULL when none). */
void api_terminal_ws(struct api_call *c);
char *api_ws_key(const struct http_req *req);
void api_terminal_logs(struct api_call *c);
void api_terminal_xterm(struct api_call *c);
/* api_streams.c */
void api_stats_stream(struct api_call *c);
void api_watch_files(struct api_call *c);
void api_create_snapshot(struct api_call *c);
void api_get_build(struct api_call *c);
void api_list_builds(struct api_call *c);
void api_list_build_phases(struct api_call *c);
void api_get_vm_build(struct api_call *c);
void api_background_request(struct api_call *c);
void api_request_logs(struct api_call *c);

/* A create request's template or spec (NULL in *ret: none), checked;
 * what it says of the VM (workdir, timeouts) is copied into body where
 * body does not say it. -EINVAL, answered, when it is malformed. */
int api_vm_chain(struct api_call *c, json_t *body, json_t **ret);
/* Builds (or finds in the cache) a create request's chain and waits for
 * it: 0 and the snapshot to create the VM from, or -errno, answered. */
int api_vm_build(struct api_call *c, json_t *chain, char ret_snapshot[24], char ret_build[24]);

/* ---- errors (api_json.c) ---- */

/* What an error is about, for the map below: the same errno means
 * another answer for a file than for a VM. */
enum api_subject {
        API_VM,            /* name: the VM id */
        API_SNAPSHOT,      /* name: the snapshot id */
        API_FILE,          /* name: the path in the guest */
        API_SERVICE,       /* name: the service */
        API_TERMINAL,      /* name: the terminal (its list and logs) */
        API_EXEC,          /* name: the VM id (a command in a fresh process) */
        API_TERMINAL_EXEC, /* name: the terminal (a command in it) */
        API_KEY,           /* name: the key id */
};

/* The one map from a failure to an answer: r is a -errno from the VM
 * manager or a guest module, or the negated errno of a failure inside the
 * guest; detail (may be NULL) is what the guest said about it. */
void api_fail(struct api_call *c, int r, enum api_subject what, const char *name, const char *detail);

/* Sets the answer to an error with a code of the spec's and a message. */
#define api_error(c, status, code, ...) http_error((c)->resp, (status), (code), __VA_ARGS__)

/* The answer for a VM's failed create (vmm_info.error_code and error),
 * as the body of an error: {error, code, message, diagnostics?}. */
json_t *api_create_failure(int code, const char *report);

/* ---- requests (api_json.c) ---- */

/* Parses the body as a JSON object (an empty body counts as {}); NULL with
 * a 400 answer under code when it is not one. */
json_t *api_body(struct api_call *c, const char *code);

/* Optional fields of obj: absent or null leaves *ret alone (strings: sets
 * NULL); -EINVAL with a 400 answer under code for another type or range. */
int api_opt_string(struct api_call *c, json_t *obj, const char *key, const char **ret, const char *code);
int api_opt_int(struct api_call *c, json_t *obj, const char *key, int64_t min, int64_t max, int64_t *ret,
                const char *code);
int api_opt_bool(struct api_call *c, json_t *obj, const char *key, int *ret, const char *code);

/* A query parameter as a non-negative integer; absent leaves *ret alone. */
int api_query_int(struct api_call *c, const char *name, int64_t *ret);

/* The Linux user of the X-Freestyle-Vm-Linux-User-Id header, checked
 * (malloc'd; NULL when absent). */
int api_linux_user(struct api_call *c, char **ret);

/* The "persistence" field of body: the kinds allowed (a bit per enum
 * vm_persist), checked, into *ret (untouched when absent). */
int api_persistence(struct api_call *c, json_t *body, unsigned kinds, const char *code, struct vm_persistence *ret);

/* The rendering of a persistence as the spec has it. */
json_t *api_persistence_json(const struct vm_persistence *p, int snapshot);

/* Decodes the route's {name} segment; NULL (and no answer) when it is
 * malformed. malloc'd. */
char *api_param(struct api_call *c);

/* ---- ingress (api_ingress.c) ---- */

#define API_MAX_DOMAINS 16

/* A create's or fork's "ports" and "domains", checked. */
struct api_routes {
        struct store_port ports[2]; /* 443 and 8081 at most */
        size_t nports;
        struct {
                char name[254]; /* lower case */
                int port;
        } domains[API_MAX_DOMAINS];
        size_t ndomains;
};

/* -EINVAL with a 400 answer under code when they are malformed. */
int api_routes_parse(struct api_call *c, json_t *body, const char *code, struct api_routes *r);
/* Records them for the VM id; -EEXIST with a 409 answer when another
 * account has one of the domains, other -errno with a 500. */
int api_routes_save(struct api_call *c, const char *id, const struct api_routes *r);
/* The VM's host names: its ports' and its custom domains. */
json_t *api_domains_json(struct api *a, const char *id);

#endif

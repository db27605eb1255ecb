/*
 * api_json: what every handler uses to read a request and to answer a
 * failure: body and field parsing, the Linux-user header, persistence,
 * and the one map from -errno to status, spec code and message. Depends
 * on http, jansson and util.
 */
#include "api/api_int.h"
#include "lib/json.h"
#include "lib/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---- */

#define ANY (-1)

/* fmt takes the subject's name; a NULL fmt says "NAME: DETAIL". Rows for
 * one subject come before the ANY rows that they override. */
static const struct {
        int err;
        int what; /* enum api_subject or ANY */
        unsigned status;
        const char *code;
        const char *fmt;
} errors[] = {
        {ENOENT, API_FILE, 404, "FILE_NOT_FOUND", "%s: no such file or directory"},
        {EFBIG, API_FILE, 413, "FILE_TOO_LARGE", NULL},
        {EACCES, API_FILE, 403, "FORBIDDEN", "%s: permission denied"},
        {EPERM, API_FILE, 403, "FORBIDDEN", "%s: permission denied"},
        {EISDIR, API_FILE, 400, "FILES_BAD_REQUEST", NULL},
        {ENOTDIR, API_FILE, 400, "FILES_BAD_REQUEST", NULL},
        {EINVAL, API_FILE, 400, "FILES_BAD_REQUEST", NULL},
        {ENAMETOOLONG, API_FILE, 400, "FILES_BAD_REQUEST", NULL},
        {ELOOP, API_FILE, 400, "FILES_BAD_REQUEST", NULL},
        {ENOSPC, API_FILE, 507, "INSUFFICIENT_STORAGE", "%s: the VM's disk is full"},
        {EDQUOT, API_FILE, 507, "INSUFFICIENT_STORAGE", "%s: over a disk quota in the VM"},
        {ENOENT, API_KEY, 404, "KEY_NOT_FOUND", "API key %s not found"},
        {ENOENT, API_SERVICE, 404, "SERVICE_NOT_FOUND", "service %s not found"},
        {EEXIST, API_SERVICE, 409, "SERVICE_ALREADY_EXISTS", "service %s already exists"},
        {EIO, API_SERVICE, 500, "INTERNAL_ERROR", "service %s: a systemd command failed in the VM"},
        {ENOENT, API_TERMINAL, 404, "TERMINAL_NOT_FOUND", "terminal %s not found"},
        {EINVAL, API_TERMINAL, 404, "TERMINAL_NOT_FOUND", "terminal %s not found"},
        {EBUSY, API_TERMINAL_EXEC, 409, "TERMINAL_BUSY", "terminal %s is running another command"},
        {EPERM, API_TERMINAL_EXEC, 403, "FORBIDDEN", NULL},
        {EINVAL, API_TERMINAL_EXEC, 400, "INVALID_PARAMETERS", NULL},
        {EAGAIN, API_TERMINAL_EXEC, 400, "INVALID_PARAMETERS", NULL},
        {E2BIG, API_EXEC, 400, "EXEC_OUTPUT_TOO_LARGE", "the output of the command in VM %s exceeds the limit;"
                                                        " redirect large output to a file"},
        {ESRCH, ANY, 404, "USER_NOT_FOUND", NULL},
        {ENOENT, API_SNAPSHOT, 404, "SNAPSHOT_NOT_FOUND", "snapshot %s not found"},
        {ENOMEDIUM, ANY, 404, "SNAPSHOT_NOT_FOUND", "snapshot %s not found"},
        {EALREADY, API_SNAPSHOT, 409, "SNAPSHOT_ALREADY_DELETED", "snapshot %s is already deleted"},
        {ENOENT, ANY, 404, "VM_NOT_FOUND", "VM %s not found"},
        {ENOTCONN, ANY, 400, "VM_NOT_RUNNING", "VM %s is not in a state that allows this (is it running?)"},
        {ECONNRESET, ANY, 500, "VM_CONNECTION_LOST", "lost the connection to VM %s (it stopped or was deleted)"},
        {EPIPE, ANY, 500, "VM_CONNECTION_LOST", "lost the connection to VM %s (it stopped or was deleted)"},
        {ETIMEDOUT, ANY, 504, "AGENT_TIMEOUT", "VM %s did not answer in time"},
        {EHOSTDOWN, ANY, 503, "VM_UNRESPONSIVE",
         "VM %s is hung: its hypervisor process is stopped; requests fail until it runs again (or delete it)"},
        {EHOSTUNREACH, ANY, 503, "VM_AGENT_UNREACHABLE",
         "the agent inside VM %s does not answer; sproutd keeps the VM and tries again with backoff (its info says"
         " since when)"},
        {ENOTRECOVERABLE, ANY, 409, "VM_SETUP_FAILED",
         "VM %s never finished its create (its setup failed, or sproutd stopped during it) and is stopped;"
         " GET its info for the error; delete it, or start it to look inside"},
        {EUSERS, ANY, 429, "VM_LIMIT_REACHED", "the limit on VMs (this account's or the server's) is reached"},
        {EMLINK, ANY, 429, "RUNNING_VM_LIMIT_REACHED", "this account's limit on running VMs is reached"},
        {EOVERFLOW, ANY, 429, "MEMORY_LIMIT_REACHED", "this account's limit on the memory of its running VMs is reached"},
        {ETOOMANYREFS, ANY, 429, "SNAPSHOT_LIMIT_REACHED", "this account's limit on snapshots is reached"},
        {EDQUOT, ANY, 429, "STORAGE_LIMIT_REACHED", "this account's storage limit is reached; delete VMs or snapshots"},
        {ENOSPC, ANY, 507, "INSUFFICIENT_STORAGE", "the server is short of disk space; nothing new can be made now"},
        {EAGAIN, ANY, 503, "NOT_READY", "the server is still preparing its base snapshot; retry shortly"},
        {EINVAL, ANY, 400, "INVALID_PARAMETERS", NULL},
};

void api_fail(struct api_call *c, int r, enum api_subject what, const char *name, const char *detail)
{
        const char *why = detail && *detail ? detail : strerror(r < 0 ? -r : r);
        int err = r < 0 ? -r : r;

        for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
                if (errors[i].err != err || (errors[i].what != ANY && errors[i].what != (int)what))
                        continue;
                if (errors[i].fmt)
                        http_error(c->resp, errors[i].status, errors[i].code, errors[i].fmt, name);
                else
                        http_error(c->resp, errors[i].status, errors[i].code, "%s: %s", name, why);
                return;
        }
        http_error(c->resp, 500, what == API_EXEC || what == API_TERMINAL_EXEC ? "EXEC_FAILED" : "INTERNAL_ERROR",
                   "%s: %s", name, why);
}

json_t *api_create_failure(int code, const char *report)
{
        json_t *r = report ? json_loads(report, 0, NULL) : NULL;
        json_t *msg = json_object_get(r, "message"), *diag = json_object_get(r, "diagnostics");
        const char *m = json_string_value(msg);
        char text[256];
        json_t *j;

        /* The report's message goes out whole: it quotes the guest, and a
         * copy cut to a buffer could end inside a UTF-8 character, which
         * json_pack refuses (the answer would lose its body). */
        if (!m) {
                if (code == -EINPROGRESS)
                        snprintf(text, sizeof(text), "sproutd stopped before this VM's create was done");
                else if (code == -ECANCELED)
                        snprintf(text, sizeof(text), "VM setup failed");
                else
                        snprintf(text, sizeof(text), "could not create the VM: %s", strerror(-code));
                m = text;
        }
        j = json_pack("{s:s,s:s,s:s}", "error", "VM_SETUP_FAILED", "code", "VM_SETUP_FAILED", "message", m);
        if (j && diag) {
                json_t *units = json_object_get(diag, "failedUnits"), *u, *logs = json_array();
                size_t i;

                /* The SDK reads serviceStates (an array) and
                 * failedServiceLogs ({unitName, log}) of any diagnostics. */
                json_array_foreach(units, i, u)
                        json_array_append_new(logs, json_pack("{s:O?,s:O?}", "unitName", json_object_get(u, "name"),
                                                              "log", json_object_get(u, "logs")));
                json_object_set_new(diag, "serviceStates", json_array());
                json_object_set_new(diag, "failedServiceLogs", logs ? logs : json_array());
                json_object_set(j, "diagnostics", diag);
        }
        json_decref(r);
        return j;
}

/* ---- requests ---- */

json_t *api_body(struct api_call *c, const char *code)
{
        json_error_t err;
        json_t *j;

        if (c->req->body_len == 0)
                return json_object();
        j = json_loadb(c->req->body, c->req->body_len, JSON_REJECT_DUPLICATES, &err);
        if (!j) {
                api_error(c, 400, code, "malformed JSON body: %s (line %d, column %d)", err.text, err.line, err.column);
                return NULL;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                api_error(c, 400, code, "the request body must be a JSON object");
                return NULL;
        }
        return j;
}

/* The field key of obj in *ret (NULL when absent or null), or -EINVAL
 * with a 400 answer when its JSON type is none of types (bits of
 * 1 << json_type). */
static int opt_field(struct api_call *c, json_t *obj, const char *key, unsigned types, const char *what,
                     const char *code, json_t **ret)
{
        json_t *v = json_object_get(obj, key);

        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        if (!(types & 1u << json_typeof(v))) {
                api_error(c, 400, code, "field '%s' must be %s", key, what);
                return -EINVAL;
        }
        *ret = v;
        return 0;
}

int api_opt_string(struct api_call *c, json_t *obj, const char *key, const char **ret, const char *code)
{
        json_t *v;
        int r = opt_field(c, obj, key, 1u << JSON_STRING, "a string", code, &v);

        *ret = json_string_value(v);
        return r;
}

int api_opt_int(struct api_call *c, json_t *obj, const char *key, int64_t min, int64_t max, int64_t *ret,
                const char *code)
{
        json_t *v;

        if (opt_field(c, obj, key, 1u << JSON_INTEGER, "an integer", code, &v) < 0)
                return -EINVAL;
        if (v && (json_integer_value(v) < min || json_integer_value(v) > max)) {
                api_error(c, 400, code, "field '%s' must be an integer from %lld to %lld", key, (long long)min,
                          (long long)max);
                return -EINVAL;
        }
        if (v)
                *ret = json_integer_value(v);
        return 0;
}

int api_opt_bool(struct api_call *c, json_t *obj, const char *key, int *ret, const char *code)
{
        json_t *v;

        if (opt_field(c, obj, key, 1u << JSON_TRUE | 1u << JSON_FALSE, "a boolean", code, &v) < 0)
                return -EINVAL;
        if (v)
                *ret = json_is_true(v);
        return 0;
}

int api_query_int(struct api_call *c, const char *name, int64_t *ret)
{
        char *v = http_query(c->req, name), *end;
        long long x;

        if (!v || !*v) {
                free(v);
                return 0;
        }
        errno = 0;
        x = strtoll(v, &end, 10);
        if (*end || errno || x < 0 || x > 1000000000) {
                api_error(c, 400, "INVALID_PARAMETERS", "query parameter '%s' must be a non-negative integer", name);
                free(v);
                return -EINVAL;
        }
        free(v);
        *ret = x;
        return 0;
}

int api_linux_user(struct api_call *c, char **ret)
{
        char *u = http_header(c->req, USER_HEADER);

        *ret = NULL;
        if (!u || !*u) {
                free(u);
                return 0;
        }
        if (!unix_name_valid(u)) {
                api_error(c, 400, "INVALID_PARAMETERS", "invalid Linux user name in %s", USER_HEADER);
                free(u);
                return -EINVAL;
        }
        *ret = u;
        return 0;
}

int api_persistence(struct api_call *c, json_t *body, unsigned kinds, const char *code, struct vm_persistence *ret)
{
        json_t *v = json_object_get(body, "persistence"), *prio, *ev;
        const char *event;
        int kind;

        if (!v || json_is_null(v))
                return 0;
        kind = vm_persist_parse(json_string_value(json_object_get(v, "type")));
        if (!json_is_object(v) || kind < 0 || !(kinds & (1u << kind))) {
                api_error(c, 400, code, "persistence.type must be one of the documented kinds");
                return -EINVAL;
        }
        prio = json_object_get(v, "priority");
        if (prio && !json_is_null(prio) &&
            (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > 10)) {
                api_error(c, 400, code, "persistence.priority must be 0 to 10");
                return -EINVAL;
        }
        ev = json_object_get(v, "deleteEvent");
        event = json_string_value(ev);
        if (ev && !json_is_null(ev) && (!event || (strcmp(event, "OnStop") && strcmp(event, "OnSuspend")))) {
                api_error(c, 400, code, "persistence.deleteEvent must be OnStop or OnSuspend");
                return -EINVAL;
        }
        *ret = VM_PERSISTENCE_DEFAULT;
        ret->kind = (enum vm_persist)kind;
        if (json_is_integer(prio))
                ret->priority = (int)json_integer_value(prio);
        if (event && !strcmp(event, "OnStop"))
                ret->delete_on = VM_STOPPED;
        return 0;
}

json_t *api_persistence_json(const struct vm_persistence *p, int snapshot)
{
        const char *type = vm_persist_name(p->kind);

        if (p->kind == VM_PERSIST_STICKY)
                return json_pack("{s:s,s:i}", "type", type, "priority", p->priority);
        if (p->kind == VM_PERSIST_EPHEMERAL && !snapshot)
                return json_pack("{s:s,s:s}", "type", type, "deleteEvent",
                                 p->delete_on == VM_STOPPED ? "OnStop" : "OnSuspend");
        return json_pack("{s:s}", "type", type);
}

char *api_param(struct api_call *c)
{
        return c->param ? http_decode(c->param, strlen(c->param), 0) : NULL;
}

/*
 * api_services: /v1/vms/{vm_id}/systemd/...: the services the API manages
 * inside a VM. Depends on the guest services module and the VM manager's
 * guest handle.
 */
#include "api/api_int.h"
#include "guest/services.h"
#include "lib/json.h"
#include "lib/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Opens the route's VM for guest operations; answers and returns NULL
 * when it cannot be. */
static struct vmm_guest *open_vm(struct api_call *c)
{
        struct vmm_guest *g = NULL;
        int r = vmm_guest_open(c->a->vmm, c->account, c->vm_id, &g);

        if (r < 0)
                api_fail(c, r, API_VM, c->vm_id, NULL);
        return g;
}

/* Answers a failure of a service operation on an open VM. */
static void service_fail(struct api_call *c, int r, const char *name)
{
        if (r == -ENOENT || r == -EEXIST || r == -EIO)
                api_fail(c, r, API_SERVICE, name, NULL);
        else
                api_fail(c, r, API_VM, c->vm_id, NULL);
}

/* The route's {service_id}, checked, as a bare name (malloc'd); NULL with
 * a 400 answer when it is malformed. */
static char *route_service(struct api_call *c)
{
        const char *code = "SERVICE_NAME_INVALID_CHARS";
        char msg[160] = "malformed service id", *raw = api_param(c), *name = NULL;

        if (raw)
                name = svc_name(raw, &code, msg, sizeof(msg));
        if (!name)
                api_error(c, 400, code, "%s", msg);
        free(raw);
        return name;
}

void api_create_service(struct api_call *c)
{
        struct svc_unit u = {0};
        struct vmm_guest *g = NULL;
        const char *code;
        char *user = NULL, *message = NULL, msg[512];
        json_t *body = NULL;
        int ok = 0, r;

        if (api_linux_user(c, &user) < 0 || !(body = api_body(c, "INVALID_PARAMETERS")))
                goto out;
        if (svc_unit(body, user, 0, &u, &code, msg, sizeof(msg)) < 0) {
                api_error(c, 400, code, "%s", msg);
                goto out;
        }
        g = open_vm(c);
        if (!g)
                goto out;
        r = svc_create(g, &u, &ok, &message);
        if (r < 0) {
                service_fail(c, r, u.name);
                goto out;
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:b,s:o,s:s+}", "success", ok, "message",
                                  ok ? json_string("service created and started") : json_text(message, strlen(message)),
                                  "serviceName", u.name, ".service");
out:
        vmm_guest_close(g);
        svc_unit_clear(&u);
        free(message);
        free(user);
        json_decref(body);
}

void api_list_services(struct api_call *c)
{
        struct vmm_guest *g = open_vm(c);
        char **names = NULL;
        size_t n = 0;
        json_t *list;
        int r;

        if (!g)
                return;
        r = svc_list(g, &names, &n);
        vmm_guest_close(g);
        if (r < 0) {
                service_fail(c, r, "");
                return;
        }
        list = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(list, json_pack("{s:o}", "name", json_text(names[i], strlen(names[i]))));
        svc_names_free(names, n);
        c->resp->status = 200;
        c->resp->body = json_pack("{s:o}", "services", list);
}

void api_delete_service(struct api_call *c)
{
        char *name = route_service(c);
        struct vmm_guest *g = name ? open_vm(c) : NULL;
        int r;

        if (g) {
                r = svc_delete(g, name);
                if (r < 0) {
                        service_fail(c, r, name);
                } else {
                        c->resp->status = 200;
                        c->resp->body = json_pack("{s:b,s:s}", "success", 1, "message", "service deleted");
                }
        }
        vmm_guest_close(g);
        free(name);
}

void api_service_status(struct api_call *c)
{
        struct svc_status st = {0};
        char *name = route_service(c);
        struct vmm_guest *g = name ? open_vm(c) : NULL;
        int r;

        if (g) {
                r = svc_status(g, name, &st);
                if (r < 0) {
                        service_fail(c, r, name);
                } else {
                        c->resp->status = 200;
                        c->resp->body = json_pack("{s:s,s:o,s:o,s:o,s:o}", "name", name, "loadState",
                                                  json_str_or_null(st.load), "activeState", json_str_or_null(st.active),
                                                  "subState", json_str_or_null(st.sub), "description",
                                                  json_str_or_null(st.description));
                }
        }
        svc_status_clear(&st);
        vmm_guest_close(g);
        free(name);
}

void api_service_logs(struct api_call *c)
{
        struct svc_log *logs = NULL;
        size_t n = 0;
        int64_t lines = 100;
        char *name = route_service(c), *since = NULL;
        struct vmm_guest *g = NULL;
        json_t *list;
        int r;

        if (!name || api_query_int(c, "lines", &lines) < 0 || !(g = open_vm(c)))
                goto out;
        since = http_query(c->req, "since");
        r = svc_logs(g, name, lines, since, &logs, &n);
        if (r < 0) {
                service_fail(c, r, name);
                goto out;
        }
        list = json_array();
        for (size_t i = 0; i < n; i++) {
                char when[32];

                format_time(logs[i].time_ms, when);
                json_array_append_new(list, json_pack("{s:o,s:s,s:o,s:o}", "message",
                                                      json_text(logs[i].message, strlen(logs[i].message)), "timestamp",
                                                      when, "priority", json_str_or_null(logs[i].priority), "unit",
                                                      json_str_or_null(logs[i].unit)));
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:o}", "logs", list);
out:
        svc_logs_free(logs, n);
        vmm_guest_close(g);
        free(since);
        free(name);
}

/* systemctl op on each service of {services: [{id}]}; each answered on
 * its own. */
static void batch(struct api_call *c, const char *op)
{
        json_t *body = api_body(c, "INVALID_PARAMETERS"), *list, *results = NULL, *item;
        struct vmm_guest *g = NULL;
        size_t i;

        if (!body)
                return;
        list = json_object_get(body, "services");
        if (!json_is_array(list) || json_array_size(list) > 64) {
                api_error(c, 400, "INVALID_PARAMETERS", "'services' must be a list of at most 64 {id}");
                goto out;
        }
        g = open_vm(c);
        if (!g)
                goto out;
        results = json_array();
        json_array_foreach(list, i, item) {
                const char *sid = json_string_value(json_object_get(item, "id")), *code;
                char msg[160], *name = svc_name(sid ? sid : "", &code, msg, sizeof(msg)), *out = NULL;
                int ok = 0, r = name ? svc_control(g, op, name, &ok, &out) : -EINVAL;

                if (r < 0 && name)
                        snprintf(msg, sizeof(msg), "%s", strerror(-r));
                json_array_append_new(results, json_pack("{s:s,s:b,s:o}", "serviceId", sid ? sid : "", "success",
                                                         r == 0 && ok, "message",
                                                         r < 0 ? json_string(msg)
                                                         : ok  ? json_string("ok")
                                                               : json_text(out, strlen(out))));
                free(name);
                free(out);
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:o}", "results", results);
out:
        vmm_guest_close(g);
        json_decref(body);
}

void api_services_start(struct api_call *c)
{
        batch(c, "start");
}

void api_services_stop(struct api_call *c)
{
        batch(c, "stop");
}

void api_services_restart(struct api_call *c)
{
        batch(c, "restart");
}

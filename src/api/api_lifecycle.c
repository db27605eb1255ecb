/*
 * api_lifecycle: /v1/vms/{vm_id}/{suspend,start,stop,kill,await,fork,
 * optimize,resize}. Depends on the VM manager.
 */
#include "api/api_int.h"
#include "lib/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The VM's current run, or null. */
static json_t *instance_json(struct api_call *c)
{
        struct vmm_info i = {0};
        json_t *j = json_null();

        if (vmm_get(c->a->vmm, c->account, c->vm_id, &i) == 0 && i.instance[0])
                j = json_string(i.instance);
        vmm_info_clear(&i);
        return j;
}

/* These operations take no fields, but a body that is there must be a
 * JSON object. */
static int empty_body(struct api_call *c)
{
        json_t *body = api_body(c, "INVALID_PARAMETERS");

        json_decref(body);
        return body ? 0 : -EINVAL;
}

/* Answers with body (owned) when r is 0, else with the error. */
static void answer(struct api_call *c, int r, json_t *body)
{
        if (r < 0) {
                json_decref(body);
                api_fail(c, r, API_VM, c->vm_id, NULL);
                return;
        }
        c->resp->status = 200;
        c->resp->body = body;
}

void api_suspend(struct api_call *c)
{
        json_t *inst;
        int r;

        if (empty_body(c) < 0)
                return;
        inst = instance_json(c);
        r = vmm_suspend(c->a->vmm, c->account, c->vm_id);
        answer(c, r, json_pack("{s:s,s:o,s:n}", "id", c->vm_id, "vmInstanceId", inst, "snapshotLayerId"));
}

void api_start(struct api_call *c)
{
        if (empty_body(c) == 0)
                answer(c, vmm_start(c->a->vmm, c->account, c->vm_id),
                       json_pack("{s:s,s:o,s:n}", "id", c->vm_id, "domains", api_domains_json(c->a, c->vm_id),
                                 "console_url"));
}

void api_stop(struct api_call *c)
{
        json_t *inst;
        int r;

        if (empty_body(c) < 0)
                return;
        inst = instance_json(c);
        r = vmm_stop(c->a->vmm, c->account, c->vm_id);
        answer(c, r, json_pack("{s:s,s:o}", "vmId", c->vm_id, "vmInstanceId", inst));
}

void api_kill(struct api_call *c)
{
        if (empty_body(c) == 0)
                answer(c, vmm_kill(c->a->vmm, c->account, c->vm_id), json_pack("{s:s}", "id", c->vm_id));
}

void api_await(struct api_call *c)
{
        char status[16];
        int r;

        if (empty_body(c) < 0)
                return;
        r = vmm_await(c->a->vmm, c->account, c->vm_id, c->a->max_request_ms, status);
        if (r == -ETIMEDOUT)
                api_error(c, 504, "AWAIT_TIMED_OUT", "VM %s still runs after %lld s; call await again", c->vm_id,
                          (long long)(c->a->max_request_ms / 1000));
        else
                answer(c, r, r == 0 ? json_pack("{s:s,s:s}", "id", c->vm_id, "exitStatus", status) : NULL);
}

void api_fork(struct api_call *c)
{
        char ids[VMM_MAX_FORKS][21];
        struct api_routes routes = {0};
        int64_t count = 1;
        json_t *body = api_body(c, "INVALID_PARAMETERS"), *forks;
        int r;

        if (!body)
                return;
        r = api_opt_int(c, body, "count", 1, VMM_MAX_FORKS, &count, "INVALID_PARAMETERS");
        /* A fork has the ports it is given, else its parent's. */
        if (r == 0 && json_object_get(body, "ports")) {
                r = api_routes_parse(c, body, "INVALID_PARAMETERS", &routes);
        } else if (r == 0) {
                r = store_ports_get(c->a->store, c->vm_id, routes.ports, 2, &routes.nports);
                if (r < 0)
                        api_error(c, 500, "INTERNAL_ERROR", "could not read the VM's ports: %s", strerror(-r));
        }
        json_decref(body);
        if (r < 0)
                return;
        routes.ndomains = 0; /* a custom domain maps to one VM */
        r = vmm_fork(c->a->vmm, c->account, c->vm_id, (int)count, ids);
        forks = json_array();
        for (int i = 0; r == 0 && i < count; i++) {
                if (store_ports_set(c->a->store, ids[i], routes.ports, routes.nports) < 0)
                        log_warn("vm %s: could not record its ports", ids[i]);
                json_array_append_new(forks, json_pack("{s:s,s:o,s:n}", "id", ids[i], "domains",
                                                       api_domains_json(c->a, ids[i]), "consoleUrl"));
        }
        answer(c, r, json_pack("{s:s,s:o}", "vmId", c->vm_id, "forks", forks));
}

void api_optimize(struct api_call *c)
{
        answer(c, vmm_optimize(c->a->vmm, c->account, c->vm_id),
               json_pack("{s:s,s:s}", "id", c->vm_id, "message",
                         "suspended; its disk now sits directly on the default snapshot"));
}

void api_resize(struct api_call *c)
{
        int64_t disk = 0, mem = 0, vcpus = 0;
        json_t *body = api_body(c, "INVALID_PARAMETERS");
        int r;

        if (!body)
                return;
        /* The server's caps on one VM bound what a resize may ask for. */
        r = api_opt_int(c, body, "rootfsSizeGb", 0, c->a->max_vm_disk_gb, &disk, "INVALID_PARAMETERS");
        if (r == 0)
                r = api_opt_int(c, body, "memSizeGb", 0, c->a->max_vm_mem_mb / 1024, &mem, "INVALID_PARAMETERS");
        if (r == 0)
                r = api_opt_int(c, body, "vcpuCount", 0, c->a->max_vm_vcpus, &vcpus, "INVALID_PARAMETERS");
        json_decref(body);
        if (r < 0)
                return;
        r = vmm_resize(c->a->vmm, c->account, c->vm_id, disk, mem, vcpus);
        if (r == -EINVAL)
                api_error(c, 400, "INVALID_PARAMETERS", "resize only grows a VM: disk, memory and vCPUs cannot shrink");
        else
                answer(c, r, json_object());
}

/*
 * api_files: /v1/vms/{vm_id}/exec-await and /v1/vms/{vm_id}/files/...:
 * commands and files inside a VM, as root or as the Linux user the
 * X-Freestyle-Vm-Linux-User-Id header names. Depends on the VM manager's
 * guest operations.
 */
#include "api/api_int.h"
#include "lib/json.h"
#include "lib/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void api_exec(struct api_call *c)
{
        struct agentc_result res = {0};
        struct vmm_exec e = {0};
        struct vmm_guest *g = NULL;
        char *user = NULL;
        json_t *body = api_body(c, "INVALID_PARAMETERS");
        int r;

        if (!body)
                return;
        if (api_opt_string(c, body, "command", &e.command, "INVALID_PARAMETERS") < 0 ||
            api_opt_string(c, body, "terminal", &e.terminal, "INVALID_PARAMETERS") < 0 ||
            api_opt_int(c, body, "timeoutMs", 0, 24LL * 3600 * 1000, &e.timeout_ms, "INVALID_PARAMETERS") < 0 ||
            api_linux_user(c, &user) < 0)
                goto out;
        if (!e.command) {
                api_error(c, 400, "INVALID_PARAMETERS", "field 'command' is required");
                goto out;
        }
        e.user = user;
        r = vmm_guest_open(c->a->vmm, c->account, c->vm_id, &g);
        if (r == 0)
                r = vmm_guest_exec(g, &e, &res);
        if (r < 0) {
                api_fail(c, r, API_VM, c->vm_id, NULL);
        } else if (res.timed_out) {
                api_error(c, 408, "EXEC_TIMED_OUT", "command did not finish within %lld ms", (long long)e.timeout_ms);
                json_object_set_new(c->resp->body, "stdout", json_text(res.out.data, res.out.len));
                json_object_set_new(c->resp->body, "stderr", json_text(res.errout.data, res.errout.len));
        } else if (res.overflow || res.err == E2BIG) {
                api_fail(c, -E2BIG, API_EXEC, c->vm_id, NULL);
        } else if (res.err) {
                api_fail(c, -res.err, e.terminal ? API_TERMINAL_EXEC : API_EXEC, e.terminal ? e.terminal : c->vm_id,
                         res.errmsg);
        } else {
                c->resp->status = 200;
                c->resp->body = json_pack("{s:o,s:o,s:i}", "stdout", json_text(res.out.data, res.out.len), "stderr",
                                          json_text(res.errout.data, res.errout.len), "statusCode", res.exit_code);
        }
out:
        vmm_guest_close(g);
        agentc_result_free(&res);
        free(user);
        json_decref(body);
}

/* The {filepath} of the route, decoded; NULL with a 400 answer when it is
 * malformed, empty or too long. */
static char *file_path(struct api_call *c)
{
        char *path = http_decode(c->rest, strlen(c->rest), 0);

        if (!path)
                api_error(c, 400, "FILES_BAD_REQUEST", "the file path has a malformed %%-escape or an encoded NUL byte");
        else if (!*path)
                api_error(c, 400, "FILES_BAD_REQUEST", "a file path is required after /files/");
        else if (strlen(path) > 4096)
                api_error(c, 400, "FILES_BAD_REQUEST", "the file path is too long");
        else
                return path;
        free(path);
        return NULL;
}

static json_t *dir_json(const struct agentc_result *res)
{
        json_t *files = json_array();

        for (size_t i = 0; files && i < res->nentries; i++)
                json_array_append_new(files, json_pack("{s:o,s:s}", "name",
                                                       json_text(res->entries[i].name, strlen(res->entries[i].name)),
                                                       "kind", res->entries[i].is_dir ? "directory" : "file"));
        return json_pack("{s:o}", "files", files);
}

static json_t *file_json(const struct agentc_bytes *b)
{
        const char *bytes = b->data ? (const char *)b->data : "";
        char *enc;
        json_t *j;

        if (utf8_valid(bytes, b->len))
                return json_pack("{s:s%,s:s}", "content", bytes, b->len, "encoding", "utf8");
        enc = base64_encode(bytes, b->len);
        j = enc ? json_pack("{s:s,s:s}", "content", enc, "encoding", "base64") : NULL;
        free(enc);
        return j;
}

void api_get_file(struct api_call *c)
{
        struct agentc_result res = {0};
        struct vmm_guest *g = NULL;
        char *user = NULL, *path = file_path(c);
        int r;

        if (!path || api_linux_user(c, &user) < 0)
                goto out;
        r = vmm_guest_open(c->a->vmm, c->account, c->vm_id, &g);
        if (r == 0)
                r = vmm_guest_read(g, path, user, &res);
        if (r < 0) {
                api_fail(c, r, API_VM, c->vm_id, NULL);
        } else if (res.err) {
                api_fail(c, -res.err, API_FILE, path, res.errmsg);
        } else if (res.overflow) {
                api_error(c, 413, "FILE_TOO_LARGE", "%s is larger than the server's limit", path);
        } else {
                c->resp->status = 200;
                c->resp->body = res.is_dir ? dir_json(&res) : file_json(&res.data);
                if (!c->resp->body)
                        api_error(c, 500, "INTERNAL_ERROR", "out of memory");
        }
out:
        vmm_guest_close(g);
        agentc_result_free(&res);
        free(user);
        free(path);
}

void api_put_file(struct api_call *c)
{
        struct agentc_result res = {0};
        struct vmm_guest *g = NULL;
        const char *why = NULL;
        uint8_t *data = NULL;
        size_t len = 0;
        char *user = NULL, *path = file_path(c);
        int exe = 0, r;
        json_t *body = path ? api_body(c, "FILES_BAD_REQUEST") : NULL;

        if (!body || api_linux_user(c, &user) < 0)
                goto out;
        if (json_content(body, &data, &len, &why) < 0) {
                api_error(c, 400, "FILES_BAD_REQUEST", "%s", why);
                goto out;
        }
        if (api_opt_bool(c, body, "executable", &exe, "FILES_BAD_REQUEST") < 0)
                goto out;
        r = vmm_guest_open(c->a->vmm, c->account, c->vm_id, &g);
        if (r == 0)
                r = vmm_guest_write(g, path, user, data, len, exe ? 0755 : 0644, &res);
        if (r < 0)
                api_fail(c, r, API_VM, c->vm_id, NULL);
        else if (res.err)
                api_fail(c, -res.err, API_FILE, path, res.errmsg);
        else {
                c->resp->status = 200;
                c->resp->body = json_object();
        }
out:
        vmm_guest_close(g);
        agentc_result_free(&res);
        free(data);
        free(user);
        free(path);
        json_decref(body);
}

/*
 * api_terminals: /v1/vms/{vm_id}/terminals...: the persistent terminals
 * (PTY sessions) in a VM, their output as plain lines or as raw xterm
 * bytes. Depends on the VM manager's guest operations.
 */
#include "api/api_int.h"
#include "lib/json.h"
#include "lib/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

void api_list_terminals(struct api_call *c)
{
        struct agentc_result res = {0};
        struct vmm_guest *g = NULL;
        json_t *list;
        int r = vmm_guest_open(c->a->vmm, c->account, c->vm_id, &g);

        if (r == 0)
                r = vmm_guest_term_list(g, &res);
        vmm_guest_close(g);
        if (r < 0 || res.err) {
                api_fail(c, r < 0 ? r : -res.err, API_VM, c->vm_id, res.errmsg);
                agentc_result_free(&res);
                return;
        }
        list = json_array();
        for (size_t i = 0; i < res.nentries; i++)
                json_array_append_new(list, json_pack("{s:o,s:s,s:n}", "name",
                                                      json_text(res.entries[i].name, strlen(res.entries[i].name)),
                                                      "status", "running", "created"));
        agentc_result_free(&res);
        c->resp->status = 200;
        c->resp->body = json_pack("{s:o}", "terminals", list);
}

/* A terminal's scrollback, sanitized to UTF-8 (malloc'd); NULL when it
 * was answered with an error. */
static char *terminal_output(struct api_call *c, char **ret_name)
{
        struct agentc_result res = {0};
        struct vmm_guest *g = NULL;
        char *name = api_param(c), *text = NULL;
        size_t n;
        int r;

        if (!name) {
                api_error(c, 404, "TERMINAL_NOT_FOUND", "malformed terminal id");
                return NULL;
        }
        r = vmm_guest_open(c->a->vmm, c->account, c->vm_id, &g);
        if (r == 0)
                r = vmm_guest_term_log(g, name, &res);
        vmm_guest_close(g);
        if (r < 0)
                api_fail(c, r, API_VM, c->vm_id, NULL);
        else if (res.err)
                api_fail(c, -res.err, API_TERMINAL, name, res.errmsg);
        else if (!(text = utf8_sanitize(res.data.data ? (char *)res.data.data : "", res.data.len, &n)))
                api_error(c, 500, "INTERNAL_ERROR", "out of memory");
        agentc_result_free(&res);
        if (!text) {
                free(name);
                return NULL;
        }
        *ret_name = name;
        return text;
}

void api_terminal_logs(struct api_call *c)
{
        char *name = NULL, *text = terminal_output(c, &name), *line, *save = NULL;
        json_t *lines;

        if (!text)
                return;
        strip_escapes(text);
        lines = json_array();
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
                json_array_append_new(lines, json_pack("{s:s,s:n}", "line", line, "timestamp"));
        c->resp->status = 200;
        c->resp->body = json_pack("{s:o}", "logs", lines);
        free(text);
        free(name);
}

void api_terminal_xterm(struct api_call *c)
{
        char *name = NULL, *text = terminal_output(c, &name);

        if (!text)
                return;
        c->resp->status = 200;
        c->resp->body = json_pack("{s:s}", "output", text);
        free(text);
        free(name);
}

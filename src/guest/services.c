/*
 * services: systemd services in a VM. Depends on the VM manager's guest
 * operations, systemd.c and jansson. Every name that reaches a shell
 * command was checked by sysd_check_name (letters, digits and -_.@ only),
 * so it needs no quoting; everything else is quoted.
 */
#include "guest/services.h"
#include "guest/systemd.h"
#include "lib/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SVC_TIMEOUT_MS 120000

int svc_sh(struct vmm_guest *g, const char *cmd, int64_t timeout_ms, char **ret_out, int *ret_code)
{
        struct vmm_exec e = {.command = cmd, .timeout_ms = timeout_ms};
        struct agentc_result res = {0};
        int r = vmm_guest_exec(g, &e, &res);

        if (r < 0)
                return r;
        if (res.err || res.timed_out) {
                agentc_result_free(&res);
                return -EIO;
        }
        *ret_code = res.exit_code;
        if (asprintf(ret_out, "%.*s%.*s", (int)res.out.len, res.out.data ? (char *)res.out.data : "",
                     (int)res.errout.len, res.errout.data ? (char *)res.errout.data : "") < 0) {
                *ret_out = NULL;
                r = -ENOMEM;
        }
        agentc_result_free(&res);
        return r;
}

char *svc_name(const char *raw, const char **ret_code, char *msg, size_t size)
{
        char *name;

        *ret_code = sysd_check_name(raw, msg, size);
        if (*ret_code)
                return NULL;
        name = sysd_base_name(raw);
        if (!name) {
                *ret_code = "INTERNAL_ERROR";
                snprintf(msg, size, "out of memory");
        }
        return name;
}

int svc_unit(json_t *spec, const char *user, int patch, struct svc_unit *ret, const char **ret_code, char *msg,
             size_t size)
{
        const char *raw = json_string_value(json_object_get(spec, "name"));
        const char *mode = json_string_value(json_object_get(spec, "mode"));
        char *name, *text, why[256];

        memset(ret, 0, sizeof(*ret));
        name = svc_name(raw ? raw : "", ret_code, msg, size);
        if (!name)
                return -EINVAL;
        text = sysd_render(spec, user, patch, ret_code, why, sizeof(why));
        if (!text) {
                snprintf(msg, size, "service %s: %s", name, why);
                free(name);
                return -EINVAL;
        }
        ret->name = name;
        ret->text = text;
        ret->enable = sysd_wants_enable(spec);
        ret->oneshot = mode && !strcmp(mode, "oneshot");
        return 0;
}

void svc_unit_clear(struct svc_unit *u)
{
        if (!u)
                return;
        free(u->name);
        free(u->text);
        memset(u, 0, sizeof(*u));
}

int svc_install(struct vmm_guest *g, const struct svc_unit *u)
{
        struct agentc_result res = {0};
        char *path = NULL, *cmd = NULL, *out = NULL;
        int r = -ENOMEM, code = 0;

        if (asprintf(&path, SYSD_UNIT_DIR "/%s.service", u->name) < 0 ||
            asprintf(&cmd, "test -e %s && exit 17; exit 0", path) < 0)
                goto out;
        r = svc_sh(g, cmd, SVC_TIMEOUT_MS, &out, &code);
        if (r == 0 && code == 17)
                r = -EEXIST;
        if (r == 0)
                r = vmm_guest_write(g, path, NULL, u->text, strlen(u->text), 0644, &res);
        if (r == 0 && res.err)
                r = -EIO;
        agentc_result_free(&res);
out:
        free(path);
        free(cmd);
        free(out);
        return r;
}

int svc_create(struct vmm_guest *g, const struct svc_unit *u, int *ret_ok, char **ret_message)
{
        char *cmd = NULL;
        int r, code = 0;

        r = svc_install(g, u);
        if (r < 0)
                return r;
        /* A oneshot may run long: start it without waiting for it to end.
         * A service that dies at once still "starts": look again a moment
         * later and report it failed. */
        if (asprintf(&cmd,
                     "systemctl daemon-reload && %s%s%s systemctl start %s %s.service && "
                     "{ %s ! systemctl is-failed -q %s.service || "
                     "{ echo 'the service failed right after starting'; exit 1; }; }",
                     u->enable ? "systemctl enable -q " : "", u->enable ? u->name : "",
                     u->enable ? ".service 2>&1 &&" : "", u->oneshot ? "--no-block" : "", u->name,
                     u->oneshot ? "" : "sleep 0.5;", u->name) < 0)
                return -ENOMEM;
        r = svc_sh(g, cmd, SVC_TIMEOUT_MS, ret_message, &code);
        free(cmd);
        if (r == 0)
                *ret_ok = code == 0;
        return r;
}

void svc_names_free(char **names, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

int svc_list(struct vmm_guest *g, char ***ret_names, size_t *ret_n)
{
        char *out = NULL, *line, *save = NULL, **names = NULL;
        size_t n = 0;
        int code, r;

        r = svc_sh(g, "grep -l -x '" SYSD_MARKER "' " SYSD_UNIT_DIR "/*.service 2>/dev/null; exit 0", SVC_TIMEOUT_MS,
                   &out, &code);
        if (r < 0)
                return r;
        for (line = strtok_r(out, "\n", &save); line && r == 0; line = strtok_r(NULL, "\n", &save)) {
                char *base = strrchr(line, '/'), **grown;

                base = base ? base + 1 : line;
                grown = realloc(names, (n + 1) * sizeof(*names));
                if (!grown || !(grown[n] = sysd_base_name(base))) {
                        names = grown ? grown : names;
                        r = -ENOMEM;
                        break;
                }
                names = grown;
                n++;
        }
        free(out);
        if (r < 0) {
                svc_names_free(names, n);
                return r;
        }
        *ret_names = names;
        *ret_n = n;
        return 0;
}

void svc_status_clear(struct svc_status *s)
{
        if (!s)
                return;
        free(s->load);
        free(s->active);
        free(s->sub);
        free(s->description);
        memset(s, 0, sizeof(*s));
}

int svc_status(struct vmm_guest *g, const char *name, struct svc_status *ret)
{
        char *cmd = NULL, *out = NULL, *line, *save = NULL;
        int code, r;

        memset(ret, 0, sizeof(*ret));
        if (asprintf(&cmd, "systemctl show %s.service -p LoadState -p ActiveState -p SubState -p Description", name) <
            0)
                return -ENOMEM;
        r = svc_sh(g, cmd, SVC_TIMEOUT_MS, &out, &code);
        free(cmd);
        if (r < 0)
                return r;
        for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *eq = strchr(line, '='), **field = NULL;
                size_t n;

                if (!eq)
                        continue;
                *eq = 0;
                if (!strcmp(line, "LoadState"))
                        field = &ret->load;
                else if (!strcmp(line, "ActiveState"))
                        field = &ret->active;
                else if (!strcmp(line, "SubState"))
                        field = &ret->sub;
                else if (!strcmp(line, "Description"))
                        field = &ret->description;
                if (field && !*field)
                        *field = utf8_sanitize(eq + 1, strlen(eq + 1), &n);
        }
        free(out);
        if (!ret->load || !strcmp(ret->load, "not-found")) {
                svc_status_clear(ret);
                return -ENOENT;
        }
        return 0;
}

void svc_logs_free(struct svc_log *logs, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(logs[i].message);
                free(logs[i].priority);
                free(logs[i].unit);
        }
        free(logs);
}

/* One line of `journalctl -o json` as an entry; 0 if it has no message. */
static int log_entry(const char *line, struct svc_log *ret)
{
        json_t *e = json_loads(line, 0, NULL);
        const char *msg = json_string_value(json_object_get(e, "MESSAGE"));
        const char *ts = json_string_value(json_object_get(e, "__REALTIME_TIMESTAMP"));
        const char *prio = json_string_value(json_object_get(e, "PRIORITY"));
        const char *unit = json_string_value(json_object_get(e, "_SYSTEMD_UNIT"));
        int ok = msg && ts;

        if (ok) {
                ret->message = strdup(msg);
                ret->time_ms = strtoll(ts, NULL, 10) / 1000;
                ret->priority = prio ? strdup(prio) : NULL;
                ret->unit = unit ? strdup(unit) : NULL;
        }
        json_decref(e);
        if (ok && ret->message)
                return 1;
        free(ret->message);
        free(ret->priority);
        free(ret->unit);
        memset(ret, 0, sizeof(*ret));
        return 0;
}

int svc_logs(struct vmm_guest *g, const char *name, int64_t lines, const char *since, struct svc_log **ret,
             size_t *ret_n)
{
        char *q = since && *since ? sysd_shell_quote(since) : NULL, *cmd = NULL, *out = NULL, *line, *save = NULL;
        struct svc_log *logs = NULL;
        size_t n = 0;
        int code = 0, r;

        if ((since && *since && !q) ||
            asprintf(&cmd,
                     "[ \"$(systemctl show -p LoadState --value %s.service)\" = not-found ] && exit 44;"
                     " journalctl -u %s.service -o json --no-pager -n %lld %s%s 2>/dev/null; exit 0",
                     name, name, (long long)(lines > 10000 ? 10000 : lines), q ? "--since " : "", q ? q : "") < 0) {
                free(q);
                return -ENOMEM;
        }
        free(q);
        r = svc_sh(g, cmd, SVC_TIMEOUT_MS, &out, &code);
        free(cmd);
        if (r == 0 && code == 44)
                r = -ENOENT;
        for (line = r == 0 ? strtok_r(out, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
                struct svc_log *grown = realloc(logs, (n + 1) * sizeof(*logs));

                if (!grown) {
                        r = -ENOMEM;
                        break;
                }
                logs = grown;
                memset(&logs[n], 0, sizeof(logs[n]));
                if (log_entry(line, &logs[n]))
                        n++;
        }
        free(out);
        if (r < 0) {
                svc_logs_free(logs, n);
                return r;
        }
        *ret = logs;
        *ret_n = n;
        return 0;
}

int svc_delete(struct vmm_guest *g, const char *name)
{
        char *cmd = NULL, *out = NULL;
        int code = 0, r;

        if (asprintf(&cmd,
                     "f=" SYSD_UNIT_DIR "/%1$s.service; grep -q -x '" SYSD_MARKER "' \"$f\" 2>/dev/null || exit 44;"
                     " systemctl disable --now -q %1$s.service 2>/dev/null; rm -rf \"$f\" \"$f.d\";"
                     " systemctl daemon-reload; systemctl reset-failed %1$s.service 2>/dev/null; exit 0",
                     name) < 0)
                return -ENOMEM;
        r = svc_sh(g, cmd, SVC_TIMEOUT_MS, &out, &code);
        free(cmd);
        free(out);
        return r == 0 && code == 44 ? -ENOENT : r;
}

int svc_control(struct vmm_guest *g, const char *op, const char *name, int *ret_ok, char **ret_message)
{
        char *cmd = NULL;
        int code = 0, r;

        if (asprintf(&cmd, "systemctl %s %s.service 2>&1", op, name) < 0)
                return -ENOMEM;
        r = svc_sh(g, cmd, SVC_TIMEOUT_MS, ret_message, &code);
        free(cmd);
        if (r == 0)
                *ret_ok = code == 0;
        return r;
}

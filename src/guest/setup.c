/*
 * setup: create-time setup. Depends on the VM manager's guest handle,
 * services.c, systemd.c, jansson and util. Groups, users, git and apt
 * packages become one shell script whose every word from the request is
 * quoted; it stops at the first failing step and names it on stderr.
 */
#include "guest/setup.h"
#include "guest/services.h"
#include "guest/systemd.h"
#include "lib/json.h"
#include "lib/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SETUP_MAX_SERVICES 64
#define STEP_TIMEOUT_MS 120000

struct setup {
        json_t *body;      /* a reference; only read */
        int64_t timeout_s; /* readySignalTimeoutSeconds: bounds the setup; 0: no bound */
        /* A build's setup (setup_for_build): each step is a phase, and
         * oneshot services are waited for. */
        void (*phase)(void *ud, const char *name);
        void *phase_ud;
};

/* How a setup failed: a message and optional diagnostics. */
struct failure {
        char msg[1024];
        json_t *diagnostics;
};

static int fail(struct failure *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct failure *f, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
        va_end(ap);
        return -EIO;
}

/* ------------------------------------------------------------------ */
/* The script for groups, users, git and packages                      */
/* ------------------------------------------------------------------ */

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

static void add(struct strbuf *s, const char *text)
{
        strbuf_add(s, text, strlen(text));
}

/* A shell-quoted word with a leading space. */
static void word(struct strbuf *s, const char *w)
{
        char *q = sysd_shell_quote(w);

        if (!q) {
                s->oom = 1;
                return;
        }
        add(s, " ");
        add(s, q);
        free(q);
}

static void number(struct strbuf *s, const char *flag, json_t *v)
{
        char num[48];

        if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < 65536) {
                snprintf(num, sizeof(num), " %s %lld", flag, (long long)json_integer_value(v));
                add(s, num);
        }
}

/* 1 when a list field is there, 0 when absent or null, -EINVAL (with a
 * message) when it is no list. */
static int list_given(json_t *v, const char *what, char *msg, size_t size)
{
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_array(v))
                return snprintf(msg, size, "'%s' must be a list", what), -EINVAL;
        return 1;
}

static int script_groups(struct strbuf *s, json_t *groups, char *msg, size_t size)
{
        int r = list_given(groups, "groups", msg, size);
        size_t i;
        json_t *v;

        if (r <= 0)
                return r;
        json_array_foreach(groups, i, v) {
                const char *name = json_string_value(json_object_get(v, "name"));

                if (!unix_name_valid(name))
                        return snprintf(msg, size, "groups[%zu].name is not a valid group name", i), -EINVAL;
                add(s, " step group");
                word(s, name);
                add(s, "; getent group");
                word(s, name);
                add(s, " >/dev/null || groupadd");
                if (json_is_true(json_object_get(v, "system")))
                        add(s, " -r");
                number(s, "-g", json_object_get(v, "gid"));
                word(s, name);
                add(s, ";");
        }
        return 0;
}

static int script_users(struct strbuf *s, json_t *users, char *msg, size_t size)
{
        int r = list_given(users, "users", msg, size);
        size_t i, k;
        json_t *v, *g;

        if (r <= 0)
                return r;
        json_array_foreach(users, i, v) {
                const char *name = json_string_value(json_object_get(v, "name"));
                const char *gecos = json_string_value(json_object_get(v, "gecos"));
                const char *home = json_string_value(json_object_get(v, "home"));
                const char *shell = json_string_value(json_object_get(v, "shell"));
                int sys = json_is_true(json_object_get(v, "system"));

                if (!unix_name_valid(name))
                        return snprintf(msg, size, "users[%zu].name is not a valid user name", i), -EINVAL;
                if ((home && home[0] != '/') || (shell && shell[0] != '/') || (gecos && strpbrk(gecos, ":\n")))
                        return snprintf(msg, size,
                                        "users[%zu]: home and shell must be absolute paths, gecos one line without ':'",
                                        i),
                               -EINVAL;
                add(s, " step user");
                word(s, name);
                add(s, "; id -u");
                word(s, name);
                add(s, " >/dev/null 2>&1 || useradd");
                add(s, sys ? " -r" : " -m");
                number(s, "-u", json_object_get(v, "uid"));
                if (gecos) {
                        add(s, " -c");
                        word(s, gecos);
                }
                if (home) {
                        add(s, " -d");
                        word(s, home);
                }
                add(s, " -s");
                word(s, shell ? shell : sys ? "/usr/sbin/nologin" : "/bin/bash");
                word(s, name);
                add(s, ";");
                json_array_foreach(json_object_get(v, "groups"), k, g) {
                        if (!unix_name_valid(json_string_value(g)))
                                return snprintf(msg, size, "users[%zu].groups has an invalid group name", i), -EINVAL;
                        add(s, " usermod -aG");
                        word(s, json_string_value(g));
                        word(s, name);
                        add(s, ";");
                }
        }
        return 0;
}

static int script_git(struct strbuf *s, json_t *git, char *msg, size_t size)
{
        static const char *const keys[] = {"name", "email", "signingkey"};
        static const char *const options[] = {"user.name", "user.email", "user.signingkey"};
        json_t *user, *v;
        size_t i;

        if (!git || json_is_null(git))
                return 0;
        if (!json_is_object(git))
                return snprintf(msg, size, "'git' must be an object"), -EINVAL;
        user = json_object_get(json_object_get(git, "config"), "user");
        for (size_t k = 0; k < 3; k++) {
                const char *val = json_string_value(json_object_get(user, keys[k]));

                if (!val)
                        continue;
                add(s, " step git config; git config --system");
                word(s, options[k]);
                word(s, val);
                add(s, ";");
        }
        json_array_foreach(json_object_get(git, "repos"), i, v) {
                const char *repo = json_string_value(json_object_get(v, "repo"));
                const char *path = json_string_value(json_object_get(v, "path"));
                const char *rev = json_string_value(json_object_get(v, "rev"));

                if (!repo || !*repo || !path || path[0] != '/' || (rev && (!*rev || rev[0] == '-')))
                        return snprintf(msg, size, "git.repos[%zu] needs a repo, an absolute path and an optional rev",
                                        i),
                               -EINVAL;
                add(s, " step git clone");
                word(s, repo);
                add(s, "; git clone -q --");
                word(s, repo);
                word(s, path);
                add(s, ";");
                if (rev) {
                        add(s, " git -C");
                        word(s, path);
                        add(s, " -c advice.detachedHead=false checkout -q");
                        word(s, rev);
                        add(s, " --;");
                }
        }
        return 0;
}

static int script_apt(struct strbuf *s, json_t *apt, char *msg, size_t size)
{
        int r = list_given(apt, "aptDeps", msg, size);
        size_t i;
        json_t *v;

        if (r <= 0 || json_array_size(apt) == 0)
                return r;
        add(s, " step apt-get install; export DEBIAN_FRONTEND=noninteractive;"
               " apt-get -q update >/dev/null && apt-get install -y -q --no-install-recommends");
        json_array_foreach(apt, i, v) {
                if (!valid_package(json_string_value(v)))
                        return snprintf(msg, size, "aptDeps[%zu] is not a valid package name", i), -EINVAL;
                word(s, json_string_value(v));
        }
        add(s, " >/dev/null;");
        return 0;
}

/* The script for a body's groups, users, git and aptDeps (malloc'd in
 * *ret; NULL when there is nothing to do), or -EINVAL with a message. */
static int setup_script(json_t *body, char **ret, char *msg, size_t size)
{
        struct strbuf s = {0};
        int r;

        *ret = NULL;
        add(&s, "set -e; step() { echo \"setup step: $*\" >&2; };");
        r = script_groups(&s, json_object_get(body, "groups"), msg, size);
        if (r == 0)
                r = script_users(&s, json_object_get(body, "users"), msg, size);
        if (r == 0)
                r = script_git(&s, json_object_get(body, "git"), msg, size);
        if (r == 0)
                r = script_apt(&s, json_object_get(body, "aptDeps"), msg, size);
        if (r == 0 && s.oom)
                r = -ENOMEM, snprintf(msg, size, "out of memory");
        /* Most creates ask for no setup: spare them a process in the guest. */
        if (r == 0 && strstr(s.s, " step "))
                *ret = s.s;
        else
                free(s.s);
        return r;
}

/* ------------------------------------------------------------------ */
/* Checks                                                              */
/* ------------------------------------------------------------------ */

int setup_check(json_t *body, const char **ret_code, char *msg, size_t size)
{
        static const char *const lists[] = {"services", "patchedServices"};
        json_t *files = json_object_get(body, "additionalFiles"), *sd = json_object_get(body, "systemd"), *v;
        const char *path;
        char *script = NULL;
        size_t i;

        *ret_code = "CREATE_VM_BAD_REQUEST";
        if (files && !json_is_null(files) && !json_is_object(files))
                return snprintf(msg, size, "field 'additionalFiles' must be an object"), -EINVAL;
        json_object_foreach(files, path, v) {
                const char *why = NULL;
                uint8_t *data = NULL;
                size_t len = 0;
                int r = json_is_object(v) ? json_content(v, &data, &len, &why) : -EINVAL;

                free(data);
                if (r < 0 && !why)
                        why = "must be an object with a 'content'";
                if (r < 0)
                        return snprintf(msg, size, "additionalFiles['%s']: %s", path, why), -EINVAL;
        }
        if (setup_script(body, &script, msg, size) < 0)
                return -EINVAL;
        free(script);
        if (sd && !json_is_null(sd) && !json_is_object(sd))
                return snprintf(msg, size, "'systemd' must be an object"), -EINVAL;
        for (size_t k = 0; k < 2; k++) {
                json_t *list = json_object_get(sd, lists[k]);

                if (!list || json_is_null(list))
                        continue;
                if (!json_is_array(list) || json_array_size(list) > SETUP_MAX_SERVICES)
                        return snprintf(msg, size, "systemd.%s must be a list of at most %d services", lists[k],
                                        SETUP_MAX_SERVICES),
                               -EINVAL;
                json_array_foreach(list, i, v) {
                        struct svc_unit u;
                        const char *code = NULL;
                        char why[512];

                        if (svc_unit(v, NULL, k == 1, &u, &code, why, sizeof(why)) < 0) {
                                *ret_code = code ? code : "CREATE_VM_BAD_REQUEST";
                                return snprintf(msg, size, "systemd.%s[%zu]: %s", lists[k], i, why), -EINVAL;
                        }
                        svc_unit_clear(&u);
                }
        }
        return 0;
}

/* ------------------------------------------------------------------ */
/* Running it                                                          */
/* ------------------------------------------------------------------ */

/* How long the next step may take: at most cap ms (0: no cap) and no
 * later than deadline (now_ms(); 0: none), in *ret_ms (0: unbounded).
 * Fails once the deadline has passed. */
static int step_time(int64_t deadline, int64_t cap, int64_t *ret_ms, struct failure *f)
{
        int64_t left = deadline ? deadline - now_ms() : 0;

        if (deadline && left <= 0)
                return fail(f, "VM setup timed out (readySignalTimeoutSeconds)");
        *ret_ms = !deadline ? cap : cap && cap < left ? cap : left;
        return 0;
}

/* svc_sh for a setup step, bounded as step_time says. */
static int step_sh(struct vmm_guest *g, const char *cmd, int64_t deadline, int64_t cap, char **ret_out,
                   int *ret_code, struct failure *f)
{
        int64_t ms = 0;
        int r = step_time(deadline, cap, &ms, f);

        if (r < 0)
                return r;
        r = svc_sh(g, cmd, ms, ret_out, ret_code);
        return r < 0 ? fail(f, "VM setup failed: %s", r == -EIO ? "a step timed out or could not run" : strerror(-r))
                     : 0;
}

/* Runs a step that must exit 0 (cmd NULL: out of memory); fails saying
 * what it was doing, with its output, also as diagnostics when diag is
 * set. */
static int step_ok(struct vmm_guest *g, const char *cmd, int64_t deadline, const char *what, int diag,
                   struct failure *f)
{
        char *out = NULL;
        int code = 0, r;

        if (!cmd)
                return fail(f, "out of memory");
        r = step_sh(g, cmd, deadline, STEP_TIMEOUT_MS, &out, &code, f);
        if (r == 0 && code != 0) {
                size_t n;
                /* The guest's words: JSON takes them only as UTF-8. */
                char *text = utf8_sanitize(out ? out : "", out ? strlen(out) : 0, &n);

                r = fail(f, "%s failed: %s", what, text ? text : "");
                if (diag)
                        f->diagnostics = json_pack("{s:s?}", "stderr", text);
                free(text);
        }
        free(out);
        return r;
}

static int write_files(struct vmm_guest *g, json_t *files, struct failure *f)
{
        const char *path;
        json_t *v;

        json_object_foreach(files, path, v) {
                struct agentc_result res = {0};
                const char *why = NULL;
                int exe = json_is_true(json_object_get(v, "executable"));
                uint8_t *data = NULL;
                size_t len = 0;
                int r = json_content(v, &data, &len, &why);

                if (r == 0)
                        r = vmm_guest_write(g, path, NULL, data, len, exe ? 0755 : 0644, &res);
                free(data);
                if (r == 0 && res.err)
                        fail(f, "writing additional file %s failed: %s", path,
                             res.errmsg ? res.errmsg : strerror(res.err));
                else if (r < 0)
                        fail(f, "writing additional file %s failed: %s", path, why ? why : strerror(-r));
                agentc_result_free(&res);
                if (r < 0 || f->msg[0])
                        return -EIO;
        }
        return 0;
}

/* Runs the groups/users/git/apt script, if the body asks for any. */
static int run_script(struct vmm_guest *g, json_t *body, int64_t deadline, struct failure *f)
{
        struct agentc_result res = {0};
        char *script = NULL, *err;
        char msg[256];
        int64_t ms = 0;
        size_t n = 0;
        int r;

        if (setup_script(body, &script, msg, sizeof(msg)) < 0)
                return fail(f, "VM setup failed: %s", msg);
        if (!script)
                return 0;
        r = step_time(deadline, 0, &ms, f);
        if (r == 0) {
                struct vmm_exec e = {.command = script, .timeout_ms = ms};

                r = vmm_guest_exec(g, &e, &res);
        }
        free(script);
        if (f->msg[0])
                return r;
        if (r == 0 && !res.err && !res.timed_out && res.exit_code == 0) {
                agentc_result_free(&res);
                return 0;
        }
        err = utf8_sanitize(res.errout.data ? (char *)res.errout.data : "", res.errout.len, &n);
        fail(f, "VM setup failed: %s", r < 0 ? strerror(-r) : res.timed_out ? "timed out" : err ? err : "error");
        f->diagnostics = json_pack("{s:s?}", "stderr", err);
        free(err);
        agentc_result_free(&res);
        return -EIO;
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

/* systemd.patchedServices: a drop-in over each unit (one the image has),
 * a reload, and a restart of the patched units that are running, since a
 * VM restored from a snapshot started them before the patch existed; the
 * patch then takes effect as if the VM had booted with it. */
static int apply_patches(struct vmm_guest *g, json_t *patched, int64_t deadline, struct failure *f)
{
        char *units = NULL, *cmd = NULL;
        int r = -EIO;
        size_t i;
        json_t *v;

        json_array_foreach(patched, i, v) {
                struct agentc_result res = {0};
                struct svc_unit u;
                const char *ecode;
                char *path = NULL, why[256] = "";
                int k = svc_unit(v, NULL, 1, &u, &ecode, why, sizeof(why));

                if (k == 0 && asprintf(&path, SYSD_UNIT_DIR "/%s.service.d/50-sprout.conf", u.name) < 0) {
                        path = NULL;
                        k = -ENOMEM;
                }
                if (k == 0)
                        k = vmm_guest_write(g, path, NULL, u.text, strlen(u.text), 0644, &res);
                if (k == 0 && res.err)
                        k = -res.err;
                if (k == 0)
                        k = add_unit(&units, u.name);
                if (k < 0)
                        fail(f, "writing systemd.patchedServices[%zu] failed: %s", i,
                             res.errmsg ? res.errmsg : why[0] ? why : strerror(-k));
                agentc_result_free(&res);
                svc_unit_clear(&u);
                free(path);
                if (k < 0)
                        goto out;
        }
        if (!units) {
                r = 0;
                goto out;
        }
        if (asprintf(&cmd, "systemctl daemon-reload && systemctl try-restart%s 2>&1", units) < 0)
                cmd = NULL;
        r = step_ok(g, cmd, deadline, "restarting the patched services", 0, f);
out:
        free(units);
        free(cmd);
        return r;
}

/* A service that did not come up: its last log lines as diagnostics. */
static int service_failed(struct vmm_guest *g, const char *name, const char *why, struct failure *f)
{
        char *logs = NULL, *cmd = NULL;
        int k = 0;

        if (asprintf(&cmd, "journalctl -u %s.service --no-pager -n 50 2>&1", name) >= 0 &&
            svc_sh(g, cmd, STEP_TIMEOUT_MS, &logs, &k) < 0)
                logs = NULL;
        fail(f, "service %s failed to start: %s", name, why);
        if (logs) {
                size_t n;
                char *text = utf8_sanitize(logs, strlen(logs), &n);

                free(logs);
                logs = text;
        }
        f->diagnostics = json_pack("{s:[{s:s,s:s?}]}", "failedUnits", "name", name, "logs", logs);
        free(cmd);
        free(logs);
        return -EIO;
}

/* Waits for a oneshot to have run (a build snapshots what it made): it
 * succeeded when it ended active or inactive after it ran, or deleted
 * itself (deleteAfterSuccess); it failed, or never ran because a unit it
 * requires failed. */
/* Runs a check of service name (script, a format with one %s for the
 * name) that exits non-zero with why on its first line when the service
 * failed: the setup fails then, with the service's logs. */
static int check_service(struct vmm_guest *g, const char *name, const char *script, int64_t deadline,
                         struct failure *f)
{
        char *cmd = NULL, *out = NULL;
        int code = 0, r;

        if (asprintf(&cmd, script, name) < 0)
                return fail(f, "out of memory");
        r = step_sh(g, cmd, deadline, 0, &out, &code, f);
        free(cmd);
        if (r == 0 && code != 0) {
                out[strcspn(out, "\n")] = 0;
                r = service_failed(g, name, out, f);
        }
        free(out);
        return r;
}

static int wait_oneshot(struct vmm_guest *g, const char *name, int64_t deadline, struct failure *f)
{
        return check_service(g, name,
                             "u=%s.service; while :; do s=$(systemctl show -p ActiveState --value $u);"
                             " [ -z \"$(systemctl show -p Job --value $u)\" ] && [ \"$s\" != activating ] &&"
                             " [ \"$s\" != deactivating ] && break; sleep 0.3; done;"
                             " [ \"$s\" = failed ] && { echo 'it failed'; exit 1; };"
                             " [ \"$(systemctl show -p LoadState --value $u)\" = not-found ] && exit 0;"
                             " [ \"$s\" = inactive ] &&"
                             " [ \"$(systemctl show -p ExecMainStartTimestampMonotonic --value $u)\" = 0 ] &&"
                             " { echo 'it never ran (did a unit it requires fail?)'; exit 1; }; exit 0",
                             deadline, f);
}

/* Waits for a long-running service's start job to end (after the units
 * it is ordered after) and checks that it came up. */
static int check_started(struct vmm_guest *g, const char *name, int64_t deadline, struct failure *f)
{
        /* Its start job ends once it runs (or failed, or a unit it requires
         * did); a service that dies at once still "started": look again a
         * moment later. */
        return check_service(g, name,
                             "u=%s.service; while [ -n \"$(systemctl show -p Job --value $u)\" ]; do sleep 0.2; done;"
                             " sleep 0.5; systemctl is-failed -q $u && { echo 'the service failed right after starting';"
                             " exit 1; }; [ \"$(systemctl show -p ActiveState --value $u)\" = inactive ] &&"
                             " [ \"$(systemctl show -p ExecMainStartTimestampMonotonic --value $u)\" = 0 ] &&"
                             " { echo 'the service never started (did a unit it requires fail?)'; exit 1; }; exit 0",
                             deadline, f);
}

/* systemd.services: every unit is written first, then all are started in
 * one transaction, as a boot starts them. Units that require each other
 * then each run once, in order, even when one deletes itself after success
 * (deleteAfterSuccess, as in the SDK's runCommands chains) before the next
 * one starts. A oneshot may run long and is not waited for; for a
 * long-running service the create waits until it is up. */
static int wait_oneshot(struct vmm_guest *g, const char *name, int64_t deadline, struct failure *f);

static int start_services(struct vmm_guest *g, json_t *services, int64_t deadline, int wait_oneshots,
                          struct failure *f)
{
        size_t n = json_array_size(services), i;
        struct svc_unit *units = calloc(n + 1, sizeof(*units));
        char *enable = NULL, *start = NULL, *cmd = NULL;
        int r = -EIO;
        json_t *v;

        if (!units)
                return fail(f, "out of memory");
        json_array_foreach(services, i, v) {
                const char *ecode;
                char why[256] = "";
                int k = svc_unit(v, NULL, 0, &units[i], &ecode, why, sizeof(why));

                if (k == 0)
                        k = svc_install(g, &units[i]);
                if (k < 0) {
                        fail(f, "systemd.services[%zu] could not be written: %s", i,
                             why[0] ? why : k == -EEXIST ? "the service already exists" : strerror(-k));
                        goto out;
                }
                if ((units[i].enable && add_unit(&enable, units[i].name) < 0) || add_unit(&start, units[i].name) < 0) {
                        fail(f, "out of memory");
                        goto out;
                }
        }
        if (asprintf(&cmd, "systemctl daemon-reload && %s%s%s systemctl start --no-block%s 2>&1",
                     enable ? "systemctl enable -q" : "", enable ? enable : "", enable ? " 2>&1 &&" : "", start) < 0)
                cmd = NULL;
        if (step_ok(g, cmd, deadline, "starting the services", 1, f) < 0)
                goto out;
        for (i = 0; i < n; i++)
                if (!units[i].oneshot && check_started(g, units[i].name, deadline, f) < 0)
                        goto out;
        for (i = 0; i < n && wait_oneshots; i++)
                if (units[i].oneshot && wait_oneshot(g, units[i].name, deadline, f) < 0)
                        goto out;
        r = 0;
out:
        for (i = 0; i < n; i++)
                svc_unit_clear(&units[i]);
        free(units);
        free(enable);
        free(start);
        free(cmd);
        return r;
}

static void phase(struct setup *x, const char *name)
{
        if (x->phase)
                x->phase(x->phase_ud, name);
}

/* The phase of the script step, named after what it does; "" when the
 * body has none of it. */
static void script_phase_name(json_t *body, char name[128])
{
        static const char *const fields[] = {"groups", "users", "git", "gitRepos", "aptDeps"};
        int any = 0;

        snprintf(name, 128, "setup:");
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
                json_t *v = json_object_get(body, fields[i]);

                if (json_array_size(v) > 0 || json_object_size(v) > 0) {
                        snprintf(name + strlen(name), 128 - strlen(name), "%s %s", any ? "," : "", fields[i]);
                        any = 1;
                }
        }
        if (!any)
                name[0] = 0;
}

static void script_phase(struct setup *x)
{
        char name[128];

        script_phase_name(x->body, name);
        if (name[0])
                phase(x, name);
}

void setup_steps(json_t *body, void (*fn)(void *ud, const char *name), void *ud)
{
        json_t *sd = json_object_get(body, "systemd");
        char name[128];

        if (json_object_size(json_object_get(body, "additionalFiles")) > 0)
                fn(ud, "setup: additionalFiles");
        script_phase_name(body, name);
        if (name[0])
                fn(ud, name);
        if (json_array_size(json_object_get(sd, "patchedServices")) > 0)
                fn(ud, "setup: patchedServices");
        if (json_array_size(json_object_get(sd, "services")) > 0)
                fn(ud, "setup: services");
}

/* vmm_setup.run: files; then groups, users, git and packages; then
 * systemd drop-ins and services, which may need all of those. */
static int setup_run(void *ud, struct vmm_guest *g, char **ret_report)
{
        struct setup *x = ud;
        struct failure f = {0};
        json_t *sd = json_object_get(x->body, "systemd"), *files = json_object_get(x->body, "additionalFiles");
        json_t *services = json_object_get(sd, "services"), *patched = json_object_get(sd, "patchedServices");
        int64_t deadline = x->timeout_s > 0 ? now_ms() + x->timeout_s * 1000 : 0;
        int r = 0;

        if (json_object_size(files) > 0) {
                phase(x, "setup: additionalFiles");
                r = write_files(g, files, &f);
        }
        if (r == 0) {
                script_phase(x);
                r = run_script(g, x->body, deadline, &f);
        }
        if (r == 0 && json_array_size(patched) > 0) {
                phase(x, "setup: patchedServices");
                r = apply_patches(g, patched, deadline, &f);
        }
        if (r == 0 && json_array_size(services) > 0) {
                phase(x, "setup: services");
                r = start_services(g, services, deadline, x->phase != NULL, &f);
        }
        if (r < 0) {
                size_t n;
                /* Cut to its buffer, the message may end inside a character. */
                char *msg = utf8_sanitize(f.msg, strlen(f.msg), &n);
                json_t *report = json_pack("{s:s,s:o?}", "message", msg && msg[0] ? msg : "VM setup failed",
                                           "diagnostics", f.diagnostics);

                free(msg);
                *ret_report = report ? json_dumps(report, JSON_COMPACT) : NULL;
                json_decref(report);
                return -EIO;
        }
        json_decref(f.diagnostics);
        return 0;
}

struct setup *setup_new(json_t *body, int64_t timeout_s)
{
        struct setup *x = calloc(1, sizeof(*x));

        if (!x)
                return NULL;
        x->body = json_incref(body);
        x->timeout_s = timeout_s;
        return x;
}

void setup_free(struct setup *x)
{
        if (!x)
                return;
        json_decref(x->body);
        free(x);
}

static void setup_release(void *ud)
{
        setup_free(ud);
}

void setup_for_build(struct setup *x, void (*fn)(void *ud, const char *name), void *ud)
{
        x->phase = fn;
        x->phase_ud = ud;
}

void setup_bind(struct setup *x, int background, struct vmm_setup *ret)
{
        *ret = (struct vmm_setup){.run = setup_run, .release = background ? setup_release : NULL, .ud = x};
}

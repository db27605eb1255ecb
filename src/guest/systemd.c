/*
 * systemd: SystemdUnitSpec -> unit file text, and name checks. Depends on
 * jansson and util. Every value that reaches the unit file is escaped for
 * systemd's own parser, so a spec cannot add directives of its own.
 */
#include "guest/systemd.h"
#include "lib/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYSD_NAME_MAX 64

static void addn(struct strbuf *t, const char *p, size_t n)
{
        strbuf_add(t, p, n);
}

static void add(struct strbuf *t, const char *s)
{
        addn(t, s, strlen(s));
}

/* Appends s inside a double-quoted systemd value: backslash, quote and
 * control characters escaped, '%' doubled (specifiers), and '$' doubled
 * when dollar is set (variable expansion in Exec lines). */
static void add_quoted(struct strbuf *t, const char *s, int dollar)
{
        add(t, "\"");
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;

                if (c == '\\' || c == '"')
                        strbuf_printf(t, "\\%c", c);
                else if (c == '%')
                        add(t, "%%");
                else if (c == '$' && dollar)
                        add(t, "$$");
                else if (c == '\n')
                        add(t, "\\n");
                else if (c < 0x20 || c == 0x7f)
                        strbuf_printf(t, "\\x%02x", c);
                else
                        addn(t, (const char *)&c, 1);
        }
        add(t, "\"");
}

const char *sysd_check_name(const char *name, char *msg, size_t size)
{
        size_t n = name ? strlen(name) : 0;

        if (n > 8 && !strcmp(name + n - 8, ".service"))
                n -= 8;
        if (n == 0) {
                snprintf(msg, size, "the service name is empty");
                return "SERVICE_NAME_EMPTY";
        }
        if (n > SYSD_NAME_MAX) {
                snprintf(msg, size, "the service name is longer than %d characters", SYSD_NAME_MAX);
                return "SERVICE_NAME_TOO_LONG";
        }
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)name[i];

                if (!(isalnum(c) || c == '-' || c == '_' || c == '.' || c == '@')) {
                        snprintf(msg, size, "service names use letters, digits, '-', '_', '.' and '@' only");
                        return "SERVICE_NAME_INVALID_CHARS";
                }
        }
        if (name[0] == '-' || name[0] == '.' || !strncmp(name, "systemd-", 8) ||
            !strncmp(name, "sprout-agent", 12)) {
                snprintf(msg, size,
                         "service names may not start with '-', '.', 'systemd-' or 'sprout-agent'");
                return "SERVICE_NAME_INVALID_PREFIX";
        }
        return NULL;
}

char *sysd_base_name(const char *name)
{
        size_t n = strlen(name);

        if (n > 8 && !strcmp(name + n - 8, ".service"))
                n -= 8;
        return strndup(name, n);
}

int sysd_wants_enable(json_t *spec)
{
        json_t *e = json_object_get(spec, "enable");

        return !json_is_false(e);
}

char *sysd_shell_quote(const char *s)
{
        struct strbuf t = {0};

        add(&t, "'");
        for (; *s; s++) {
                if (*s == '\'')
                        add(&t, "'\\''");
                else
                        addn(&t, s, 1);
        }
        add(&t, "'");
        if (t.oom) {
                free(t.s);
                return NULL;
        }
        return t.s;
}

/* A unit name list (after/requires/onFailure/wantedBy): ".service" is added
 * to names without a dot, as the SDK does; names are checked to be plain. */
static int add_units(struct strbuf *t, const char *key, json_t *arr, char *msg, size_t size)
{
        size_t i;
        json_t *v;

        if (!arr || json_is_null(arr))
                return 0;
        if (!json_is_array(arr)) {
                snprintf(msg, size, "'%s' must be a list of unit names", key);
                return -1;
        }
        json_array_foreach(arr, i, v)
        {
                const char *u = json_string_value(v);

                if (!u || !*u || strlen(u) > 256) {
                        snprintf(msg, size, "'%s' must be a list of unit names", key);
                        return -1;
                }
                for (const char *p = u; *p; p++) {
                        if (!(isalnum((unsigned char)*p) || strchr("-_.@:", *p))) {
                                snprintf(msg, size, "'%s' has an invalid unit name", key);
                                return -1;
                        }
                }
                strbuf_printf(t, "%s=%s%s\n", key, u, strchr(u, '.') ? "" : ".service");
        }
        return 0;
}

/* A field that must be a plain single-line string (user, group, workdir). */
static int plain(json_t *spec, const char *key, const char **ret, char *msg, size_t size)
{
        json_t *v = json_object_get(spec, key);

        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        *ret = json_string_value(v);
        if (!*ret || !**ret || strlen(*ret) > 1024 || strpbrk(*ret, "\n\r\"\\%")) {
                snprintf(msg, size, "'%s' must be a single-line string", key);
                return -1;
        }
        return 0;
}

static int opt_uint(json_t *spec, const char *key, long long *ret, char *msg, size_t size)
{
        json_t *v = json_object_get(spec, key);

        *ret = -1;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 86400 * 365) {
                snprintf(msg, size, "'%s' must be a non-negative integer", key);
                return -1;
        }
        *ret = json_integer_value(v);
        return 0;
}

char *sysd_render(json_t *spec, const char *default_user, int patch, const char **ret_code, char *msg,
                  size_t size)
{
        struct strbuf t = {0};
        const char *mode = json_string_value(json_object_get(spec, "mode"));
        json_t *exec = json_object_get(spec, "exec"), *env = json_object_get(spec, "env");
        json_t *rp = json_object_get(spec, "restartPolicy"), *v;
        const char *user, *group, *workdir, *key;
        long long timeout, watchdog, rsec = -1, burst = -1, interval = -1;
        int oneshot = mode && !strcmp(mode, "oneshot");
        json_t *das = json_object_get(spec, "deleteAfterSuccess");
        const char *name = json_string_value(json_object_get(spec, "name"));
        char *base = NULL;
        size_t i, nexec;

        *ret_code = "INVALID_PARAMETERS";
        if (!json_is_object(spec)) {
                snprintf(msg, size, "a service must be a JSON object");
                return NULL;
        }
        if ((mode || !patch) && (!mode || (strcmp(mode, "oneshot") && strcmp(mode, "service")))) {
                snprintf(msg, size, "'mode' must be \"oneshot\" or \"service\"");
                return NULL;
        }
        if ((exec && !json_is_null(exec)) || !patch) {
                if (!json_is_array(exec) || json_array_size(exec) == 0) {
                        *ret_code = "EXEC_EMPTY";
                        snprintf(msg, size, "'exec' must list at least one command");
                        return NULL;
                }
                json_array_foreach(exec, i, v)
                {
                        if (!json_string_value(v) || !*json_string_value(v) ||
                            json_string_length(v) > 65536) {
                                *ret_code = "EXEC_EMPTY";
                                snprintf(msg, size, "every 'exec' entry must be a non-empty command");
                                return NULL;
                        }
                }
        }
        if (env && !json_is_null(env) && !json_is_object(env)) {
                snprintf(msg, size, "'env' must be an object of strings");
                return NULL;
        }
        if (plain(spec, "user", &user, msg, size) < 0 || plain(spec, "group", &group, msg, size) < 0 ||
            plain(spec, "workdir", &workdir, msg, size) < 0 ||
            opt_uint(spec, "timeoutSec", &timeout, msg, size) < 0 ||
            opt_uint(spec, "watchdogSec", &watchdog, msg, size) < 0)
                return NULL;
        if (rp && !json_is_null(rp)) {
                const char *p = json_string_value(json_object_get(rp, "policy"));

                if (!p || (strcmp(p, "no") && strcmp(p, "on-failure") && strcmp(p, "always") &&
                           strcmp(p, "on-abnormal"))) {
                        snprintf(msg, size,
                                 "restartPolicy.policy must be no, on-failure, always or on-abnormal");
                        return NULL;
                }
                if (opt_uint(rp, "restartSec", &rsec, msg, size) < 0 ||
                    opt_uint(rp, "startLimitBurst", &burst, msg, size) < 0 ||
                    opt_uint(rp, "startLimitIntervalSec", &interval, msg, size) < 0)
                        return NULL;
        }
        if (das && !json_is_null(das) && !json_is_boolean(das)) {
                snprintf(msg, size, "'deleteAfterSuccess' must be a boolean");
                return NULL;
        }
        /* deleteAfterSuccess is "for oneshot" in the spec: on a
         * long-running service it is ignored, and so it is in a patch,
         * which must never delete the unit it patches. */
        if (oneshot && !patch && json_is_true(das)) {
                const char *bad = sysd_check_name(name, msg, size);

                if (bad) {
                        *ret_code = bad;
                        return NULL;
                }
                base = sysd_base_name(name);
                if (!base)
                        return NULL;
        }
        if (!user)
                user = default_user;

        add(&t, SYSD_MARKER "\n[Unit]\n");
        /* Checked by sysd_check_name: letters, digits, -_.@ only. */
        if (!patch)
                strbuf_printf(&t, "Description=%s\n",
                              name && !sysd_check_name(name, msg, size) ? name : "service");
        if (add_units(&t, "After", json_object_get(spec, "after"), msg, size) < 0 ||
            add_units(&t, "Requires", json_object_get(spec, "requires"), msg, size) < 0 ||
            add_units(&t, "OnFailure", json_object_get(spec, "onFailure"), msg, size) < 0)
                goto fail;
        if (burst >= 0)
                strbuf_printf(&t, "StartLimitBurst=%lld\n", burst);
        if (interval >= 0)
                strbuf_printf(&t, "StartLimitIntervalSec=%lld\n", interval);

        add(&t, "\n[Service]\n");
        if (mode || !patch) {
                json_t *ready = json_object_get(spec, "readySignal");

                strbuf_printf(&t, "Type=%s\n",
                              oneshot               ? "oneshot"
                              : json_is_true(ready) ? "notify"
                                                    : "simple");
                /* A unit that deletes itself cannot remain active; and
                 * only a unit that leaves the active state runs
                 * ExecStopPost= when its commands end. */
                if (oneshot)
                        strbuf_printf(
                            &t, "RemainAfterExit=%s\n",
                            base || json_is_false(json_object_get(spec, "remainAfterExit")) ? "no" : "yes");
        }
        if (base) {
                /* After a run that ended in success (not a failure, and not
                 * a stop that killed it: EXIT_CODE then says "killed"), the
                 * unit removes itself: enable links, file and drop-ins,
                 * then a reload so that systemd forgets it. A failed run
                 * keeps the unit, its status and its logs. '+' runs this as
                 * root whatever User= says. Units started in the same
                 * transaction that require this one still start after it
                 * is gone (tried with systemd 252); a unit started later
                 * that requires it does not find it. The reload runs inside
                 * the unit's own stop: --no-block spares that stop the wait
                 * where systemctl supports it (252 waits, which works). */
                add(&t, "ExecStopPost=+/bin/sh -c \"test $$SERVICE_RESULT/$$EXIT_CODE/$$EXIT_STATUS = "
                        "success/exited/0"
                        " || exit 0; systemctl disable --no-reload -q ");
                add(&t, base);
                add(&t, ".service; rm -rf " SYSD_UNIT_DIR "/");
                add(&t, base);
                add(&t, ".service " SYSD_UNIT_DIR "/");
                add(&t, base);
                add(&t, ".service.d; systemctl --no-block daemon-reload\"\n");
        }
        if (exec && json_is_array(exec)) {
                nexec = json_array_size(exec);
                /* Commands run in order: a oneshot takes several ExecStart=;
                 * a service runs all but the last as ExecStartPre=. Each is
                 * a shell command line. */
                if (patch)
                        add(&t, "ExecStartPre=\nExecStart=\n");
                json_array_foreach(exec, i, v)
                {
                        add(&t, oneshot || i == nexec - 1 ? "ExecStart=" : "ExecStartPre=");
                        add(&t, "/bin/sh -c ");
                        add_quoted(&t, json_string_value(v), 1);
                        add(&t, "\n");
                }
        }
        if (env && json_is_object(env)) {
                json_object_foreach(env, key, v)
                {
                        char *kv;

                        if (!json_is_string(v) || !*key || strpbrk(key, "=\n\"\\% ")) {
                                snprintf(msg, size, "'env' must map variable names to strings");
                                goto fail;
                        }
                        if (asprintf(&kv, "%s=%s", key, json_string_value(v)) < 0)
                                goto fail;
                        add(&t, "Environment=");
                        add_quoted(&t, kv, 0);
                        add(&t, "\n");
                        free(kv);
                }
        }
        if (user)
                strbuf_printf(&t, "User=%s\n", user);
        if (group)
                strbuf_printf(&t, "Group=%s\n", group);
        if (workdir)
                strbuf_printf(&t, "WorkingDirectory=%s\n", workdir);
        if (timeout >= 0)
                strbuf_printf(&t, "TimeoutSec=%lld\n", timeout);
        if (watchdog > 0)
                strbuf_printf(&t, "WatchdogSec=%lld\n", watchdog);
        if (rp && !json_is_null(rp)) {
                strbuf_printf(&t, "Restart=%s\n", json_string_value(json_object_get(rp, "policy")));
                if (rsec >= 0)
                        strbuf_printf(&t, "RestartSec=%lld\n", rsec);
        }
        if (!patch || json_object_get(spec, "wantedBy")) {
                json_t *wb = json_object_get(spec, "wantedBy");

                add(&t, "\n[Install]\n");
                if (wb && json_is_array(wb) && json_array_size(wb) > 0) {
                        if (add_units(&t, "WantedBy", wb, msg, size) < 0)
                                goto fail;
                } else {
                        add(&t, "WantedBy=multi-user.target\n");
                }
        }
        if (t.oom)
                goto fail;
        free(base);
        *ret_code = NULL;
        return t.s;
fail:
        free(base);
        free(t.s);
        return NULL;
}

/*
 * fuzz_systemd: unit-file rendering (src/guest/systemd.c) and the service
 * name checks. Byte 0 holds flags (bit 0: render a patch, bit 1: pass a
 * default user); the rest is the SystemdUnitSpec as JSON text.
 *
 * The renderer's contract is that no field of a spec can add a directive
 * of its own. So a rendered unit is parsed back the way systemd reads it
 * (lines, sections, Key=value, quoted values unescaped) and must hold
 * exactly the keys the spec set, in the sections they belong to, with
 * values that give back what the spec said.
 */
#include "fuzz.h"
#include "guest/systemd.h"

#include <ctype.h>

#define MAX_LINES 4096

/* One directive of a parsed unit. */
struct line {
        int section; /* 0 Unit, 1 Service, 2 Install */
        char *key, *val;
};

struct unit {
        struct line l[MAX_LINES];
        size_t n;
};

/* Splits text into directives; every line must be empty, the marker (first
 * line only), a known section header or Key=value. */
static void parse_unit(char *text, struct unit *u)
{
        static const char *const sections[] = {"[Unit]", "[Service]", "[Install]"};
        int section = -1;
        size_t lineno = 0;
        char *save = NULL, *line;

        u->n = 0;
        FUZZ_CHECK(text[0] && text[strlen(text) - 1] == '\n');
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), lineno++) {
                size_t len = strlen(line);
                char *eq;
                int s;

                /* A trailing backslash would join the next line to this one. */
                FUZZ_CHECK(len == 0 || line[len - 1] != '\\');
                if (lineno == 0) {
                        FUZZ_CHECK(!strcmp(line, SYSD_MARKER));
                        continue;
                }
                FUZZ_CHECK(line[0] != '#' && line[0] != ';' && !isspace((unsigned char)line[0]));
                for (s = 0; s < 3 && strcmp(line, sections[s]); s++)
                        ;
                if (s < 3) {
                        FUZZ_CHECK(s > section); /* each once, in order */
                        section = s;
                        continue;
                }
                FUZZ_CHECK(section >= 0 && u->n < MAX_LINES);
                eq = strchr(line, '=');
                FUZZ_CHECK(eq && eq > line);
                *eq = 0;
                for (char *k = line; *k; k++)
                        FUZZ_CHECK(isalnum((unsigned char)*k));
                u->l[u->n++] = (struct line){section, line, eq + 1};
        }
}

/* The value of a quoted directive as systemd reads it: the escapes that
 * add_quoted makes, '%%' as '%', and with dollar '$$' as '$'. Returns a
 * malloc'd string; the quotes must close at the end of the line. */
static char *unquote(const char *v, int dollar)
{
        char *out = malloc(strlen(v) + 1), *o = out;

        FUZZ_CHECK(out && *v++ == '"');
        for (; *v != '"'; v++) {
                FUZZ_CHECK(*v);
                if (*v == '\\') {
                        v++;
                        if (*v == 'n') {
                                *o++ = '\n';
                        } else if (*v == 'x') {
                                unsigned x;

                                FUZZ_CHECK(isxdigit((unsigned char)v[1]) && isxdigit((unsigned char)v[2]));
                                sscanf(v + 1, "%2x", &x);
                                *o++ = (char)x;
                                v += 2;
                        } else {
                                FUZZ_CHECK(*v == '\\' || *v == '"');
                                *o++ = *v;
                        }
                } else if (*v == '%') {
                        FUZZ_CHECK(v[1] == '%');
                        *o++ = *v++;
                } else if (*v == '$' && dollar) {
                        FUZZ_CHECK(v[1] == '$');
                        *o++ = *v++;
                } else {
                        /* Raw control characters never reach the file. */
                        FUZZ_CHECK((unsigned char)*v >= 0x20 && *v != 0x7f);
                        *o++ = *v;
                }
        }
        FUZZ_CHECK(v[1] == 0);
        *o = 0;
        return out;
}

/* How many directives of section have key. */
static size_t count(const struct unit *u, int section, const char *key)
{
        size_t n = 0;

        for (size_t i = 0; i < u->n; i++)
                n += u->l[i].section == section && !strcmp(u->l[i].key, key);
        return n;
}

/* The value of the only directive of section with key, or NULL. */
static const char *value(const struct unit *u, int section, const char *key)
{
        for (size_t i = 0; i < u->n; i++)
                if (u->l[i].section == section && !strcmp(u->l[i].key, key))
                        return u->l[i].val;
        return NULL;
}

/* The unit names of a list field, each once per entry, as rendered. */
static size_t check_units(const struct unit *u, int section, const char *key, json_t *arr)
{
        size_t i, k = 0;
        json_t *v;

        if (!json_is_array(arr))
                return 0;
        json_array_foreach(arr, i, v) {
                const char *name = json_string_value(v);
                char want[512];

                snprintf(want, sizeof(want), "%s%s", name, strchr(name, '.') ? "" : ".service");
                while (k < u->n && !(u->l[k].section == section && !strcmp(u->l[k].key, key)))
                        k++;
                FUZZ_CHECK(k < u->n && !strcmp(u->l[k].val, want));
                k++;
        }
        return json_array_size(arr);
}

/* A plain field: present exactly when set, with the value as given. */
static size_t check_plain(const struct unit *u, const char *key, const char *want)
{
        const char *got = value(u, 1, key);

        FUZZ_CHECK(want ? got && !strcmp(got, want) : !got);
        return want != NULL;
}

static size_t uint_field(json_t *obj, const char *key)
{
        return json_is_integer(json_object_get(obj, key));
}

static void check_render(json_t *spec, const char *default_user, int patch, char *text)
{
        static struct unit u;
        const char *mode = json_string_value(json_object_get(spec, "mode")), *k;
        json_t *exec = json_object_get(spec, "exec"), *env = json_object_get(spec, "env");
        json_t *rp = json_object_get(spec, "restartPolicy"), *wb = json_object_get(spec, "wantedBy"), *v;
        const char *user = json_string_value(json_object_get(spec, "user"));
        int oneshot = mode && !strcmp(mode, "oneshot");
        int self_delete = oneshot && !patch && json_is_true(json_object_get(spec, "deleteAfterSuccess"));
        size_t want[3] = {0}, got[3] = {0}, i, e = 0, n;

        parse_unit(text, &u);

        /* [Unit] */
        want[0] += !patch;
        want[0] += check_units(&u, 0, "After", json_object_get(spec, "after"));
        want[0] += check_units(&u, 0, "Requires", json_object_get(spec, "requires"));
        want[0] += check_units(&u, 0, "OnFailure", json_object_get(spec, "onFailure"));
        if (json_is_object(rp))
                want[0] += uint_field(rp, "startLimitBurst") + uint_field(rp, "startLimitIntervalSec");

        /* [Service] */
        if (mode || !patch)
                want[1] += 1 + (size_t)oneshot;
        want[1] += (size_t)self_delete;
        if (json_is_array(exec)) {
                n = json_array_size(exec);
                want[1] += n + (patch ? 2 : 0);
                json_array_foreach(exec, i, v) {
                        const char *key = oneshot || i == n - 1 ? "ExecStart" : "ExecStartPre";
                        char *cmd;

                        /* A patch first resets both lists with empty values. */
                        while (e < u.n && !(u.l[e].section == 1 && !strcmp(u.l[e].key, key) && *u.l[e].val))
                                e++;
                        FUZZ_CHECK(e < u.n && !strncmp(u.l[e].val, "/bin/sh -c ", 11));
                        cmd = unquote(u.l[e].val + 11, 1);
                        FUZZ_CHECK(!strcmp(cmd, json_string_value(v)));
                        free(cmd);
                        e++;
                }
        }
        if (json_is_object(env)) {
                e = 0;
                json_object_foreach(env, k, v) {
                        char *kv, *want_kv;

                        while (e < u.n && !(u.l[e].section == 1 && !strcmp(u.l[e].key, "Environment")))
                                e++;
                        FUZZ_CHECK(e < u.n);
                        kv = unquote(u.l[e].val, 0);
                        FUZZ_CHECK(asprintf(&want_kv, "%s=%s", k, json_string_value(v)) > 0);
                        FUZZ_CHECK(!strcmp(kv, want_kv));
                        free(kv);
                        free(want_kv);
                        e++;
                }
                want[1] += json_object_size(env);
        }
        want[1] += check_plain(&u, "User", user ? user : default_user);
        want[1] += check_plain(&u, "Group", json_string_value(json_object_get(spec, "group")));
        want[1] += check_plain(&u, "WorkingDirectory", json_string_value(json_object_get(spec, "workdir")));
        want[1] += uint_field(spec, "timeoutSec");
        want[1] += json_integer_value(json_object_get(spec, "watchdogSec")) > 0;
        if (json_is_object(rp))
                want[1] += 1 + uint_field(rp, "restartSec");

        /* [Install] */
        if (!patch || wb) {
                n = json_is_array(wb) ? check_units(&u, 2, "WantedBy", wb) : 0;
                want[2] += n ? n : 1;
                if (!n)
                        FUZZ_CHECK(count(&u, 2, "WantedBy") == 1);
        }

        for (i = 0; i < u.n; i++)
                got[u.l[i].section]++;
        FUZZ_CHECK(got[0] == want[0] && got[1] == want[1] && got[2] == want[2]);
}

/* Names: a valid one has a bare form without ".service" and only the
 * allowed characters. */
static void check_name(const char *name)
{
        char msg[256], *base;
        const char *code = sysd_check_name(name, msg, sizeof(msg));

        if (code) {
                FUZZ_CHECK(strncmp(code, "SERVICE_NAME_", 13) == 0 && msg[0]);
                return;
        }
        base = sysd_base_name(name);
        FUZZ_CHECK(base && *base && strlen(base) <= 64);
        for (const char *p = base; *p; p++)
                FUZZ_CHECK(isalnum((unsigned char)*p) || strchr("-_.@", *p));
        free(base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char msg[512];
        const char *code = NULL, *name;
        int patch = size && (data[0] & 1);
        const char *default_user = size && (data[0] & 2) ? "app" : NULL;
        json_t *spec = size ? json_loadb((const char *)data + 1, size - 1, 0, NULL) : NULL;
        char *text;

        if (!spec)
                return 0;
        text = sysd_render(spec, default_user, patch, &code, msg, sizeof(msg));
        if (text) {
                FUZZ_CHECK(code == NULL);
                check_render(spec, default_user, patch, text);
                free(text);
        } else {
                FUZZ_CHECK(code != NULL && msg[0]);
        }
        FUZZ_CHECK(sysd_wants_enable(spec) == !json_is_false(json_object_get(spec, "enable")));
        name = json_string_value(json_object_get(spec, "name"));
        if (name)
                check_name(name);
        json_decref(spec);
        return 0;
}

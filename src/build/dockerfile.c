/*
 * dockerfile: see dockerfile.h. Depends on util (strbuf) and the shell
 * quoting of guest/systemd.
 */
#include "build/dockerfile.h"
#include "guest/systemd.h"
#include "lib/util.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_VARS 128

struct var {
        char *name, *value;
};

/* What a stage's later instructions, or a stage on it, start from. */
struct state {
        struct var vars[MAX_VARS];
        int nvars;
        struct strbuf env;
        char *workdir, *user;
};

struct parser {
        struct dockerfile *d;
        struct var vars[MAX_VARS]; /* ENV and ARG in effect, in order */
        int nvars;
        struct strbuf env; /* ENV lines for /etc/environment */
        char *workdir;     /* NULL: / */
        char *user;        /* NULL: root */
        int stage;         /* the current stage; -1 before the first FROM */
        /* Each stage's state at its end (a FROM on it starts there); the
         * last is the ARGs before the first FROM. */
        struct state saved[DOCKERFILE_MAX_STAGES + 1];
        int line; /* of the instruction being read */
        char *msg;
        size_t size;
};

static int bad(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct parser *p, const char *fmt, ...)
{
        va_list ap;
        int n = snprintf(p->msg, p->size, "Dockerfile line %d: ", p->line);

        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < p->size)
                vsnprintf(p->msg + n, p->size - (size_t)n, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static char *skip_space(char *s)
{
        while (*s == ' ' || *s == '\t')
                s++;
        return s;
}

static void add(struct strbuf *b, const char *s)
{
        strbuf_add(b, s, strlen(s));
}

static void add_quoted(struct strbuf *b, const char *s)
{
        char *q = sysd_shell_quote(s);

        if (q)
                add(b, q);
        else
                b->oom = 1;
        free(q);
}

static int valid_name(const char *s)
{
        if (!*s || !(isalpha((unsigned char)*s) || *s == '_'))
                return 0;
        for (; *s; s++)
                if (!(isalnum((unsigned char)*s) || *s == '_'))
                        return 0;
        return 1;
}

static int set_var(struct parser *p, const char *name, size_t nlen, const char *value, int keep)
{
        char *n = strndup(name, nlen);

        if (!n)
                return -ENOMEM;
        if (!valid_name(n)) {
                free(n);
                return bad(p, "'%.*s' is not a variable name", (int)nlen, name);
        }
        for (int i = 0; i < p->nvars; i++) {
                if (!strcmp(p->vars[i].name, n)) {
                        free(n);
                        if (keep)
                                return 0; /* an ARG does not override an ENV */
                        free(p->vars[i].value);
                        p->vars[i].value = strdup(value);
                        return p->vars[i].value ? 0 : -ENOMEM;
                }
        }
        if (p->nvars == MAX_VARS) {
                free(n);
                return bad(p, "more than %d variables", MAX_VARS);
        }
        p->vars[p->nvars].name = n;
        p->vars[p->nvars].value = strdup(value);
        return p->vars[p->nvars++].value ? 0 : -ENOMEM;
}

/* A value as written: "quoted", 'quoted' or bare; *s moves past it. */
static char *take_value(char **s)
{
        struct strbuf b = {0};
        char *t = *s, q = 0;

        for (; *t && (q || (*t != ' ' && *t != '\t')); t++) {
                if (!q && (*t == '"' || *t == '\'')) {
                        q = *t;
                } else if (q && *t == q) {
                        q = 0;
                } else if (*t == '\\' && t[1] && q != '\'') {
                        t++;
                        strbuf_add(&b, t, 1);
                } else {
                        strbuf_add(&b, t, 1);
                }
        }
        *s = t;
        strbuf_add(&b, "", 1);
        if (b.oom) {
                free(b.s);
                return NULL;
        }
        return b.s;
}

/* Adds name=value (the variable just set) to /etc/environment's lines. */
static void env_line(struct parser *p, int i)
{
        add(&p->env, p->vars[i].name);
        add(&p->env, "=");
        add_quoted(&p->env, p->vars[i].value);
        add(&p->env, "\n");
}

static int find_var(struct parser *p, const char *name)
{
        for (int i = 0; i < p->nvars; i++)
                if (!strcmp(p->vars[i].name, name))
                        return i;
        return -1;
}

/* ENV k=v [k=v...], ENV k v; ARG k[=v] (is_arg). */
static int do_env(struct parser *p, char *args, int is_arg)
{
        char *s = skip_space(args);
        int r = 0;

        if (!*s)
                return bad(p, "%s needs a name", is_arg ? "ARG" : "ENV");
        if (!is_arg && !strchr(s, '=')) {
                /* The old form: ENV name the rest of the line. */
                char *sp = s + strcspn(s, " \t");

                r = set_var(p, s, (size_t)(sp - s), skip_space(sp), 0);
                if (r == 0) {
                        char save = *sp;

                        *sp = 0;
                        env_line(p, find_var(p, s));
                        *sp = save;
                }
                return r;
        }
        while (r == 0 && *s) {
                char *name = s, *eq = s + strcspn(s, "= \t"), *v;
                size_t nlen = (size_t)(eq - name);

                if (*eq != '=') {
                        if (!is_arg)
                                return bad(p, "ENV wants name=value");
                        r = set_var(p, name, nlen, "", 1);
                        s = skip_space(eq);
                        continue;
                }
                s = eq + 1;
                v = take_value(&s);
                if (!v)
                        return -ENOMEM;
                r = set_var(p, name, nlen, v, is_arg);
                free(v);
                if (r == 0 && !is_arg) {
                        char save = name[nlen];

                        name[nlen] = 0;
                        env_line(p, find_var(p, name));
                        name[nlen] = save;
                }
                s = skip_space(s);
        }
        return r;
}

static void free_var_list(struct var *v, int n)
{
        for (int i = 0; i < n; i++) {
                free(v[i].name);
                free(v[i].value);
        }
}

static void free_vars(struct parser *p)
{
        free_var_list(p->vars, p->nvars);
        p->nvars = 0;
}

static void state_clear(struct state *t)
{
        free_var_list(t->vars, t->nvars);
        free(t->env.s);
        free(t->workdir);
        free(t->user);
        memset(t, 0, sizeof(*t));
}

static char *dup_or_null(const char *s, int *oom)
{
        char *d = s ? strdup(s) : NULL;

        *oom |= s && !d;
        return d;
}

/* Copies the variables, ENV lines, WORKDIR and USER between p and t. */
static int state_copy(struct var *dv, int *dn, struct strbuf *denv, char **dw, char **du,
                      const struct var *sv, int sn, const struct strbuf *senv, const char *sw, const char *su)
{
        int oom = 0;

        for (int i = 0; i < sn; i++) {
                dv[i].name = dup_or_null(sv[i].name, &oom);
                dv[i].value = dup_or_null(sv[i].value, &oom);
                *dn = i + 1;
        }
        if (senv->len)
                strbuf_add(denv, senv->s, senv->len);
        *dw = dup_or_null(sw, &oom);
        *du = dup_or_null(su, &oom);
        return oom || denv->oom ? -ENOMEM : 0;
}

static int state_save(struct parser *p, struct state *t)
{
        state_clear(t);
        return state_copy(t->vars, &t->nvars, &t->env, &t->workdir, &t->user, p->vars, p->nvars, &p->env,
                          p->workdir, p->user);
}

static int state_load(struct parser *p, const struct state *t)
{
        free_vars(p);
        free(p->env.s);
        memset(&p->env, 0, sizeof(p->env));
        free(p->workdir);
        free(p->user);
        return state_copy(p->vars, &p->nvars, &p->env, &p->workdir, &p->user, t->vars, t->nvars, &t->env,
                          t->workdir, t->user);
}

/* Appends a step with script b (taken, even on failure). */
static int push_step(struct dockerfile *d, const char *what, struct strbuf *b, int stage, int outside)
{
        struct df_step *steps;
        char *w;

        strbuf_add(b, "", 1);
        w = strndup(what, 72);
        steps = realloc(d->steps, (d->n + 1) * sizeof(*steps));
        if (steps)
                d->steps = steps;
        if (b->oom || !w || !steps) {
                free(b->s);
                free(w);
                return -ENOMEM;
        }
        steps[d->n] = (struct df_step){.what = w, .script = b->s, .stage = stage, .outside = outside};
        d->n++;
        return 0;
}

/* The script of one RUN: the variables in effect, its working directory
 * and user, then cmd, a shell script (run by /bin/sh, or by its own #!). */
static int add_step(struct parser *p, const char *what, const char *cmd)
{
        struct strbuf b = {0};

        add(&b, "set -e\n");
        for (int i = 0; i < p->nvars; i++) {
                add(&b, "export ");
                add(&b, p->vars[i].name);
                add(&b, "=");
                add_quoted(&b, p->vars[i].value);
                add(&b, "\n");
        }
        add(&b, "mkdir -p ");
        add_quoted(&b, p->workdir ? p->workdir : "/");
        add(&b, " && cd ");
        add_quoted(&b, p->workdir ? p->workdir : "/");
        add(&b, "\nf=$(mktemp /tmp/dockerfile-run.XXXXXX)\nprintf '%s\\n' ");
        add_quoted(&b, cmd);
        add(&b, " > \"$f\"\nchmod 755 \"$f\"\n");
        if (strncmp(cmd, "#!", 2))
                add(&b, "set -- /bin/sh \"$f\"\n");
        else
                add(&b, "set -- \"$f\"\n");
        if (p->user) {
                add(&b, "set +e\nrunuser -u ");
                add_quoted(&b, p->user);
                add(&b, " -- \"$@\"; r=$?\n");
        } else {
                add(&b, "set +e\n\"$@\"; r=$?\n");
        }
        add(&b, "rm -f \"$f\"\nexit $r\n");
        return push_step(p->d, what, &b, p->stage, 0);
}

/* RUN's command: exec form (a JSON array), or a shell line. */
static int do_run(struct parser *p, char *args, const char *heredoc)
{
        char *s = skip_space(args), what[96];
        int r;

        while (!strncmp(s, "--", 2)) /* --mount, --network: no meaning here */
                s = skip_space(s + strcspn(s, " \t"));
        snprintf(what, sizeof(what), "RUN %s", heredoc && !*s ? heredoc : s);
        what[strcspn(what, "\n")] = 0;
        if (heredoc && !*s)
                return add_step(p, what, heredoc);
        if (*s == '[') {
                json_t *a = json_loads(s, 0, NULL), *v;
                struct strbuf b = {0};
                size_t i;

                if (!json_is_array(a) || json_array_size(a) == 0) {
                        json_decref(a);
                        return bad(p, "RUN [...] must be a JSON array of strings");
                }
                json_array_foreach(a, i, v)
                {
                        if (!json_is_string(v)) {
                                json_decref(a);
                                free(b.s);
                                return bad(p, "RUN [...] must be a JSON array of strings");
                        }
                        if (i)
                                add(&b, " ");
                        add_quoted(&b, json_string_value(v));
                }
                json_decref(a);
                strbuf_add(&b, "", 1);
                r = b.oom ? -ENOMEM : add_step(p, what, b.s);
                free(b.s);
                return r;
        }
        if (!*s)
                return bad(p, "RUN needs a command");
        if (heredoc) {
                /* A command reading the heredoc: the shell does it. */
                return add_step(p, what, heredoc);
        }
        return add_step(p, what, s);
}

/* An image reference as registries write them: no spaces, no option. */
static int valid_image(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 255 || *s == '-')
                return 0;
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && !strchr("._-/:@", *s))
                        return 0;
        return 1;
}

/* The stage a FROM or COPY --from names among the first n: by its AS
 * name, or by its number; -1 when none. */
static int stage_named(struct parser *p, const char *s, int n)
{
        char *end;
        long k;

        for (int i = 0; i < n; i++)
                if (p->d->stages[i].name && !strcasecmp(p->d->stages[i].name, s))
                        return i;
        k = strtol(s, &end, 10);
        if (*s && !*end && k >= 0 && k < n)
                return (int)k;
        return -1;
}

/* A new stage on image (taken) named name (taken); its index, or <0. */
static int new_stage(struct parser *p, char *image, char *name)
{
        struct df_stage *st;

        if (p->d->nstages == DOCKERFILE_MAX_STAGES) {
                free(image);
                free(name);
                return bad(p, "more than %d stages", DOCKERFILE_MAX_STAGES);
        }
        st = realloc(p->d->stages, (p->d->nstages + 1) * sizeof(*st));
        if (!st) {
                free(image);
                free(name);
                return -ENOMEM;
        }
        p->d->stages = st;
        st[p->d->nstages] = (struct df_stage){.from = image, .name = name};
        return (int)p->d->nstages++;
}

/* FROM [--platform=...] IMAGE|STAGE [AS NAME] */
static int do_from(struct parser *p, char *args)
{
        char *s = skip_space(args), *image, *name = NULL;
        int on, k, r;

        while (!strncmp(s, "--", 2))
                s = skip_space(s + strcspn(s, " \t"));
        image = strndup(s, strcspn(s, " \t"));
        if (!image)
                return -ENOMEM;
        s = skip_space(s + strlen(image));
        if (!strncasecmp(s, "AS", 2) && (s[2] == ' ' || s[2] == '\t')) {
                s = skip_space(s + 2);
                name = strndup(s, strcspn(s, " \t"));
                if (!name || !*name || stage_named(p, name, (int)p->d->nstages) >= 0) {
                        r = !name ? -ENOMEM : bad(p, "stage name '%.40s' is empty or taken", name);
                        free(image);
                        free(name);
                        return r;
                }
                s = skip_space(s + strlen(name));
        }
        if (!*image || *s) {
                free(image);
                free(name);
                return bad(p, "FROM wants an image and, optionally, AS and a name");
        }
        /* The state this stage leaves, for a stage on it. */
        r = state_save(p, &p->saved[p->stage >= 0 ? p->stage : DOCKERFILE_MAX_STAGES]);
        if (r < 0) {
                free(image);
                free(name);
                return r;
        }
        on = stage_named(p, image, (int)p->d->nstages);
        if (on < 0 && !valid_image(image)) {
                r = bad(p, "'%.80s' is not an image name", image);
                free(image);
                free(name);
                return r;
        }
        if (on >= 0) {
                free(image);
                image = strdup(p->d->stages[on].from);
                if (!image) {
                        free(name);
                        return -ENOMEM;
                }
        }
        k = new_stage(p, image, name);
        if (k < 0)
                return k;
        p->stage = k;
        p->d->final = k;
        if (on < 0)
                return state_load(p, &p->saved[DOCKERFILE_MAX_STAGES]);
        /* On an earlier stage: its state, and its steps again in this one. */
        r = state_load(p, &p->saved[on]);
        for (size_t i = 0, n = p->d->n; r == 0 && i < n; i++) {
                struct strbuf b = {0};

                if (p->d->steps[i].stage != on)
                        continue;
                add(&b, p->d->steps[i].script);
                r = push_step(p->d, p->d->steps[i].what, &b, k, p->d->steps[i].outside);
        }
        return r;
}

/* COPY --from=STAGE|IMAGE [--chown=U[:G]] [--chmod=MODE] SRC... DEST: from
 * that stage's tree into this one's, as Docker does (a folder's contents
 * into DEST; into DEST/ when it ends in '/' or there are several SRCs). */
static int do_copy(struct parser *p, const char *ins, char *args)
{
        char *s = skip_space(args), *from = NULL, *chown = NULL, *chmod = NULL, *words[64], what[96];
        struct strbuf b = {0};
        int n = 0, j, r = 0;

        snprintf(what, sizeof(what), "%s %s", ins, s);
        while (r == 0 && !strncmp(s, "--", 2)) {
                char *opt = s, **slot = NULL;

                s += strcspn(s, " \t");
                if (*s)
                        *s++ = 0;
                s = skip_space(s);
                if (!strncmp(opt, "--from=", 7))
                        slot = &from;
                else if (!strncmp(opt, "--chown=", 8))
                        slot = &chown;
                else if (!strncmp(opt, "--chmod=", 8))
                        slot = &chmod;
                else if (strcmp(opt, "--link"))
                        r = bad(p, "%s %.40s is not supported by this server", ins, opt);
                if (slot)
                        *slot = strchr(opt, '=') + 1;
        }
        if (r < 0)
                return r;
        if (!from || strcasecmp(ins, "COPY"))
                return bad(p, "%s needs a build context or another stage, which a baseImage does not have",
                           ins);
        if (chmod && (!*chmod || strspn(chmod, "01234567") != strlen(chmod) || strlen(chmod) > 4))
                return bad(p, "--chmod wants an octal mode");
        if (chown &&
            (!*chown || strspn(chown, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-") !=
                            strlen(chown)))
                return bad(p, "--chown wants USER[:GROUP]");
        j = stage_named(p, from, p->stage);
        if (j < 0) {
                /* An image: a stage of its own, made once. */
                for (size_t i = 0; i < p->d->nstages && j < 0; i++)
                        if (!p->d->stages[i].name && (int)i != p->stage &&
                            !strcmp(p->d->stages[i].from, from))
                                j = (int)i;
                if (j < 0 && !valid_image(from))
                        return bad(p, "--from=%.80s is neither an earlier stage nor an image", from);
                if (j < 0) {
                        char *image = strdup(from);

                        j = image ? new_stage(p, image, NULL) : -ENOMEM;
                        if (j < 0)
                                return j;
                }
        }
        p->d->stages[j].used = 1;
        if (*s == '[') {
                json_t *a = json_loads(s, 0, NULL), *v;
                size_t i;

                json_array_foreach(a, i, v) if (json_is_string(v) && n < 64) words[n++] =
                    strdup(json_string_value(v));
                json_decref(a);
        } else {
                while (*s && n < 64) {
                        words[n++] = take_value(&s);
                        s = skip_space(s);
                }
        }
        for (int i = 0; i < n; i++)
                if (!words[i])
                        r = -ENOMEM;
                else if (!*words[i] || strchr(words[i], '\n'))
                        r = bad(p, "%s wants sources and a destination", ins);
        if (r == 0 && n < 2)
                r = bad(p, "%s wants sources and a destination", ins);
        if (r == 0) {
                const char *dst = words[n - 1];
                char *full = NULL;

                if (asprintf(&full, "%s%s%s%s",
                             *dst == '/'  ? ""
                             : p->workdir ? p->workdir
                                          : "",
                             *dst == '/' ? "" : "/", dst,
                             n > 2 && dst[strlen(dst) - 1] != '/' ? "/" : "") < 0)
                        return -ENOMEM;
                add(&b,
                    "set -e\nsprout_copy() {\n"
                    "  if [ -d \"$1\" ] && [ ! -L \"$1\" ]; then mkdir -p \"$2\" && cp -a \"$1\"/. \"$2\"/\n"
                    "  else case $2 in */) mkdir -p \"$2\" ;; *) mkdir -p \"$(dirname \"$2\")\" ;; esac\n"
                    "    cp -a \"$1\" \"$2\"; fi\n}\n");
                for (int i = 0; i < n - 1; i++) {
                        char num[16];

                        snprintf(num, sizeof(num), "%d/", j);
                        add(&b, "sprout_copy \"$SPROUT_STAGES\"/");
                        add(&b, num);
                        add_quoted(&b, words[i]);
                        add(&b, " \"$SPROUT_ROOT\"");
                        add_quoted(&b, full);
                        add(&b, "\n");
                }
                if (chown) {
                        add(&b, "chroot \"${SPROUT_ROOT:-/}\" chown -R ");
                        add_quoted(&b, chown);
                        add(&b, " ");
                        add_quoted(&b, full);
                        add(&b, "\n");
                }
                if (chmod) {
                        add(&b, "chmod -R ");
                        add(&b, chmod);
                        add(&b, " \"$SPROUT_ROOT\"");
                        add_quoted(&b, full);
                        add(&b, "\n");
                }
                free(full);
                r = push_step(p->d, what, &b, p->stage, 1);
        }
        for (int i = 0; i < n; i++)
                free(words[i]);
        return r;
}

/* One instruction (continuations joined), with its heredoc body if any. */
static int instruction(struct parser *p, char *line, const char *heredoc)
{
        char *s = skip_space(line), *args;
        size_t n = strcspn(s, " \t");

        args = s + n;
        if (*args)
                *args++ = 0;
        if (!strcasecmp(s, "FROM"))
                return do_from(p, args);
        if (!strcasecmp(s, "ARG"))
                return do_env(p, args, 1);
        if (p->stage < 0)
                return bad(p, "%s before FROM", s);
        if (!strcasecmp(s, "RUN"))
                return do_run(p, args, heredoc);
        if (!strcasecmp(s, "ENV"))
                return do_env(p, args, 0);
        if (!strcasecmp(s, "WORKDIR")) {
                char *w = skip_space(args), *nw;

                w[strcspn(w, "\r")] = 0;
                if (!*w)
                        return bad(p, "WORKDIR needs a path");
                if (*w == '/')
                        nw = strdup(w);
                else if (asprintf(&nw, "%s/%s", p->workdir ? p->workdir : "", w) < 0)
                        nw = NULL;
                if (!nw)
                        return -ENOMEM;
                free(p->workdir);
                p->workdir = nw;
                return 0;
        }
        if (!strcasecmp(s, "USER")) {
                char *u = skip_space(args);

                u[strcspn(u, ": \t")] = 0;
                free(p->user);
                p->user = *u && strcmp(u, "root") && strcmp(u, "0") ? strdup(u) : NULL;
                return 0;
        }
        if (!strcasecmp(s, "COPY") || !strcasecmp(s, "ADD"))
                return do_copy(p, s, args);
        if (!strcasecmp(s, "SHELL") || !strcasecmp(s, "ONBUILD"))
                return bad(p, "%s is not supported by this server", s);
        /* LABEL, EXPOSE, CMD, ENTRYPOINT, VOLUME, STOPSIGNAL, HEALTHCHECK,
         * MAINTAINER: nothing a VM's disk holds. */
        if (!strcasecmp(s, "LABEL") || !strcasecmp(s, "EXPOSE") || !strcasecmp(s, "CMD") ||
            !strcasecmp(s, "ENTRYPOINT") || !strcasecmp(s, "VOLUME") || !strcasecmp(s, "STOPSIGNAL") ||
            !strcasecmp(s, "HEALTHCHECK") || !strcasecmp(s, "MAINTAINER"))
                return 0;
        return bad(p, "unknown instruction '%.40s'", s);
}

/* The heredoc word of a line (<<WORD, <<-WORD, <<'WORD', <<"WORD"), or 0. */
static int heredoc_word(const char *line, char *word, size_t size, int *dash)
{
        const char *h = strstr(line, "<<");
        size_t n;
        char q;

        if (!h)
                return 0;
        h += 2;
        *dash = *h == '-';
        h += *dash;
        q = *h == '\'' || *h == '"' ? *h++ : 0;
        n = strcspn(h, q ? (q == '\'' ? "'" : "\"") : " \t\r>|;&");
        if (n == 0 || n >= size)
                return 0;
        memcpy(word, h, n);
        word[n] = 0;
        return 1;
}

int dockerfile_parse(const char *text, struct dockerfile *ret, char *msg, size_t size)
{
        struct parser p = {.d = ret, .stage = -1, .msg = msg, .size = size};
        char *copy, *cur, *next;
        int r = 0, lineno = 0;

        memset(ret, 0, sizeof(*ret));
        msg[0] = 0;
        if (strlen(text) > DOCKERFILE_MAX) {
                snprintf(msg, size, "the Dockerfile is over %d bytes", DOCKERFILE_MAX);
                return -EFBIG;
        }
        copy = strdup(text);
        if (!copy)
                return -ENOMEM;
        for (cur = copy; r == 0 && cur && *cur; cur = next) {
                struct strbuf ins = {0}, body = {0};
                char word[64];
                int dash = 0;

                /* One instruction: lines joined while they end in '\'. */
                do {
                        size_t len;

                        next = strchr(cur, '\n');
                        if (next)
                                *next++ = 0;
                        lineno++;
                        len = strlen(cur);
                        if (len && cur[len - 1] == '\r')
                                cur[--len] = 0;
                        if (ins.len == 0 && (*skip_space(cur) == '#' || !*skip_space(cur)))
                                break; /* a comment or blank line */
                        if (ins.len == 0)
                                p.line = lineno;
                        if (len && cur[len - 1] == '\\') {
                                strbuf_add(&ins, cur, len - 1);
                                strbuf_add(&ins, " ", 1);
                                cur = next;
                                continue;
                        }
                        strbuf_add(&ins, cur, len);
                        break;
                } while (cur);
                if (ins.len == 0) {
                        free(ins.s);
                        continue;
                }
                strbuf_add(&ins, "", 1);
                if (!strncasecmp(skip_space(ins.s), "RUN", 3) &&
                    heredoc_word(ins.s, word, sizeof(word), &dash)) {
                        const char *h = strstr(ins.s, "<<");
                        int found = 0, bare = 1;

                        /* RUN <<WORD alone: the body is the script; else the
                         * line is a command reading it, and the shell
                         * takes the whole heredoc. */
                        for (const char *t = skip_space(ins.s) + 3; t < h; t++)
                                bare &= *t == ' ' || *t == '\t';
                        if (!bare) {
                                const char *cmd = skip_space(skip_space(ins.s) + 3);

                                strbuf_add(&body, cmd, strlen(cmd));
                                strbuf_add(&body, "\n", 1);
                        }
                        while (next) {
                                char *l = next, *t;

                                next = strchr(l, '\n');
                                if (next)
                                        *next++ = 0;
                                lineno++;
                                if (strlen(l) && l[strlen(l) - 1] == '\r')
                                        l[strlen(l) - 1] = 0;
                                t = dash ? l + strspn(l, "\t") : l;
                                if (!strcmp(t, word)) {
                                        found = 1;
                                        if (!bare)
                                                strbuf_add(&body, l, strlen(l));
                                        break;
                                }
                                strbuf_add(&body, l, strlen(l));
                                strbuf_add(&body, "\n", 1);
                        }
                        strbuf_add(&body, "", 1);
                        if (!found)
                                r = bad(&p, "the heredoc %s is never closed", word);
                        else if (body.oom || ins.oom)
                                r = -ENOMEM;
                        else if (bare)
                                (ins.s)[h - ins.s] = 0;
                        if (r == 0)
                                r = instruction(&p, ins.s, body.s);
                } else {
                        r = ins.oom ? -ENOMEM : instruction(&p, ins.s, NULL);
                }
                free(ins.s);
                free(body.s);
        }
        if (r == 0 && p.stage < 0) {
                p.line = lineno;
                r = bad(&p, "no FROM");
        }
        if (r == 0) {
                ret->stages[ret->final].used = 1;
                ret->from = ret->stages[ret->final].from;
        }
        /* ENV stays in the image: for logins, services and later steps. */
        if (r == 0 && p.env.len > 0) {
                struct strbuf b = {0};

                strbuf_add(&p.env, "", 1);
                add(&b, "printf '%s' ");
                add_quoted(&b, p.env.s);
                add(&b, " >> /etc/environment\n");
                strbuf_add(&b, "", 1);
                free(p.user);
                p.user = NULL;
                r = b.oom ? -ENOMEM : add_step(&p, "ENV into /etc/environment", b.s);
                free(b.s);
        }
        free_vars(&p);
        free(p.env.s);
        free(p.workdir);
        free(p.user);
        for (int i = 0; i <= DOCKERFILE_MAX_STAGES; i++)
                state_clear(&p.saved[i]);
        free(copy);
        if (r < 0)
                dockerfile_clear(ret);
        return r;
}

void dockerfile_clear(struct dockerfile *d)
{
        for (size_t i = 0; i < d->n; i++) {
                free(d->steps[i].what);
                free(d->steps[i].script);
        }
        free(d->steps);
        for (size_t i = 0; i < d->nstages; i++) {
                free(d->stages[i].from);
                free(d->stages[i].name);
        }
        free(d->stages);
        memset(d, 0, sizeof(*d));
}

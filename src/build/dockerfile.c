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

struct parser {
        struct dockerfile *d;
        struct var vars[MAX_VARS]; /* ENV and ARG in effect, in order */
        int nvars;
        struct strbuf env; /* ENV lines for /etc/environment */
        char *workdir;     /* NULL: / */
        char *user;        /* NULL: root */
        int line;          /* of the instruction being read */
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

static void free_vars(struct parser *p)
{
        for (int i = 0; i < p->nvars; i++) {
                free(p->vars[i].name);
                free(p->vars[i].value);
        }
}

/* The script of one RUN: the variables in effect, its working directory
 * and user, then cmd, a shell script (run by /bin/sh, or by its own #!). */
static int add_step(struct parser *p, const char *what, const char *cmd)
{
        struct strbuf b = {0};
        struct df_step *steps;
        char *w;

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
        strbuf_add(&b, "", 1);
        w = strndup(what, 72);
        steps = realloc(p->d->steps, (p->d->n + 1) * sizeof(*steps));
        if (b.oom || !w || !steps) {
                free(b.s);
                free(w);
                if (steps)
                        p->d->steps = steps;
                return -ENOMEM;
        }
        p->d->steps = steps;
        steps[p->d->n].what = w;
        steps[p->d->n].script = b.s;
        p->d->n++;
        return 0;
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

/* The Sprout guest image: Debian bookworm, made with debootstrap from the
 * configured mirror. These names are it. */
static int known_base(const char *image)
{
        static const char *const names[] = {"debian:bookworm", "debian:bookworm-slim", "debian:12",
                                            "debian:12-slim"};
        const char *s = image;

        if (!strncmp(s, "docker.io/", 10))
                s += 10;
        if (!strncmp(s, "library/", 8))
                s += 8;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (!strcmp(s, names[i]))
                        return 1;
        return 0;
}

static int do_from(struct parser *p, char *args)
{
        char *s = skip_space(args), *end;

        if (p->d->from)
                return bad(p, "a second FROM (a multi-stage build) is not supported by this server");
        while (!strncmp(s, "--", 2))
                s = skip_space(s + strcspn(s, " \t"));
        end = s + strcspn(s, " \t");
        p->d->from = strndup(s, (size_t)(end - s));
        if (!p->d->from)
                return -ENOMEM;
        if (!*p->d->from)
                return bad(p, "FROM needs an image");
        if (!known_base(p->d->from))
                return bad(
                    p,
                    "base image '%s' is not available on this server: it builds on its own Debian bookworm"
                    " guest image (FROM debian:bookworm or debian:bookworm-slim); other images and"
                    " registries are not supported yet",
                    p->d->from);
        return 0;
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
        if (!p->d->from)
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
                return bad(p, "%s needs a build context or another stage, which a baseImage does not have",
                           s);
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
        struct parser p = {.d = ret, .msg = msg, .size = size};
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
        if (r == 0 && !ret->from) {
                p.line = lineno;
                r = bad(&p, "no FROM");
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
        free(d->from);
        memset(d, 0, sizeof(*d));
}

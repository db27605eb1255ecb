/*
 * cli: what the subcommand files share: reporting failures, calling the
 * server (with a progress line for long calls), printing answers, parsing
 * arguments and building paths. Depends on client.c and jansson. Never
 * exits: every helper returns the exit status for its caller to return.
 */
#include "cli.h"
#include "client.h"
#include "lib/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Output helpers                                                           */
/* ------------------------------------------------------------------------ */

/* Prints "sprout: <what>: <message>" to stderr and returns EXIT_API. */
int fail(struct cli *c, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "sprout: %s: ", c->what ? c->what : "error");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return EXIT_API;
}

/* Reports a non-2xx answer with the server's code and message. */
int fail_response(struct cli *c, const struct client_response *r)
{
        const char *code, *message;

        client_error_fields(r, &code, &message);
        if (code || message)
                return fail(c, "%s%s%s (HTTP %ld)", code ? code : "", code && message ? ": " : "",
                            message ? message : "", r->status);
        if (r->len > 0 && r->len < 512)
                return fail(c, "HTTP %ld: %s", r->status, r->body);
        return fail(c, "HTTP %ld", r->status);
}

/* Reports a failed client_request (r < 0) and returns the exit status. */
int fail_transport(struct cli *c, int r)
{
        if (r == -EIO)
                return fail(c, "cannot reach %s: %s", c->api.base_url, c->api.errbuf);
        if (r == -EFBIG)
                return fail(c, "response larger than %u bytes", CLIENT_MAX_RESPONSE);
        return fail(c, "%s", strerror(-r));
}

int answered(struct cli *c, int r, struct client_response *resp)
{
        if (r < 0)
                return fail_transport(c, r);
        if (resp->status < 200 || resp->status > 299) {
                int rc = fail_response(c, resp);

                client_response_done(resp);
                return rc;
        }
        return 0;
}

int call(struct cli *c, const char *method, const char *path, json_t *body, struct client_response *ret_resp)
{
        return answered(c, client_request(&c->api, method, path, body, ret_resp), ret_resp);
}

/* Prints a body as the server sent it, newline-terminated. */
void print_raw(const struct client_response *r)
{
        fwrite(r->body, 1, r->len, stdout);
        if (r->len == 0 || r->body[r->len - 1] != '\n')
                fputc('\n', stdout);
}

/* A JSON value's text for a table cell; "-" for null or absent. */
const char *cell(json_t *v, char *buf, size_t size)
{
        if (json_is_string(v))
                return json_string_value(v);
        if (json_is_integer(v)) {
                snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                return buf;
        }
        if (json_is_real(v)) {
                snprintf(buf, size, "%g", json_real_value(v));
                return buf;
        }
        if (json_is_true(v))
                return "true";
        if (json_is_false(v))
                return "false";
        return "-";
}

/* Flushes stdout and turns a write error (a full disk, a closed pipe) into a failure. */
int finish(struct cli *c, int rc)
{
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fail(c, "writing output: %s", strerror(errno));
                return rc ? rc : EXIT_API;
        }
        return rc;
}

int say_done(struct cli *c, struct client_response *r, const char *verb, const char *what)
{
        if (c->json)
                print_raw(r);
        else
                printf("%s %s\n", verb, what);
        client_response_done(r);
        return finish(c, 0);
}

int call_and_say(struct cli *c, const char *method, const char *path, json_t *body, const char *verb,
                 const char *what)
{
        struct client_response r;
        int rc = call(c, method, path, body, &r);

        return rc ? rc : say_done(c, &r, verb, what);
}

/* ------------------------------------------------------------------------ */
/* Argument parsing                                                         */
/* ------------------------------------------------------------------------ */

/*
 * Splits argv into options (per opts; --json is always accepted) and
 * positionals, stored in pos[] (at most max_pos). After "--", or once
 * stop_after positionals have been seen (0 = never), every remaining word is
 * positional. Returns the number of positionals, or -1 after printing a
 * usage error.
 */
int parse_args(struct cli *c, int argc, char **argv, const struct opt *opts, int stop_after, char **pos,
               int max_pos)
{
        int npos = 0, rest = 0;

        for (int i = 0; i < argc; i++) {
                const char *a = argv[i];
                const struct opt *o = NULL;
                const char *eq = NULL;
                size_t n;

                if (!rest && stop_after && npos >= stop_after)
                        rest = 1;
                if (!rest && strcmp(a, "--") == 0) {
                        rest = 1;
                        continue;
                }
                if (rest || a[0] != '-' || a[1] == '\0') {
                        if (npos >= max_pos) {
                                fprintf(stderr, "sprout: %s: unexpected argument '%s'\n", c->what, a);
                                return -1;
                        }
                        pos[npos++] = argv[i];
                        continue;
                }
                if (strcmp(a, "--json") == 0) {
                        c->json = 1;
                        continue;
                }
                eq = strchr(a, '=');
                n = eq && a[1] == '-' ? (size_t)(eq - a) : strlen(a);
                for (const struct opt *p = opts; p && p->name; p++) {
                        if ((strlen(p->name) == n && strncmp(a, p->name, n) == 0) ||
                            (p->alias && strcmp(a, p->alias) == 0)) {
                                o = p;
                                break;
                        }
                }
                if (!o || (o->flag && eq && a[1] == '-')) {
                        fprintf(stderr, "sprout: %s: unknown option '%s'\n", c->what, a);
                        return -1;
                }
                if (o->flag) {
                        *o->flag = 1;
                } else if (eq && a[1] == '-') {
                        *o->value = eq + 1;
                } else if (i + 1 < argc) {
                        *o->value = argv[++i];
                } else {
                        fprintf(stderr, "sprout: %s: option '%s' needs a value\n", c->what, a);
                        return -1;
                }
        }
        return npos;
}

int usage_error(struct cli *c)
{
        fprintf(stderr, "usage: sprout %s %s\n", c->what, c->args ? c->args : "");
        return EXIT_USAGE;
}

int want_args(struct cli *c, int argc, char **argv, const struct opt *opts, char **pos, int n)
{
        int npos = parse_args(c, argc, argv, opts, 0, pos, n);

        if (npos < 0)
                return EXIT_USAGE;
        return npos == n ? 0 : usage_error(c);
}

int want_vm(struct cli *c, int argc, char **argv, const struct opt *opts, const char *suffix, char **ret_id,
            char **ret_path)
{
        char *pos[1];
        int rc = want_args(c, argc, argv, opts, pos, 1);

        if (rc)
                return rc;
        if (!(*ret_path = vm_path(pos[0], suffix)))
                return fail(c, "out of memory");
        *ret_id = pos[0];
        return 0;
}

int check_count(struct cli *c, const char *option, const char *value, long long min)
{
        if (!value || parse_count(value) >= min)
                return 0;
        fprintf(stderr, "sprout: %s: %s takes a whole number, %lld or more\n", c->what, option, min);
        return EXIT_USAGE;
}

/* Parses a non-negative decimal number; returns -1 when s is not one. */
long long parse_count(const char *s)
{
        char *end;
        long long v;

        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || end == s || *end || v < 0)
                return -1;
        return v;
}

char *segment_path(const char *prefix, const char *id, const char *suffix)
{
        char *e = client_escape_segment(id), *p = NULL;

        if (e && asprintf(&p, "%s%s%s", prefix, e, suffix) < 0)
                p = NULL;
        free(e);
        return p;
}

int add_query(struct strbuf *b, const char *name, const char *value)
{
        char *e;

        if (!value)
                return b->oom ? -ENOMEM : 0;
        e = client_escape_segment(value);
        if (!e)
                return -ENOMEM;
        strbuf_printf(b, "%c%s=%s", b->s && strchr(b->s, '?') ? '&' : '?', name, e);
        free(e);
        return b->oom ? -ENOMEM : 0;
}

char *vm_path(const char *id, const char *suffix)
{
        return segment_path("/v1/vms/", id, suffix);
}

char *vm_item_path(const char *id, const char *collection, const char *item, const char *suffix)
{
        char *tail = segment_path(collection, item, suffix), *p = NULL;

        if (tail)
                p = vm_path(id, tail);
        free(tail);
        return p;
}

int call_at(struct cli *c, const char *method, char *path, json_t *body, struct client_response *ret_resp)
{
        int rc = path ? call(c, method, path, body, ret_resp) : fail(c, "out of memory");

        free(path);
        return rc;
}

int get_vm(struct cli *c, const char *id, struct client_response *ret)
{
        return call_at(c, "GET", vm_path(id, ""), NULL, ret);
}

/* ------------------------------------------------------------------------ */
/* Shared shapes of answers and requests                                    */
/* ------------------------------------------------------------------------ */

void print_fields(json_t *obj)
{
        const char *key;
        json_t *v;

        /* Every field, in the server's order; nested values as compact JSON. */
        json_object_foreach(obj, key, v)
        {
                char b[64];

                if (json_is_object(v) || json_is_array(v)) {
                        char *s = json_dumps(v, JSON_COMPACT);

                        printf("%-20s %s\n", key, s ? s : "?");
                        free(s);
                } else {
                        printf("%-20s %s\n", key, cell(v, b, sizeof(b)));
                }
        }
}

/* One cell of a row: padded to width and followed by a space, or as it
 * is in the last column (width 0). */
static void print_cell(const struct column *col, const char *text)
{
        if (col->width)
                printf("%-*s ", col->width, text);
        else
                printf("%s", text);
}

void print_table(json_t *rows, const struct column *cols)
{
        const struct column *col;
        char b[64];
        json_t *row;
        size_t i;

        for (col = cols; col->field; col++)
                if (col->width >= 0)
                        print_cell(col, col->title);
        printf("\n");
        json_array_foreach(rows, i, row)
        {
                for (col = cols; col->field; col++) {
                        json_t *v = json_object_get(row, col->field);

                        if (col->width >= 0)
                                print_cell(col, cell(v, b, sizeof(b)));
                        else if (json_is_true(v))
                                printf(" %s", col->title);
                }
                printf("\n");
        }
}

int show_list(struct cli *c, const char *path, const char *field, const struct column *cols,
              const char *const *counts)
{
        struct client_response r;
        char b[64], key[32];
        json_t *rows;
        int rc = call(c, "GET", path, NULL, &r);

        if (rc)
                return rc;
        rows = json_object_get(r.json, field);
        if (c->json) {
                print_raw(&r);
        } else if (!json_is_array(rows)) {
                rc = fail(c, "unexpected response: %.200s", r.body);
        } else {
                print_table(rows, cols);
                /* "N total, N running, N stopped": the counts the answer has. */
                for (const char *const *n = counts; n && *n; n++) {
                        if (n == counts)
                                printf("%s total", cell(json_object_get(r.json, "totalCount"), b, sizeof(b)));
                        snprintf(key, sizeof(key), "%sCount", *n);
                        printf(", %s %s%s", cell(json_object_get(r.json, key), b, sizeof(b)), *n,
                               n[1] ? "" : "\n");
                }
        }
        client_response_done(&r);
        return finish(c, rc);
}

int show_vm_list(struct cli *c, int argc, char **argv, const char *suffix, const char *field,
                 const struct column *cols)
{
        char *id, *path;
        int rc = want_vm(c, argc, argv, NULL, suffix, &id, &path);

        if (rc)
                return rc;
        rc = show_list(c, path, field, cols, NULL);
        free(path);
        return rc;
}

int show_object(struct cli *c, struct client_response *r)
{
        if (c->json || !json_is_object(r->json))
                print_raw(r);
        else
                print_fields(r->json);
        client_response_done(r);
        return finish(c, 0);
}

int load_json_object(struct cli *c, const char *file, json_t **ret)
{
        json_error_t err;
        json_t *v = strcmp(file, "-") ? json_load_file(file, 0, &err) : json_loadf(stdin, 0, &err);

        if (!json_is_object(v)) {
                json_decref(v);
                return fail(c, "%s: not a JSON object: %s (line %d)", file, v ? "" : err.text, err.line);
        }
        *ret = v;
        return 0;
}

/* ------------------------------------------------------------------------ */
/* Progress of long calls                                                   */
/* ------------------------------------------------------------------------ */

double since(const struct timespec *t0)
{
        struct timespec t;

        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* What the progress line of one call has shown. */
struct progress {
        const char *what;
        struct timespec t0;
        long shown; /* whole seconds on the line; -1 while none is */
};

static void progress_tick(void *ctx)
{
        struct progress *p = ctx;
        long s = (long)since(&p->t0);

        /* Quick calls show nothing: the first line comes after a second. */
        if (s < 1 || s == p->shown)
                return;
        fprintf(stderr, "\r%s: %lds elapsed", p->what, s);
        fflush(stderr);
        p->shown = s;
}

int request_long(struct cli *c, const char *method, const char *path, json_t *body,
                 struct client_response *ret_resp)
{
        struct progress p = {.what = c->what, .shown = -1};
        int r;

        if (!isatty(STDERR_FILENO))
                return client_request(&c->api, method, path, body, ret_resp);
        clock_gettime(CLOCK_MONOTONIC, &p.t0);
        c->api.progress = progress_tick;
        c->api.progress_ctx = &p;
        r = client_request(&c->api, method, path, body, ret_resp);
        c->api.progress = NULL;
        c->api.progress_ctx = NULL;
        if (p.shown >= 0)
                fprintf(stderr, "\r\033[K%s: %.1fs\n", c->what, since(&p.t0));
        return r;
}

int call_long(struct cli *c, const char *method, const char *path, json_t *body,
              struct client_response *ret_resp)
{
        return answered(c, request_long(c, method, path, body, ret_resp), ret_resp);
}

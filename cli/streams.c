/*
 * streams: the commands that read a stream of JSON lines: `vm stats`
 * (/v1/vms/{id}/stats/stream, a memory and CPU sample per interval) and
 * `vm watch` (/v1/vms/{id}/watch-files, one event per file change). Each
 * line is printed as it arrives and stdout is flushed after it, so a pipe
 * sees it at once; with --json the lines go out as the server sent them.
 */
#include "cli.h"
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One stream being read: how to print a line, and how many were. */
struct lines {
        struct cli *c;
        void (*print)(json_t *item); /* the human form of one item */
        long seen;                   /* items printed */
        long max;                    /* stop after this many; 0: never */
        int bad;                     /* a line that was not JSON */
};

static int on_line(void *ctx, const char *line, size_t len)
{
        struct lines *l = ctx;
        json_t *item;

        /* An empty line is the server's keep-alive, not an item. */
        while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
                len--;
        if (len == 0)
                return 0;
        if (l->c->json) {
                fwrite(line, 1, len, stdout);
                fputc('\n', stdout);
        } else {
                item = json_loadb(line, len, 0, NULL);
                if (!json_is_object(item)) {
                        json_decref(item);
                        l->bad = 1;
                        return 1;
                }
                l->print(item);
                json_decref(item);
        }
        l->seen++;
        if (fflush(stdout) != 0)
                return 1;
        return l->max && l->seen >= l->max;
}

/* Reads the stream at path and prints its items; returns the exit
 * status. */
static int read_stream(struct cli *c, const char *method, const char *path, struct lines *l)
{
        struct client_response r;
        int rc = answered(c, client_stream(&c->api, method, path, NULL, on_line, l, &r), &r);

        if (rc)
                return rc;
        client_response_done(&r);
        if (l->bad)
                return fail(c, "the server sent a line that is not a JSON object");
        if (l->max && l->seen < l->max)
                return fail(c, "the stream ended before a sample came (is the VM running?)");
        return finish(c, 0);
}

/* "TIME  mem USED/TOTAL MiB (P%)  cpu P% of N  load A B C" */
static void print_sample(json_t *s)
{
        json_t *mem = json_object_get(s, "memory"), *cpu = json_object_get(s, "cpu");
        json_t *load = json_object_get(s, "loadAverage");
        char b[64];

        printf("%s  mem %.1f/%.1f MiB (%.1f%%)  cpu %.1f%% of %s  load %.2f %.2f %.2f\n",
               cell(json_object_get(s, "timestamp"), b, sizeof(b)),
               json_number_value(json_object_get(mem, "usedBytes")) / 1048576.0,
               json_number_value(json_object_get(mem, "totalBytes")) / 1048576.0,
               json_number_value(json_object_get(mem, "usedPercent")),
               json_number_value(json_object_get(cpu, "usagePercent")),
               cell(json_object_get(cpu, "count"), b, sizeof(b)), json_number_value(json_array_get(load, 0)),
               json_number_value(json_array_get(load, 1)), json_number_value(json_array_get(load, 2)));
}

/* vm stats: one sample, or with --follow every sample until the stream
 * ends (the VM stops, or the server's request cap) or we are interrupted. */
int cmd_vm_stats(struct cli *c, int argc, char **argv)
{
        const char *interval = NULL;
        int follow = 0;
        const struct opt opts[] = {
            {"--follow", "-f", NULL, &follow}, {"--interval", NULL, &interval, NULL}, {0}};
        struct lines l = {.c = c, .print = print_sample, .max = 1};
        struct strbuf path = {0};
        char *id, *base;
        int rc = want_vm(c, argc, argv, opts, "/stats/stream", &id, &base);

        if (rc)
                return rc;
        if (check_count(c, "--interval", interval, 0)) {
                free(base);
                return EXIT_USAGE;
        }
        strbuf_printf(&path, "%s", base);
        free(base);
        if (add_query(&path, "interval_ms", interval) < 0) {
                free(path.s);
                return fail(c, "out of memory");
        }
        if (follow)
                l.max = 0;
        rc = read_stream(c, "GET", path.s, &l);
        free(path.s);
        return rc;
}

/* "KIND PATH", and "renamed OLD -> NEW" for a rename. */
static void print_event(json_t *e)
{
        const char *kind = json_string_value(json_object_get(e, "kind"));
        const char *path = json_string_value(json_object_get(e, "path"));
        const char *old = json_string_value(json_object_get(e, "oldPath"));

        if (old)
                printf("%s %s -> %s\n", kind ? kind : "?", old, path ? path : "?");
        else
                printf("%s %s\n", kind ? kind : "?", path ? path : "?");
}

/* vm watch: every file change in the VM, one line each, until interrupted
 * or the server ends the stream. */
int cmd_vm_watch(struct cli *c, int argc, char **argv)
{
        struct lines l = {.c = c, .print = print_event};
        char *id, *path;
        int rc = want_vm(c, argc, argv, NULL, "/watch-files", &id, &path);

        if (rc)
                return rc;
        rc = read_stream(c, "POST", path, &l);
        free(path);
        return rc;
}

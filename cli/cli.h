/*
 * cli: what the CLI's subcommand files share: the invocation's state, exit
 * statuses, option parsing and the helpers that call the server and report.
 */
#ifndef SPROUT_CLI_H
#define SPROUT_CLI_H

#include "client.h"
#include "lib/util.h"

#include <jansson.h>
#include <stddef.h>
#include <time.h>

enum {
        EXIT_API = 1,      /* the server or the transport failed */
        EXIT_USAGE = 2,    /* bad command line */
        EXIT_TIMEOUT = 124 /* exec ran past its timeout */
};

/* State shared by every subcommand of one invocation. */
struct cli {
        struct client api; /* connection to the server */
        const char *what;  /* "vm exec" etc., prefixes error messages */
        const char *args;  /* the subcommand's usage after its name */
        int json;          /* --json: print the server's JSON as is */
};

/* One option a subcommand accepts; exactly one of value or flag is set. */
struct opt {
        const char *name;   /* "--name" */
        const char *alias;  /* "-o" or NULL */
        const char **value; /* takes an argument, stored here */
        int *flag;          /* takes none, set to 1 */
};

/* ------------------------------------------------------------------------ */
/* cli.c: shared helpers                                                    */
/* ------------------------------------------------------------------------ */

/* Prints "sprout: <what>: <message>" to stderr and returns EXIT_API. */
int fail(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports a non-2xx answer with the server's code and message. */
int fail_response(struct cli *c, const struct client_response *r);
/* Reports a failed client_request (r < 0) and returns the exit status. */
int fail_transport(struct cli *c, int r);
/* Checks what a client_request or client_stream returned (r) and answered
 * (*resp), reporting any failure. Returns 0 for a 2xx answer (the caller
 * releases *resp) or the exit status (*resp is released). */
int answered(struct cli *c, int r, struct client_response *resp);
/* Sends one request and reports any failure itself. Returns 0 when the
 * server answered 2xx (the response is in *ret_resp, to be released by the
 * caller) or the exit status to return otherwise (the response is released). */
int call(struct cli *c, const char *method, const char *path, json_t *body, struct client_response *ret_resp);
/* call() on a path this takes over (and frees); NULL, for a path that
 * could not be made, fails as out of memory. */
int call_at(struct cli *c, const char *method, char *path, json_t *body, struct client_response *ret_resp);
/* client_request with an elapsed-seconds line on stderr while it waits,
 * when stderr is a terminal; returns what client_request does. */
int request_long(struct cli *c, const char *method, const char *path, json_t *body,
                 struct client_response *ret_resp);
/* call() through request_long, for operations that may take a while. */
int call_long(struct cli *c, const char *method, const char *path, json_t *body,
              struct client_response *ret_resp);
/* Says "VERB WHAT" on stdout (with --json, prints the body), releases the
 * answer and returns the exit status. */
int say_done(struct cli *c, struct client_response *r, const char *verb, const char *what);
/* A request whose answer needs no more than "VERB WHAT" on stdout (with
 * --json, the body as sent). body may be NULL. Returns the exit status. */
int call_and_say(struct cli *c, const char *method, const char *path, json_t *body, const char *verb,
                 const char *what);
/* Prints a body as the server sent it, newline-terminated. */
void print_raw(const struct client_response *r);
/* A JSON value's text for a table cell; "-" for null or absent. */
const char *cell(json_t *v, char *buf, size_t size);
/* Prints an object's fields one "name value" line each, in its order. */
void print_fields(json_t *obj);
/* One column of a table: a row's field under a title. A marker column
 * (width -1) has no header: it shows " TITLE" after the row when the field
 * is true. */
struct column {
        const char *title;
        const char *field; /* NULL ends the list of columns */
        int width;         /* padded to this; 0 for the last column; -1 a marker */
};
/* Prints a header and one line per row (JSON objects) of rows. */
void print_table(json_t *rows, const struct column *cols);
/* GETs path and prints the array in its field as a table, then, when
 * counts (NULL-terminated) is given, "N total, N <count>..." from the
 * totalCount and <count>Count fields; with --json the body. Returns the
 * exit status. */
int show_list(struct cli *c, const char *path, const char *field, const struct column *cols,
              const char *const *counts);
/* `sprout GROUP list ID`: show_list of the VM's path with suffix. */
int show_vm_list(struct cli *c, int argc, char **argv, const char *suffix, const char *field,
                 const struct column *cols);
/* Prints an answer (fields, or with --json the body), releases it and
 * returns the exit status. */
int show_object(struct cli *c, struct client_response *r);
/* Flushes stdout and turns a write error into a failure. */
int finish(struct cli *c, int rc);
/* Seconds since t0 (CLOCK_MONOTONIC). */
double since(const struct timespec *t0);
/* Reads a JSON object from file ("-": stdin) into *ret (the caller's to
 * release); 0 or the exit status, said already. */
int load_json_object(struct cli *c, const char *file, json_t **ret);

/* Splits argv into options (per opts; --json is always accepted) and
 * positionals, stored in pos[] (at most max_pos). After "--", or once
 * stop_after positionals have been seen (0 = never), every remaining word is
 * positional. Returns the number of positionals, or -1 after printing a
 * usage error. */
int parse_args(struct cli *c, int argc, char **argv, const struct opt *opts, int stop_after, char **pos,
               int max_pos);
/* parse_args wanting exactly n positionals: 0, or EXIT_USAGE after saying
 * what is wrong (with the subcommand's usage line). */
int want_args(struct cli *c, int argc, char **argv, const struct opt *opts, char **pos, int n);
/* want_args for one positional, a VM id (into *ret_id, a word of argv),
 * and the path vm_path makes of it and suffix (into *ret_path, the
 * caller's to free). 0, or the exit status (said already). */
int want_vm(struct cli *c, int argc, char **argv, const struct opt *opts, const char *suffix, char **ret_id,
            char **ret_path);
/* 0 when value is NULL or a number >= min; otherwise says that option
 * wants a number and returns EXIT_USAGE. */
int check_count(struct cli *c, const char *option, const char *value, long long min);
/* Prints the subcommand's usage line to stderr and returns EXIT_USAGE. */
int usage_error(struct cli *c);
/* Parses a non-negative decimal number; returns -1 when s is not one. */
long long parse_count(const char *s);

/* "<prefix><id><suffix>" with id percent-encoded as one path segment;
 * NULL when out of memory. The caller frees it. */
char *segment_path(const char *prefix, const char *id, const char *suffix);
/* Appends "?name=value" to b ("&name=..." when b has a query already),
 * value percent-encoded; nothing when value is NULL. 0, or -ENOMEM when
 * b could not grow (now or before). */
int add_query(struct strbuf *b, const char *name, const char *value);
/* "/v1/vms/<id><suffix>" with id percent-encoded; NULL when out of memory. */
char *vm_path(const char *id, const char *suffix);
/* "/v1/vms/<id><collection><item><suffix>" ("/terminals/", "main",
 * "/logs"), id and item percent-encoded; NULL when out of memory. */
char *vm_item_path(const char *id, const char *collection, const char *item, const char *suffix);
/* GET /v1/vms/<id> into *ret; 0 or the exit status (said already). */
int get_vm(struct cli *c, const char *id, struct client_response *ret);

/* ------------------------------------------------------------------------ */
/* Subcommands, by file                                                     */
/* ------------------------------------------------------------------------ */

/* ingress.c: --port's EXT:TARGET[,EXT:TARGET] or "none" as the API's
 * ports array; NULL when malformed. */
json_t *ports_json(const char *spec);
int cmd_vm_url(struct cli *c, int argc, char **argv);

/* builds.c */
int cmd_snapshot_create(struct cli *c, int argc, char **argv);
int cmd_build_list(struct cli *c, int argc, char **argv);
int cmd_build_get(struct cli *c, int argc, char **argv);
int cmd_build_phases(struct cli *c, int argc, char **argv);
int cmd_vm_build(struct cli *c, int argc, char **argv);

/* vm_life.c: a VM's lifecycle after create */
int cmd_vm_suspend(struct cli *c, int argc, char **argv);
int cmd_vm_start(struct cli *c, int argc, char **argv);
int cmd_vm_stop(struct cli *c, int argc, char **argv);
int cmd_vm_kill(struct cli *c, int argc, char **argv);
int cmd_vm_await(struct cli *c, int argc, char **argv);
int cmd_vm_fork(struct cli *c, int argc, char **argv);
int cmd_vm_snapshot(struct cli *c, int argc, char **argv);
int cmd_vm_optimize(struct cli *c, int argc, char **argv);
int cmd_vm_resize(struct cli *c, int argc, char **argv);

/* streams.c: the NDJSON streams */
int cmd_vm_stats(struct cli *c, int argc, char **argv);
int cmd_vm_watch(struct cli *c, int argc, char **argv);

/* shell.c: an interactive shell over the WebSocket terminal */
int cmd_vm_shell(struct cli *c, int argc, char **argv);

/* snapshots.c */
int cmd_snapshot_list(struct cli *c, int argc, char **argv);
int cmd_snapshot_get(struct cli *c, int argc, char **argv);
int cmd_snapshot_update(struct cli *c, int argc, char **argv);
int cmd_snapshot_delete(struct cli *c, int argc, char **argv);

/* services.c: systemd services in a VM */
int cmd_service_list(struct cli *c, int argc, char **argv);
int cmd_service_get(struct cli *c, int argc, char **argv);
int cmd_service_status(struct cli *c, int argc, char **argv);
int cmd_service_logs(struct cli *c, int argc, char **argv);
int cmd_service_create(struct cli *c, int argc, char **argv);
int cmd_service_delete(struct cli *c, int argc, char **argv);
int cmd_service_start(struct cli *c, int argc, char **argv);
int cmd_service_stop(struct cli *c, int argc, char **argv);
int cmd_service_restart(struct cli *c, int argc, char **argv);

/* terminals.c */
int cmd_terminal_list(struct cli *c, int argc, char **argv);
int cmd_terminal_logs(struct cli *c, int argc, char **argv);

#endif

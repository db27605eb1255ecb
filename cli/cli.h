/*
 * cli: what the CLI's subcommand files share: the invocation's state, exit
 * statuses, option parsing and the helpers that call the server and report.
 */
#ifndef SPROUT_CLI_H
#define SPROUT_CLI_H

#include "client.h"

#include <jansson.h>
#include <stddef.h>

enum {
        EXIT_API = 1,      /* the server or the transport failed */
        EXIT_USAGE = 2,    /* bad command line */
        EXIT_TIMEOUT = 124 /* exec ran past its timeout */
};

/* State shared by every subcommand of one invocation. */
struct cli {
        struct client api; /* connection to the server */
        const char *what;  /* "vm exec" etc., prefixes error messages */
        int json;          /* --json: print the server's JSON as is */
};

/* One option a subcommand accepts; exactly one of value or flag is set. */
struct opt {
        const char *name;   /* "--name" */
        const char *alias;  /* "-o" or NULL */
        const char **value; /* takes an argument, stored here */
        int *flag;          /* takes none, set to 1 */
};

/* Prints "sprout: <what>: <message>" to stderr and returns EXIT_API. */
int fail(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports a non-2xx answer with the server's code and message. */
int fail_response(struct cli *c, const struct client_response *r);
/* Reports a failed client_request (r < 0) and returns the exit status. */
int fail_transport(struct cli *c, int r);
/* Sends one request and reports any failure itself. Returns 0 when the
 * server answered 2xx (the response is in *ret_resp, to be released by the
 * caller) or the exit status to return otherwise (the response is released). */
int call(struct cli *c, const char *method, const char *path, json_t *body, struct client_response *ret_resp);
/* Prints a body as the server sent it, newline-terminated. */
void print_raw(const struct client_response *r);
/* A JSON value's text for a table cell; "-" for null or absent. */
const char *cell(json_t *v, char *buf, size_t size);
/* Flushes stdout and turns a write error into a failure. */
int finish(struct cli *c, int rc);
/* Splits argv into options (per opts; --json is always accepted) and
 * positionals, stored in pos[] (at most max_pos). After "--", or once
 * stop_after positionals have been seen (0 = never), every remaining word is
 * positional. Returns the number of positionals, or -1 after printing a
 * usage error. */
int parse_args(struct cli *c, int argc, char **argv, const struct opt *opts, int stop_after, char **pos,
               int max_pos);
/* Parses a non-negative decimal number; returns -1 when s is not one. */
long long parse_count(const char *s);

/* The build subcommands (builds.c). */
/* "/v1/vms/<id><suffix>" with id percent-encoded; NULL when out of memory. */
char *vm_path(const char *id, const char *suffix);
/* GET /v1/vms/<id> into *ret; 0 or the exit status (said already). */
int get_vm(struct cli *c, const char *id, struct client_response *ret);

/* ingress.c: --port's EXT:TARGET[,EXT:TARGET] or "none" as the API's
 * ports array; NULL when malformed. */
json_t *ports_json(const char *spec);
int cmd_vm_url(struct cli *c, int argc, char **argv);

int cmd_snapshot_create(struct cli *c, int argc, char **argv);
int cmd_build_get(struct cli *c, int argc, char **argv);
int cmd_build_phases(struct cli *c, int argc, char **argv);

#endif

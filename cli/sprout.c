/*
 * sprout: the command-line client for sproutd. Each subcommand is one row of
 * a table (group, name, handler, usage) and one HTTP call through client.c.
 * This file holds the table, main() and the vm, file and keys basics; the
 * other groups live in their own files (cli.h lists them), the helpers they
 * share in cli.c.
 * Reads SPROUT_URL / SPROUT_API_KEY (or FREESTYLE_API_URL / FREESTYLE_API_KEY).
 * Human output by default; --json prints the server's JSON body unchanged.
 *
 * Exit status: 0 on success, 1 when the server or the transport reports a
 * failure (its message goes to stderr), 2 on a usage error, 124 when an exec
 * timed out; `vm exec` otherwise exits with the command's own status.
 */
#include "lib/util.h"
#include "cli.h"
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_URL "http://127.0.0.1:8080"

/* The most `file put` reads from a file or stdin; the server caps bodies too. */
#define MAX_UPLOAD (256u * 1024 * 1024)

/* Appends s to the shell command in *buf, single-quoted when it needs quoting. */
static int append_word(char **buf, size_t *len, const char *s)
{
        static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-";
        size_t need = strlen(s) * 4 + 4;
        int quote = s[0] == '\0' || strspn(s, safe) != strlen(s);
        char *p = realloc(*buf, *len + need + 1);

        if (!p)
                return -ENOMEM;
        *buf = p;
        p += *len;
        if (*len)
                *p++ = ' ';
        if (quote)
                *p++ = '\'';
        for (; *s; s++) {
                if (quote && *s == '\'') {
                        memcpy(p, "'\\''", 4);
                        p += 4;
                } else {
                        *p++ = *s;
                }
        }
        if (quote)
                *p++ = '\'';
        *p = '\0';
        *len = (size_t)(p - *buf);
        return 0;
}

/* Reads all of fd (at most MAX_UPLOAD bytes) into a new buffer. */
static int read_all(int fd, unsigned char **ret_buf, size_t *ret_len)
{
        size_t len = 0, cap = 65536;
        unsigned char *buf = malloc(cap);

        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n;

                if (len == cap) {
                        unsigned char *p;

                        if (cap >= MAX_UPLOAD) {
                                free(buf);
                                return -EFBIG;
                        }
                        cap *= 2;
                        p = realloc(buf, cap);
                        if (!p) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = p;
                }
                n = read(fd, buf + len, cap - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int e = errno;

                        free(buf);
                        return -e;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        *ret_buf = buf;
        *ret_len = len;
        return 0;
}

/* ------------------------------------------------------------------------ */
/* vm                                                                       */
/* ------------------------------------------------------------------------ */

/* vm create: POST /v1/vms; prints the new id (the whole answer with --json). */
static int cmd_vm_create(struct cli *c, int argc, char **argv)
{
        const char *name = NULL, *ports = NULL;
        const struct opt opts[] = {{"--name", NULL, &name, NULL}, {"--port", NULL, &ports, NULL}, {0}};
        struct client_response r;
        const char *id;
        json_t *body;
        int rc;

        if (parse_args(c, argc, argv, opts, 0, NULL, 0) < 0)
                return EXIT_USAGE;
        body = json_object();
        if (!body || (name && json_object_set_new(body, "name", json_string(name)) < 0)) {
                json_decref(body);
                return fail(c, "out of memory");
        }
        if (ports) {
                json_t *list = ports_json(ports);

                if (!list) {
                        json_decref(body);
                        fprintf(stderr, "sprout: --port wants EXT:TARGET[,EXT:TARGET] or none\n");
                        return EXIT_USAGE;
                }
                json_object_set_new(body, "ports", list);
        }
        rc = call(c, "POST", "/v1/vms", body, &r);
        json_decref(body);
        if (rc)
                return rc;
        id = json_string_value(json_object_get(r.json, "id"));
        if (c->json)
                print_raw(&r);
        else if (id)
                printf("%s\n", id);
        else
                rc = fail(c, "response has no VM id: %.200s", r.body);
        client_response_done(&r);
        return finish(c, rc);
}

/* vm list: GET /v1/vms with the paging and state filters; a table plus the counts. */
static int cmd_vm_list(struct cli *c, int argc, char **argv)
{
        const char *limit = NULL, *offset = NULL, *state = NULL;
        const struct opt opts[] = {{"--limit", NULL, &limit, NULL},
                                   {"--offset", NULL, &offset, NULL},
                                   {"--state", NULL, &state, NULL},
                                   {0}};
        static const struct column cols[] = {
            {"ID", "id", 22}, {"NAME", "name", 20}, {"STATE", "state", 10}, {"CREATED", "createdAt", 0}, {0}};
        static const char *const counts[] = {"running", "starting", "suspended", "stopped", NULL};
        struct strbuf path = {0};
        int rc;

        if (parse_args(c, argc, argv, opts, 0, NULL, 0) < 0)
                return EXIT_USAGE;
        if (check_count(c, "--limit", limit, 0) || check_count(c, "--offset", offset, 0))
                return EXIT_USAGE;
        strbuf_printf(&path, "/v1/vms");
        if (add_query(&path, "limit", limit) < 0 || add_query(&path, "offset", offset) < 0 ||
            add_query(&path, "vmState", state) < 0) {
                free(path.s);
                return fail(c, "out of memory");
        }
        rc = show_list(c, path.s, "vms", cols, counts);
        free(path.s);
        return rc;
}

/* vm get: GET /v1/vms/ID; one "field value" line per top-level field. */
static int cmd_vm_get(struct cli *c, int argc, char **argv)
{
        struct client_response r;
        char *pos[1];
        int rc = want_args(c, argc, argv, NULL, pos, 1);

        if (!rc)
                rc = get_vm(c, pos[0], &r);
        return rc ? rc : show_object(c, &r);
}

/* vm delete: DELETE /v1/vms/ID. */
static int cmd_vm_delete(struct cli *c, int argc, char **argv)
{
        char *pos[1], *path;
        int rc;

        if (parse_args(c, argc, argv, NULL, 0, pos, 1) != 1) {
                fprintf(stderr, "usage: sprout vm delete ID [--json]\n");
                return EXIT_USAGE;
        }
        if (!(path = vm_path(pos[0], "")))
                return fail(c, "out of memory");
        rc = call_and_say(c, "DELETE", path, NULL, "deleted", pos[0]);
        free(path);
        return rc;
}

/*
 * vm exec: POST /v1/vms/ID/exec-await. The command's stdout and stderr go to
 * ours, and its status becomes our exit status; a timeout exits 124.
 */
static int cmd_vm_exec(struct cli *c, int argc, char **argv)
{
        const char *timeout = NULL;
        const struct opt opts[] = {{"--timeout", NULL, &timeout, NULL}, {0}};
        char **pos = calloc((size_t)argc + 1, sizeof(*pos));
        char *command = NULL, *path = NULL;
        struct client_response r = {0};
        json_t *body = NULL, *status, *out, *err;
        size_t len = 0;
        long long ms = -1;
        int npos, rc = EXIT_USAGE;

        if (!pos)
                return fail(c, "out of memory");
        /* Options end at "--" or at the first word after the VM id. */
        npos = parse_args(c, argc, argv, opts, 2, pos, argc);
        if (npos < 2) {
                if (npos >= 0)
                        fprintf(stderr, "usage: sprout vm exec ID [--timeout MS] [--json] -- COMMAND...\n");
                goto out;
        }
        if (timeout && (ms = parse_count(timeout)) < 0) {
                fprintf(stderr, "sprout: %s: --timeout takes milliseconds\n", c->what);
                goto out;
        }
        /* One word is a shell command line; several are an argv, quoted for the shell. */
        if (npos == 2) {
                command = strdup(pos[1]);
        } else {
                for (int i = 1; i < npos; i++) {
                        if (append_word(&command, &len, pos[i]) < 0) {
                                free(command);
                                command = NULL;
                                break;
                        }
                }
        }
        body = json_object();
        if (!command || !body || json_object_set_new(body, "command", json_string(command)) < 0 ||
            (ms >= 0 && json_object_set_new(body, "timeoutMs", json_integer(ms)) < 0) ||
            !(path = vm_path(pos[0], "/exec-await"))) {
                rc = fail(c, "out of memory");
                goto out;
        }
        rc = client_request(&c->api, "POST", path, body, &r);
        if (rc < 0) {
                /* Never retried: the command may already have run. */
                rc = fail_transport(c, rc);
                goto out;
        } else if (r.status < 200 || r.status > 299) {
                const char *code, *message;

                client_error_fields(&r, &code, &message);
                rc = fail_response(c, &r);
                if (r.status == 408 || (code && strcmp(code, "EXEC_TIMED_OUT") == 0))
                        rc = EXIT_TIMEOUT;
                goto out;
        }
        status = json_object_get(r.json, "statusCode");
        if (c->json) {
                print_raw(&r);
        } else {
                out = json_object_get(r.json, "stdout");
                err = json_object_get(r.json, "stderr");
                if (json_is_string(out))
                        fwrite(json_string_value(out), 1, json_string_length(out), stdout);
                fflush(stdout);
                if (json_is_string(err))
                        fwrite(json_string_value(err), 1, json_string_length(err), stderr);
        }
        if (json_is_integer(status)) {
                json_int_t s = json_integer_value(status);

                rc = s >= 0 && s <= 255 ? (int)s : EXIT_API;
        } else if (!json_is_object(r.json)) {
                rc = fail(c, "unexpected response: %.200s", r.body);
        } else {
                /* No status: the command did not exit normally (killed by a signal). */
                rc = EXIT_API;
        }
        rc = finish(c, rc);
out:
        client_response_done(&r);
        json_decref(body);
        free(command);
        free(path);
        free(pos);
        return rc;
}

/* ------------------------------------------------------------------------ */
/* file                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * file get: GET /v1/vms/ID/files/PATH. A file's bytes (base64 decoded) go to
 * stdout or -o FILE unchanged; a directory prints one name per line, with a
 * trailing "/" on subdirectories.
 */
static int cmd_file_get(struct cli *c, int argc, char **argv)
{
        const char *output = NULL;
        const struct opt opts[] = {{"--output", "-o", &output, NULL}, {0}};
        struct client_response r;
        unsigned char *data = NULL;
        size_t len = 0, i;
        char *pos[2], *path;
        json_t *content, *files, *f;
        const char *encoding;
        int rc;

        if (parse_args(c, argc, argv, opts, 0, pos, 2) != 2) {
                fprintf(stderr, "usage: sprout file get ID PATH [-o FILE] [--json]\n");
                return EXIT_USAGE;
        }
        if (!(path = vm_item_path(pos[0], "/files/", pos[1], "")))
                return fail(c, "out of memory");
        rc = call(c, "GET", path, NULL, &r);
        free(path);
        if (rc)
                return rc;
        if (c->json) {
                if (output && strcmp(output, "-") != 0) {
                        int e = write_file_atomic(output, r.body, r.len, 0666);

                        if (e < 0)
                                rc = fail(c, "%s: %s", output, strerror(-e));
                } else {
                        print_raw(&r);
                }
                goto out;
        }
        content = json_object_get(r.json, "content");
        files = json_object_get(r.json, "files");
        if (json_is_string(content)) {
                encoding = json_string_value(json_object_get(r.json, "encoding"));
                if (encoding && strcmp(encoding, "base64") == 0) {
                        if (base64_decode(json_string_value(content), json_string_length(content), &data, &len) <
                            0) {
                                rc = fail(c, "server sent invalid base64");
                                goto out;
                        }
                        if (output && strcmp(output, "-") != 0)
                                rc = write_file_atomic(output, data, len, 0666);
                        else
                                fwrite(data, 1, len, stdout);
                } else {
                        if (output && strcmp(output, "-") != 0)
                                rc = write_file_atomic(output, json_string_value(content),
                                                       json_string_length(content), 0666);
                        else
                                fwrite(json_string_value(content), 1, json_string_length(content), stdout);
                }
                if (rc < 0)
                        rc = fail(c, "%s: %s", output, strerror(-rc));
        } else if (json_is_array(files)) {
                json_array_foreach(files, i, f)
                {
                        const char *name = json_string_value(json_object_get(f, "name"));
                        const char *kind = json_string_value(json_object_get(f, "kind"));

                        printf("%s%s\n", name ? name : "?",
                               kind && strcmp(kind, "directory") == 0 ? "/" : "");
                }
        } else {
                rc = fail(c, "unexpected response: %.200s", r.body);
        }
out:
        free(data);
        client_response_done(&r);
        return finish(c, rc);
}

/* file put: reads FILE (or stdin) whole and PUTs it base64-encoded. */
static int cmd_file_put(struct cli *c, int argc, char **argv)
{
        struct client_response r = {0};
        unsigned char *data = NULL;
        char *pos[3], *path = NULL, *b64 = NULL;
        const char *src;
        json_t *body = NULL;
        size_t len = 0;
        int npos, fd, e, rc;

        npos = parse_args(c, argc, argv, NULL, 0, pos, 3);
        if (npos < 2) {
                if (npos >= 0)
                        fprintf(stderr, "usage: sprout file put ID PATH [FILE|-] [--json]\n");
                return EXIT_USAGE;
        }
        src = npos == 3 ? pos[2] : "-";
        if (strcmp(src, "-") == 0) {
                e = read_all(STDIN_FILENO, &data, &len);
        } else {
                fd = open(src, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return fail(c, "%s: %s", src, strerror(errno));
                e = read_all(fd, &data, &len);
                close(fd);
        }
        if (e < 0)
                return fail(c, "%s: %s", strcmp(src, "-") == 0 ? "stdin" : src, strerror(-e));
        b64 = base64_encode(data, len);
        body = json_object();
        if (!b64 || !body || json_object_set_new(body, "content", json_string(b64)) < 0 ||
            json_object_set_new(body, "encoding", json_string("base64")) < 0 ||
            !(path = vm_item_path(pos[0], "/files/", pos[1], ""))) {
                rc = fail(c, "out of memory");
                goto out;
        }
        /* The base64 copy inside body is all the request needs now. */
        free(b64);
        b64 = NULL;
        rc = call(c, "PUT", path, body, &r);
        if (rc)
                goto out;
        if (c->json)
                print_raw(&r);
        else
                printf("wrote %zu bytes to %s\n", len, pos[1]);
        client_response_done(&r);
        rc = finish(c, 0);
out:
        json_decref(body);
        free(data);
        free(b64);
        free(path);
        return rc;
}

/* ------------------------------------------------------------------------ */
/* keys                                                                     */
/* ------------------------------------------------------------------------ */

/* keys create: POST /admin/v1/keys; the key is printed alone on the last line. */
static int cmd_keys_create(struct cli *c, int argc, char **argv)
{
        static const char *const fields[] = {"maxVms", "maxRunningVms", "maxSnapshots", "maxMemoryMb",
                                             "maxStorageBytes"};
        const char *account = NULL, *lim[5] = {0};
        const struct opt opts[] = {{"--account", NULL, &account, NULL},
                                   {"--max-vms", NULL, &lim[0], NULL},
                                   {"--max-running-vms", NULL, &lim[1], NULL},
                                   {"--max-snapshots", NULL, &lim[2], NULL},
                                   {"--max-memory-mb", NULL, &lim[3], NULL},
                                   {"--max-storage-bytes", NULL, &lim[4], NULL},
                                   {0}};
        struct client_response r;
        const char *key, *acct, *acct_id;
        json_t *body, *limits;
        int rc;

        if (parse_args(c, argc, argv, opts, 0, NULL, 0) < 0)
                return EXIT_USAGE;
        body = json_object();
        limits = json_object();
        for (int i = 0; i < 5; i++) {
                if (!lim[i])
                        continue;
                if (parse_count(lim[i]) < 0) {
                        fprintf(stderr, "sprout: %s: limits take a non-negative number (0: none)\n", c->what);
                        json_decref(body);
                        json_decref(limits);
                        return EXIT_USAGE;
                }
                json_object_set_new(limits, fields[i], json_integer(parse_count(lim[i])));
        }
        if (!body || !limits || (account && json_object_set_new(body, "account", json_string(account)) < 0) ||
            (json_object_size(limits) && json_object_set(body, "limits", limits) < 0)) {
                json_decref(body);
                json_decref(limits);
                return fail(c, "out of memory");
        }
        json_decref(limits);
        rc = call(c, "POST", "/admin/v1/keys", body, &r);
        json_decref(body);
        if (rc)
                return rc;
        key = json_string_value(json_object_get(r.json, "key"));
        acct = json_string_value(json_object_get(r.json, "account"));
        acct_id = json_string_value(json_object_get(r.json, "accountId"));
        if (c->json) {
                print_raw(&r);
        } else if (!key) {
                rc = fail(c, "response has no key: %.200s", r.body);
        } else {
                /* Scripts read the key from the last line: keep it alone there. */
                printf("account %s (%s), key id %s\n%s\n", acct ? acct : "-", acct_id ? acct_id : "-",
                       json_string_value(json_object_get(r.json, "id")) ?: "-", key);
        }
        client_response_done(&r);
        return finish(c, rc);
}

/* keys list: GET /admin/v1/keys; a table (an admin key sees every account's). */
static int cmd_keys_list(struct cli *c, int argc, char **argv)
{
        static const struct column cols[] = {{"ID", "id", 28},
                                             {"ACCOUNT", "account", 20},
                                             {"PREFIX", "prefix", 10},
                                             {"ADMIN", "admin", 6},
                                             {"CREATED", "createdAt", 0},
                                             {"(bootstrap)", "bootstrap", -1},
                                             {0}};

        if (parse_args(c, argc, argv, NULL, 0, NULL, 0) < 0)
                return EXIT_USAGE;
        return show_list(c, "/admin/v1/keys", "keys", cols, NULL);
}

/* keys revoke: DELETE /admin/v1/keys/ID. */
static int cmd_keys_revoke(struct cli *c, int argc, char **argv)
{
        char *pos[1], *e, *path = NULL;
        int rc;

        if (parse_args(c, argc, argv, NULL, 0, pos, 1) != 1) {
                fprintf(stderr, "usage: sprout keys revoke ID [--json]\n");
                return EXIT_USAGE;
        }
        e = client_escape_segment(pos[0]);
        if (!e || asprintf(&path, "/admin/v1/keys/%s", e) < 0) {
                free(e);
                return fail(c, "out of memory");
        }
        free(e);
        rc = call_and_say(c, "DELETE", path, NULL, "revoked", pos[0]);
        free(path);
        return rc;
}

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                 */
/* ------------------------------------------------------------------------ */

/* One row of the subcommand table. */
struct command {
        const char *group; /* "vm", "file", "keys", ... */
        const char *name;  /* "create" ... */
        int (*run)(struct cli *c, int argc, char **argv);
        const char *args;    /* usage after "sprout GROUP NAME" */
        const char *summary; /* one line for help */
};

static const struct command commands[] = {
    {"vm", "create", cmd_vm_create, "[--name NAME] [--port EXT:TARGET[,EXT:TARGET]|none] [--json]",
     "create a VM and print its id; --port exposes VM port TARGET as external port EXT (443 or 8081)"},
    {"vm", "url", cmd_vm_url, "ID [--proxy URL] [--json]",
     "print the URLs of the VM's ports and domains on the ingress proxy (default $SPROUT_PROXY_URL)"},
    {"vm", "list", cmd_vm_list, "[--limit N] [--offset N] [--state STATE] [--json]", "list your VMs"},
    {"vm", "get", cmd_vm_get, "ID [--json]", "show one VM"},
    {"vm", "exec", cmd_vm_exec, "ID [--timeout MS] [--json] -- COMMAND...",
     "run a shell command in the VM; exits with its status"},
    {"vm", "delete", cmd_vm_delete, "ID [--json]", "delete a VM"},
    {"vm", "suspend", cmd_vm_suspend, "ID [--json]", "suspend a VM: memory to disk, processes kept"},
    {"vm", "start", cmd_vm_start, "ID [--json]", "resume a suspended VM or boot a stopped one"},
    {"vm", "stop", cmd_vm_stop, "ID [--json]", "power a VM off from inside (its disk is kept)"},
    {"vm", "kill", cmd_vm_kill, "ID [--json]", "end a VM's QEMU at once"},
    {"vm", "await", cmd_vm_await, "ID [--json]", "wait until the VM stops; prints the state it ended in"},
    {"vm", "fork", cmd_vm_fork, "ID [--count N] [--port EXT:TARGET[,...]|none] [--json]",
     "fork a running VM into N copies (default 1); prints each new id"},
    {"vm", "snapshot", cmd_vm_snapshot, "ID [--name NAME] [--json]",
     "snapshot a VM (new VMs can start from it); prints the snapshot id"},
    {"vm", "optimize", cmd_vm_optimize, "ID [--json]", "suspend a VM and flatten its disk for faster forks"},
    {"vm", "resize", cmd_vm_resize, "ID [--memory-gb N|--memory-mb N] [--vcpus N] [--disk-gb N] [--json]",
     "grow a VM: the disk at once, memory and vCPUs at its next boot (memory in whole GB)"},
    {"vm", "stats", cmd_vm_stats, "ID [--follow|-f] [--interval MS] [--json]",
     "one memory and CPU sample from inside the VM; --follow: one a line until interrupted"},
    {"vm", "watch", cmd_vm_watch, "ID [--json]",
     "print file changes in the VM, one a line, until interrupted"},
    {"vm", "build", cmd_vm_build, "ID [--json]", "show the build that made a VM"},
    {"vm", "shell", cmd_vm_shell, "ID [--terminal NAME]",
     "an interactive shell in the VM (raw terminal, resizes, its exit status); --terminal: a persistent one"},
    {"file", "get", cmd_file_get, "ID PATH [-o FILE] [--json]",
     "write a guest file's bytes to stdout or FILE; a directory lists its entries"},
    {"file", "put", cmd_file_put, "ID PATH [FILE|-] [--json]", "upload FILE (or stdin) to PATH in the guest"},
    {"keys", "create", cmd_keys_create,
     "[--account NAME] [--max-vms N] [--max-running-vms N] [--max-snapshots N] [--max-memory-mb N]"
     " [--max-storage-bytes N] [--json]",
     "create an API key (admin key needed), setting its account's limits; prints the key on its last line"},
    {"keys", "list", cmd_keys_list, "[--json]", "list API keys (an admin key sees every account's)"},
    {"keys", "revoke", cmd_keys_revoke, "ID [--json]", "revoke an API key"},
    {"snapshot", "create", cmd_snapshot_create, "--spec FILE.json [--name NAME] [--json]",
     "build a snapshot from a spec (a SnapshotSpec; '-' reads stdin), showing each phase as it happens;"
     " prints the snapshot id on its last line"},
    {"snapshot", "list", cmd_snapshot_list,
     "[--include-deleted] [--include-failed] [--include-building] [--json]",
     "list your snapshots (deleted, failed and building ones when asked)"},
    {"snapshot", "get", cmd_snapshot_get, "ID [--json]", "show one snapshot, deleted or failed ones too"},
    {"snapshot", "update", cmd_snapshot_update, "ID --name NAME [--json]", "rename a snapshot ('' clears)"},
    {"snapshot", "delete", cmd_snapshot_delete, "ID [--json]", "delete a snapshot"},
    {"build", "list", cmd_build_list, "[--json]", "list this account's builds, newest first, failed ones too"},
    {"build", "get", cmd_build_get, "ID [--json]", "show a build: its state, planned phases and failure"},
    {"build", "phases", cmd_build_phases, "ID [--json]", "list the phases a build passed through"},
    {"service", "list", cmd_service_list, "ID [--json]", "list the systemd services the API made in the VM"},
    {"service", "get", cmd_service_get, "ID NAME [--json]", "show a service's systemd fields"},
    {"service", "status", cmd_service_status, "ID NAME [--json]", "one line: NAME: ACTIVE (SUB), LOAD"},
    {"service", "logs", cmd_service_logs, "ID NAME [--lines N] [--since TIME] [--json]",
     "a service's journal (the last 100 lines unless told)"},
    {"service", "create", cmd_service_create, "ID --spec FILE.json [--json]",
     "create and start a service from a SystemdUnitSpec ({name, mode, exec, ...}; '-' reads stdin)"},
    {"service", "delete", cmd_service_delete, "ID NAME [--json]", "stop and remove a service"},
    {"service", "start", cmd_service_start, "ID NAME... [--json]", "start services; fails if any did not"},
    {"service", "stop", cmd_service_stop, "ID NAME... [--json]", "stop services; fails if any did not"},
    {"service", "restart", cmd_service_restart, "ID NAME... [--json]",
     "restart services; fails if any did not"},
    {"terminal", "list", cmd_terminal_list, "ID [--json]", "list the VM's terminals (named exec shells)"},
    {"terminal", "logs", cmd_terminal_logs, "ID TERMINAL [--xterm] [--json]",
     "a terminal's output as plain lines; --xterm: as written, escapes and all"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* Prints the command summary, all groups or only one. */
static void usage(FILE *f, const char *group)
{
        fprintf(f, "usage: sprout [--url URL] [--key KEY] COMMAND [ARGS]\n\ncommands:\n");
        for (size_t i = 0; i < N_COMMANDS; i++) {
                if (group && strcmp(group, commands[i].group) != 0)
                        continue;
                fprintf(f, "  sprout %s %s %s\n      %s\n", commands[i].group, commands[i].name,
                        commands[i].args, commands[i].summary);
        }
        fprintf(f, "  sprout help\n      show this text\n\n"
                   "environment:\n"
                   "  SPROUT_URL      server URL (else FREESTYLE_API_URL, else " DEFAULT_URL ")\n"
                   "  SPROUT_API_KEY  API key (else FREESTYLE_API_KEY)\n\n"
                   "With several COMMAND words, `vm exec` quotes each for the guest shell;\n"
                   "with one, that word is run by the shell as written.\n");
}

/* Returns the first non-empty environment variable of the two, or NULL. */
static const char *env2(const char *a, const char *b)
{
        const char *v = getenv(a);

        if (v && *v)
                return v;
        v = getenv(b);
        return v && *v ? v : NULL;
}

/* Parses global options, finds the subcommand in the table and runs it. */
int main(int argc, char **argv)
{
        const char *url = env2("SPROUT_URL", "FREESTYLE_API_URL");
        const char *key = env2("SPROUT_API_KEY", "FREESTYLE_API_KEY");
        const struct command *cmd = NULL;
        struct cli c = {0};
        char what[64];
        int i = 1, rc;

        /* Global options come before the command. */
        while (i < argc && argv[i][0] == '-') {
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        usage(stdout, NULL);
                        return 0;
                } else if (strcmp(argv[i], "--url") == 0 && i + 1 < argc) {
                        url = argv[i + 1];
                        i += 2;
                } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
                        key = argv[i + 1];
                        i += 2;
                } else if (strcmp(argv[i], "--json") == 0) {
                        c.json = 1;
                        i++;
                } else {
                        fprintf(stderr, "sprout: unknown option '%s'\n\n", argv[i]);
                        usage(stderr, NULL);
                        return EXIT_USAGE;
                }
        }
        if (i >= argc) {
                usage(stderr, NULL);
                return EXIT_USAGE;
        }
        if (strcmp(argv[i], "help") == 0) {
                usage(stdout, i + 1 < argc ? argv[i + 1] : NULL);
                return 0;
        }
        for (size_t k = 0; k < N_COMMANDS; k++) {
                if (strcmp(argv[i], commands[k].group) == 0 && i + 1 < argc &&
                    strcmp(argv[i + 1], commands[k].name) == 0) {
                        cmd = &commands[k];
                        break;
                }
        }
        if (!cmd) {
                int known = 0;

                for (size_t k = 0; k < N_COMMANDS; k++)
                        known |= strcmp(argv[i], commands[k].group) == 0;
                if (known && i + 1 < argc &&
                    (strcmp(argv[i + 1], "help") == 0 || strcmp(argv[i + 1], "--help") == 0)) {
                        usage(stdout, argv[i]);
                        return 0;
                }
                if (known && i + 1 < argc)
                        fprintf(stderr, "sprout: unknown command '%s %s'\n\n", argv[i], argv[i + 1]);
                else if (!known)
                        fprintf(stderr, "sprout: unknown command '%s'\n\n", argv[i]);
                usage(stderr, known ? argv[i] : NULL);
                return EXIT_USAGE;
        }
        for (int k = i + 2; k < argc && strcmp(argv[k], "--") != 0; k++) {
                if (strcmp(argv[k], "-h") == 0 || strcmp(argv[k], "--help") == 0) {
                        printf("usage: sprout %s %s %s\n  %s\n", cmd->group, cmd->name, cmd->args,
                               cmd->summary);
                        return 0;
                }
        }
        snprintf(what, sizeof(what), "%s %s", cmd->group, cmd->name);
        c.what = what;
        c.args = cmd->args;
        if (!key) {
                fprintf(stderr, "sprout: %s: no API key: set SPROUT_API_KEY (or FREESTYLE_API_KEY)\n", what);
                return EXIT_USAGE;
        }
        if (client_init(&c.api, url ? url : DEFAULT_URL, key) < 0) {
                fprintf(stderr, "sprout: out of memory\n");
                return EXIT_API;
        }
        rc = cmd->run(&c, argc - i - 2, argv + i + 2);
        client_done(&c.api);
        return rc;
}

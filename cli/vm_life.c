/*
 * vm_life: a VM's lifecycle after `vm create`: suspend, start, stop, kill,
 * await, fork, snapshot, optimize and resize, one POST to
 * /v1/vms/{id}/<operation> each. The calls that may take a while (start,
 * suspend, stop, await, fork, snapshot, optimize) show an elapsed-seconds
 * line on stderr when it is a terminal, and nothing extra otherwise.
 */
#include "cli.h"
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * POST /v1/vms/ID/OP with body (NULL sends none; it is released). A 2xx
 * answer goes to *ret when ret is not NULL (the caller prints and releases
 * it); otherwise "DONE ID" (with --json, the body) is printed. Returns the
 * exit status.
 */
static int vm_post(struct cli *c, const char *id, const char *op, json_t *body, int is_long, const char *done,
                   struct client_response *ret)
{
        struct client_response r;
        char *path = vm_path(id, op);
        int rc;

        if (!path) {
                json_decref(body);
                return fail(c, "out of memory");
        }
        rc = is_long ? call_long(c, "POST", path, body, &r) : call(c, "POST", path, body, &r);
        free(path);
        json_decref(body);
        if (rc)
                return rc;
        if (ret) {
                *ret = r;
                return 0;
        }
        return say_done(c, &r, done, id);
}

/* `sprout vm OP ID` with no options: vm_post with an empty object as the
 * body when the spec wants one (with_body), else none. */
static int vm_simple(struct cli *c, int argc, char **argv, const char *op, int with_body, int is_long,
                     const char *done)
{
        char *pos[1];
        int rc = want_args(c, argc, argv, NULL, pos, 1);

        if (rc)
                return rc;
        return vm_post(c, pos[0], op, with_body ? json_object() : NULL, is_long, done, NULL);
}

int cmd_vm_suspend(struct cli *c, int argc, char **argv)
{
        return vm_simple(c, argc, argv, "/suspend", 0, 1, "suspended");
}

int cmd_vm_start(struct cli *c, int argc, char **argv)
{
        /* The spec's StartVmRequest is a body whose fields are optional. */
        return vm_simple(c, argc, argv, "/start", 1, 1, "started");
}

int cmd_vm_stop(struct cli *c, int argc, char **argv)
{
        return vm_simple(c, argc, argv, "/stop", 0, 1, "stopped");
}

int cmd_vm_kill(struct cli *c, int argc, char **argv)
{
        return vm_simple(c, argc, argv, "/kill", 0, 0, "killed");
}

int cmd_vm_optimize(struct cli *c, int argc, char **argv)
{
        return vm_simple(c, argc, argv, "/optimize", 0, 1, "optimized");
}

/*
 * vm await: POST /v1/vms/ID/await until the VM has stopped. The server
 * gives up after its --max-request-seconds with AWAIT_TIMED_OUT; the CLI
 * then asks again, so it waits as long as the VM runs. Prints the state
 * the VM ended in and its id.
 */
int cmd_vm_await(struct cli *c, int argc, char **argv)
{
        struct client_response r;
        const char *code, *message, *status;
        char *id, *path;
        int rc = want_vm(c, argc, argv, NULL, "/await", &id, &path);

        if (rc)
                return rc;
        for (;;) {
                rc = request_long(c, "POST", path, NULL, &r);
                if (rc < 0 || r.status != 504)
                        break;
                client_error_fields(&r, &code, &message);
                if (!code || strcmp(code, "AWAIT_TIMED_OUT") != 0)
                        break;
                client_response_done(&r);
        }
        free(path);
        rc = answered(c, rc, &r);
        if (rc)
                return rc;
        status = json_string_value(json_object_get(r.json, "exitStatus"));
        if (c->json)
                print_raw(&r);
        else
                printf("%s %s\n", status ? status : "stopped", id);
        client_response_done(&r);
        return finish(c, 0);
}

/* vm fork: POST /v1/vms/ID/fork {count, ports}; prints each new VM's id. */
int cmd_vm_fork(struct cli *c, int argc, char **argv)
{
        const char *count = NULL, *ports = NULL;
        const struct opt opts[] = {{"--count", NULL, &count, NULL}, {"--port", NULL, &ports, NULL}, {0}};
        struct client_response r;
        json_t *body, *list = NULL, *f;
        char *pos[1], b[64];
        size_t i;
        int rc = want_args(c, argc, argv, opts, pos, 1);

        if (rc)
                return rc;
        if (check_count(c, "--count", count, 1))
                return EXIT_USAGE;
        if (ports && !(list = ports_json(ports))) {
                fprintf(stderr, "sprout: %s: --port wants EXT:TARGET[,EXT:TARGET] or none\n", c->what);
                return EXIT_USAGE;
        }
        body = json_object();
        if (!body || (count && json_object_set_new(body, "count", json_integer(parse_count(count))) < 0) ||
            (list && json_object_set_new(body, "ports", list) < 0)) {
                json_decref(body);
                return fail(c, "out of memory");
        }
        rc = vm_post(c, pos[0], "/fork", body, 1, NULL, &r);
        if (rc)
                return rc;
        if (c->json) {
                print_raw(&r);
        } else if (!json_is_array(json_object_get(r.json, "forks"))) {
                rc = fail(c, "unexpected response: %.200s", r.body);
        } else {
                json_array_foreach(json_object_get(r.json, "forks"), i, f)
                    printf("%s\n", cell(json_object_get(f, "id"), b, sizeof(b)));
        }
        client_response_done(&r);
        return finish(c, rc);
}

/* vm snapshot: POST /v1/vms/ID/snapshot {name}; prints the snapshot's id. */
int cmd_vm_snapshot(struct cli *c, int argc, char **argv)
{
        const char *name = NULL;
        const struct opt opts[] = {{"--name", NULL, &name, NULL}, {0}};
        struct client_response r;
        json_t *body;
        const char *sid;
        char *pos[1];
        int rc = want_args(c, argc, argv, opts, pos, 1);

        if (rc)
                return rc;
        body = name ? json_pack("{s:s}", "name", name) : json_object();
        if (!body)
                return fail(c, "out of memory");
        rc = vm_post(c, pos[0], "/snapshot", body, 1, NULL, &r);
        if (rc)
                return rc;
        sid = json_string_value(json_object_get(r.json, "snapshotId"));
        if (c->json)
                print_raw(&r);
        else if (sid)
                printf("%s\n", sid);
        else
                rc = fail(c, "response has no snapshot id: %.200s", r.body);
        client_response_done(&r);
        return finish(c, rc);
}

/*
 * vm resize: POST /v1/vms/ID/resize {rootfsSizeGb, memSizeGb, vcpuCount}.
 * The API sizes memory in whole GB; --memory-mb is taken when it is a
 * multiple of 1024.
 */
int cmd_vm_resize(struct cli *c, int argc, char **argv)
{
        static const char *const fields[] = {"memSizeGb", "memSizeGb", "vcpuCount", "rootfsSizeGb"};
        const char *v[4] = {0};
        const struct opt opts[] = {{"--memory-mb", NULL, &v[0], NULL},
                                   {"--memory-gb", NULL, &v[1], NULL},
                                   {"--vcpus", NULL, &v[2], NULL},
                                   {"--disk-gb", NULL, &v[3], NULL},
                                   {0}};
        json_t *body;
        char *pos[1];
        int rc = want_args(c, argc, argv, opts, pos, 1);

        if (rc)
                return rc;
        if (!v[0] && !v[1] && !v[2] && !v[3]) {
                fprintf(stderr,
                        "sprout: %s: say what to grow: --memory-mb, --memory-gb, --vcpus or --disk-gb\n",
                        c->what);
                return usage_error(c);
        }
        if (v[0] && v[1]) {
                fprintf(stderr, "sprout: %s: --memory-mb and --memory-gb are one setting; give one\n",
                        c->what);
                return EXIT_USAGE;
        }
        body = json_object();
        if (!body)
                return fail(c, "out of memory");
        for (int i = 0; i < 4; i++) {
                long long n = v[i] ? parse_count(v[i]) : 0;

                if (!v[i])
                        continue;
                if (n < 0 || (i == 0 && n % 1024)) {
                        fprintf(stderr, "sprout: %s: %s takes %s\n", c->what, opts[i].name,
                                i == 0 ? "a multiple of 1024 (the API resizes memory in whole GB)"
                                       : "a non-negative number");
                        json_decref(body);
                        return EXIT_USAGE;
                }
                json_object_set_new(body, fields[i], json_integer(i == 0 ? n / 1024 : n));
        }
        return vm_post(c, pos[0], "/resize", body, 0, "resized", NULL);
}

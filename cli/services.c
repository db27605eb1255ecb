/*
 * services: `sprout service ...`, the systemd services the API manages in
 * a VM (/v1/vms/{id}/systemd/...). A service is named by its slug (NAME,
 * or NAME.service). start, stop and restart take several names and answer
 * for each; any that failed makes the command fail.
 */
#include "cli.h"
#include "client.h"
#include "lib/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GET one service's path with suffix; 0 with the answer in *ret, or the
 * exit status. */
static int service_get(struct cli *c, const char *id, const char *name, const char *suffix,
                       struct client_response *ret)
{
        return call_at(c, "GET", vm_item_path(id, "/systemd/services/", name, suffix), NULL, ret);
}

/* service list: the names of the VM's services. */
int cmd_service_list(struct cli *c, int argc, char **argv)
{
        static const struct column cols[] = {{"NAME", "name", 0}, {0}};

        return show_vm_list(c, argc, argv, "/systemd/services", "services", cols);
}

/* service get: every field systemd reports for the service. */
int cmd_service_get(struct cli *c, int argc, char **argv)
{
        struct client_response r;
        char *pos[2];
        int rc = want_args(c, argc, argv, NULL, pos, 2);

        if (!rc)
                rc = service_get(c, pos[0], pos[1], "/status", &r);
        return rc ? rc : show_object(c, &r);
}

/* service status: "NAME: ACTIVE (SUB), LOAD" on one line. */
int cmd_service_status(struct cli *c, int argc, char **argv)
{
        static const char *const f[] = {"name", "activeState", "subState", "loadState"};
        struct client_response r;
        char *pos[2], b[4][64];
        int rc = want_args(c, argc, argv, NULL, pos, 2);

        if (!rc)
                rc = service_get(c, pos[0], pos[1], "/status", &r);
        if (rc)
                return rc;
        if (c->json)
                print_raw(&r);
        else
                printf("%s: %s (%s), %s\n", cell(json_object_get(r.json, f[0]), b[0], 64),
                       cell(json_object_get(r.json, f[1]), b[1], 64),
                       cell(json_object_get(r.json, f[2]), b[2], 64),
                       cell(json_object_get(r.json, f[3]), b[3], 64));
        client_response_done(&r);
        return finish(c, 0);
}

/* service logs: its journal, "TIME MESSAGE" a line, oldest first. */
int cmd_service_logs(struct cli *c, int argc, char **argv)
{
        const char *lines = NULL, *since = NULL;
        const struct opt opts[] = {{"--lines", "-n", &lines, NULL}, {"--since", NULL, &since, NULL}, {0}};
        struct client_response r;
        struct strbuf suffix = {0};
        char *pos[2], b[2][64];
        json_t *l;
        size_t i;
        int rc = want_args(c, argc, argv, opts, pos, 2);

        if (rc)
                return rc;
        if (check_count(c, "--lines", lines, 0))
                return EXIT_USAGE;
        strbuf_printf(&suffix, "/logs");
        if (add_query(&suffix, "lines", lines) < 0 || add_query(&suffix, "since", since) < 0) {
                free(suffix.s);
                return fail(c, "out of memory");
        }
        rc = service_get(c, pos[0], pos[1], suffix.s, &r);
        free(suffix.s);
        if (rc)
                return rc;
        if (c->json)
                print_raw(&r);
        else
                json_array_foreach(json_object_get(r.json, "logs"), i, l)
                    printf("%s %s\n", cell(json_object_get(l, "timestamp"), b[0], 64),
                           cell(json_object_get(l, "message"), b[1], 64));
        client_response_done(&r);
        return finish(c, 0);
}

/* service create: POST a SystemdUnitSpec read from --spec FILE ('-':
 * stdin). The service is created and started; a start that fails makes
 * the command fail with systemd's words. */
int cmd_service_create(struct cli *c, int argc, char **argv)
{
        const char *file = NULL;
        const struct opt opts[] = {{"--spec", NULL, &file, NULL}, {0}};
        struct client_response r;
        char *id, *path;
        json_t *spec = NULL;
        int rc = want_vm(c, argc, argv, opts, "/systemd/services", &id, &path);

        if (rc)
                return rc;
        if (!file) {
                fprintf(stderr, "sprout: %s: --spec FILE.json is required\n", c->what);
                rc = usage_error(c);
        }
        if (!rc)
                rc = load_json_object(c, file, &spec);
        if (!rc)
                rc = call_long(c, "POST", path, spec, &r);
        free(path);
        json_decref(spec);
        if (rc)
                return rc;
        if (c->json)
                print_raw(&r);
        else
                printf("created %s\n", json_string_value(json_object_get(r.json, "serviceName")) ?: "?");
        if (!json_is_true(json_object_get(r.json, "success")))
                rc = fail(c, "%s", json_string_value(json_object_get(r.json, "message")) ?: "failed");
        client_response_done(&r);
        return finish(c, rc);
}

/* service delete: stops, disables and removes the service. */
int cmd_service_delete(struct cli *c, int argc, char **argv)
{
        char *pos[2], *path;
        int rc = want_args(c, argc, argv, NULL, pos, 2);

        if (rc)
                return rc;
        if (!(path = vm_item_path(pos[0], "/systemd/services/", pos[1], "")))
                return fail(c, "out of memory");
        rc = call_and_say(c, "DELETE", path, NULL, "deleted", pos[1]);
        free(path);
        return rc;
}

/* service start|stop|restart ID NAME...: POST /systemd/<op>
 * {services: [{id}]}; "DONE NAME" for each that succeeded, the reason on
 * stderr for each that did not. */
static int batch(struct cli *c, int argc, char **argv, const char *op, const char *done)
{
        struct client_response r;
        char **pos = calloc((size_t)argc + 1, sizeof(*pos)), *path = NULL;
        json_t *list = json_array(), *body = NULL, *res;
        size_t i;
        int npos, rc = 0;

        if (!pos || !list) {
                rc = fail(c, "out of memory");
                goto out;
        }
        npos = parse_args(c, argc, argv, NULL, 0, pos, argc);
        if (npos < 2) {
                rc = npos < 0 ? EXIT_USAGE : usage_error(c);
                goto out;
        }
        for (int k = 1; k < npos; k++)
                json_array_append_new(list, json_pack("{s:s}", "id", pos[k]));
        body = json_pack("{s:O}", "services", list);
        if (!body || json_array_size(list) != (size_t)npos - 1 || !(path = vm_path(pos[0], op))) {
                rc = fail(c, "out of memory");
                goto out;
        }
        rc = call(c, "POST", path, body, &r);
        if (rc)
                goto out;
        if (c->json)
                print_raw(&r);
        json_array_foreach(json_object_get(r.json, "results"), i, res)
        {
                const char *sid = json_string_value(json_object_get(res, "serviceId"));

                if (!json_is_true(json_object_get(res, "success")))
                        rc = fail(c, "%s: %s", sid ? sid : "?",
                                  json_string_value(json_object_get(res, "message")) ?: "failed");
                else if (!c->json)
                        printf("%s %s\n", done, sid ? sid : "?");
        }
        client_response_done(&r);
        rc = finish(c, rc);
out:
        free(pos);
        free(path);
        json_decref(list);
        json_decref(body);
        return rc;
}

int cmd_service_start(struct cli *c, int argc, char **argv)
{
        return batch(c, argc, argv, "/systemd/start", "started");
}

int cmd_service_stop(struct cli *c, int argc, char **argv)
{
        return batch(c, argc, argv, "/systemd/stop", "stopped");
}

int cmd_service_restart(struct cli *c, int argc, char **argv)
{
        return batch(c, argc, argv, "/systemd/restart", "restarted");
}

/*
 * builds: `sprout snapshot create --spec FILE`, `sprout build list|get|phases`
 * and `sprout vm build`.
 * A snapshot is asked for in the background form (the server answers 202
 * with the build's id at once); the CLI then prints each phase of the build
 * as it is recorded, with the time since the start, until the build ends.
 */
#include "cli.h"
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Prints the phases after the first *shown ones; -1 when they cannot be read. */
static int show_phases(struct cli *c, const char *build, size_t *shown, const struct timespec *t0)
{
        struct client_response r;
        char *path = segment_path("/v1/vms/builds/", build, "/phases");
        json_t *phases, *p;
        size_t i;
        int k;

        if (!path)
                return -1;
        k = client_request(&c->api, "GET", path, NULL, &r);
        free(path);
        if (k < 0 || r.status != 200) {
                client_response_done(&r);
                return -1;
        }
        phases = json_object_get(r.json, "phases");
        json_array_foreach(phases, i, p)
        {
                const char *sid = json_string_value(json_object_get(p, "snapshotId"));

                if (i < *shown)
                        continue;
                fprintf(stderr, "[%6.1fs] %s%s%s\n", since(t0), json_string_value(json_object_get(p, "name")),
                        sid ? " " : "", sid ? sid : "");
                *shown = i + 1;
        }
        client_response_done(&r);
        return 0;
}

int cmd_snapshot_create(struct cli *c, int argc, char **argv)
{
        const char *file = NULL, *name = NULL;
        const struct opt opts[] = {{"--spec", NULL, &file, NULL}, {"--name", NULL, &name, NULL}, {NULL}};
        struct client_response r = {0};
        struct timespec t0;
        json_t *spec, *body;
        char *pos[1], *poll_path = NULL, *build = NULL;
        size_t shown = 0;
        int rc;

        if (parse_args(c, argc, argv, opts, 0, pos, 0) < 0)
                return EXIT_USAGE;
        if (!file) {
                fprintf(stderr, "sprout: %s: --spec FILE.json is required\n", c->what);
                return EXIT_USAGE;
        }
        rc = load_json_object(c, file, &spec);
        if (rc)
                return rc;
        body = json_pack("{s:o}", "spec", spec);
        if (body && name)
                json_object_set_new(body, "name", json_string(name));
        if (!body)
                return fail(c, "out of memory");
        clock_gettime(CLOCK_MONOTONIC, &t0);
        c->api.extra_header = "x-freestyle-background-after-secs: 0";
        rc = call(c, "POST", "/v1/vms/snapshots", body, &r);
        c->api.extra_header = NULL;
        json_decref(body);
        if (rc)
                return rc;
        if (json_is_string(json_object_get(r.json, "buildId")))
                build = strdup(json_string_value(json_object_get(r.json, "buildId")));
        if (r.status == 202 && build) {
                fprintf(stderr, "build %s\n", build);
                poll_path = segment_path("/auth/v1/background-requests/", build, "");
                for (;;) {
                        show_phases(c, build, &shown, &t0);
                        client_response_done(&r);
                        rc = poll_path ? client_request(&c->api, "GET", poll_path, NULL, &r) : -ENOMEM;
                        if (rc < 0) {
                                free(poll_path);
                                free(build);
                                return fail_transport(c, rc);
                        }
                        if (r.status != 202)
                                break;
                        sleep(1);
                }
                show_phases(c, build, &shown, &t0);
                free(poll_path);
        } else if (build) {
                show_phases(c, build, &shown, &t0);
        }
        free(build);
        if (r.status < 200 || r.status > 299) {
                /* The failure: the failing step and the tail of its output. */
                rc = fail_response(c, &r);
                client_response_done(&r);
                return rc;
        }
        if (c->json)
                print_raw(&r);
        else
                printf("%s\n", json_string_value(json_object_get(r.json, "snapshotId")));
        fprintf(stderr, "done in %.1fs\n", since(&t0));
        client_response_done(&r);
        return finish(c, 0);
}

/* GET a build (suffix "") or its phases ("/phases"); NULL path on a usage error. */
static int get_build(struct cli *c, int argc, char **argv, const char *suffix, struct client_response *r)
{
        char *pos[1], *path;
        int rc;

        if (parse_args(c, argc, argv, NULL, 0, pos, 1) != 1) {
                fprintf(stderr, "sprout: %s: a build id is required\n", c->what);
                return EXIT_USAGE;
        }
        path = segment_path("/v1/vms/builds/", pos[0], suffix);
        if (!path)
                return fail(c, "out of memory");
        rc = call(c, "GET", path, NULL, r);
        free(path);
        return rc;
}

/* Prints a build record: its fields, then its planned phases. */
static int show_build(struct cli *c, struct client_response *r)
{
        static const char *const fields[] = {"buildId",   "state",      "snapshotId",   "templateHash",
                                             "startedAt", "finishedAt", "failureReason"};
        char buf[64];
        json_t *v;
        size_t i;

        if (c->json) {
                print_raw(r);
        } else {
                for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
                        printf("%-14s %s\n", fields[i],
                               cell(json_object_get(r->json, fields[i]), buf, sizeof(buf)));
                printf("plannedPhases\n");
                json_array_foreach(json_object_get(r->json, "plannedPhases"), i, v)
                    printf("  %s\n", json_string_value(v));
        }
        client_response_done(r);
        return finish(c, 0);
}

int cmd_build_list(struct cli *c, int argc, char **argv)
{
        static const struct column cols[] = {{"BUILD", "buildId", 24},      {"STATE", "state", 10},
                                             {"STARTED", "startedAt", 25},  {"FINISHED", "finishedAt", 25},
                                             {"SNAPSHOT", "snapshotId", 0}, {NULL}};

        if (parse_args(c, argc, argv, NULL, 0, NULL, 0) < 0)
                return EXIT_USAGE;
        return show_list(c, "/v1/vms/builds", "builds", cols, NULL);
}

int cmd_build_get(struct cli *c, int argc, char **argv)
{
        struct client_response r;
        int rc = get_build(c, argc, argv, "", &r);

        return rc ? rc : show_build(c, &r);
}

/* vm build: GET /v1/vms/ID/build, the build that made the VM. */
int cmd_vm_build(struct cli *c, int argc, char **argv)
{
        struct client_response r;
        char *id, *path;
        int rc = want_vm(c, argc, argv, NULL, "/build", &id, &path);

        if (rc)
                return rc;
        rc = call(c, "GET", path, NULL, &r);
        free(path);
        return rc ? rc : show_build(c, &r);
}

int cmd_build_phases(struct cli *c, int argc, char **argv)
{
        struct client_response r;
        char b1[64], b2[64], b3[64];
        json_t *p;
        size_t i;
        int rc = get_build(c, argc, argv, "/phases", &r);

        if (rc)
                return rc;
        if (c->json) {
                print_raw(&r);
        } else {
                printf("%-24s  %-40s  %s\n", "STARTED", "PHASE", "SNAPSHOT");
                json_array_foreach(json_object_get(r.json, "phases"), i, p)
                    printf("%-24s  %-40s  %s\n", cell(json_object_get(p, "startedAt"), b1, sizeof(b1)),
                           cell(json_object_get(p, "name"), b2, sizeof(b2)),
                           cell(json_object_get(p, "snapshotId"), b3, sizeof(b3)));
        }
        client_response_done(&r);
        return finish(c, 0);
}

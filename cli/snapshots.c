/*
 * snapshots: `sprout snapshot list|get|update|delete` on
 * /v1/vms/snapshots[/{snapshot_id}]. Taking one is `vm snapshot`
 * (vm_life.c); building one from a spec is `snapshot create` (builds.c).
 */
#include "cli.h"
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* snapshot list: a table of the account's snapshots, then the counts. */
int cmd_snapshot_list(struct cli *c, int argc, char **argv)
{
        static const struct column cols[] = {{"ID", "snapshotId", 24},
                                             {"NAME", "name", 20},
                                             {"STATE", "state", 9},
                                             {"SOURCE VM", "sourceVmId", 22},
                                             {"CREATED", "createdAt", 0},
                                             {"(deleted)", "deleted", -1},
                                             {0}};
        static const char *const counts[] = {"ready", "building", "failed", "deleted", NULL};
        int inc[3] = {0};
        const struct opt opts[] = {{"--include-deleted", NULL, NULL, &inc[0]},
                                   {"--include-failed", NULL, NULL, &inc[1]},
                                   {"--include-building", NULL, NULL, &inc[2]},
                                   {0}};
        struct strbuf path = {0};
        int rc = want_args(c, argc, argv, opts, NULL, 0);

        if (rc)
                return rc;
        strbuf_printf(&path, "/v1/vms/snapshots");
        if (add_query(&path, "includeDeleted", inc[0] ? "true" : NULL) < 0 ||
            add_query(&path, "includeFailed", inc[1] ? "true" : NULL) < 0 ||
            add_query(&path, "includeBuilding", inc[2] ? "true" : NULL) < 0) {
                free(path.s);
                return fail(c, "out of memory");
        }
        rc = show_list(c, path.s, "snapshots", cols, counts);
        free(path.s);
        return rc;
}

/*
 * The three calls on one snapshot: METHOD /v1/vms/snapshots/ID with body
 * (NULL: none). A GET's answer is shown field by field; otherwise
 * "DONE ID" is said. Returns the exit status.
 */
static int on_snapshot(struct cli *c, const char *method, const char *id, json_t *body, const char *done)
{
        struct client_response r;
        char *path = segment_path("/v1/vms/snapshots/", id, "");
        int rc;

        if (!path)
                return fail(c, "out of memory");
        if (done) {
                rc = call_and_say(c, method, path, body, done, id);
        } else {
                rc = call(c, method, path, body, &r);
                if (!rc)
                        rc = show_object(c, &r);
        }
        free(path);
        return rc;
}

/* snapshot get: one snapshot's fields (deleted and failed ones too). */
int cmd_snapshot_get(struct cli *c, int argc, char **argv)
{
        char *pos[1];
        int rc = want_args(c, argc, argv, NULL, pos, 1);

        return rc ? rc : on_snapshot(c, "GET", pos[0], NULL, NULL);
}

/* snapshot update: PATCH its metadata (the name; "" clears it). */
int cmd_snapshot_update(struct cli *c, int argc, char **argv)
{
        const char *name = NULL;
        const struct opt opts[] = {{"--name", NULL, &name, NULL}, {0}};
        json_t *body;
        char *pos[1];
        int rc = want_args(c, argc, argv, opts, pos, 1);

        if (rc)
                return rc;
        if (!name) {
                fprintf(stderr, "sprout: %s: --name NAME is required\n", c->what);
                return usage_error(c);
        }
        body = json_pack("{s:o}", "name", *name ? json_string(name) : json_null());
        if (!body)
                return fail(c, "out of memory");
        rc = on_snapshot(c, "PATCH", pos[0], body, "updated");
        json_decref(body);
        return rc;
}

/* snapshot delete: DELETE /v1/vms/snapshots/ID. */
int cmd_snapshot_delete(struct cli *c, int argc, char **argv)
{
        char *pos[1];
        int rc = want_args(c, argc, argv, NULL, pos, 1);

        return rc ? rc : on_snapshot(c, "DELETE", pos[0], NULL, "deleted");
}

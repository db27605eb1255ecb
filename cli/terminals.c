/*
 * terminals: `sprout terminal list|logs`, the persistent shells a VM keeps
 * for `exec` calls that name a terminal (/v1/vms/{id}/terminals...).
 * logs prints the scrollback as plain lines; --xterm prints it as the
 * terminal wrote it, escape sequences and all.
 */
#include "cli.h"
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* terminal list: NAME STATUS CREATED, a terminal a line. */
int cmd_terminal_list(struct cli *c, int argc, char **argv)
{
        static const struct column cols[] = {
            {"NAME", "name", 20}, {"STATUS", "status", 10}, {"CREATED", "created", 0}, {0}};

        return show_vm_list(c, argc, argv, "/terminals", "terminals", cols);
}

/* terminal logs: GET .../logs (a line each) or, with --xterm,
 * .../xterm-256color (the raw output). */
int cmd_terminal_logs(struct cli *c, int argc, char **argv)
{
        int xterm = 0;
        const struct opt opts[] = {{"--xterm", NULL, NULL, &xterm}, {0}};
        struct client_response r;
        char *pos[2], *path;
        json_t *out, *l;
        size_t i;
        int rc = want_args(c, argc, argv, opts, pos, 2);

        if (rc)
                return rc;
        path = vm_item_path(pos[0], "/terminals/", pos[1], xterm ? "/xterm-256color" : "/logs");
        rc = call_at(c, "GET", path, NULL, &r);
        if (rc)
                return rc;
        out = json_object_get(r.json, "output");
        if (c->json) {
                print_raw(&r);
        } else if (xterm && json_is_string(out)) {
                fwrite(json_string_value(out), 1, json_string_length(out), stdout);
        } else if (!xterm && json_is_array(json_object_get(r.json, "logs"))) {
                json_array_foreach(json_object_get(r.json, "logs"), i, l)
                    printf("%s\n", json_string_value(json_object_get(l, "line")) ?: "");
        } else {
                rc = fail(c, "unexpected response: %.200s", r.body);
        }
        client_response_done(&r);
        return finish(c, rc);
}

/*
 * ingress: what the CLI says of the ingress proxy: `vm create --port`'s
 * list and `sprout vm url`.
 */
#include "cli.h"
#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *ports_json(const char *spec)
{
        json_t *list = json_array();
        const char *p = spec;

        while (list && strcmp(spec, "none") && *p) {
                char *end;
                long ext = strtol(p, &end, 10), target;

                if (end == p || *end != ':')
                        break;
                p = end + 1;
                target = strtol(p, &end, 10);
                if (end == p || (*end && *end != ','))
                        break;
                json_array_append_new(
                    list, json_pack("{s:I,s:I}", "port", (json_int_t)ext, "targetPort", (json_int_t)target));
                p = *end ? end + 1 : end;
        }
        if (list && *p && strcmp(spec, "none")) {
                json_decref(list);
                return NULL;
        }
        return list;
}

/* vm url: the VM's host names as URLs on the ingress proxy (--proxy, else
 * $SPROUT_PROXY_URL, else http://127.0.0.1:8081, whose scheme and port
 * they take). */
int cmd_vm_url(struct cli *c, int argc, char **argv)
{
        const char *proxy = getenv("SPROUT_PROXY_URL");
        const struct opt opts[] = {{"--proxy", NULL, &proxy, NULL}, {0}};
        struct client_response r;
        char *pos[1], scheme[16] = "http", port[16] = "8081";
        json_t *v;
        size_t i;
        int rc;

        if (parse_args(c, argc, argv, opts, 0, pos, 1) != 1) {
                fprintf(stderr, "usage: sprout vm url ID [--proxy URL] [--json]\n");
                return EXIT_USAGE;
        }
        if (proxy && *proxy) {
                const char *hp = strstr(proxy, "://"), *colon;

                if (hp)
                        snprintf(scheme, sizeof(scheme), "%.*s", (int)(hp - proxy), proxy);
                hp = hp ? hp + 3 : proxy;
                colon = strrchr(hp, ':');
                snprintf(port, sizeof(port), "%.*s", colon ? (int)strcspn(colon + 1, "/") : 0,
                         colon ? colon + 1 : "");
        }
        rc = get_vm(c, pos[0], &r);
        if (rc)
                return rc;
        if (c->json) {
                print_raw(&r);
        } else {
                json_array_foreach(json_object_get(r.json, "domains"), i, v)
                {
                        int dflt = (!strcmp(scheme, "http") && (!*port || !strcmp(port, "80"))) ||
                                   (!strcmp(scheme, "https") && (!*port || !strcmp(port, "443")));

                        printf("%s://%s%s%s/\n", scheme, json_string_value(v), dflt ? "" : ":",
                               dflt ? "" : port);
                }
                if (json_array_size(json_object_get(r.json, "domains")) == 0)
                        fprintf(stderr, "sprout: the VM has no ports or domains\n");
        }
        client_response_done(&r);
        return finish(c, 0);
}

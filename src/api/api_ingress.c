/*
 * api_ingress: what a create or fork says of the ingress proxy: "ports"
 * (external port 443 or 8081 to any VM port; omitted: 443 to 3000; []:
 * none) and "domains" (custom host names to a VM port), checked and then
 * recorded for the VM; and the VM's host names for its answers. Depends on
 * the store and the proxy's naming.
 */
#include "api/api_int.h"
#include "ingress/proxy.h"
#include "lib/json.h"
#include "lib/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int api_routes_parse(struct api_call *c, json_t *body, const char *code, struct api_routes *r)
{
        json_t *ports = json_object_get(body, "ports"), *doms = json_object_get(body, "domains"), *v;
        size_t i, dl = strlen(c->a->domain);

        memset(r, 0, sizeof(*r));
        if (!ports || json_is_null(ports)) {
                r->ports[0] = (struct store_port){443, 3000};
                r->nports = 1;
        } else if (!json_is_array(ports)) {
                return api_error(c, 400, code, "'ports' must be an array"), -EINVAL;
        } else {
                json_array_foreach(ports, i, v)
                {
                        json_t *p = json_object_get(v, "port"), *t = json_object_get(v, "targetPort");
                        int64_t ext = json_integer_value(p), target = json_integer_value(t);

                        if (!json_is_integer(p) || !json_is_integer(t) || target < 1 || target > 65535)
                                return api_error(
                                           c, 400, code,
                                           "each of 'ports' wants an integer port and a targetPort from 1 "
                                           "to 65535"),
                                       -EINVAL;
                        if (ext != 443 && ext != 8081)
                                return api_error(c, 400, code,
                                                 "port %lld cannot be exposed: only ports 443 and 8081 can",
                                                 (long long)ext),
                                       -EINVAL;
                        for (size_t k = 0; k < r->nports; k++)
                                if (r->ports[k].port == ext)
                                        return api_error(c, 400, code, "port %lld is in 'ports' twice",
                                                         (long long)ext),
                                               -EINVAL;
                        r->ports[r->nports++] = (struct store_port){(int)ext, (int)target};
                }
        }
        if (!doms || json_is_null(doms))
                return 0;
        if (!json_is_array(doms) || json_array_size(doms) > API_MAX_DOMAINS)
                return api_error(c, 400, code, "'domains' must be an array of at most %d", API_MAX_DOMAINS),
                       -EINVAL;
        json_array_foreach(doms, i, v)
        {
                json_t *d = json_object_get(v, "domain"), *p = json_object_get(v, "vmPort");
                const char *s = json_string_value(d);
                size_t n = s ? strlen(s) : 0;

                if (!s || n == 0 || n > 253 ||
                    strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != n ||
                    !strchr(s, '.') || s[0] == '.' || s[0] == '-' || s[n - 1] == '.')
                        return api_error(c, 400, code, "'%.100s' is not a domain name",
                                         s ? s : "(not a string)"),
                               -EINVAL;
                if (p && !json_is_null(p) &&
                    (!json_is_integer(p) || json_integer_value(p) < 1 || json_integer_value(p) > 65535))
                        return api_error(c, 400, code, "vmPort must be from 1 to 65535"), -EINVAL;
                for (size_t k = 0; k < n; k++)
                        r->domains[r->ndomains].name[k] = (char)tolower((unsigned char)s[k]);
                r->domains[r->ndomains].name[n] = 0;
                /* The proxy's own names are the VMs' ports, not anyone's to take. */
                if (n >= dl && !strcmp(r->domains[r->ndomains].name + n - dl, c->a->domain) &&
                    (n == dl || r->domains[r->ndomains].name[n - dl - 1] == '.'))
                        return api_error(c, 400, code, "%s is one of this server's own host names", s),
                               -EINVAL;
                r->domains[r->ndomains].port = p && json_is_integer(p) ? (int)json_integer_value(p) : 443;
                r->ndomains++;
        }
        return 0;
}

int api_routes_save(struct api_call *c, const char *id, const struct api_routes *r)
{
        int k = store_ports_set(c->a->store, id, r->ports, r->nports);

        for (size_t i = 0; k == 0 && i < r->ndomains; i++) {
                k = store_domain_add(c->a->store, r->domains[i].name, c->account, id, r->domains[i].port);
                if (k == -EEXIST)
                        return api_error(c, 409, "DOMAIN_ALREADY_MAPPED", "%s is mapped by another account",
                                         r->domains[i].name),
                               k;
        }
        if (k < 0)
                api_error(c, 500, "INTERNAL_ERROR", "could not record the VM's ports: %s", strerror(-k));
        return k;
}

json_t *api_domains_json(struct api *a, const char *id)
{
        struct store_port ports[4];
        size_t n = 0;
        char **custom = NULL, host[256];
        json_t *j = json_array();

        if (!j)
                return NULL;
        if (store_ports_get(a->store, id, ports, 4, &n) == 0)
                for (size_t i = 0; i < n; i++)
                        if (proxy_host_name(host, sizeof(host), id, ports[i].port, a->domain) == 0)
                                json_array_append_new(j, json_string(host));
        if (store_domains_of(a->store, id, &custom) == 0) {
                for (size_t i = 0; custom[i]; i++) {
                        json_array_append_new(j, json_string(custom[i]));
                        free(custom[i]);
                }
                free(custom);
        }
        return j;
}

/*
 * api_keys: the server's own endpoints: /healthz (no key needed) and API
 * keys (/admin/v1/keys). An admin key creates keys (with their account's
 * limits) and lists and revokes any; another key lists and revokes only
 * its own account's, and another account's key is not found. Depends on
 * the store and the VM manager's readiness.
 */
#include "api/api_int.h"
#include "lib/json.h"
#include "lib/util.h"
#include "store/store.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

void api_healthz(struct api_call *c)
{
        char status[256];

        if (vmm_ready(c->a->vmm, status, sizeof(status))) {
                c->resp->status = 200;
                c->resp->body = json_pack("{s:s,s:o}", "status", "ok", "warmPool", api_pool_json(c->a));
                /* Where VMs' domains answer, for links to them. */
                if (c->resp->body && c->a->proxy_port)
                        json_object_set_new(c->resp->body, "ingress",
                                            json_pack("{s:i,s:b}", "port", c->a->proxy_port, "tls", c->a->proxy_tls));
        } else {
                api_error(c, 503, "NOT_READY", "%s", status);
        }
}

static int account_name_valid(const char *s)
{
        size_t n = strlen(s);

        for (size_t i = 0; i < n; i++)
                if (!(isalnum((unsigned char)s[i]) || strchr("._-@", s[i])))
                        return 0;
        return n > 0 && n <= 64;
}

/* The "limits" object of a key request into l (fields left -1 when
 * absent); -EINVAL with a 400 answer when malformed. */
static int parse_limits(struct api_call *c, json_t *body, struct store_limits *l, int *ret_given)
{
        json_t *v = json_object_get(body, "limits");
        static const char *const keys[] = {"maxVms", "maxRunningVms", "maxSnapshots", "maxMemoryMb",
                                           "maxStorageBytes"};
        int64_t *fields[] = {&l->vms, &l->running, &l->snapshots, &l->mem_mb, &l->storage};
        const char *k;
        json_t *x;

        *l = STORE_LIMITS_DEFAULT;
        *ret_given = v && !json_is_null(v);
        if (!*ret_given)
                return 0;
        if (!json_is_object(v))
                return api_error(c, 400, "INVALID_PARAMETERS", "'limits' must be an object"), -EINVAL;
        json_object_foreach(v, k, x) {
                size_t i = 0;

                while (i < 5 && strcmp(k, keys[i]))
                        i++;
                if (i == 5)
                        return api_error(c, 400, "INVALID_PARAMETERS",
                                         "limits.%s is not a limit (maxVms, maxRunningVms, maxSnapshots,"
                                         " maxMemoryMb, maxStorageBytes)",
                                         k),
                               -EINVAL;
                if (api_opt_int(c, v, k, 0, 1LL << 50, fields[i], "INVALID_PARAMETERS") < 0)
                        return -EINVAL;
        }
        return 0;
}

static json_t *limits_json(const struct store_limits *l)
{
        const int64_t v[] = {l->vms, l->running, l->snapshots, l->mem_mb, l->storage};
        const char *const keys[] = {"maxVms", "maxRunningVms", "maxSnapshots", "maxMemoryMb", "maxStorageBytes"};
        json_t *j = json_object();

        for (size_t i = 0; j && i < 5; i++)
                json_object_set_new(j, keys[i], v[i] >= 0 ? json_integer(v[i]) : json_null());
        return j;
}

void api_create_key(struct api_call *c)
{
        struct store_limits limits;
        const char *account = NULL;
        char *key = NULL, *account_id = NULL, *account_name = NULL, *id = NULL;
        json_t *body;
        int given = 0, r;

        if (!c->admin) {
                api_error(c, 403, "FORBIDDEN", "creating API keys needs an admin key");
                return;
        }
        body = api_body(c, "INVALID_PARAMETERS");
        if (!body || api_opt_string(c, body, "account", &account, "INVALID_PARAMETERS") < 0 ||
            parse_limits(c, body, &limits, &given) < 0)
                goto out;
        if (account && !account_name_valid(account)) {
                api_error(c, 400, "INVALID_PARAMETERS", "account names are 1 to 64 letters, digits, '.', '_', '-' or '@'");
                goto out;
        }
        r = store_create_key(c->a->store, account, 0, &key, &account_id, &account_name, &id);
        if (r == 0 && given)
                r = store_account_set_limits(c->a->store, account_name, &limits);
        if (r == 0)
                r = store_account_limits(c->a->store, account_id, &limits);
        if (r < 0) {
                api_error(c, 500, "INTERNAL_ERROR", "could not create a key: %s", strerror(-r));
                goto out;
        }
        log_info("api key %s created for account %s (%s)", id, account_name, account_id);
        c->resp->status = 200;
        c->resp->body = json_pack("{s:s,s:s,s:s,s:s,s:o}", "key", key, "id", id, "accountId", account_id, "account",
                                  account_name, "limits", limits_json(&limits));
out:
        free(key);
        free(id);
        free(account_id);
        free(account_name);
        json_decref(body);
}

static int key_one(const struct store_key *k, void *ud)
{
        char created[32];

        format_time(k->created_at, created);
        return json_array_append_new(ud, json_pack("{s:s,s:s,s:s,s:o,s:b,s:b,s:s}", "id", k->id, "accountId",
                                                   k->account_id, "account", k->account_name, "prefix",
                                                   json_str_or_null(k->prefix), "admin", k->admin, "bootstrap",
                                                   k->bootstrap, "createdAt", created)) < 0
                       ? -ENOMEM
                       : 0;
}

void api_list_keys(struct api_call *c)
{
        json_t *keys = json_array();
        int r = keys ? store_key_foreach(c->a->store, c->admin ? NULL : c->account, key_one, keys) : -ENOMEM;

        if (r < 0) {
                json_decref(keys);
                api_error(c, 500, "INTERNAL_ERROR", "could not list keys: %s", strerror(-r));
                return;
        }
        c->resp->status = 200;
        c->resp->body = json_pack("{s:o}", "keys", keys);
}

void api_revoke_key(struct api_call *c)
{
        char *id = api_param(c);
        int r = id ? store_key_delete(c->a->store, c->admin ? NULL : c->account, id) : -ENOENT;

        if (r < 0) {
                api_fail(c, r, API_KEY, id ? id : "", NULL);
        } else {
                log_info("api key %s revoked", id);
                c->resp->status = 200;
                c->resp->body = json_pack("{s:s}", "id", id);
        }
        free(id);
}

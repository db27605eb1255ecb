/*
 * api_keys: the server's own endpoints: /healthz (no key needed) and API
 * keys (/admin/v1/keys, admin keys only). Depends on the store and the
 * VM manager's readiness.
 */
#include "api/api_int.h"
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
                c->resp->body = json_pack("{s:s}", "status", "ok");
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

void api_create_key(struct api_call *c)
{
        const char *account = NULL;
        char *key = NULL, *account_id = NULL, *account_name = NULL;
        json_t *body;
        int r;

        if (!c->admin) {
                api_error(c, 403, "FORBIDDEN", "creating API keys needs an admin key");
                return;
        }
        body = api_body(c, "INVALID_PARAMETERS");
        if (!body || api_opt_string(c, body, "account", &account, "INVALID_PARAMETERS") < 0)
                goto out;
        if (account && !account_name_valid(account)) {
                api_error(c, 400, "INVALID_PARAMETERS", "account names are 1 to 64 letters, digits, '.', '_', '-' or '@'");
                goto out;
        }
        r = store_create_key(c->a->store, account, 0, &key, &account_id, &account_name);
        if (r < 0) {
                api_error(c, 500, "INTERNAL_ERROR", "could not create a key: %s", strerror(-r));
                goto out;
        }
        log_info("api key created for account %s (%s)", account_name, account_id);
        c->resp->status = 200;
        c->resp->body = json_pack("{s:s,s:s,s:s}", "key", key, "accountId", account_id, "account", account_name);
out:
        free(key);
        free(account_id);
        free(account_name);
        json_decref(body);
}

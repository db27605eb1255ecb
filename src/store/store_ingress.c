/*
 * store_ingress: the routes of the ingress proxy (see store.h): vm_ports
 * and domains, which a trigger removes with their VM.
 */
#include "store/store.h"
#include "store/store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ports {
        const char *vm_id;
        const struct store_port *p;
        size_t n;
};

static int ports_set(struct store *t, void *ud)
{
        struct ports *x = ud;
        sqlite3_stmt *st;
        int r = sq_prepare(t, &st, "DELETE FROM vm_ports WHERE vm_id = ?", "s", x->vm_id);

        if (r == 0)
                r = sq_finish(t, st, 0);
        for (size_t i = 0; r == 0 && i < x->n; i++) {
                r = sq_prepare(t, &st, "INSERT INTO vm_ports (vm_id, port, target) VALUES (?, ?, ?)", "sii",
                               x->vm_id, x->p[i].port, x->p[i].target);
                if (r == 0)
                        r = sq_finish(t, st, 0);
        }
        return r;
}

int store_ports_set(struct store *s, const char *vm_id, const struct store_port *p, size_t n)
{
        struct ports x = {vm_id, p, n};

        return store_txn(s, ports_set, &x);
}

int store_ports_get(struct store *s, const char *vm_id, struct store_port *ret, size_t max, size_t *ret_n)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st, "SELECT port, target FROM vm_ports WHERE vm_id = ? ORDER BY port", "s",
                           vm_id),
            rc;
        size_t n = 0;

        if (r < 0)
                return r;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if (n < max)
                        ret[n++] = (struct store_port){sqlite3_column_int(st, 0), sqlite3_column_int(st, 1)};
        sqlite3_finalize(st);
        *ret_n = n;
        return sq_err(rc);
}

int store_port_target(struct store *s, const char *vm_id, int port, int *ret_target)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st, "SELECT target FROM vm_ports WHERE vm_id = ? AND port = ?", "si", vm_id,
                           port),
            rc;

        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret_target = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : sq_err(rc);
}

int store_domain_add(struct store *s, const char *domain, const char *account, const char *vm_id, int vm_port)
{
        sqlite3_stmt *st;
        int r =
            sq_prepare(s, &st,
                       "INSERT INTO domains (domain, account_id, vm_id, vm_port) VALUES (?1, ?2, ?3, ?4)"
                       " ON CONFLICT (domain) DO UPDATE SET vm_id = ?3, vm_port = ?4 WHERE account_id = ?2",
                       "sssi", domain, account, vm_id, vm_port);

        if (r == 0)
                r = sq_finish(s, st, 1);
        return r == -ENOENT ? -EEXIST : r;
}

int store_domain_route(struct store *s, const char *domain, char vm_id[32], int *ret_port)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st, "SELECT vm_id, vm_port FROM domains WHERE domain = ?", "s", domain), rc;

        if (r < 0)
                return r;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                const unsigned char *v = sqlite3_column_text(st, 0);

                snprintf(vm_id, 32, "%s", v ? (const char *)v : "");
                *ret_port = sqlite3_column_int(st, 1);
                r = 0;
        } else {
                r = rc == SQLITE_DONE ? -ENOENT : sq_err(rc);
        }
        sqlite3_finalize(st);
        return r;
}

int store_domains_of(struct store *s, const char *vm_id, char ***ret)
{
        sqlite3_stmt *st;
        int r = sq_prepare(s, &st, "SELECT domain FROM domains WHERE vm_id = ? ORDER BY domain", "s", vm_id),
            rc;
        char **v = calloc(1, sizeof(*v));
        size_t n = 0;

        if (r < 0 || !v) {
                if (r == 0)
                        sqlite3_finalize(st);
                free(v);
                return r < 0 ? r : -ENOMEM;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                char **nv = realloc(v, (n + 2) * sizeof(*v));

                if (!nv)
                        break;
                v = nv;
                v[n] = sq_col_dup(st, 0);
                v[n + 1] = NULL;
                n += v[n] != NULL;
        }
        sqlite3_finalize(st);
        *ret = v;
        return rc == SQLITE_DONE ? 0 : rc == SQLITE_ROW ? -ENOMEM : sq_err(rc);
}

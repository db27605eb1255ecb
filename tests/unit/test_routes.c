/*
 * The route table against the API contract: every operation of the
 * OpenAPI spec has a route with the same method, path and operationId,
 * and every /v1 route is an operation of the spec. The spec is read from
 * $SPROUT_SPEC, else the steering repository's ../shared/spec copy (the
 * live contract), else the repository's own spec/ copy; when both copies
 * exist they must be the same file.
 */
#include "api/api.h"
#include "lib/util.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHARED_SPEC "../shared/spec/freestyle-vm-api-openapi.yml"
#define OWN_SPEC "spec/freestyle-vm-api-openapi.yml"

/* Operations the spec has and this server does not serve yet (issue 11:
 * templates and builds). The test fails when one of them gains a route,
 * so that this list only shrinks. */

struct op {
        char method[8];
        char path[128];
        char id[64];
};

/* "/v1/vms/{vm_id}/files/{filepath*}" -> "/v1/vms/{}/files/{}". */
static void normalise(const char *in, char *out, size_t size)
{
        size_t o = 0;

        for (const char *p = in; *p && o + 3 < size; p++) {
                if (*p == '{') {
                        out[o++] = '{';
                        out[o++] = '}';
                        while (*p && *p != '}')
                                p++;
                        if (!*p)
                                break;
                } else {
                        out[o++] = *p;
                }
        }
        out[o] = 0;
}

/* The spec's operations: paths at two spaces, methods at four,
 * operationId at six. Returns the count, -1 when unreadable. */
static int read_spec(const char *path, struct op *ops, int max)
{
        char *text = NULL, *line, *save = NULL, cur_path[128] = "", cur_method[8] = "";
        int n = 0;

        if (read_file(path, 4 << 20, &text, NULL) < 0)
                return -1;
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                size_t len = strlen(line);

                if (!strncmp(line, "  /", 3) && line[len - 1] == ':') {
                        snprintf(cur_path, sizeof(cur_path), "%.*s", (int)(len - 3), line + 2);
                } else if (!strncmp(line, "    ", 4) && line[4] != ' ' && line[len - 1] == ':' && len - 5 < 8) {
                        snprintf(cur_method, sizeof(cur_method), "%.*s", (int)(len - 5), line + 4);
                        for (char *p = cur_method; *p; p++)
                                *p = (char)(*p - 'a' + 'A');
                } else if (!strncmp(line, "      operationId: ", 19) && n < max && cur_path[0] == '/') {
                        snprintf(ops[n].method, sizeof(ops[n].method), "%s", cur_method);
                        snprintf(ops[n].path, sizeof(ops[n].path), "%s", cur_path);
                        snprintf(ops[n].id, sizeof(ops[n].id), "%s", line + 19);
                        n++;
                }
        }
        free(text);
        return n;
}

static const char *spec_path(void)
{
        const char *env = getenv("SPROUT_SPEC");

        if (env && *env)
                return env;
        return access(SHARED_SPEC, R_OK) == 0 ? SHARED_SPEC : OWN_SPEC;
}

TEST(routes_cover_the_spec)
{
        static struct op ops[128];
        int n = read_spec(spec_path(), ops, 128), missing = 0;

        CHECK(n >= 37);
        for (int i = 0; i < n; i++) {
                char want[128], have[128];
                int found = 0;

                normalise(ops[i].path, want, sizeof(want));
                for (size_t k = 0; k < api_route_count(); k++) {
                        const struct api_route_info *r = api_route(k);

                        normalise(r->pattern, have, sizeof(have));
                        if (!strcmp(r->method, ops[i].method) && !strcmp(have, want)) {
                                if (strcmp(r->operation, ops[i].id))
                                        fprintf(stderr, "    %s %s is %s in the spec, %s in the table\n", r->method,
                                                r->pattern, ops[i].id, r->operation);
                                CHECK(!strcmp(r->operation, ops[i].id));
                                found = 1;
                        }
                }
                if (!found)
                        fprintf(stderr, "    no route for %s %s (%s)\n", ops[i].method, ops[i].path, ops[i].id);
                missing += !found;
        }
        CHECK(missing == 0);
}

TEST(every_v1_route_is_in_the_spec)
{
        /* Sprout's own additions under /v1, documented in the README. */
        static const char *const extensions[] = {"GET /v1/vms/{vm_id}/terminals/{terminal_id}/ws",
                                                 "GET /v1/vms/builds"};
        static struct op ops[128];
        int n = read_spec(spec_path(), ops, 128);

        CHECK(n >= 37);
        for (size_t k = 0; k < api_route_count(); k++) {
                const struct api_route_info *r = api_route(k);
                char want[128], have[128], route[160];
                int found = 0;

                snprintf(route, sizeof(route), "%s %s", r->method, r->pattern);
                for (size_t e = 0; e < sizeof(extensions) / sizeof(extensions[0]); e++)
                        found |= !strcmp(route, extensions[e]);
                if (strncmp(r->pattern, "/v1/", 4) || found)
                        continue;
                normalise(r->pattern, have, sizeof(have));
                for (int i = 0; i < n && !found; i++) {
                        normalise(ops[i].path, want, sizeof(want));
                        found = !strcmp(r->method, ops[i].method) && !strcmp(have, want);
                }
                if (!found)
                        fprintf(stderr, "    route %s %s is not in the spec\n", r->method, r->pattern);
                CHECK(found);
        }
}

TEST(spec_copy_matches_the_contract)
{
        char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;

        if (access(SHARED_SPEC, R_OK) != 0)
                return; /* only the repository's copy here */
        CHECK(read_file(SHARED_SPEC, 4 << 20, &a, &na) == 0);
        CHECK(read_file(OWN_SPEC, 4 << 20, &b, &nb) == 0);
        if (na != nb || memcmp(a, b, na))
                fprintf(stderr, "    %s differs from %s: copy the contract in\n", OWN_SPEC, SHARED_SPEC);
        CHECK(na == nb && !memcmp(a, b, na));
        free(a);
        free(b);
}

/*
 * api_metrics: GET /metrics (an admin key's) in the Prometheus text format:
 * requests and their latency per operation, with what the VM manager
 * counts; and the warm pool's figures in /healthz.
 */
#include "api/api_int.h"
#include "lib/metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per operation (the route table's rows, then one for requests no route
 * took): latency, and answers by status class (1xx..5xx). */
struct api_metrics {
        size_t n;
        struct op_stat {
                struct histo h;
                uint64_t by_class[6];
        } ops[];
};

int api_metrics_init(struct api *a)
{
        size_t n = api_route_count() + 1;

        a->metrics = calloc(1, sizeof(*a->metrics) + n * sizeof(a->metrics->ops[0]));
        if (!a->metrics)
                return -ENOMEM;
        a->metrics->n = n;
        return 0;
}

void api_metrics_record(struct api *a, size_t route, unsigned status, int64_t us)
{
        struct op_stat *o;

        if (!a->metrics)
                return;
        o = &a->metrics->ops[route < a->metrics->n - 1 ? route : a->metrics->n - 1];
        histo_add(&o->h, us);
        __atomic_add_fetch(&o->by_class[status / 100 < 6 ? status / 100 : 0], 1, __ATOMIC_RELAXED);
}

void api_metrics(struct api_call *c)
{
        struct strbuf b = {0};
        struct api_metrics *am = c->a->metrics;

        if (!c->admin) {
                api_error(c, 403, "FORBIDDEN", "/metrics needs an admin key");
                return;
        }
        vmm_metrics(c->a->vmm, &b);
        strbuf_printf(&b, "# HELP sprout_http_requests_total API requests answered, by operation and status "
                          "class.\n# TYPE sprout_http_requests_total counter\n");
        for (size_t i = 0; am && i < am->n; i++) {
                const char *op = i < am->n - 1 ? api_route(i)->operation : "unmatched";

                for (int k = 1; k < 6; k++) {
                        uint64_t v = __atomic_load_n(&am->ops[i].by_class[k], __ATOMIC_RELAXED);

                        if (v)
                                strbuf_printf(&b,
                                              "sprout_http_requests_total{op=\"%s\",code=\"%dxx\"} %llu\n",
                                              op, k, (unsigned long long)v);
                }
        }
        strbuf_printf(&b, "# HELP sprout_http_request_seconds API request latency, by operation (a stream's: "
                          "until it starts).\n# TYPE sprout_http_request_seconds histogram\n");
        for (size_t i = 0; am && i < am->n; i++) {
                char labels[96];

                if (!__atomic_load_n(&am->ops[i].h.n, __ATOMIC_RELAXED))
                        continue;
                snprintf(labels, sizeof(labels), "op=\"%s\"",
                         i < am->n - 1 ? api_route(i)->operation : "unmatched");
                histo_format(&b, "sprout_http_request_seconds", labels, &am->ops[i].h);
        }
        if (b.oom) {
                free(b.s);
                api_error(c, 500, "INTERNAL_ERROR", "out of memory");
                return;
        }
        c->resp->status = 200;
        c->resp->text = b.s;
        c->resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

json_t *api_pool_json(struct api *a)
{
        struct vmm_stats s;

        vmm_stats(a->vmm, &s);
        return json_pack("{s:i,s:I,s:I,s:I}", "vms", s.pool_vms, "memoryBytes",
                         (json_int_t)s.pool_mem_mb << 20, "hits", (json_int_t)s.pool_hits, "misses",
                         (json_int_t)s.pool_misses);
}

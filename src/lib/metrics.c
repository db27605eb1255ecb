/*
 * metrics: see metrics.h.
 */
#include "lib/metrics.h"

static const double bounds[HISTO_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5,   1,      2.5,   5,    10,    30,   60};

void histo_add(struct histo *h, int64_t us)
{
        double s = (double)(us < 0 ? 0 : us) / 1e6;

        for (int i = 0; i < HISTO_BUCKETS; i++)
                if (s <= bounds[i])
                        __atomic_add_fetch(&h->b[i], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&h->sum_us, (uint64_t)(us < 0 ? 0 : us), __ATOMIC_RELAXED);
        __atomic_add_fetch(&h->n, 1, __ATOMIC_RELAXED);
}

void histo_format(struct strbuf *b, const char *name, const char *labels, const struct histo *h)
{
        const char *sep = labels[0] ? "," : "";
        uint64_t n = __atomic_load_n(&h->n, __ATOMIC_RELAXED);

        for (int i = 0; i < HISTO_BUCKETS; i++)
                strbuf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i],
                              (unsigned long long)__atomic_load_n(&h->b[i], __ATOMIC_RELAXED));
        strbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)n);
        strbuf_printf(b, "%s_sum%s%s%s %.6f\n", name, *sep ? "{" : "", labels, *sep ? "}" : "",
                      (double)__atomic_load_n(&h->sum_us, __ATOMIC_RELAXED) / 1e6);
        strbuf_printf(b, "%s_count%s%s%s %llu\n", name, *sep ? "{" : "", labels, *sep ? "}" : "",
                      (unsigned long long)n);
}

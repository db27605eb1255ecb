/*
 * metrics: latency histograms for the Prometheus text format (/metrics),
 * with fixed buckets from 1 ms to 60 s. Adding is lock-free (atomics), so
 * any thread records into a shared histogram; formatting reads a moment's
 * counts, which may be a step apart, as Prometheus allows.
 */
#ifndef SPROUT_METRICS_H
#define SPROUT_METRICS_H

#include "lib/util.h"

#include <stdint.h>

#define HISTO_BUCKETS 15

struct histo {
        uint64_t b[HISTO_BUCKETS]; /* observations at most histo_bounds[i] */
        uint64_t n;                /* all of them */
        uint64_t sum_us;
};

/* Records one observation of us microseconds. */
void histo_add(struct histo *h, int64_t us);
/* Appends name's _bucket, _sum and _count lines (seconds), each with the
 * labels (`op="x"`, or "" for none). */
void histo_format(struct strbuf *b, const char *name, const char *labels, const struct histo *h);

#endif

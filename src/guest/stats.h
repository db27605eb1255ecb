/*
 * stats: a VM's memory and CPU use, read from the guest's /proc through
 * the agent (no process is started in the guest). Used by the stats
 * stream; speaks no JSON.
 */
#ifndef SPROUT_STATS_H
#define SPROUT_STATS_H

#include "vmm/vmm.h"

#include <stdint.h>

struct stats_sample {
        uint64_t mem_total, mem_available; /* bytes */
        double cpu_percent; /* of all vCPUs, since the previous sample (since boot for the first) */
        int cpus;
        double load[3]; /* 1, 5 and 15 minutes */
};

/* What the CPU figure is measured from: the previous sample's counters. */
struct stats_prev {
        unsigned long long total, idle;
};

/* Takes one sample; -errno when the guest could not be read. */
int stats_take(struct vmm_guest *g, struct stats_prev *prev, struct stats_sample *ret);

#endif

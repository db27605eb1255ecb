/*
 * stats: parses the guest's /proc/meminfo, /proc/stat and /proc/loadavg.
 * Depends on the VM manager's guest operations. The guest writes those
 * files: a lying guest gets nonsense figures, never more than that.
 */
#include "guest/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A small /proc file of the guest as text (malloc'd), or NULL with
 * *ret_err < 0 when the VM could not be reached. */
static char *guest_proc(struct vmm_guest *g, const char *path, int *ret_err)
{
        struct agentc_result res = {0};
        char *text = NULL;
        int r = vmm_guest_read(g, path, NULL, &res);

        *ret_err = r;
        if (r == 0 && !res.err)
                text = strndup(res.data.data ? (char *)res.data.data : "", res.data.len);
        agentc_result_free(&res);
        return text;
}

static unsigned long long meminfo_kb(const char *text, const char *key)
{
        const char *p = text ? strstr(text, key) : NULL;

        return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

int stats_take(struct vmm_guest *g, struct stats_prev *prev, struct stats_sample *ret)
{
        unsigned long long v[8] = {0}, total = 0, idle;
        char *mem, *stat, *load;
        int err;

        memset(ret, 0, sizeof(*ret));
        mem = guest_proc(g, "/proc/meminfo", &err);
        if (err < 0)
                return err;
        stat = guest_proc(g, "/proc/stat", &err);
        load = guest_proc(g, "/proc/loadavg", &err);
        if (stat) {
                sscanf(stat, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                       &v[6], &v[7]);
                for (const char *p = stat; (p = strstr(p, "\ncpu")); p++)
                        ret->cpus++;
        }
        for (int i = 0; i < 8; i++)
                total += v[i];
        idle = v[3] + v[4];
        if (total > prev->total && idle >= prev->idle && total - prev->total >= idle - prev->idle)
                ret->cpu_percent = 100.0 * (double)((total - prev->total) - (idle - prev->idle)) /
                                   (double)(total - prev->total);
        prev->total = total;
        prev->idle = idle;
        if (load)
                sscanf(load, "%lf %lf %lf", &ret->load[0], &ret->load[1], &ret->load[2]);
        ret->mem_total = meminfo_kb(mem, "MemTotal:") * 1024;
        ret->mem_available = meminfo_kb(mem, "MemAvailable:") * 1024;
        if (ret->mem_available > ret->mem_total)
                ret->mem_available = ret->mem_total;
        free(mem);
        free(stat);
        free(load);
        return 0;
}

/*
 * cgroup: a group of resource limits per VM (memory, CPU, pids), in
 * whichever hierarchy the host gives: cgroup v2 (unified) or v1 (one
 * hierarchy per controller). Groups live under a "sprout" parent. Never
 * logs.
 */
#ifndef SPROUT_CGROUP_H
#define SPROUT_CGROUP_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

enum cgroup_version {
        CGROUP_NONE,
        CGROUP_V1,
        CGROUP_V2,
};

/* Finds where the memory, cpu and pids controllers are and makes the
 * sprout parent group(s). -ENOTSUP when there is no hierarchy with all
 * three (*ret is then CGROUP_NONE), or -errno. */
int cgroup_setup(enum cgroup_version *ret);

const char *cgroup_version_name(enum cgroup_version v);

struct cgroup_limits {
        int64_t mem_bytes;    /* memory, page cache included */
        int64_t cpu_quota_us; /* CPU time per 100 ms period (100000 per core) */
        int64_t pids;         /* processes and threads */
};

#define CGROUP_MAX_FILES 3

/* Makes (or takes again) the group name with limits l; its cgroup.procs
 * files, which a process writes "0" to to join, go into procs (*ret_n of
 * them). */
int cgroup_make(enum cgroup_version v, const char *name, const struct cgroup_limits *l,
                char procs[CGROUP_MAX_FILES][PATH_MAX], size_t *ret_n);

/* Removes the group (once nothing runs in it); a missing one is fine. */
void cgroup_remove(enum cgroup_version v, const char *name);

#endif

/*
 * cgroup: see cgroup.h. Depends on util.
 */
#include "hv/cgroup.h"
#include "lib/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ROOT "/sys/fs/cgroup"

/* v1: each controller's hierarchy (cpu is often mounted as cpu,cpuacct
 * with a cpu link to it). */
static const char *const v1_controllers[] = {"memory", "cpu", "pids"};

const char *cgroup_version_name(enum cgroup_version v)
{
        return v == CGROUP_V2 ? "v2" : v == CGROUP_V1 ? "v1" : "none";
}

static int mkdir_ok(const char *path)
{
        return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -errno;
}

int cgroup_setup(enum cgroup_version *ret)
{
        char *controllers = NULL, path[PATH_MAX];
        int r;

        *ret = CGROUP_NONE;
        if (read_file(ROOT "/cgroup.controllers", 4096, &controllers, NULL) == 0) {
                int all = strstr(controllers, "memory") && strstr(controllers, "cpu") && strstr(controllers, "pids");

                free(controllers);
                if (all) {
                        /* Children of sprout get the three controllers. */
                        r = mkdir_ok(ROOT "/sprout");
                        if (r == 0)
                                write_existing(ROOT "/cgroup.subtree_control", "+memory +cpu +pids");
                        if (r == 0)
                                r = write_existing(ROOT "/sprout/cgroup.subtree_control", "+memory +cpu +pids");
                        if (r == 0)
                                *ret = CGROUP_V2;
                        return r;
                }
        }
        for (size_t i = 0; i < sizeof(v1_controllers) / sizeof(v1_controllers[0]); i++) {
                if (path_fmt(path, sizeof(path), ROOT "/%s", v1_controllers[i]) < 0 || access(path, W_OK) < 0)
                        return -ENOTSUP;
                if (path_fmt(path, sizeof(path), ROOT "/%s/sprout", v1_controllers[i]) < 0)
                        return -ENAMETOOLONG;
                r = mkdir_ok(path);
                if (r < 0)
                        return r;
        }
        *ret = CGROUP_V1;
        return 0;
}

/* Writes one limit file of a group. */
static int set_limit(const char *dir, const char *file, const char *fmt, int64_t a, int64_t b)
{
        char path[PATH_MAX], text[64];

        if (path_fmt(path, sizeof(path), "%s/%s", dir, file) < 0)
                return -ENAMETOOLONG;
        snprintf(text, sizeof(text), fmt, (long long)a, (long long)b);
        return write_existing(path, text);
}

int cgroup_make(enum cgroup_version v, const char *name, const struct cgroup_limits *l,
                char procs[CGROUP_MAX_FILES][PATH_MAX], size_t *ret_n)
{
        char dir[PATH_MAX];
        int r = 0;

        *ret_n = 0;
        if (v == CGROUP_V2) {
                if (path_fmt(dir, sizeof(dir), ROOT "/sprout/%s", name) < 0 ||
                    path_fmt(procs[0], PATH_MAX, "%s/cgroup.procs", dir) < 0)
                        return -ENAMETOOLONG;
                r = mkdir_ok(dir);
                if (r == 0)
                        r = set_limit(dir, "memory.max", "%lld", l->mem_bytes, 0);
                if (r == 0)
                        r = set_limit(dir, "cpu.max", "%lld %lld", l->cpu_quota_us, 100000);
                if (r == 0)
                        r = set_limit(dir, "pids.max", "%lld", l->pids, 0);
                if (r == 0)
                        *ret_n = 1;
                return r;
        }
        if (v != CGROUP_V1)
                return -ENOTSUP;
        for (size_t i = 0; r == 0 && i < sizeof(v1_controllers) / sizeof(v1_controllers[0]); i++) {
                if (path_fmt(dir, sizeof(dir), ROOT "/%s/sprout/%s", v1_controllers[i], name) < 0 ||
                    path_fmt(procs[i], PATH_MAX, "%s/cgroup.procs", dir) < 0)
                        return -ENAMETOOLONG;
                r = mkdir_ok(dir);
                if (r == 0 && i == 0)
                        r = set_limit(dir, "memory.limit_in_bytes", "%lld", l->mem_bytes, 0);
                if (r == 0 && i == 1)
                        r = set_limit(dir, "cpu.cfs_period_us", "%lld", 100000, 0);
                if (r == 0 && i == 1)
                        r = set_limit(dir, "cpu.cfs_quota_us", "%lld", l->cpu_quota_us, 0);
                if (r == 0 && i == 2)
                        r = set_limit(dir, "pids.max", "%lld", l->pids, 0);
        }
        if (r == 0)
                *ret_n = 3;
        return r;
}

void cgroup_remove(enum cgroup_version v, const char *name)
{
        char dir[PATH_MAX];

        if (v == CGROUP_V2 && path_fmt(dir, sizeof(dir), ROOT "/sprout/%s", name) == 0)
                rmdir(dir);
        for (size_t i = 0; v == CGROUP_V1 && i < sizeof(v1_controllers) / sizeof(v1_controllers[0]); i++)
                if (path_fmt(dir, sizeof(dir), ROOT "/%s/sprout/%s", v1_controllers[i], name) == 0)
                        rmdir(dir);
}

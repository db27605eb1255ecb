/*
 * sprout-bench-raw: the baseline the daemon's numbers are compared with.
 * Restores QEMU straight from a snapshot directory with the same low-level
 * steps the daemon takes for a create (vm_from_layer + vm_boot): a qcow2
 * overlay on the snapshot's disk, a copy_sparse of the snapshot's memory
 * file into the VM's directory, QEMU on that copy with a shared mapping,
 * restore of the device state, agent connect and ping. No HTTP, no store,
 * no VM manager. Times: spawn to running guest, to the agent's first
 * answer, and to the first `true` run through the agent. Also measures the
 * guest's own cost of `bash -c true` by timing a loop inside the guest, and
 * PAR_RUNS rounds of 4 restores in parallel (one thread and one temporary
 * directory each), timed from the start until all 4 have answered `true`.
 * Prints one JSON line.
 *
 * usage: sprout-bench-raw SNAPSHOT_DIR IMAGE_DIR RUNS MEM_MB VCPUS [PAR_RUNS]
 * (MEM_MB and VCPUS must be those the snapshot was made with; PAR_RUNS
 * defaults to 3, 0 skips the parallel rounds). Temporary directories go in
 * $TMPDIR (default /tmp); put it on the file system of the daemon's data
 * directory for a like-for-like copy of the memory file.
 */
#include "agentc/agentc.h"
#include "hv/jail.h"
#include "hv/net.h"
#include "hv/qemu.h"
#include "lib/util.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAR 4

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

        return x < y ? -1 : x > y;
}

static int64_t median(int64_t *v, int n)
{
        qsort(v, (size_t)n, sizeof(*v), cmp_i64);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Runs cmd through the agent; returns its exit code or -errno, and its
 * stdout in *out when out is not NULL (malloc'd). */
static int run(struct agentc *a, const char *cmd, char **out)
{
        struct agentc_exec e = {.command = cmd, .timeout_ms = 110000, .max_output = 1 << 20};
        struct agentc_result res = {0};
        int r = agentc_exec(a, &e, &res);

        if (r < 0)
                return r;
        r = res.err ? -res.err : res.exit_code;
        if (out)
                *out = strndup(res.out.data ? (char *)res.out.data : "", res.out.len);
        agentc_result_free(&res);
        return r;
}

/* What every restore shares: the snapshot's files and the guest's boot
 * parameters. */
struct setup {
        const char *snap_disk, *snap_mem, *snap_state;
        const char *kernel, *initrd, *cmdline;
        int mem_mb, vcpus;
        enum qemu_accel accel;
        /* A network namespace with a TAP device per parallel slot, made
         * before any timing: the snapshot's network device is a TAP's. */
        char netns[PAR][PATH_MAX];
};

/* One restored VM in its own temporary directory. */
struct restore {
        const struct setup *s;
        int slot; /* which of the setup's network namespaces */
        char dir[PATH_MAX];
        struct qemu *q;
        struct agentc *a;
        int64_t t0;                       /* when the restore started */
        int64_t running, answer, first_exec; /* ms after t0 */
        int r;
        pthread_t thread;
};

/* The daemon's create path: overlay, memory file copy, spawn, restore,
 * connect, ping; then one `true`. Leaves QEMU running on success. */
static int restore_one(struct restore *v)
{
        const struct setup *s = v->s;
        char disk[PATH_MAX], mem[PATH_MAX], sock[PATH_MAX], log[PATH_MAX];
        int r;

        if (path_fmt(disk, sizeof(disk), "%s/disk.qcow2", v->dir) < 0 ||
            path_fmt(mem, sizeof(mem), "%s/mem", v->dir) < 0 ||
            path_fmt(sock, sizeof(sock), "%s/agent.sock", v->dir) < 0 ||
            path_fmt(log, sizeof(log), "%s/qemu-img.log", v->dir) < 0)
                return -ENAMETOOLONG;
        /* The overlay and the memory copy are part of what a restore costs. */
        r = qemu_img_create(disk, s->snap_disk, "qcow2", 0, log);
        if (r < 0)
                return r;
        r = copy_sparse(s->snap_mem, mem);
        if (r == 0)
                r = file_allocate(mem, (int64_t)s->mem_mb << 20);
        if (r < 0 && r != -EOPNOTSUPP)
                return r;
        struct jail j = {.netns = s->netns[v->slot], .tap = "tap0", .tap_fd = 100};
        struct qemu_config c = {.dir = v->dir, .kernel = s->kernel, .initrd = s->initrd, .cmdline = s->cmdline,
                                .disk = disk, .mem_path = mem, .mem_shared = 1, .mem_mb = s->mem_mb,
                                .vcpus = s->vcpus, .incoming = 1, .accel = s->accel, .jail = &j};
        r = qemu_spawn(&c, 10000, &v->q);
        if (r == 0)
                r = qemu_restore(v->q, s->snap_state, 60000);
        if (r == 0)
                r = qemu_cont(v->q, 60000);
        v->running = now_ms() - v->t0;
        if (r == 0)
                r = agentc_connect(sock, 5000, &v->a);
        if (r == 0)
                r = agentc_ping(v->a, 60000);
        v->answer = now_ms() - v->t0;
        if (r == 0)
                r = run(v->a, "true", NULL) == 0 ? 0 : -EIO;
        v->first_exec = now_ms() - v->t0;
        return r;
}

/* Stops the VM and removes its directory. */
static void restore_end(struct restore *v)
{
        agentc_unref(v->a);
        v->a = NULL;
        if (v->q) {
                qemu_stop(v->q, 0);
                qemu_free(v->q);
                v->q = NULL;
        }
        if (v->dir[0])
                rm_rf(v->dir);
        v->dir[0] = 0;
}

static int make_dir(struct restore *v)
{
        const char *tmp = getenv("TMPDIR");

        if (path_fmt(v->dir, sizeof(v->dir), "%s/sprout-raw-XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0)
                return -ENAMETOOLONG;
        if (!mkdtemp(v->dir)) {
                v->dir[0] = 0;
                return -errno;
        }
        return 0;
}

static void *restore_main(void *arg)
{
        struct restore *v = arg;

        v->r = restore_one(v);
        return NULL;
}

static int bench(int argc, char **argv, struct setup *sp)
{
        char snap_disk[PATH_MAX], snap_mem[PATH_MAX], snap_state[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX],
                cmdline[4096];
        int64_t running[64], answer[64], first_exec[64], par_all[16], par_slowest_running[16];
        double guest_true_ms = -1;
        struct setup s = *sp;
        int runs, par_runs = 3;

        if ((argc != 6 && argc != 7) || (runs = atoi(argv[3])) < 1 || runs > 64 || (s.mem_mb = atoi(argv[4])) < 128 ||
            (s.vcpus = atoi(argv[5])) < 1 || (argc == 7 && ((par_runs = atoi(argv[6])) < 0 || par_runs > 16))) {
                fprintf(stderr, "usage: sprout-bench-raw SNAPSHOT_DIR IMAGE_DIR RUNS(1-64) MEM_MB VCPUS "
                                "[PAR_RUNS(0-16)]\n");
                return 2;
        }
        if (qemu_pick_accel(NULL, &s.accel) < 0 || qemu_kernel_cmdline(argv[2], cmdline, sizeof(cmdline)) < 0)
                return 1;
        snprintf(snap_disk, sizeof(snap_disk), "%s/disk.qcow2", argv[1]);
        snprintf(snap_mem, sizeof(snap_mem), "%s/mem", argv[1]);
        snprintf(snap_state, sizeof(snap_state), "%s/state", argv[1]);
        snprintf(kernel, sizeof(kernel), "%s/vmlinuz", argv[2]);
        snprintf(initrd, sizeof(initrd), "%s/initrd.img", argv[2]);
        s.snap_disk = snap_disk;
        s.snap_mem = snap_mem;
        s.snap_state = snap_state;
        s.kernel = kernel;
        s.initrd = initrd;
        s.cmdline = cmdline;

        /* One at a time. */
        for (int i = 0; i < runs; i++) {
                struct restore v = {.s = &s};
                int r = make_dir(&v);

                v.t0 = now_ms();
                if (r == 0)
                        r = restore_one(&v);
                running[i] = v.running;
                answer[i] = v.answer;
                first_exec[i] = v.first_exec;
                if (r == 0 && i == 0) {
                        /* The guest's own cost of starting bash, without any
                         * channel in between: 20 runs timed inside the guest. */
                        char *out = NULL;

                        if (run(v.a, "s=$(date +%s%N); for i in $(seq 20); do bash -c true; done; "
                                     "e=$(date +%s%N); echo $(( (e - s) / 20000 ))",
                                &out) == 0 && out)
                                guest_true_ms = atof(out) / 1000.0;
                        free(out);
                }
                restore_end(&v);
                if (r < 0) {
                        fprintf(stderr, "sprout-bench-raw: run %d failed: %s\n", i, strerror(-r));
                        return 1;
                }
        }

        /* PAR at once, each in its own thread and directory; done when the
         * last has answered `true`. */
        for (int i = 0; i < par_runs; i++) {
                struct restore v[PAR];
                int started = 0, r = 0;
                int64_t t0;

                memset(v, 0, sizeof(v));
                for (int k = 0; k < PAR; k++) {
                        v[k].s = &s;
                        v[k].slot = k;
                        if (r == 0)
                                r = make_dir(&v[k]);
                }
                t0 = now_ms();
                for (int k = 0; r == 0 && k < PAR; k++) {
                        v[k].t0 = t0;
                        if (pthread_create(&v[k].thread, NULL, restore_main, &v[k]) != 0) {
                                r = -EAGAIN;
                                break;
                        }
                        started++;
                }
                for (int k = 0; k < started; k++)
                        pthread_join(v[k].thread, NULL);
                par_all[i] = now_ms() - t0;
                par_slowest_running[i] = 0;
                for (int k = 0; k < started; k++) {
                        if (v[k].r < 0 && r == 0)
                                r = v[k].r;
                        if (v[k].running > par_slowest_running[i])
                                par_slowest_running[i] = v[k].running;
                }
                for (int k = 0; k < PAR; k++)
                        restore_end(&v[k]);
                if (r < 0) {
                        fprintf(stderr, "sprout-bench-raw: parallel run %d failed: %s\n", i, strerror(-r));
                        return 1;
                }
        }

        printf("{\"bench\":\"raw_restore\",\"runs\":%d,\"restore_to_running_ms\":%lld,"
               "\"restore_to_first_answer_ms\":%lld,\"restore_to_first_exec_ms\":%lld,"
               "\"guest_bash_true_ms\":%.1f,\"technique\":\"qcow2 overlay + copy_sparse(mem) + mem_shared=1\"",
               runs, (long long)median(running, runs), (long long)median(answer, runs),
               (long long)median(first_exec, runs), guest_true_ms);
        if (par_runs > 0)
                printf(",\"parallel%d_runs\":%d,\"parallel%d_restore_to_all_running_ms\":%lld,"
                       "\"parallel%d_restore_to_all_exec_ms\":%lld",
                       PAR, par_runs, PAR, (long long)median(par_slowest_running, par_runs), PAR,
                       (long long)median(par_all, par_runs));
        printf("}\n");
        return 0;
}

/* The namespaces live for the whole run and go at its end, whatever
 * happened in between. */
int main(int argc, char **argv)
{
        struct net_policy policy = {.egress = 1};
        struct setup s = {0};
        struct net *net = NULL;
        char msg[512] = "", name[32];
        int r, k;

        r = net_new(&policy, &net, msg, sizeof(msg));
        for (k = 0; r == 0 && k < PAR; k++) {
                snprintf(name, sizeof(name), "bench-raw-%d", k);
                r = net_create(net, name, 65000 + (unsigned)k, s.netns[k]);
        }
        if (r < 0) {
                fprintf(stderr, "sprout-bench-raw: cannot make the VMs' network namespaces: %s %s\n", strerror(-r), msg);
                r = 1;
        } else {
                r = bench(argc, argv, &s);
        }
        while (net && k-- > 0) {
                snprintf(name, sizeof(name), "bench-raw-%d", k);
                net_destroy(net, name, 65000 + (unsigned)k);
        }
        net_free(net);
        return r;
}

/*
 * sprout-bench-raw: the baseline the daemon's numbers are compared with.
 * Restores QEMU straight from a snapshot directory (no HTTP, no store, no
 * VM manager) and times: spawn to running guest, to the agent's first
 * answer, and to the first `true` run through the agent. Also measures the
 * guest's own cost of `bash -c true` by timing a loop inside the guest.
 * Prints one JSON line.
 *
 * usage: sprout-bench-raw SNAPSHOT_DIR IMAGE_DIR RUNS MEM_MB VCPUS
 * (MEM_MB and VCPUS must be those the snapshot was made with)
 */
#include "agentc.h"
#include "qemu.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
        struct proto_buf b = {0};
        struct agentc_reply rep = {0};
        uint32_t code = 0;
        int r;

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_EXEC);
        proto_put_str(&b, PROTO_TAG_CMD, cmd);
        r = agentc_request(a, &b, NULL, 0, 1 << 20, 120000, &rep);
        proto_buf_free(&b);
        if (r < 0)
                return r;
        if (proto_get_u32(rep.result, rep.result_len, PROTO_TAG_EXIT_CODE, &code) < 0)
                r = -EBADMSG;
        else
                r = (int)code;
        if (out) {
                *out = strndup(rep.out.data ? (char *)rep.out.data : "", rep.out.len);
        }
        agentc_reply_free(&rep);
        return r;
}

int main(int argc, char **argv)
{
        char dir[] = "/tmp/sprout-raw-XXXXXX", disk[PATH_MAX], base_disk[PATH_MAX], mem[PATH_MAX],
             state[PATH_MAX], sock[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX], cmdline[4096];
        int64_t running[64], answer[64], first_exec[64];
        double guest_true_ms = -1;
        enum qemu_accel accel;
        int runs, mem_mb, vcpus;

        if (argc != 6 || (runs = atoi(argv[3])) < 1 || runs > 64 || (mem_mb = atoi(argv[4])) < 128 ||
            (vcpus = atoi(argv[5])) < 1) {
                fprintf(stderr, "usage: sprout-bench-raw SNAPSHOT_DIR IMAGE_DIR RUNS(1-64) MEM_MB VCPUS\n");
                return 2;
        }
        if (!mkdtemp(dir) || qemu_pick_accel(NULL, &accel) < 0 ||
            qemu_kernel_cmdline(argv[2], cmdline, sizeof(cmdline)) < 0)
                return 1;
        snprintf(base_disk, sizeof(base_disk), "%s/disk.qcow2", argv[1]);
        snprintf(mem, sizeof(mem), "%s/mem", argv[1]);
        snprintf(state, sizeof(state), "%s/state", argv[1]);
        snprintf(kernel, sizeof(kernel), "%s/vmlinuz", argv[2]);
        snprintf(initrd, sizeof(initrd), "%s/initrd.img", argv[2]);
        snprintf(disk, sizeof(disk), "%s/disk.qcow2", dir);
        snprintf(sock, sizeof(sock), "%s/agent.sock", dir);

        for (int i = 0; i < runs; i++) {
                char *argv_img[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base_disk, disk, NULL};
                struct qemu *q = NULL;
                struct agentc *a = NULL;
                int64_t t0;
                int r;

                unlink(disk);
                t0 = now_ms();
                /* The overlay is part of what a restore costs. */
                if (run_wait(argv_img, NULL) != 0)
                        return 1;
                struct qemu_config c = {.dir = dir, .kernel = kernel, .initrd = initrd, .cmdline = cmdline,
                                        .disk = disk, .mem_path = mem, .mem_shared = 0, .mem_mb = mem_mb,
                                        .vcpus = vcpus, .incoming = 1, .accel = accel};
                r = qemu_spawn(&c, 10000, &q);
                if (r == 0)
                        r = qemu_restore(q, state, 60000);
                running[i] = now_ms() - t0;
                if (r == 0)
                        r = agentc_connect(sock, 5000, &a);
                if (r == 0)
                        r = agentc_ping(a, 60000);
                answer[i] = now_ms() - t0;
                if (r == 0)
                        r = run(a, "true", NULL) == 0 ? 0 : -EIO;
                first_exec[i] = now_ms() - t0;
                if (r == 0 && i == 0) {
                        /* The guest's own cost of starting bash, without any
                         * channel in between: 20 runs timed inside the guest. */
                        char *out = NULL;

                        if (run(a, "s=$(date +%s%N); for i in $(seq 20); do bash -c true; done; "
                                   "e=$(date +%s%N); echo $(( (e - s) / 20000 ))",
                                &out) == 0 && out)
                                guest_true_ms = atof(out) / 1000.0;
                        free(out);
                }
                agentc_unref(a);
                if (q) {
                        qemu_stop(q, 0);
                        qemu_free(q);
                }
                if (r < 0) {
                        fprintf(stderr, "sprout-bench-raw: run %d failed: %s\n", i, strerror(-r));
                        rm_rf(dir);
                        return 1;
                }
        }
        rm_rf(dir);
        printf("{\"bench\":\"raw_restore\",\"runs\":%d,\"restore_to_running_ms\":%lld,"
               "\"restore_to_first_answer_ms\":%lld,\"restore_to_first_exec_ms\":%lld,"
               "\"guest_bash_true_ms\":%.1f}\n",
               runs, (long long)median(running, runs), (long long)median(answer, runs),
               (long long)median(first_exec, runs), guest_true_ms);
        return 0;
}

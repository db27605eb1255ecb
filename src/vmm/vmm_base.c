/*
 * vmm_base: the default snapshot every new VM is restored from: one cold
 * boot of the guest image, settled and saved (memory, device state, disk)
 * under a key naming the image, accelerator and VM size, so that a
 * changed image or configuration gets a snapshot of its own. Depends on
 * qemu, agentc and util.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COLD_BOOT_TRIES 3

void set_status(struct vmm *m, const char *fmt, const char *arg)
{
        pthread_mutex_lock(&m->lock);
        snprintf(m->status, sizeof(m->status), fmt, arg);
        pthread_mutex_unlock(&m->lock);
}

int boot_config(struct vmm *m, const char *dir, const char *disk, const char *mem, int mem_mb, int vcpus,
                struct boot_files *f, struct qemu_config *ret)
{
        if (image_path(m, f->kernel, "vmlinuz") < 0 || image_path(m, f->initrd, "initrd.img") < 0)
                return -ENAMETOOLONG;
        *ret = (struct qemu_config){
                .dir = dir,
                .kernel = f->kernel,
                .initrd = f->initrd,
                .cmdline = m->cmdline,
                .disk = disk,
                .mem_path = mem,
                .mem_shared = 1,
                .mem_mb = mem_mb,
                .vcpus = vcpus,
                .accel = m->cfg.accel,
        };
        return 0;
}

int wait_agent(struct qemu *q, const char *sock, int64_t deadline, const int *stop, struct agentc **ret)
{
        struct agentc *a = NULL;
        int r;

        r = agentc_connect(sock, 10000, &a);
        if (r < 0)
                return r;
        for (;;) {
                r = agentc_ping(a, 1000);
                if (r == 0) {
                        *ret = a;
                        return 0;
                }
                if (qemu_reap(q)) {
                        r = -ECHILD;
                        break;
                }
                if (now_ms() >= deadline) {
                        r = -ETIMEDOUT;
                        break;
                }
                if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)) {
                        r = -ECANCELED;
                        break;
                }
                if (!agentc_alive(a))
                        break;
        }
        agentc_unref(a);
        return r;
}

int guest_run(struct agentc *a, const char *cmd, int64_t timeout_ms)
{
        struct agentc_exec e = {.command = cmd, .timeout_ms = timeout_ms, .max_output = 1 << 20};
        struct agentc_result res = {0};
        int r = a ? agentc_exec(a, &e, &res) : -ENOTCONN;

        if (r == 0)
                r = res.err ? -res.err : res.timed_out ? -ETIMEDOUT : res.exit_code;
        agentc_result_free(&res);
        return r;
}

/* One cold boot of the base image in dir, ending with a saved snapshot:
 * device state in dir/state, RAM in dir/mem, disk in dir/disk.qcow2. */
static int cold_boot_snapshot(struct vmm *m, const char *dir)
{
        char disk[PATH_MAX], mem[PATH_MAX], state[PATH_MAX], sock[PATH_MAX], rootfs[PATH_MAX], log[PATH_MAX];
        struct vm_jail *vj = calloc(1, sizeof(*vj));
        struct boot_files files;
        struct qemu_config c;
        struct qemu *q = NULL;
        struct agentc *a = NULL;
        int64_t t0 = now_ms();
        int r;

        if (path_fmt(disk, sizeof(disk), "%s/disk.qcow2", dir) < 0 ||
            path_fmt(mem, sizeof(mem), "%s/mem", dir) < 0 || path_fmt(state, sizeof(state), "%s/state", dir) < 0 ||
            path_fmt(sock, sizeof(sock), "%s/agent.sock", dir) < 0 ||
            path_fmt(log, sizeof(log), "%s/qemu-img.log", dir) < 0 || image_path(m, rootfs, "rootfs.img") < 0 ||
            boot_config(m, dir, disk, mem, m->cfg.mem_mb, m->cfg.vcpus, &files, &c) < 0)
                return -ENAMETOOLONG;
        if (access(rootfs, R_OK) < 0 || access(files.kernel, R_OK) < 0 || access(files.initrd, R_OK) < 0)
                return -ENOENT;
        r = vj ? qemu_img_create(disk, rootfs, "raw", 0, log) : -ENOMEM;
        /* Confined as a VM is: its saved network and devices must be
         * those of the VMs restored from it. */
        if (r == 0)
                r = base_jail_prepare(m, dir, vj);
        if (r == 0)
                c.jail = &vj->jail;
        if (r >= 0)
                r = qemu_spawn(&c, 10000, &q);
        if (r < 0) {
                free(vj);
                jail_release(m, "base", BASE_SLOT);
                return r;
        }
        r = wait_agent(q, sock, now_ms() + COLD_BOOT_TIMEOUT_MS, &m->stopping, &a);
        /* From here a shutdown ends the guest's requests (vmm_free). */
        pthread_mutex_lock(&m->lock);
        if (r == 0 && m->stopping)
                r = -ECANCELED;
        if (r == 0)
                m->base_agent = a;
        pthread_mutex_unlock(&m->lock);
        if (r < 0)
                goto out;
        log_info("default snapshot: agent answered %lld ms after QEMU start", (long long)(now_ms() - t0));
        /* Snapshot a settled system: boot finished (or failed units are
         * known), and the disk layer holds everything written so far. */
        r = guest_run(a, "systemctl is-system-running --wait >/dev/null 2>&1; sync", 180000);
        if (r < 0)
                goto out;
        r = qemu_save(q, state, 60000);
        /* Whole on disk before the directory is renamed into place. */
        if (r == 0)
                r = fsync_path(mem);
        if (r == 0)
                r = fsync_path(disk);
        if (r < 0)
                goto out;
        log_info("default snapshot: saved %lld ms after QEMU start", (long long)(now_ms() - t0));
out:
        pthread_mutex_lock(&m->lock);
        m->base_agent = NULL;
        pthread_mutex_unlock(&m->lock);
        agentc_unref(a);
        qemu_stop(q, 5000);
        qemu_free(q);
        jail_release(m, "base", BASE_SLOT);
        free(vj);
        return r;
}

static int snapshot_key(struct vmm *m, char *out, size_t size)
{
        char real[PATH_MAX];
        const char *base;

        if (!realpath(m->image_dir, real))
                return -errno;
        base = strrchr(real, '/');
        base = base ? base + 1 : real;
        return path_fmt(out, size, "base-%s-%s-%dm-%dc", base, qemu_accel_name(m->cfg.accel), m->cfg.mem_mb,
                        m->cfg.vcpus);
}

/* The snapshot directory appears under its final name only when complete. */
int ensure_base(struct vmm *m)
{
        char key[256], dir[PATH_MAX], tmp[PATH_MAX], marker[PATH_MAX];
        int r;

        r = snapshot_key(m, key, sizeof(key));
        if (r < 0) {
                set_status(m, "guest image not found at %s (run `make image`)", m->image_dir);
                return r;
        }
        if (path_fmt(dir, sizeof(dir), "%s/snapshots/%s", m->data_dir, key) < 0 ||
            path_fmt(tmp, sizeof(tmp), "%s/snapshots/.tmp-%s", m->data_dir, key) < 0 ||
            path_fmt(marker, sizeof(marker), "%s/ready", dir) < 0)
                return -ENAMETOOLONG;
        memcpy(m->base_dir, dir, sizeof(dir));
        if (access(marker, F_OK) == 0)
                return 0;
        for (int attempt = 1; attempt <= COLD_BOOT_TRIES && !m->stopping; attempt++) {
                set_status(m, "making the default snapshot: cold-booting the guest (%s)", key);
                log_info("default snapshot %s: cold boot, attempt %d of %d, accelerator %s", key, attempt,
                         COLD_BOOT_TRIES, qemu_accel_name(m->cfg.accel));
                rm_rf(tmp);
                r = mkdir_p(tmp, 0700);
                if (r == 0)
                        r = cold_boot_snapshot(m, tmp);
                if (r == 0) {
                        char tmp_marker[PATH_MAX];

                        rm_rf(dir);
                        if (path_fmt(tmp_marker, sizeof(tmp_marker), "%s/ready", tmp) < 0)
                                return -ENAMETOOLONG;
                        r = write_file_atomic(tmp_marker, "ok\n", 3, 0644);
                        if (r == 0)
                                r = fsync_path(tmp);
                        if (r == 0 && rename(tmp, dir) < 0)
                                r = -errno;
                        if (r == 0)
                                r = fsync_parent(dir);
                        if (r == 0)
                                return 0;
                }
                log_warn("default snapshot %s: attempt %d failed: %s (serial log: %s/console.log)", key, attempt,
                         strerror(-r), tmp);
        }
        set_status(m, "could not make the default snapshot: %s; see the daemon log", strerror(-r));
        return r;
}

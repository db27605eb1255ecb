/*
 * qemu: the hypervisor driver. Runs one QEMU process per VM (microvm
 * machine, virtio-blk on a qcow2 overlay, the agent on a virtio-serial port,
 * a TAP device or user-mode networking), confined by jail.h, and drives it
 * through QMP: restore from a saved device state, save device state, quit. Each VM's files live in its own
 * directory: qmp.sock, agent.sock, console.log, qemu.log, qemu.pid.
 * QEMU runs in its own session so it outlives a crash of the daemon.
 * Never logs; the VM manager logs with the VM id.
 */
#ifndef SPROUT_QEMU_H
#define SPROUT_QEMU_H

#include <stdint.h>
#include <sys/types.h>

enum qemu_accel {
        QEMU_ACCEL_TCG,
        QEMU_ACCEL_KVM,
};

/* Picks the accelerator: "kvm" or "tcg" force one; NULL or "auto" choose
 * KVM only where the host has hardware virtualisation (kvm_intel or kvm_amd
 * loaded and /dev/kvm usable), TCG otherwise. -EINVAL for other names. */
int qemu_pick_accel(const char *want, enum qemu_accel *ret);
const char *qemu_accel_name(enum qemu_accel a);

/* Builds the guest kernel command line for the image in image_dir: its
 * "cmdline" file plus the host's TSC rate. 0 or -errno. */
int qemu_kernel_cmdline(const char *image_dir, char *out, size_t size);

struct jail;

struct qemu_config {
        const char *dir;      /* per-VM directory for sockets and logs */
        const char *kernel;
        const char *initrd;
        const char *cmdline;  /* full kernel command line */
        const char *disk;     /* qcow2 root disk */
        const char *mem_path; /* file backing guest RAM */
        int mem_shared;       /* 1: MAP_SHARED (writes reach the file); 0: copy-on-write */
        int mem_mb;
        int vcpus;
        int incoming;         /* 1: wait for qemu_restore instead of booting */
        enum qemu_accel accel;
        /* Where QEMU runs (jail.h): its uid, namespaces and cgroups. With a
         * TAP device the guest's network is that device; without one it
         * is user-mode networking. NULL: unconfined. QEMU always runs
         * with its seccomp sandbox on (no spawning, no privileges). */
        const struct jail *jail;
};

struct qemu {
        pid_t pid;
        int pidfd;            /* readable once the process has exited */
        struct qmp *qmp;
        int exited;           /* under the caller's serialisation */
        int status;           /* wait status once exited; -1 when unknown */
};

/* Starts QEMU for config c, waits until its QMP socket answers, and returns
 * the handle. On failure nothing is left running. */
int qemu_spawn(const struct qemu_config *c, int timeout_ms, struct qemu **ret);

/* Re-attaches to a QEMU started earlier from dir (after a daemon restart):
 * reads qemu.pid, checks the process is that VM's QEMU, connects QMP. */
int qemu_attach(const char *dir, int timeout_ms, struct qemu **ret);

/* Loads device state saved by qemu_save into a QEMU spawned with
 * incoming=1; the guest stays paused until qemu_cont (so a caller knows
 * whether it ever ran). The file is opened here and handed to QEMU, which
 * needs no access to it. */
int qemu_restore(struct qemu *q, const char *state_path, int timeout_ms);

/* Pauses the guest and writes its device state (not its RAM, which lives in
 * the shared memory file) to state_path, opened (created) here and handed
 * to QEMU. The guest stays paused. */
int qemu_save(struct qemu *q, const char *state_path, int timeout_ms);

/* Resumes a paused guest. */
int qemu_cont(struct qemu *q, int timeout_ms);

/* Makes the existing qcow2 file overlay (whose backing file is the image
 * now in use) the VM's active disk; the image in use becomes read-only
 * backing. Call with the guest paused. */
int qemu_snapshot_disk(struct qemu *q, const char *overlay, int timeout_ms);

/* Grows the VM's disk to bytes while it runs. */
int qemu_resize_disk(struct qemu *q, uint64_t bytes, int timeout_ms);

/* Asks QEMU to quit, then kills it if it has not exited within timeout_ms,
 * and reaps it. */
void qemu_stop(struct qemu *q, int timeout_ms);

/* Reaps the process if it has exited. Returns 1 if it has, 0 if it still
 * runs. Safe to call repeatedly. */
int qemu_reap(struct qemu *q);

/* QEMU's run state ("running", "paused", "io-error": paused on a write
 * the host refused, ...). 0 or -errno. */
int qemu_status(struct qemu *q, char *out, size_t size, int timeout_ms);
/* 1 when the guest is paused (QMP stop, an unfinished save), 0 when it
 * runs, or -errno. */
int qemu_paused(struct qemu *q, int timeout_ms);
/* The file the guest's disk ("root") writes to now: the top of its
 * chain. 0, -ENOENT, or -errno. */
int qemu_active_disk(struct qemu *q, char *out, size_t size, int timeout_ms);

/* 1 when the process is stopped (SIGSTOP, a tracer), 0 when not, -errno
 * when its state cannot be read. From /proc; never waits on QEMU. */
int qemu_frozen(struct qemu *q);

/* QEMU's own words for the last failed command, or "". */
const char *qemu_last_error(struct qemu *q);

/* Frees the handle (does not stop the process); NULL is a no-op. */
void qemu_free(struct qemu *q);

/*
 * Disk images, through qemu-img run to completion (its output appended to
 * log_path, which may be NULL). Each returns 0, -EIO when qemu-img failed
 * (the log says why), or -errno when it could not run.
 */
/* A new qcow2 image at path backed by backing (of format backing_fmt,
 * "raw" or "qcow2"). size 0 takes the backing file's size; a non-zero size
 * is given explicitly and the backing file is not opened (it may be in use
 * by a running QEMU). */
int qemu_img_create(const char *path, const char *backing, const char *backing_fmt, uint64_t size,
                    const char *log_path);
/* Makes the qcow2 image at path back onto backing (a qcow2), copying in
 * whatever the chain between them held. */
int qemu_img_rebase(const char *path, const char *backing, const char *log_path);
/* Grows (or shrinks) the qcow2 image at path to bytes. */
int qemu_img_resize(const char *path, uint64_t bytes, const char *log_path);
/* The virtual size of a qcow2 image, read from its header. 0, -EBADMSG for
 * a file that is no qcow2 image, or -errno. */
int qemu_img_size(const char *path, uint64_t *ret);
/* The backing file a qcow2 image names in its header ("" when none),
 * read without qemu-img. 0, -EBADMSG, -ENAMETOOLONG or -errno. */
int qemu_img_backing(const char *path, char *out, size_t size);

#endif

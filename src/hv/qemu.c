/*
 * qemu: spawns and controls QEMU processes. Depends on qmp and util.
 * It must never pass anything from an API request onto QEMU's command line:
 * every argument is built from daemon configuration and paths it made.
 */
#include "hv/jail.h"
#include "hv/qemu.h"
#include "hv/qmp.h"
#include "lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int qemu_pick_accel(const char *want, enum qemu_accel *ret)
{
        if (want && !strcmp(want, "kvm")) {
                *ret = QEMU_ACCEL_KVM;
                return 0;
        }
        if (want && !strcmp(want, "tcg")) {
                *ret = QEMU_ACCEL_TCG;
                return 0;
        }
        if (want && strcmp(want, "auto"))
                return -EINVAL;
        /* /dev/kvm alone is not enough: nested paravirtual KVM (kvm_pvm)
         * opens fine but runs guest kernels hundreds of times slower than
         * TCG. Only real VT-x/AMD-V modules mean KVM is worth using. */
        if ((access("/sys/module/kvm_intel", F_OK) == 0 || access("/sys/module/kvm_amd", F_OK) == 0) &&
            access("/dev/kvm", R_OK | W_OK) == 0)
                *ret = QEMU_ACCEL_KVM;
        else
                *ret = QEMU_ACCEL_TCG;
        return 0;
}

const char *qemu_accel_name(enum qemu_accel a)
{
        return a == QEMU_ACCEL_KVM ? "kvm" : "tcg";
}

/* The guest kernel command line: the image's own fragment plus the host's
 * TSC rate, which spares the guest a PIT calibration that sometimes hangs
 * for good under TCG (PLATFORM.md). */
int qemu_kernel_cmdline(const char *image_dir, char *out, size_t size)
{
        char path[PATH_MAX], *frag = NULL, *cpuinfo = NULL;
        const char *mhz;
        long khz = 0;
        int r;

        if (path_fmt(path, sizeof(path), "%s/cmdline", image_dir) < 0)
                return -ENAMETOOLONG;
        if (read_file(path, 4096, &frag, NULL) < 0)
                frag = strdup("console=ttyS0 root=/dev/vda rw");
        if (!frag)
                return -ENOMEM;
        frag[strcspn(frag, "\n")] = 0;
        if (read_file("/proc/cpuinfo", 4 << 20, &cpuinfo, NULL) == 0) {
                mhz = strstr(cpuinfo, "cpu MHz");
                if (mhz && (mhz = strchr(mhz, ':')))
                        khz = (long)(strtod(mhz + 1, NULL) * 1000);
                free(cpuinfo);
        }
        if (khz > 0)
                r = path_fmt(out, size, "%s tsc_early_khz=%ld", frag, khz);
        else
                r = path_fmt(out, size, "%s", frag);
        free(frag);
        return r;
}

/* The absolute path of a program found in PATH. */
static int find_program(const char *name, char out[PATH_MAX])
{
        const char *path = getenv("PATH");
        char dirs[4096], *dir, *save = NULL;

        snprintf(dirs, sizeof(dirs), "%s", path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
        for (dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save))
                if (path_fmt(out, PATH_MAX, "%s/%s", dir, name) == 0 && access(out, X_OK) == 0)
                        return 0;
        return -ENOENT;
}

static int pidfd_open_(pid_t pid)
{
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

int qemu_spawn(const struct qemu_config *c, int timeout_ms, struct qemu **ret)
{
        char qmp_arg[4200], agent_arg[4200], serial_arg[4200], mem_arg[4300], drive_arg[4200], m_arg[64];
        char log_path[4096], pid_path[4096], qmp_path[4096], pid_text[32];
        char net_arg[64], qemu_bin[PATH_MAX];
        struct qemu *q;
        pid_t pid;
        int r, log_fd;

        if (find_program("qemu-system-x86_64", qemu_bin) < 0)
                return -ENOENT;
        if (c->jail && c->jail->tap)
                snprintf(net_arg, sizeof(net_arg), "tap,id=net0,fd=%d", c->jail->tap_fd);
        else
                snprintf(net_arg, sizeof(net_arg), "user,id=net0");
        if (path_fmt(qmp_path, sizeof(qmp_path), "%s/qmp.sock", c->dir) < 0 ||
            path_fmt(qmp_arg, sizeof(qmp_arg), "unix:%s,server=on,wait=off", qmp_path) < 0 ||
            path_fmt(agent_arg, sizeof(agent_arg), "socket,id=agent,path=%s/agent.sock,server=on,wait=off",
                     c->dir) < 0 ||
            path_fmt(serial_arg, sizeof(serial_arg), "file,id=ser0,path=%s/console.log,append=on", c->dir) < 0 ||
            path_fmt(mem_arg, sizeof(mem_arg), "memory-backend-file,id=mem,size=%dM,mem-path=%s,share=%s",
                     c->mem_mb, c->mem_path, c->mem_shared ? "on" : "off") < 0 ||
            path_fmt(drive_arg, sizeof(drive_arg),
                     "id=root,file=%s,format=qcow2,if=none,discard=unmap,werror=enospc,rerror=report", c->disk) < 0 ||
            path_fmt(log_path, sizeof(log_path), "%s/qemu.log", c->dir) < 0 ||
            path_fmt(pid_path, sizeof(pid_path), "%s/qemu.pid", c->dir) < 0)
                return -ENAMETOOLONG;
        snprintf(m_arg, sizeof(m_arg), "%dM", c->mem_mb);
        /* Stale sockets from an earlier run would make QEMU fail to bind. */
        unlink(qmp_path);

        char smp[16];
        snprintf(smp, sizeof(smp), "%d", c->vcpus);
        const char *argv[64];
        int n = 0;
        argv[n++] = qemu_bin;
        argv[n++] = "-nodefaults";
        argv[n++] = "-no-user-config";
        argv[n++] = "-nographic";
        argv[n++] = "-no-reboot";
        argv[n++] = "-M";
        argv[n++] = "microvm,rtc=on,memory-backend=mem";
        argv[n++] = "-cpu";
        argv[n++] = "max";
        argv[n++] = "-accel";
        /* TCG's translation cache is anonymous memory QEMU grows up to
         * tb-size (1 GiB by default): bounded, so that it and the guest's
         * RAM (on a tmpfs, never reclaimed) fit the VM's cgroup. */
        argv[n++] = c->accel == QEMU_ACCEL_KVM ? "kvm" : "tcg,thread=multi,tb-size=256";
        argv[n++] = "-smp";
        argv[n++] = smp;
        argv[n++] = "-m";
        argv[n++] = m_arg;
        argv[n++] = "-object";
        argv[n++] = mem_arg;
        argv[n++] = "-kernel";
        argv[n++] = c->kernel;
        argv[n++] = "-initrd";
        argv[n++] = c->initrd;
        argv[n++] = "-append";
        argv[n++] = c->cmdline;
        argv[n++] = "-chardev";
        argv[n++] = serial_arg;
        argv[n++] = "-serial";
        argv[n++] = "chardev:ser0";
        argv[n++] = "-drive";
        argv[n++] = drive_arg;
        argv[n++] = "-device";
        argv[n++] = "virtio-blk-device,drive=root";
        argv[n++] = "-netdev";
        argv[n++] = net_arg;
        argv[n++] = "-device";
        argv[n++] = "virtio-net-device,netdev=net0";
        argv[n++] = "-device";
        argv[n++] = "virtio-serial-device";
        argv[n++] = "-chardev";
        argv[n++] = agent_arg;
        argv[n++] = "-device";
        argv[n++] = "virtserialport,chardev=agent,name=agent";
        argv[n++] = "-qmp";
        argv[n++] = qmp_arg;
        /* Its own seccomp filter: no spawning (migrations go through file
         * descriptors handed over QMP), no privileges, no resource
         * control, no obsolete system calls. */
        argv[n++] = "-sandbox";
        argv[n++] = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
        if (c->incoming) {
                argv[n++] = "-incoming";
                argv[n++] = "defer";
        }
        argv[n] = NULL;

        /* Its own session (a signal to the daemon's process group, Ctrl-C
         * or a test harness killing the daemon, must not take the VMs
         * down) and, with a jail, its own uid and namespaces. */
        log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0)
                return -errno;
        r = jail_spawn(c->jail, (char *const *)argv, log_fd, &pid);
        close(log_fd);
        if (r < 0)
                return r;

        q = calloc(1, sizeof(*q));
        if (!q) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                return -ENOMEM;
        }
        q->pid = pid;
        q->pidfd = pidfd_open_(pid);
        snprintf(pid_text, sizeof(pid_text), "%d\n", (int)pid);
        r = write_file_atomic(pid_path, pid_text, strlen(pid_text), 0644);
        if (r == 0)
                r = qmp_connect(qmp_path, timeout_ms, &q->qmp);
        if (r < 0) {
                qemu_stop(q, 0);
                qemu_free(q);
                return r;
        }
        *ret = q;
        return 0;
}

int qemu_attach(const char *dir, int timeout_ms, struct qemu **ret)
{
        char path[4096], *text = NULL, *cmdline = NULL;
        size_t len = 0;
        struct qemu *q;
        long pid;
        int r;

        if (path_fmt(path, sizeof(path), "%s/qemu.pid", dir) < 0)
                return -ENAMETOOLONG;
        r = read_file(path, 64, &text, NULL);
        if (r < 0)
                return r;
        pid = strtol(text, NULL, 10);
        free(text);
        if (pid <= 1)
                return -EBADMSG;
        /* The pid may have been reused: accept it only if that process's
         * command line names this VM's directory. */
        snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
        r = read_file(path, 1 << 20, &cmdline, &len);
        if (r < 0)
                return -ESRCH;
        for (size_t i = 0; i < len; i++)
                if (cmdline[i] == 0)
                        cmdline[i] = ' ';
        r = strstr(cmdline, dir) ? 0 : -ESRCH;
        free(cmdline);
        if (r < 0)
                return r;
        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->pid = (pid_t)pid;
        q->pidfd = pidfd_open_(q->pid);
        if (q->pidfd < 0) {
                free(q);
                return -ESRCH;
        }
        if (path_fmt(path, sizeof(path), "%s/qmp.sock", dir) < 0)
                r = -ENAMETOOLONG;
        else
                r = qmp_connect(path, timeout_ms, &q->qmp);
        if (r < 0) {
                qemu_free(q);
                return r;
        }
        *ret = q;
        return 0;
}

/* Polls query-status (or query-migrate) until want is reached. */
static int wait_status(struct qemu *q, const char *cmd, const char *key, const char *want, const char *fail,
                       int timeout_ms)
{
        int64_t deadline = now_ms() + timeout_ms;

        for (;;) {
                json_t *st = NULL;
                const char *s;
                int r = qmp_call(q->qmp, cmd, NULL, timeout_ms, &st, NULL);

                if (r < 0)
                        return r;
                s = json_string_value(json_object_get(st, key));
                r = s && !strcmp(s, want) ? 1 : s && fail && !strcmp(s, fail) ? -EIO : 0;
                json_decref(st);
                if (r)
                        return r < 0 ? r : 0;
                if (qemu_reap(q))
                        return -ECHILD;
                if (now_ms() >= deadline)
                        return -ETIMEDOUT;
                sleep_ms(2);
        }
}

static int set_ignore_shared(struct qemu *q, int timeout_ms)
{
        json_t *args = json_pack("{s:[{s:s,s:b}]}", "capabilities", "capability", "x-ignore-shared", "state", 1);
        int r;

        if (!args)
                return -ENOMEM;
        r = qmp_call(q->qmp, "migrate-set-capabilities", args, timeout_ms, NULL, NULL);
        json_decref(args);
        return r;
}

/* Runs a migration command (migrate or migrate-incoming) whose stream
 * goes to or from fd, handed to QEMU over QMP, with x-ignore-shared set
 * (the RAM stays in the shared memory file), and waits for it to
 * complete. */
static int migrate(struct qemu *q, const char *cmd, int fd, int timeout_ms)
{
        json_t *args;
        int r = set_ignore_shared(q, timeout_ms);

        if (r == 0)
                r = qmp_pass_fd(q->qmp, "migration", fd, timeout_ms);
        if (r < 0)
                return r;
        args = json_pack("{s:s}", "uri", "fd:migration");
        if (!args)
                return -ENOMEM;
        r = qmp_call(q->qmp, cmd, args, timeout_ms, NULL, NULL);
        json_decref(args);
        if (r < 0)
                return r;
        return wait_status(q, "query-migrate", "status", "completed", "failed", timeout_ms);
}

int qemu_restore(struct qemu *q, const char *state_path, int timeout_ms)
{
        int fd = open(state_path, O_RDONLY | O_CLOEXEC), r;

        if (fd < 0)
                return -errno;
        r = migrate(q, "migrate-incoming", fd, timeout_ms);
        close(fd);
        /* The state was saved from a paused guest, and QEMU keeps the
         * source's run state: the caller resumes it. */
        return r;
}

int qemu_save(struct qemu *q, const char *state_path, int timeout_ms)
{
        int fd, r = qmp_call(q->qmp, "stop", NULL, timeout_ms, NULL, NULL);

        if (r < 0)
                return r;
        fd = open(state_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        r = migrate(q, "migrate", fd, timeout_ms);
        /* The state must be on disk before anything names it as saved. */
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        close(fd);
        return r;
}

int qemu_cont(struct qemu *q, int timeout_ms)
{
        return qmp_call(q->qmp, "cont", NULL, timeout_ms, NULL, NULL);
}

int qemu_snapshot_disk(struct qemu *q, const char *overlay, int timeout_ms)
{
        json_t *args = json_pack("{s:s,s:s,s:s,s:s}", "device", "root", "snapshot-file", overlay, "format", "qcow2",
                                 "mode", "existing");
        int r;

        if (!args)
                return -ENOMEM;
        r = qmp_call(q->qmp, "blockdev-snapshot-sync", args, timeout_ms, NULL, NULL);
        json_decref(args);
        return r;
}

int qemu_resize_disk(struct qemu *q, uint64_t bytes, int timeout_ms)
{
        json_t *args = json_pack("{s:s,s:I}", "device", "root", "size", (json_int_t)bytes);
        int r;

        if (!args)
                return -ENOMEM;
        r = qmp_call(q->qmp, "block_resize", args, timeout_ms, NULL, NULL);
        json_decref(args);
        return r;
}

int qemu_status(struct qemu *q, char *out, size_t size, int timeout_ms)
{
        json_t *st = NULL;
        int r = qmp_call(q->qmp, "query-status", NULL, timeout_ms, &st, NULL);
        const char *s = r == 0 ? json_string_value(json_object_get(st, "status")) : NULL;

        if (r == 0)
                r = s ? 0 : -EBADMSG;
        if (r == 0)
                snprintf(out, size, "%s", s);
        json_decref(st);
        return r;
}

int qemu_paused(struct qemu *q, int timeout_ms)
{
        json_t *st = NULL;
        int r = qmp_call(q->qmp, "query-status", NULL, timeout_ms, &st, NULL);

        if (r == 0)
                r = !json_is_true(json_object_get(st, "running"));
        json_decref(st);
        return r;
}

int qemu_active_disk(struct qemu *q, char *out, size_t size, int timeout_ms)
{
        json_t *list = NULL, *dev;
        size_t i;
        int r = qmp_call(q->qmp, "query-block", NULL, timeout_ms, &list, NULL);

        if (r < 0)
                return r;
        r = -ENOENT;
        json_array_foreach(list, i, dev)
        {
                const char *name = json_string_value(json_object_get(dev, "device"));
                const char *file = json_string_value(json_object_get(json_object_get(dev, "inserted"), "file"));

                if (name && file && !strcmp(name, "root")) {
                        r = snprintf(out, size, "%s", file) < (int)size ? 0 : -ENAMETOOLONG;
                        break;
                }
        }
        json_decref(list);
        return r;
}

int qemu_frozen(struct qemu *q)
{
        char path[64], *text = NULL, *paren;
        int r;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)q->pid);
        r = read_file(path, 4096, &text, NULL);
        if (r < 0)
                return r;
        /* "pid (comm) S ...": the state follows the last ')'. */
        paren = strrchr(text, ')');
        r = paren && (paren[2] == 'T' || paren[2] == 't');
        free(text);
        return r;
}

int qemu_reap(struct qemu *q)
{
        int status;
        pid_t r;

        if (q->exited)
                return 1;
        r = waitpid(q->pid, &status, WNOHANG);
        if (r == q->pid) {
                q->exited = 1;
                q->status = status;
                return 1;
        }
        if (r < 0 && errno == ECHILD) {
                /* Not our child (re-attached after a restart): the pidfd
                 * says whether it is still there. */
                struct pollfd p = {.fd = q->pidfd, .events = POLLIN};

                if (q->pidfd < 0 || poll(&p, 1, 0) == 1) {
                        q->exited = 1;
                        q->status = -1; /* not ours to reap: status unknown */
                        return 1;
                }
        }
        return 0;
}

void qemu_stop(struct qemu *q, int timeout_ms)
{
        int64_t deadline = now_ms() + timeout_ms;

        if (qemu_reap(q))
                return;
        if (q->qmp && timeout_ms > 0)
                qmp_call(q->qmp, "quit", NULL, timeout_ms, NULL, NULL);
        while (!qemu_reap(q) && now_ms() < deadline)
                sleep_ms(5);
        if (!qemu_reap(q)) {
                kill(q->pid, SIGKILL);
                while (!qemu_reap(q))
                        sleep_ms(2);
        }
}

const char *qemu_last_error(struct qemu *q)
{
        return q ? qmp_last_error(q->qmp) : "";
}

void qemu_free(struct qemu *q)
{
        if (!q)
                return;
        qmp_close(q->qmp);
        if (q->pidfd >= 0)
                close(q->pidfd);
        free(q);
}

/* Runs qemu-img with argv; a failing run is -EIO. */
static int img_run(char *const argv[], const char *log_path)
{
        int r = run_wait(argv, log_path);

        return r > 0 ? -EIO : r;
}

int qemu_img_create(const char *path, const char *backing, const char *backing_fmt, uint64_t size,
                    const char *log_path)
{
        char bytes[32];

        snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)size);
        if (size == 0) {
                char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", (char *)backing_fmt, "-b",
                                (char *)backing, (char *)path, NULL};

                return img_run(argv, log_path);
        }
        /* -u: the backing image is not opened, so QEMU may hold it. */
        char *argv[] = {"qemu-img", "create", "-q", "-u", "-f", "qcow2", "-F", (char *)backing_fmt, "-b",
                        (char *)backing, (char *)path, bytes, NULL};

        return img_run(argv, log_path);
}

int qemu_img_rebase(const char *path, const char *backing, const char *log_path)
{
        char *argv[] = {"qemu-img", "rebase", "-q", "-f", "qcow2", "-F", "qcow2", "-b", (char *)backing, (char *)path,
                        NULL};

        return img_run(argv, log_path);
}

int qemu_img_resize(const char *path, uint64_t bytes, const char *log_path)
{
        char size[32];

        snprintf(size, sizeof(size), "%llu", (unsigned long long)bytes);
        char *argv[] = {"qemu-img", "resize", "-q", "-f", "qcow2", (char *)path, size, NULL};

        return img_run(argv, log_path);
}

int qemu_img_size(const char *path, uint64_t *ret)
{
        uint8_t h[32];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = pread(fd, h, sizeof(h), 0);
        close(fd);
        if (n != (ssize_t)sizeof(h) || memcmp(h, "QFI\xfb", 4))
                return -EBADMSG;
        *ret = 0;
        for (int i = 24; i < 32; i++)
                *ret = *ret << 8 | h[i];
        return 0;
}

int qemu_img_backing(const char *path, char *out, size_t size)
{
        uint8_t h[20];
        uint64_t off = 0;
        uint32_t len = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC), r = 0;
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = pread(fd, h, sizeof(h), 0);
        if (n != (ssize_t)sizeof(h) || memcmp(h, "QFI\xfb", 4))
                r = -EBADMSG;
        for (int i = 8; r == 0 && i < 16; i++)
                off = off << 8 | h[i];
        for (int i = 16; r == 0 && i < 20; i++)
                len = len << 8 | h[i];
        if (r == 0 && len >= size)
                r = -ENAMETOOLONG;
        if (r == 0 && off && pread(fd, out, len, (off_t)off) != (ssize_t)len)
                r = -EBADMSG;
        close(fd);
        if (r == 0)
                out[off ? len : 0] = 0;
        return r;
}

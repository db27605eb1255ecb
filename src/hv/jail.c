/*
 * jail: see jail.h. Depends on util (in the parent only). Everything the
 * child does between fork and exec is a system call on memory prepared
 * before the fork: no allocation, no locks, no stdio.
 */
#include "hv/jail.h"
#include "lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The program files every jail shows, read-only. On a merged-/usr system
 * the top-level ones are symlinks, made again as symlinks. */
static const char *const system_paths[] = {"/usr",           "/bin",           "/sbin", "/lib", "/lib64",
                                           "/etc/ld.so.cache", "/etc/resolv.conf", NULL};

enum entry_kind {
        ENTRY_DIR_RO,   /* a directory, bound read-only */
        ENTRY_DIR_RW,   /* a directory, bound read-write */
        ENTRY_FILE_RO,  /* a file, bound read-only */
        ENTRY_DEVICE,   /* a device node, bound as it is */
        ENTRY_SYMLINK,  /* a symlink to target */
};

struct entry {
        enum entry_kind kind;
        char src[PATH_MAX];
        char dst[PATH_MAX];    /* src under the jail's root */
        char target[PATH_MAX]; /* ENTRY_SYMLINK */
};

/* What the child does, all of it decided before the fork. */
struct plan {
        struct entry *entries;
        size_t n;
        char old[PATH_MAX]; /* where the old root goes for pivot_root */
};

/* The steps a child reports a failure of. */
enum step {
        STEP_SESSION = 1,
        STEP_NETNS,
        STEP_TAP,
        STEP_CGROUP,
        STEP_MOUNTNS,
        STEP_ROOT,
        STEP_BIND,
        STEP_PIVOT,
        STEP_IDS,
        STEP_NNP,
        STEP_EXEC,
};

int jail_kill_uid(unsigned uid)
{
        DIR *d = opendir("/proc");
        struct dirent *de;
        int n = 0;

        if (!d || uid == 0)
                return d ? closedir(d), 0 : 0;
        while ((de = readdir(d))) {
                char path[300], line[128];
                unsigned real = 0;
                FILE *f;

                if (de->d_name[0] < '1' || de->d_name[0] > '9')
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/status", de->d_name);
                f = fopen(path, "re");
                if (!f)
                        continue;
                while (fgets(line, sizeof(line), f))
                        if (sscanf(line, "Uid:\t%u", &real) == 1)
                                break;
                fclose(f);
                if (real == uid && kill(atoi(de->d_name), SIGKILL) == 0)
                        n++;
        }
        closedir(d);
        return n;
}

int jail_supported(void)
{
        if (geteuid() != 0)
                return -EPERM;
        if (access("/proc/self/ns/mnt", F_OK) < 0 || access("/proc/self/ns/net", F_OK) < 0)
                return -ENOSYS;
        return 0;
}

static int add_entry(struct plan *p, enum entry_kind kind, const char *root, const char *src)
{
        struct entry *e;
        struct entry *grown = realloc(p->entries, (p->n + 1) * sizeof(*p->entries));

        if (!grown)
                return -ENOMEM;
        p->entries = grown;
        e = &p->entries[p->n];
        memset(e, 0, sizeof(*e));
        e->kind = kind;
        if (path_fmt(e->src, sizeof(e->src), "%s", src) < 0 || path_fmt(e->dst, sizeof(e->dst), "%s%s", root, src) < 0)
                return -ENAMETOOLONG;
        if (kind == ENTRY_SYMLINK) {
                ssize_t n = readlink(src, e->target, sizeof(e->target) - 1);

                if (n < 0)
                        return -errno;
                e->target[n] = 0;
        }
        p->n++;
        return 0;
}

static int make_plan(const struct jail *j, struct plan *p)
{
        struct stat st;
        int r = 0;

        memset(p, 0, sizeof(*p));
        if (path_fmt(p->old, sizeof(p->old), "%s/.old-root", j->root) < 0)
                return -ENAMETOOLONG;
        /* A symlink to a directory (/bin -> usr/bin) is made again; one to
         * a file (/etc/resolv.conf, which user-mode networking reads) is
         * bound as the file it names. */
        for (size_t i = 0; r == 0 && system_paths[i]; i++) {
                struct stat target;

                if (lstat(system_paths[i], &st) < 0 || stat(system_paths[i], &target) < 0)
                        continue;
                r = add_entry(p,
                              S_ISDIR(target.st_mode) && S_ISLNK(st.st_mode) ? ENTRY_SYMLINK
                              : S_ISDIR(target.st_mode)                      ? ENTRY_DIR_RO
                                                                             : ENTRY_FILE_RO,
                              j->root, system_paths[i]);
        }
        for (size_t i = 0; r == 0 && j->devices && j->devices[i]; i++)
                r = add_entry(p, ENTRY_DEVICE, j->root, j->devices[i]);
        for (size_t i = 0; r == 0 && j->ro && j->ro[i]; i++) {
                if (stat(j->ro[i], &st) < 0)
                        return -errno;
                r = add_entry(p, S_ISDIR(st.st_mode) ? ENTRY_DIR_RO : ENTRY_FILE_RO, j->root, j->ro[i]);
        }
        if (r == 0 && j->rw)
                r = add_entry(p, ENTRY_DIR_RW, j->root, j->rw);
        return r;
}

/* ---- in the child: system calls only ---- */

/* mkdir -p of path's directories (all of it, or all but the last part). */
static int child_mkdirs(char *path, int all)
{
        size_t n = strlen(path);

        for (size_t i = 1; i <= n; i++) {
                if (path[i] != '/' && path[i] != 0)
                        continue;
                if (path[i] == 0 && !all)
                        break;
                path[i] = 0;
                if (mkdir(path, 0755) < 0 && errno != EEXIST)
                        return -1;
                if (i < n)
                        path[i] = '/';
        }
        return 0;
}

static int child_bind(struct entry *e)
{
        unsigned long ro = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV;

        switch (e->kind) {
        case ENTRY_SYMLINK:
                return child_mkdirs(e->dst, 0) < 0 || symlink(e->target, e->dst) < 0 ? -1 : 0;
        case ENTRY_DIR_RO:
        case ENTRY_DIR_RW:
                if (child_mkdirs(e->dst, 1) < 0 || mount(e->src, e->dst, NULL, MS_BIND | MS_REC, NULL) < 0)
                        return -1;
                if (e->kind == ENTRY_DIR_RW)
                        return mount(NULL, e->dst, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, NULL);
                return mount(NULL, e->dst, NULL, ro, NULL);
        case ENTRY_FILE_RO:
        case ENTRY_DEVICE: {
                int fd;

                if (child_mkdirs(e->dst, 0) < 0)
                        return -1;
                fd = open(e->dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                if (fd < 0)
                        return -1;
                close(fd);
                if (mount(e->src, e->dst, NULL, MS_BIND, NULL) < 0)
                        return -1;
                return e->kind == ENTRY_DEVICE ? 0 : mount(NULL, e->dst, NULL, ro, NULL);
        }
        }
        return -1;
}

static const char *const step_names[] = {
        [STEP_SESSION] = "jail: setting up the session failed\n",
        [STEP_NETNS] = "jail: entering the network namespace failed\n",
        [STEP_TAP] = "jail: opening the TAP device failed\n",
        [STEP_CGROUP] = "jail: joining a cgroup failed\n",
        [STEP_MOUNTNS] = "jail: making the mount namespace failed\n",
        [STEP_ROOT] = "jail: mounting the root failed\n",
        [STEP_BIND] = "jail: a bind mount failed\n",
        [STEP_PIVOT] = "jail: pivot_root failed\n",
        [STEP_IDS] = "jail: dropping to the VM's uid failed\n",
        [STEP_NNP] = "jail: no_new_privs failed\n",
        [STEP_EXEC] = "jail: exec failed\n",
};

/* Reports the failed step and errno to the parent (and the log) and
 * exits. */
static void __attribute__((noreturn)) child_fail(int pipe_fd, int log_fd, enum step step)
{
        int msg[2] = {step, errno ? errno : EIO};
        ssize_t w = write(log_fd, step_names[step], strlen(step_names[step]));

        w = write(pipe_fd, msg, sizeof(msg));
        (void)w;
        _exit(127);
}

static int child_tap(const struct jail *j)
{
        struct ifreq ifr;
        int fd = open("/dev/net/tun", O_RDWR);

        if (fd < 0)
                return -1;
        memset(&ifr, 0, sizeof(ifr));
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        strncpy(ifr.ifr_name, j->tap, IFNAMSIZ - 1);
        if (ioctl(fd, TUNSETIFF, &ifr) < 0 || dup2(fd, j->tap_fd) < 0)
                return -1;
        if (fd != j->tap_fd)
                close(fd);
        return 0;
}

static void __attribute__((noreturn)) child_main(const struct jail *j, struct plan *p, char *const argv[], int log_fd,
                                                 int pipe_fd)
{
        static char *const env[] = {"PATH=/usr/bin:/bin", NULL};
        int null_fd;

        if (setsid() < 0)
                child_fail(pipe_fd, log_fd, STEP_SESSION);
        null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
                child_fail(pipe_fd, log_fd, STEP_SESSION);
        if (j && j->netns) {
                int fd = open(j->netns, O_RDONLY | O_CLOEXEC);

                if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
                        child_fail(pipe_fd, log_fd, STEP_NETNS);
                close(fd);
                if (j->tap && child_tap(j) < 0)
                        child_fail(pipe_fd, log_fd, STEP_TAP);
        }
        for (size_t i = 0; j && j->cgroups && j->cgroups[i]; i++) {
                int fd = open(j->cgroups[i], O_WRONLY | O_CLOEXEC);

                if (fd < 0 || write(fd, "0", 1) != 1)
                        child_fail(pipe_fd, log_fd, STEP_CGROUP);
                close(fd);
        }
        if (j && j->uid) {
                gid_t groups[1] = {j->extra_gid};

                if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                        child_fail(pipe_fd, log_fd, STEP_MOUNTNS);
                if (mount("tmpfs", j->root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0)
                        child_fail(pipe_fd, log_fd, STEP_ROOT);
                for (size_t i = 0; i < p->n; i++)
                        if (child_bind(&p->entries[i]) < 0)
                                child_fail(pipe_fd, log_fd, STEP_BIND);
                if (mkdir(p->old, 0700) < 0 || syscall(SYS_pivot_root, j->root, p->old) < 0 || chdir("/") < 0 ||
                    umount2("/.old-root", MNT_DETACH) < 0 || rmdir("/.old-root") < 0 ||
                    mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
                        child_fail(pipe_fd, log_fd, STEP_PIVOT);
                if (setgroups(j->extra_gid ? 1 : 0, groups) < 0 || setresgid(j->gid, j->gid, j->gid) < 0 ||
                    setresuid(j->uid, j->uid, j->uid) < 0)
                        child_fail(pipe_fd, log_fd, STEP_IDS);
        }
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                child_fail(pipe_fd, log_fd, STEP_NNP);
        execve(argv[0], argv, env);
        child_fail(pipe_fd, log_fd, STEP_EXEC);
}

/* ---- in the parent ---- */

int jail_spawn(const struct jail *j, char *const argv[], int log_fd, pid_t *ret_pid)
{
        struct plan p = {0};
        int fds[2], msg[2] = {0, 0}, r = 0;
        ssize_t n;
        pid_t pid;

        if (j && j->uid && (r = make_plan(j, &p)) < 0) {
                free(p.entries);
                return r;
        }
        if (pipe2(fds, O_CLOEXEC) < 0) {
                free(p.entries);
                return -errno;
        }
        pid = fork();
        if (pid < 0) {
                r = -errno;
                close(fds[0]);
                close(fds[1]);
                free(p.entries);
                return r;
        }
        if (pid == 0) {
                close(fds[0]);
                child_main(j, &p, argv, log_fd, fds[1]);
        }
        close(fds[1]);
        free(p.entries);
        /* Nothing comes through the pipe when exec worked: its write end
         * closed on exec. */
        do
                n = read(fds[0], msg, sizeof(msg));
        while (n < 0 && errno == EINTR);
        close(fds[0]);
        if (n == (ssize_t)sizeof(msg)) {
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                return -msg[1];
        }
        *ret_pid = pid;
        return 0;
}

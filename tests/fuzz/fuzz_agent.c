/*
 * fuzz_agent: sprout-agent's request handling (agent/) on arbitrary bytes
 * from the host: the port's frame parser, dispatch, and every op's request
 * decoding and validation, up to the point where the op would act on the
 * machine. The agent's sources are compiled into this file, with their
 * system calls that change anything routed to the sandbox below, so no
 * fuzz input can run a command, write or rename a file, set the clock or
 * switch the process's identity:
 *
 *   fork, posix_openpt   fail (EAGAIN): no command or terminal starts
 *   open, opendir, stat, lstat, inotify_add_watch
 *                        read-only, inside a scratch tree made at start
 *                        (paths with ".." are refused)
 *   mkdir, rename, unlink, fchown, fchmod, clock_settime, sethostname,
 *   symlink              do nothing
 *   mkostemp             an anonymous memfd (an upload's temp file)
 *   setgroups, setfsuid, setfsgid
 *                        pretend
 *   writev               the frames the agent sends, captured and checked
 *
 * The agent's own log lines go to /dev/null. Each input is fed to the
 * port's buffer in chunks (the first byte picks the chunk size, so frames
 * arrive split as a real port splits them), then every stream the input
 * left open is abandoned, as on a host disconnect.
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pty.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- sandbox */

static char sandbox_root[64];
static FILE *agent_log_sink;
static uid_t fake_fsuid;
static gid_t fake_fsgid;

/* What the agent sent during one input. */
static struct {
        uint8_t *data;
        size_t len, cap;
        int dropped; /* past the cap: not kept, not checked */
} sent;

/* path inside the scratch tree into buf; -1 (errno set) for one that
 * could leave it. */
static int sandbox_path(const char *path, char *buf, size_t size)
{
        const char *p = path;

        for (; *p; p++)
                if (p[0] == '.' && p[1] == '.' && (p == path || p[-1] == '/') && (p[2] == 0 || p[2] == '/')) {
                        errno = EACCES;
                        return -1;
                }
        if (snprintf(buf, size, "%s/%s", sandbox_root, path[0] == '/' ? path + 1 : path) >= (int)size) {
                errno = ENAMETOOLONG;
                return -1;
        }
        return 0;
}

static int fuzz_open(const char *path, int flags, ...)
{
        char p[PATH_MAX + 64];

        if (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND)) {
                errno = EROFS;
                return -1;
        }
        if (sandbox_path(path, p, sizeof(p)) < 0)
                return -1;
        return open(p, flags);
}

static DIR *fuzz_opendir(const char *path)
{
        char p[PATH_MAX + 64];

        return sandbox_path(path, p, sizeof(p)) < 0 ? NULL : opendir(p);
}

static int fuzz_stat(const char *path, struct stat *st)
{
        char p[PATH_MAX + 64];

        return sandbox_path(path, p, sizeof(p)) < 0 ? -1 : stat(p, st);
}

static int fuzz_lstat(const char *path, struct stat *st)
{
        char p[PATH_MAX + 64];

        return sandbox_path(path, p, sizeof(p)) < 0 ? -1 : lstat(p, st);
}

static int fuzz_inotify_add_watch(int fd, const char *path, uint32_t mask)
{
        char p[PATH_MAX + 64];

        return sandbox_path(path, p, sizeof(p)) < 0 ? -1 : inotify_add_watch(fd, p, mask);
}

/* Directories that exist are there; no other can be made. */
static int fuzz_mkdir(const char *path, mode_t mode)
{
        struct stat st;

        (void)mode;
        errno = fuzz_stat(path, &st) == 0 ? EEXIST : EROFS;
        return -1;
}

static int fuzz_mkostemp(char *tmpl, int flags)
{
        (void)tmpl;
        return memfd_create("fuzz-upload", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
}

static int fuzz_ok_path(const char *path)
{
        (void)path;
        return 0;
}

static int fuzz_ok_rename(const char *from, const char *to)
{
        (void)from, (void)to;
        return 0;
}

static int fuzz_ok_fchown(int fd, uid_t uid, gid_t gid)
{
        (void)fd, (void)uid, (void)gid;
        return 0;
}

static int fuzz_ok_fchmod(int fd, mode_t mode)
{
        (void)fd, (void)mode;
        return 0;
}

static int fuzz_ok_clock_settime(clockid_t c, const struct timespec *ts)
{
        (void)c, (void)ts;
        return 0;
}

static int fuzz_setgroups(size_t n, const gid_t *groups)
{
        (void)n, (void)groups;
        return 0;
}

static int fuzz_setfsuid(uid_t uid)
{
        uid_t was = fake_fsuid;

        if (uid != (uid_t)-1)
                fake_fsuid = uid;
        return (int)was;
}

static int fuzz_setfsgid(gid_t gid)
{
        gid_t was = fake_fsgid;

        if (gid != (gid_t)-1)
                fake_fsgid = gid;
        return (int)was;
}

static int fuzz_ok_sethostname(const char *name, size_t len)
{
        (void)name, (void)len;
        return 0;
}

static pid_t fuzz_fork(void)
{
        errno = EAGAIN;
        return -1;
}

static int fuzz_posix_openpt(int flags)
{
        (void)flags;
        errno = EAGAIN;
        return -1;
}

static ssize_t fuzz_writev(int fd, const struct iovec *iov, int iovcnt)
{
        size_t total = 0;

        (void)fd;
        for (int i = 0; i < iovcnt; i++) {
                size_t n = iov[i].iov_len;

                total += n;
                if (sent.dropped || sent.len + n > (16u << 20)) {
                        sent.dropped = 1;
                        continue;
                }
                if (sent.len + n > sent.cap) {
                        size_t cap = sent.cap ? sent.cap : 65536;
                        uint8_t *d;

                        while (cap < sent.len + n)
                                cap *= 2;
                        d = realloc(sent.data, cap);
                        FUZZ_CHECK(d != NULL);
                        sent.data = d;
                        sent.cap = cap;
                }
                memcpy(sent.data + sent.len, iov[i].iov_base, n);
                sent.len += n;
        }
        return (ssize_t)total;
}

/* Writes a file of the scratch tree. */
static void sandbox_file(const char *rel, const char *text)
{
        char p[PATH_MAX];
        FILE *f;

        snprintf(p, sizeof(p), "%s/%s", sandbox_root, rel);
        f = fopen(p, "w");
        FUZZ_CHECK(f != NULL);
        fputs(text, f);
        fclose(f);
}

static void sandbox_dir(const char *rel)
{
        char p[PATH_MAX];

        snprintf(p, sizeof(p), "%s/%s", sandbox_root, rel);
        FUZZ_CHECK(mkdir(p, 0755) == 0);
}

static void sandbox_remove(void)
{
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sandbox_root);
        if (system(cmd) != 0)
                fprintf(stderr, "fuzz_agent: could not remove %s\n", sandbox_root);
}

/* A small tree for reads, stats, listings and watches. */
static void sandbox_make(void)
{
        snprintf(sandbox_root, sizeof(sandbox_root), "/tmp/sprout-fuzz-agent-XXXXXX");
        FUZZ_CHECK(mkdtemp(sandbox_root) != NULL);
        atexit(sandbox_remove);
        sandbox_dir("etc");
        sandbox_dir("home");
        sandbox_dir("home/app");
        sandbox_dir("home/app/src");
        sandbox_dir("proc");
        sandbox_dir("proc/sys");
        sandbox_dir("proc/sys/kernel");
        sandbox_dir("proc/sys/kernel/random");
        sandbox_file("etc/hostname", "vm\n");
        sandbox_file("home/app/notes.txt", "hello from the guest\n");
        sandbox_file("home/app/empty", "");
        sandbox_file("home/app/src/main.c", "int main(void) { return 0; }\n");
        sandbox_file("proc/sys/kernel/random/boot_id", "6a2f1c2e-0b7e-4d57-9f0e-9c0f3b7a8d11\n");
        {
                char link[PATH_MAX];

                snprintf(link, sizeof(link), "%s/home/app/link", sandbox_root);
                FUZZ_CHECK(symlink("notes.txt", link) == 0);
        }
}

/* ---------------------------------------------------------------- the agent */

/* Only the agent's code below sees these; the fakes above call the real
 * functions. */
#define open(...) fuzz_open(__VA_ARGS__)
#define opendir(p) fuzz_opendir(p)
#define stat(p, st) fuzz_stat(p, st)
#define lstat(p, st) fuzz_lstat(p, st)
#define inotify_add_watch(fd, p, m) fuzz_inotify_add_watch(fd, p, m)
#define mkdir(p, m) fuzz_mkdir(p, m)
#define mkostemp(t, f) fuzz_mkostemp(t, f)
#define rename(a, b) fuzz_ok_rename(a, b)
#define unlink(p) fuzz_ok_path(p)
#define fchown(fd, u, g) fuzz_ok_fchown(fd, u, g)
#define fchmod(fd, m) fuzz_ok_fchmod(fd, m)
#define clock_settime(c, ts) fuzz_ok_clock_settime(c, ts)
#define setgroups(n, g) fuzz_setgroups(n, g)
#define setfsuid(u) fuzz_setfsuid(u)
#define setfsgid(g) fuzz_setfsgid(g)
#define sethostname(n, l) fuzz_ok_sethostname(n, l)
#define symlink(a, b) fuzz_ok_rename(a, b)
#define fork() fuzz_fork()
#define posix_openpt(f) fuzz_posix_openpt(f)
#define writev(fd, iov, n) fuzz_writev(fd, iov, n)
#undef stderr
#define stderr agent_log_sink
#define main agent_main

#include "../../agent/agent.c"
#include "../../agent/exec.c"
#include "../../agent/fs.c"
#include "../../agent/ident.c"
#include "../../agent/pty.c"
#include "../../agent/term.c"
#include "../../agent/watch.c"

#undef main
#undef stderr
#define stderr stderr

/* ---------------------------------------------------------------- harness */

static struct agent the_agent;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        struct agent *a = &the_agent;

        (void)argc, (void)argv;
        sandbox_make();
        agent_log_sink = fopen("/dev/null", "w");
        FUZZ_CHECK(agent_log_sink != NULL);
        a->in = malloc(AGENT_IN_CAP);
        FUZZ_CHECK(a->in != NULL);
        a->port_fd = -1;
        a->sig_fd = -1;
        a->null_fd = -1;
        a->connected = 1;
        a->exit_on_eof = 0;
        getrlimit(RLIMIT_NOFILE, &a->nofile);
        fake_fsuid = geteuid();
        fake_fsgid = getegid();
        return 0;
}

/* The frames the agent sent: sound headers, only the types an agent
 * sends, and RESULT and HELLO payloads that are sound TLV with the
 * fields they must have. Returns the number of RESULT and HELLO frames. */
static size_t check_sent(void)
{
        size_t off = 0, answers = 0;

        while (off < sent.len) {
                struct proto_hdr h;
                struct proto_iter it;
                struct proto_tlv t;
                const uint8_t *p;
                uint32_t v;
                int r;

                FUZZ_CHECK(sent.len - off >= PROTO_HDR_SIZE);
                FUZZ_CHECK(proto_hdr_decode(sent.data + off, &h) == 0);
                FUZZ_CHECK(sent.len - off - PROTO_HDR_SIZE >= h.len);
                p = sent.data + off + PROTO_HDR_SIZE;
                switch (h.type) {
                case PROTO_T_DATA:
                case PROTO_T_STDOUT:
                case PROTO_T_STDERR:
                        FUZZ_CHECK(h.len <= AGENT_CHUNK);
                        break;
                case PROTO_T_HELLO:
                        FUZZ_CHECK(proto_get_u32(p, h.len, PROTO_TAG_VERSION, &v) == 0 && v == PROTO_VERSION);
                        answers++;
                        break;
                case PROTO_T_RESULT:
                        proto_iter_init(&it, p, h.len);
                        while ((r = proto_iter_next(&it, &t)) > 0)
                                ;
                        FUZZ_CHECK(r == 0);
                        r = proto_get_u32(p, h.len, PROTO_TAG_ERRNO, &v);
                        FUZZ_CHECK(r == 0 || r == -ENOENT);
                        if (r == 0) {
                                char *msg = NULL;

                                FUZZ_CHECK(v > 0 && v < 4096);
                                FUZZ_CHECK(proto_get_str(p, h.len, PROTO_TAG_ERRMSG, &msg) == 0);
                                free(msg);
                        }
                        answers++;
                        break;
                default:
                        FUZZ_CHECK(!"a frame type the agent never sends");
                }
                off += PROTO_HDR_SIZE + h.len;
        }
        return answers;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const size_t chunks[] = {1, 7, 12, 13, 64, 4096, 65536, AGENT_IN_CAP};
        struct agent *a = &the_agent;
        size_t chunk = chunks[size ? data[0] % 8 : 7], off = size ? 1 : 0;

        sent.len = 0;
        sent.dropped = 0;
        a->in_len = 0;
        a->lost = 0;
        while (off < size) {
                size_t n = size - off;

                if (n > chunk)
                        n = chunk;
                if (n > AGENT_IN_CAP - a->in_len)
                        n = AGENT_IN_CAP - a->in_len;
                /* A whole frame always fits in what port_parse leaves. */
                FUZZ_CHECK(n > 0);
                memcpy(a->in + a->in_len, data + off, n);
                a->in_len += n;
                off += n;
                port_parse(a);
                FUZZ_CHECK(a->in_len < PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD + PROTO_HDR_SIZE);
                FUZZ_CHECK(!a->lost);
        }
        /* The host goes away: every stream the input opened ends. */
        streams_abandon(a);
        FUZZ_CHECK(a->streams == NULL && a->n_streams == 0 && a->n_watches == 0);
        FUZZ_CHECK(fake_fsuid == geteuid() && fake_fsgid == getegid());

        /* Each answer is to a frame of the host's, which takes at least a
         * header's bytes. */
        if (!sent.dropped)
                FUZZ_CHECK(check_sent() <= size / PROTO_HDR_SIZE);
        return 0;
}

/*
 * Host-side tests of sprout-agent: each test starts build/sprout-agent (or
 * $SPROUT_AGENT) with --fd over a socketpair and drives it with real frames,
 * as sproutd does over the virtio-serial port. The agent acts on this
 * machine's filesystem and processes, so file tests work in a fresh
 * directory under /tmp. USER tests need root and are skipped otherwise.
 * The agent's stderr is silenced unless $SPROUT_TEST_VERBOSE is set.
 */
#include "agent_proc.h"
#include "proto.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- harness */

struct ta {
        pid_t pid;
        int fd;
        uint8_t *buf; /* received bytes not yet parsed into frames */
        size_t len;
        size_t cap;
};

struct ta_frame {
        uint32_t stream;
        uint16_t type;
        uint32_t len;
        uint8_t *p; /* malloc'd copy of the payload */
};

/* What came back on one stream. */
struct ta_res {
        uint32_t id;
        struct proto_buf out;    /* STDOUT bytes */
        struct proto_buf err;    /* STDERR bytes */
        struct proto_buf data;   /* DATA bytes */
        struct proto_buf result; /* the RESULT payload */
        int done;                /* RESULT seen */
        int bad;                 /* a frame broke the protocol (oversize, after RESULT) */
};

static uint64_t ta_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *ta_agent_path(void)
{
        return unit_agent_path();
}

/* Starts the agent on one end of a socketpair. Returns 0 or -1 (with a
 * message on stderr saying why). */
static int ta_start(struct ta *t)
{
        *t = (struct ta){.pid = -1, .fd = -1};
        return unit_agent_spawn(&t->pid, &t->fd);
}

/* Waits up to timeout_ms for the agent to exit; kills it if it does not.
 * Returns its wait status, or -1 if it had to be killed. */
static int ta_reap(struct ta *t, int timeout_ms)
{
        int status = unit_agent_reap(t->pid, timeout_ms);

        t->pid = -1;
        return status;
}

static void ta_stop(struct ta *t)
{
        if (t->fd >= 0)
                close(t->fd);
        t->fd = -1;
        if (t->pid > 0)
                ta_reap(t, 2000);
        free(t->buf);
        t->buf = NULL;
}

static int ta_send(struct ta *t, uint32_t stream, uint16_t type, const void *p, size_t n)
{
        uint8_t hdr[PROTO_HDR_SIZE];
        const uint8_t *parts[2] = {hdr, p};
        size_t lens[2] = {sizeof(hdr), n};

        proto_hdr_encode(hdr, (uint32_t)n, stream, type);
        for (int i = 0; i < 2; i++) {
                size_t off = 0;

                while (off < lens[i]) {
                        ssize_t w = send(t->fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);

                        if (w < 0 && errno == EINTR)
                                continue;
                        if (w < 0)
                                return -1;
                        off += (size_t)w;
                }
        }
        return 0;
}

static int ta_send_req(struct ta *t, uint32_t stream, struct proto_buf *b)
{
        return ta_send(t, stream, PROTO_T_REQ, b->data, b->len);
}

/* Receives the next frame. Returns 1, 0 on timeout, -1 on EOF or a frame
 * header the agent should never have sent. */
static int ta_recv(struct ta *t, struct ta_frame *f, int timeout_ms)
{
        uint64_t end = ta_ms() + (uint64_t)timeout_ms;

        for (;;) {
                struct proto_hdr h;
                struct pollfd pfd = {.fd = t->fd, .events = POLLIN};
                uint64_t now;
                ssize_t n;

                if (t->len >= PROTO_HDR_SIZE) {
                        if (proto_hdr_decode(t->buf, &h) < 0) {
                                fprintf(stderr, "    agent sent a bad frame header\n");
                                return -1;
                        }
                        if (t->len - PROTO_HDR_SIZE >= h.len) {
                                f->stream = h.stream;
                                f->type = h.type;
                                f->len = h.len;
                                f->p = malloc(h.len ? h.len : 1);
                                if (!f->p)
                                        return -1;
                                memcpy(f->p, t->buf + PROTO_HDR_SIZE, h.len);
                                memmove(t->buf, t->buf + PROTO_HDR_SIZE + h.len,
                                        t->len - PROTO_HDR_SIZE - h.len);
                                t->len -= PROTO_HDR_SIZE + h.len;
                                return 1;
                        }
                }
                now = ta_ms();
                if (now >= end)
                        return 0;
                if (poll(&pfd, 1, (int)(end - now)) <= 0)
                        continue;
                if (t->cap - t->len < 65536) {
                        size_t cap = t->cap ? t->cap * 2 : 1 << 20;
                        uint8_t *b = realloc(t->buf, cap);

                        if (!b)
                                return -1;
                        t->buf = b;
                        t->cap = cap;
                }
                n = read(t->fd, t->buf + t->len, t->cap - t->len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                t->len += (size_t)n;
        }
}

static void ta_res_free(struct ta_res *r)
{
        proto_buf_free(&r->out);
        proto_buf_free(&r->err);
        proto_buf_free(&r->data);
        proto_buf_free(&r->result);
        r->done = r->bad = 0;
}

/* Collects frames for the n streams in rs until each has its RESULT or the
 * timeout passes. Frames for other streams are dropped. Returns how many
 * streams are done. */
static int ta_collect(struct ta *t, struct ta_res *rs, size_t n, int timeout_ms)
{
        uint64_t end = ta_ms() + (uint64_t)timeout_ms;
        size_t done = 0;

        for (size_t i = 0; i < n; i++)
                done += rs[i].done;
        while (done < n) {
                struct ta_frame f;
                uint64_t now = ta_ms();
                int r;

                if (now >= end)
                        break;
                r = ta_recv(t, &f, (int)(end - now));
                if (r <= 0)
                        break;
                for (size_t i = 0; i < n; i++) {
                        struct ta_res *x = &rs[i];

                        if (x->id != f.stream)
                                continue;
                        if (x->done)
                                x->bad = 1;
                        if (f.type == PROTO_T_STDOUT)
                                proto_buf_append(&x->out, f.p, f.len);
                        else if (f.type == PROTO_T_STDERR)
                                proto_buf_append(&x->err, f.p, f.len);
                        else if (f.type == PROTO_T_DATA)
                                proto_buf_append(&x->data, f.p, f.len);
                        else if (f.type == PROTO_T_RESULT && !x->done) {
                                proto_buf_append(&x->result, f.p, f.len);
                                x->done = 1;
                                done++;
                        }
                        break;
                }
                free(f.p);
        }
        return (int)done;
}

/* Sends req on stream id and waits for its RESULT. Returns 1 when it came. */
static int ta_call(struct ta *t, uint32_t id, struct proto_buf *req, struct ta_res *r, int timeout_ms)
{
        *r = (struct ta_res){.id = id};
        if (req->oom || ta_send_req(t, id, req) < 0)
                return 0;
        return ta_collect(t, r, 1, timeout_ms) == 1;
}

/* The RESULT's ERRNO, or 0 when it reports success. */
static uint32_t ta_errno(const struct ta_res *r)
{
        uint32_t v = 0;

        proto_get_u32(r->result.data, r->result.len, PROTO_TAG_ERRNO, &v);
        return v;
}

static int64_t ta_u32(const struct ta_res *r, uint16_t tag)
{
        uint32_t v;

        return proto_get_u32(r->result.data, r->result.len, tag, &v) == 0 ? (int64_t)v : -1;
}

static int64_t ta_u64(const struct ta_res *r, uint16_t tag)
{
        uint64_t v;

        return proto_get_u64(r->result.data, r->result.len, tag, &v) == 0 ? (int64_t)v : -1;
}

/* Whether the RESULT's ERRMSG contains needle. */
static int ta_errmsg_has(const struct ta_res *r, const char *needle)
{
        char *s = NULL;
        int ok = proto_get_str(r->result.data, r->result.len, PROTO_TAG_ERRMSG, &s) == 0 && strstr(s, needle);

        if (!ok && s)
                fprintf(stderr, "    ERRMSG was: %s\n", s);
        free(s);
        return ok;
}

/* Whether b holds exactly the string s. */
static int ta_eq(const struct proto_buf *b, const char *s)
{
        size_t n = strlen(s);
        int ok = b->len == n && (n == 0 || memcmp(b->data, s, n) == 0);

        if (!ok)
                fprintf(stderr, "    got %zu bytes: \"%.*s\", want \"%s\"\n", b->len,
                        (int)(b->len > 200 ? 200 : b->len), b->data ? (const char *)b->data : "", s);
        return ok;
}

static void ta_exec_req(struct proto_buf *b, const char *cmd)
{
        proto_put_u32(b, PROTO_TAG_OP, PROTO_OP_EXEC);
        proto_put_str(b, PROTO_TAG_CMD, cmd);
}

static void ta_path_req(struct proto_buf *b, uint32_t op, const char *path)
{
        proto_put_u32(b, PROTO_TAG_OP, op);
        proto_put_str(b, PROTO_TAG_PATH, path);
}

/* Runs cmd and waits for its RESULT. */
static int ta_exec(struct ta *t, uint32_t id, const char *cmd, struct ta_res *r, int timeout_ms)
{
        struct proto_buf b = {0};
        int ok;

        ta_exec_req(&b, cmd);
        ok = ta_call(t, id, &b, r, timeout_ms);
        proto_buf_free(&b);
        return ok;
}

/* Sends PING on id and waits for the HELLO. Returns 1 when it came. */
/* Starts `sleep 100` on stream id and returns its pid once it runs (read
 * from its stdout; 0 on failure). The request is freed; r collects the
 * stream's frames read meanwhile. */
static long ta_start_sleeper(struct ta *t, uint32_t id, struct ta_res *r)
{
        struct proto_buf b = {0};
        uint64_t end = ta_ms() + 5000;
        long pid = 0;
        int ok;

        ta_exec_req(&b, "echo $$; exec sleep 100");
        ok = ta_send_req(t, id, &b) == 0;
        proto_buf_free(&b);
        while (ok && r->out.len < 2 && ta_ms() < end) {
                struct ta_frame f;

                if (ta_recv(t, &f, 100) == 1) {
                        if (f.stream == id && f.type == PROTO_T_STDOUT)
                                proto_buf_append(&r->out, f.p, f.len);
                        free(f.p);
                }
        }
        if (r->out.len) {
                proto_buf_append(&r->out, "", 1);
                pid = strtol((char *)r->out.data, NULL, 10);
        }
        return pid > 0 ? pid : 0;
}

static int ta_ping(struct ta *t, uint32_t id, int timeout_ms, struct ta_frame *ret_hello)
{
        uint64_t end = ta_ms() + (uint64_t)timeout_ms;

        if (ta_send(t, id, PROTO_T_PING, NULL, 0) < 0)
                return 0;
        while (ta_ms() < end) {
                struct ta_frame f;

                if (ta_recv(t, &f, (int)(end - ta_ms())) <= 0)
                        return 0;
                if (f.type == PROTO_T_HELLO && f.stream == id) {
                        if (ret_hello)
                                *ret_hello = f;
                        else
                                free(f.p);
                        return 1;
                }
                free(f.p);
        }
        return 0;
}

/* Uploads data to path in frames of chunk bytes and waits for the RESULT. */
static int ta_write(struct ta *t, uint32_t id, struct proto_buf *req, const void *data, size_t n,
                    size_t chunk, struct ta_res *r)
{
        const uint8_t *p = data;

        *r = (struct ta_res){.id = id};
        if (req->oom || ta_send_req(t, id, req) < 0)
                return 0;
        for (size_t off = 0; off < n; off += chunk)
                if (ta_send(t, id, PROTO_T_DATA, p + off, n - off < chunk ? n - off : chunk) < 0)
                        return 0;
        if (ta_send(t, id, PROTO_T_EOF, NULL, 0) < 0)
                return 0;
        return ta_collect(t, r, 1, 10000) == 1;
}

/* Whether pid is gone (or a zombie) within timeout_ms. */
static int ta_pid_gone(pid_t pid, int timeout_ms)
{
        uint64_t end = ta_ms() + (uint64_t)timeout_ms;
        char path[64], buf[256];

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        do {
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                ssize_t n;
                char *p;

                if (fd < 0)
                        return 1;
                n = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                if (n <= 0)
                        return 1;
                buf[n] = 0;
                p = strrchr(buf, ')');
                if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
                        return 1;
                usleep(10000);
        } while (ta_ms() < end);
        return 0;
}

static int ta_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        remove(path);
        return 0;
}

/* A fresh scratch directory; removed by ta_tmp_rm. */
static int ta_tmp(char *buf, size_t n)
{
        snprintf(buf, n, "/tmp/sprout-agent-test-XXXXXX");
        return mkdtemp(buf) ? 0 : -1;
}

static void ta_tmp_rm(const char *dir)
{
        nftw(dir, ta_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int ta_write_file(const char *path, const void *p, size_t n, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        int ok;

        if (fd < 0)
                return -1;
        ok = write(fd, p, n) == (ssize_t)n;
        close(fd);
        fchmodat(AT_FDCWD, path, mode, 0);
        return ok ? 0 : -1;
}

/* Number of entries in dir other than . and .. (to spot leftover temps). */
static int ta_count_entries(const char *dir)
{
        char cmd[512];
        FILE *f;
        int n = -1;

        snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
        f = popen(cmd, "r");
        if (!f)
                return -1;
        if (fscanf(f, "%d", &n) != 1)
                n = -1;
        pclose(f);
        return n;
}

/* ---------------------------------------------------------------- basics */

TEST(agent_binary_present)
{
        const char *path = ta_agent_path();

        if (access(path, X_OK) < 0)
                fprintf(stderr, "    %s not found: run `make build/sprout-agent` in the repo root first\n",
                        path);
        CHECK(access(path, X_OK) == 0);
}

TEST(agent_ping_hello)
{
        struct ta t;
        struct ta_frame f = {0};
        struct proto_buf b = {0};
        uint8_t entropy[64];
        uint32_t version = 0;
        char *boot = NULL, want[64] = "";
        int fd, ok;

        CHECK(ta_start(&t) == 0);
        CHECK(ta_ping(&t, 7, 3000, &f));
        ok = proto_get_u32(f.p, f.len, PROTO_TAG_VERSION, &version) == 0 && version == PROTO_VERSION;
        fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t n = read(fd, want, sizeof(want) - 1);

                want[n > 0 ? n : 0] = 0;
                want[strcspn(want, "\n")] = 0;
                close(fd);
        }
        ok = ok && proto_get_str(f.p, f.len, PROTO_TAG_BOOT_ID, &boot) == 0 && strcmp(boot, want) == 0 &&
             strlen(boot) == 36;
        free(boot);
        free(f.p);
        f.p = NULL;

        /* ENTROPY is written to /dev/urandom. TIME_NS is sent malformed (4
         * bytes): a well-formed one would step this machine's clock. */
        for (size_t i = 0; i < sizeof(entropy); i++)
                entropy[i] = (uint8_t)(i * 37);
        proto_put_bytes(&b, PROTO_TAG_ENTROPY, entropy, sizeof(entropy));
        proto_put_u32(&b, PROTO_TAG_TIME_NS, 12345);
        ok = ok && ta_send(&t, 8, PROTO_T_PING, b.data, b.len) == 0;
        proto_buf_free(&b);
        if (ok) {
                ok = ta_recv(&t, &f, 3000) == 1 && f.type == PROTO_T_HELLO && f.stream == 8;
                free(f.p);
        }
        ta_stop(&t);
        CHECK(ok);
}

/* ---------------------------------------------------------------- exec */

TEST(agent_exec_stdout_stderr_exit_code)
{
        struct ta t;
        struct ta_res r = {0};
        int ok;

        CHECK(ta_start(&t) == 0);
        ok = ta_exec(&t, 1, "echo out; echo err >&2; exit 3", &r, 5000) && ta_errno(&r) == 0 &&
             ta_eq(&r.out, "out\n") && ta_eq(&r.err, "err\n") && ta_u32(&r, PROTO_TAG_EXIT_CODE) == 3 &&
             ta_u32(&r, PROTO_TAG_TIMED_OUT) == 0 && !r.bad;
        ta_res_free(&r);
        /* Killed by a signal: 128 + signal number, like a shell. */
        ok = ok && ta_exec(&t, 2, "kill -TERM $$", &r, 5000) &&
             ta_u32(&r, PROTO_TAG_EXIT_CODE) == 128 + SIGTERM;
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_exec_env_and_cwd)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        struct passwd *pw = getpwuid(geteuid());
        char dir[64], want[512];
        int ok;

        CHECK(ta_start(&t) == 0);
        if (ta_tmp(dir, sizeof(dir)) < 0) {
                ta_stop(&t);
                CHECK(0);
        }
        ta_exec_req(&b, "echo \"$FOO|$LANG|$TERM|$PATH|$HOME|$USER\"; pwd");
        proto_put_str(&b, PROTO_TAG_ENV, "FOO=bar=baz");
        proto_put_str(&b, PROTO_TAG_ENV, "LANG=C");
        proto_put_str(&b, PROTO_TAG_CWD, dir);
        snprintf(want, sizeof(want),
                 "bar=baz|C|xterm-256color|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/"
                 "bin|%s|%s\n%s\n",
                 pw ? pw->pw_dir : "", pw ? pw->pw_name : "", dir);
        ok = ta_call(&t, 1, &b, &r, 5000) && ta_errno(&r) == 0 && ta_eq(&r.out, want) &&
             ta_u32(&r, PROTO_TAG_EXIT_CODE) == 0;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* An ENV record without '=' is refused. */
        ta_exec_req(&b, "true");
        proto_put_str(&b, PROTO_TAG_ENV, "NOEQUALS");
        ok = ok && ta_call(&t, 2, &b, &r, 5000) && ta_errno(&r) == EINVAL;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* A missing CWD is an exec failure reported by the child. */
        ta_exec_req(&b, "true");
        proto_put_str(&b, PROTO_TAG_CWD, "/nonexistent/sprout");
        ok = ok && ta_call(&t, 3, &b, &r, 5000) && ta_errno(&r) == ENOENT && ta_errmsg_has(&r, "chdir");
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        ta_tmp_rm(dir);
        CHECK(ok);
}

TEST(agent_exec_timeout_kills_group)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        uint64_t start;
        long bg = 0;
        int ok;

        CHECK(ta_start(&t) == 0);
        ta_exec_req(&b, "sleep 100 & echo $!; sleep 100");
        proto_put_u64(&b, PROTO_TAG_TIMEOUT_MS, 300);
        start = ta_ms();
        ok = ta_call(&t, 1, &b, &r, 5000) && ta_errno(&r) == 0 && ta_u32(&r, PROTO_TAG_TIMED_OUT) == 1 &&
             ta_u32(&r, PROTO_TAG_EXIT_CODE) == 128 + SIGKILL && ta_ms() - start < 1300;
        if (ok && r.out.len > 0) {
                proto_buf_append(&r.out, "", 1);
                bg = strtol((char *)r.out.data, NULL, 10);
        }
        ok = ok && bg > 0 && ta_pid_gone((pid_t)bg, 1000);
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_exec_20_concurrent)
{
        struct ta t;
        struct ta_res r[20];
        uint64_t start;
        int ok = 1;

        CHECK(ta_start(&t) == 0);
        start = ta_ms();
        for (int i = 0; i < 20; i++) {
                struct proto_buf b = {0};
                char cmd[64];

                snprintf(cmd, sizeof(cmd), "sleep 0.5; echo %d", i);
                ta_exec_req(&b, cmd);
                r[i] = (struct ta_res){.id = 100 + (uint32_t)i};
                ok = ok && ta_send_req(&t, r[i].id, &b) == 0;
                proto_buf_free(&b);
        }
        ok = ok && ta_collect(&t, r, 20, 10000) == 20;
        /* Serially this would take 10 s. */
        ok = ok && ta_ms() - start < 4000;
        for (int i = 0; i < 20; i++) {
                char want[16];

                snprintf(want, sizeof(want), "%d\n", i);
                ok = ok && ta_eq(&r[i].out, want) && ta_u32(&r[i], PROTO_TAG_EXIT_CODE) == 0;
                ta_res_free(&r[i]);
        }
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_exec_output_cap)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        uint64_t start;
        int ok;

        CHECK(ta_start(&t) == 0);
        ta_exec_req(&b, "yes");
        proto_put_u64(&b, PROTO_TAG_MAX_OUTPUT, 1000);
        start = ta_ms();
        ok = ta_call(&t, 1, &b, &r, 5000) && ta_errno(&r) == E2BIG &&
             ta_errmsg_has(&r, "output exceeds 1000 bytes") && r.out.len == 1000 && ta_ms() - start < 2000;
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_exec_large_output_is_chunked)
{
        struct ta t;
        struct ta_res r = {0};
        int ok;

        CHECK(ta_start(&t) == 0);
        /* 3 MB is more than one frame can carry; ta_recv fails on any
         * frame longer than PROTO_MAX_PAYLOAD. */
        ok = ta_exec(&t, 1, "head -c 3000000 /dev/zero | tr '\\0' a; echo done >&2", &r, 10000) &&
             ta_errno(&r) == 0 && r.out.len == 3000000 && r.out.data[0] == 'a' &&
             r.out.data[2999999] == 'a' && ta_eq(&r.err, "done\n");
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_exec_background_job_does_not_block)
{
        struct ta t;
        struct ta_res r = {0};
        uint64_t start;
        int ok;

        CHECK(ta_start(&t) == 0);
        start = ta_ms();
        ok = ta_exec(&t, 1, "(sleep 3; echo late) & echo done", &r, 5000) && ta_errno(&r) == 0 &&
             ta_eq(&r.out, "done\n") && ta_u32(&r, PROTO_TAG_EXIT_CODE) == 0 && ta_ms() - start < 1000;
        ta_res_free(&r);
        /* The agent keeps working while the job holds the old pipes. */
        ok = ok && ta_exec(&t, 2, "echo next", &r, 5000) && ta_eq(&r.out, "next\n");
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_exec_cancel_and_busy)
{
        struct ta t;
        struct ta_res r = {.id = 5};
        struct ta_res busy = {0};
        struct proto_buf b = {0};
        long pid = 0;
        int ok;

        CHECK(ta_start(&t) == 0);
        pid = ta_start_sleeper(&t, 5, &r);
        ok = pid > 0;
        /* A second REQ on a live stream id is refused without touching it. */
        ta_exec_req(&b, "true");
        ok = ok && ta_call(&t, 5, &b, &busy, 3000) && ta_errno(&busy) == EBUSY;
        ok = ok && ta_send(&t, 5, PROTO_T_CANCEL, NULL, 0) == 0 && ta_collect(&t, &r, 1, 3000) == 1 &&
             ta_errno(&r) == ECANCELED && ta_pid_gone((pid_t)pid, 2000);
        /* A CANCEL for a stream that no longer exists is ignored. */
        ok = ok && ta_send(&t, 5, PROTO_T_CANCEL, NULL, 0) == 0 && ta_ping(&t, 6, 3000, NULL);
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_res_free(&busy);
        ta_stop(&t);
        CHECK(ok);
}

/* The first PING of a new host connection drops the streams of the one
 * before, as a guest restored mid-request holds them: their ids work again
 * and their commands end. */
TEST(agent_new_session_ping_drops_old_streams)
{
        struct ta t;
        struct ta_res r = {0}, again = {0};
        struct proto_buf b = {0}, ping = {0};
        struct ta_frame f;
        long pid = 0;
        uint64_t end;
        int ok;

        CHECK(ta_start(&t) == 0);
        pid = ta_start_sleeper(&t, 5, &r);
        ok = pid > 0;
        /* A plain PING leaves the stream alone. */
        ok = ok && ta_ping(&t, 6, 3000, NULL) && kill((pid_t)pid, 0) == 0;
        proto_put_u32(&ping, PROTO_TAG_NEW_SESSION, 1);
        ok = ok && ta_send(&t, 7, PROTO_T_PING, ping.data, ping.len) == 0;
        end = ta_ms() + 3000;
        for (int hello = 0; ok && !hello && ta_ms() < end;) {
                if (ta_recv(&t, &f, 100) != 1)
                        continue;
                hello = f.type == PROTO_T_HELLO && f.stream == 7;
                free(f.p);
        }
        ok = ok && ta_pid_gone((pid_t)pid, 2000);
        ta_exec_req(&b, "echo again");
        ok = ok && ta_call(&t, 5, &b, &again, 5000) && ta_errno(&again) == 0 && ta_eq(&again.out, "again\n");
        proto_buf_free(&b);
        proto_buf_free(&ping);
        ta_res_free(&r);
        ta_res_free(&again);
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_exits_on_eof_and_kills_commands)
{
        struct ta t;
        struct ta_res r = {.id = 1};
        struct proto_buf b = {0};
        long pid = 0;
        int status, ok;

        CHECK(ta_start(&t) == 0);
        pid = ta_start_sleeper(&t, 1, &r);
        ok = pid > 0;
        close(t.fd);
        t.fd = -1;
        status = ta_reap(&t, 3000);
        ok = ok && pid > 0 && status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
             ta_pid_gone((pid_t)pid, 2000);
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

/* ---------------------------------------------------------------- files */

TEST(agent_fs_binary_roundtrip_1mib)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        size_t n = 1 << 20;
        uint8_t *data = malloc(n), *back = NULL;
        uint32_t x = 2463534242u;
        char dir[64], path[128], sub[128];
        struct stat st;
        int ok, fd;

        CHECK(data != NULL);
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                data[i] = (uint8_t)x;
        }
        data[10] = 0; /* make sure NULs travel */
        if (ta_tmp(dir, sizeof(dir)) < 0) {
                free(data);
                CHECK(0);
        }
        snprintf(sub, sizeof(sub), "%s/a/b", dir);
        snprintf(path, sizeof(path), "%s/a/b/file.bin", dir);
        ok = ta_start(&t) == 0;

        /* Upload in 200000-byte frames; parents a/ and a/b/ do not exist. */
        ta_path_req(&b, PROTO_OP_WRITE, path);
        ok = ok && ta_write(&t, 1, &b, data, n, 200000, &r) && ta_errno(&r) == 0 &&
             ta_u64(&r, PROTO_TAG_SIZE) == (int64_t)n;
        proto_buf_free(&b);
        ta_res_free(&r);
        ok = ok && stat(path, &st) == 0 && st.st_size == (off_t)n && (st.st_mode & 07777) == 0644;
        ok = ok && stat(sub, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0755;
        ok = ok && ta_count_entries(sub) == 1; /* no temp file left */
        if (ok) {
                back = malloc(n);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                ok = back && fd >= 0 && read(fd, back, n) == (ssize_t)n && memcmp(back, data, n) == 0;
                if (fd >= 0)
                        close(fd);
        }

        /* Download it again, DATA frames then RESULT. */
        ta_path_req(&b, PROTO_OP_READ, path);
        ok = ok && ta_call(&t, 2, &b, &r, 10000) && ta_errno(&r) == 0 &&
             ta_u32(&r, PROTO_TAG_KIND) == PROTO_KIND_FILE && ta_u64(&r, PROTO_TAG_SIZE) == (int64_t)n &&
             r.data.len == n && memcmp(r.data.data, data, n) == 0 && !r.bad;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* Overwrite atomically with something shorter. */
        ta_path_req(&b, PROTO_OP_WRITE, path);
        ok = ok && ta_write(&t, 3, &b, "short", 5, 5, &r) && ta_errno(&r) == 0 && stat(path, &st) == 0 &&
             st.st_size == 5;
        proto_buf_free(&b);
        ta_res_free(&r);

        ta_stop(&t);
        ta_tmp_rm(dir);
        free(data);
        free(back);
        CHECK(ok);
}

TEST(agent_fs_write_mode_stat_relative)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        char dir[64], path[128];
        struct stat st;
        int ok;

        CHECK(ta_tmp(dir, sizeof(dir)) == 0);
        snprintf(path, sizeof(path), "%s/run.sh", dir);
        ok = ta_start(&t) == 0;
        ta_path_req(&b, PROTO_OP_WRITE, path);
        proto_put_u32(&b, PROTO_TAG_MODE, 0755);
        ok = ok && ta_write(&t, 1, &b, "#!/bin/sh\necho hi\n", 18, 4, &r) && ta_errno(&r) == 0 &&
             stat(path, &st) == 0 && (st.st_mode & 07777) == 0755;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* STAT with a path relative to "/". */
        ta_path_req(&b, PROTO_OP_STAT, path + 1);
        ok = ok && ta_call(&t, 2, &b, &r, 3000) && ta_errno(&r) == 0 &&
             ta_u32(&r, PROTO_TAG_KIND) == PROTO_KIND_FILE && ta_u64(&r, PROTO_TAG_SIZE) == 18 &&
             ta_u32(&r, PROTO_TAG_MODE) == 0755;
        proto_buf_free(&b);
        ta_res_free(&r);

        ta_path_req(&b, PROTO_OP_STAT, dir);
        ok = ok && ta_call(&t, 3, &b, &r, 3000) && ta_u32(&r, PROTO_TAG_KIND) == PROTO_KIND_DIR &&
             ta_u32(&r, PROTO_TAG_MODE) == 0700;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* The uploaded script runs. */
        ok = ok && ta_exec(&t, 4, path, &r, 3000) && ta_eq(&r.out, "hi\n");
        ta_res_free(&r);

        /* An empty upload makes an empty file. */
        snprintf(path, sizeof(path), "%s/empty", dir);
        ta_path_req(&b, PROTO_OP_WRITE, path);
        ok = ok && ta_write(&t, 5, &b, "", 0, 1, &r) && ta_errno(&r) == 0 &&
             ta_u64(&r, PROTO_TAG_SIZE) == 0 && stat(path, &st) == 0 && st.st_size == 0;
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        ta_tmp_rm(dir);
        CHECK(ok);
}

TEST(agent_fs_list_directory)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        struct proto_iter it;
        struct proto_tlv tlv;
        const char *want[] = {"\001a", "\001b", "\002c", "\003d"};
        char dir[64], p[128];
        int ok, i = 0;

        CHECK(ta_tmp(dir, sizeof(dir)) == 0);
        snprintf(p, sizeof(p), "%s/b", dir);
        ok = ta_write_file(p, "x", 1, 0644) == 0;
        snprintf(p, sizeof(p), "%s/a", dir);
        ok = ok && ta_write_file(p, "", 0, 0644) == 0;
        snprintf(p, sizeof(p), "%s/c", dir);
        ok = ok && mkdir(p, 0755) == 0;
        snprintf(p, sizeof(p), "%s/d", dir);
        ok = ok && symlink("a", p) == 0;
        ok = ok && ta_start(&t) == 0;

        ta_path_req(&b, PROTO_OP_READ, dir);
        ok = ok && ta_call(&t, 1, &b, &r, 3000) && ta_errno(&r) == 0 &&
             ta_u32(&r, PROTO_TAG_KIND) == PROTO_KIND_DIR && r.data.len == 0;
        if (ok) {
                proto_iter_init(&it, r.result.data, r.result.len);
                while (proto_iter_next(&it, &tlv) > 0) {
                        if (tlv.tag != PROTO_TAG_ENTRY)
                                continue;
                        ok = ok && i < 4 && tlv.len == 2 && memcmp(tlv.val, want[i], 2) == 0;
                        i++;
                }
                ok = ok && i == 4;
        }
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        ta_tmp_rm(dir);
        CHECK(ok);
}

TEST(agent_fs_errors)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        char dir[64], path[128], big[100];
        int ok;

        memset(big, 'x', sizeof(big));
        CHECK(ta_tmp(dir, sizeof(dir)) == 0);
        snprintf(path, sizeof(path), "%s/big", dir);
        ok = ta_write_file(path, big, sizeof(big), 0644) == 0 && ta_start(&t) == 0;

        ta_path_req(&b, PROTO_OP_READ, "/nonexistent/sprout-file");
        ok = ok && ta_call(&t, 1, &b, &r, 3000) && ta_errno(&r) == ENOENT && r.data.len == 0;
        proto_buf_free(&b);
        ta_res_free(&r);

        ta_path_req(&b, PROTO_OP_STAT, "/nonexistent/sprout-file");
        ok = ok && ta_call(&t, 2, &b, &r, 3000) && ta_errno(&r) == ENOENT;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* A file larger than MAX_SIZE is refused before any DATA. */
        ta_path_req(&b, PROTO_OP_READ, path);
        proto_put_u64(&b, PROTO_TAG_MAX_SIZE, 10);
        ok = ok && ta_call(&t, 3, &b, &r, 3000) && ta_errno(&r) == EFBIG && r.data.len == 0;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* An upload past MAX_SIZE fails and leaves nothing behind. */
        snprintf(path, sizeof(path), "%s/up", dir);
        ta_path_req(&b, PROTO_OP_WRITE, path);
        proto_put_u64(&b, PROTO_TAG_MAX_SIZE, 10);
        ok = ok && ta_write(&t, 4, &b, big, sizeof(big), 30, &r) && ta_errno(&r) == EFBIG &&
             access(path, F_OK) < 0 && ta_count_entries(dir) == 1;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* Writing onto a directory. */
        ta_path_req(&b, PROTO_OP_WRITE, dir);
        ok = ok && ta_write(&t, 5, &b, "x", 1, 1, &r) && ta_errno(&r) == EISDIR;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* A cancelled upload leaves nothing behind either. */
        ta_path_req(&b, PROTO_OP_WRITE, path);
        ok = ok && ta_send_req(&t, 6, &b) == 0 && ta_send(&t, 6, PROTO_T_DATA, "abc", 3) == 0 &&
             ta_send(&t, 6, PROTO_T_CANCEL, NULL, 0) == 0;
        r = (struct ta_res){.id = 6};
        ok = ok && ta_collect(&t, &r, 1, 3000) == 1 && ta_errno(&r) == ECANCELED && access(path, F_OK) < 0 &&
             ta_count_entries(dir) == 1;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* Frames for a finished stream are ignored: the agent still answers. */
        ok = ok && ta_send(&t, 6, PROTO_T_DATA, "abc", 3) == 0 && ta_send(&t, 6, PROTO_T_EOF, NULL, 0) == 0 &&
             ta_ping(&t, 7, 3000, NULL) && access(path, F_OK) < 0;

        /* PATH is required. */
        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_READ);
        ok = ok && ta_call(&t, 8, &b, &r, 3000) && ta_errno(&r) == EINVAL;
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        ta_tmp_rm(dir);
        CHECK(ok);
}

TEST(agent_stream_cap)
{
        struct ta t;
        struct ta_res r = {0};
        struct ta_res *rs = calloc(256, sizeof(*rs));
        struct proto_buf b = {0};
        char dir[64], path[128];
        int ok;

        CHECK(rs != NULL);
        if (ta_tmp(dir, sizeof(dir)) < 0) {
                free(rs);
                CHECK(0);
        }
        ok = ta_start(&t) == 0;
        /* Uploads that never end hold a stream each, cheaply. */
        for (uint32_t i = 0; ok && i < 256; i++) {
                snprintf(path, sizeof(path), "%s/f%u", dir, i);
                ta_path_req(&b, PROTO_OP_WRITE, path);
                ok = ta_send_req(&t, 1000 + i, &b) == 0;
                proto_buf_free(&b);
                rs[i].id = 1000 + i;
        }
        snprintf(path, sizeof(path), "%s/over", dir);
        ta_path_req(&b, PROTO_OP_WRITE, path);
        ok = ok && ta_call(&t, 2000, &b, &r, 5000) && ta_errno(&r) == EAGAIN;
        proto_buf_free(&b);
        ta_res_free(&r);
        for (uint32_t i = 0; ok && i < 256; i++)
                ok = ta_send(&t, 1000 + i, PROTO_T_CANCEL, NULL, 0) == 0;
        ok = ok && ta_collect(&t, rs, 256, 5000) == 256;
        for (int i = 0; i < 256; i++) {
                ok = ok && ta_errno(&rs[i]) == ECANCELED;
                ta_res_free(&rs[i]);
        }
        ok = ok && ta_count_entries(dir) == 0;
        ta_stop(&t);
        ta_tmp_rm(dir);
        free(rs);
        CHECK(ok);
}

/* ---------------------------------------------------------------- protocol */

TEST(agent_unknown_op_and_malformed_tlv)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        int ok;

        CHECK(ta_start(&t) == 0);
        proto_put_u32(&b, PROTO_TAG_OP, 99);
        ok = ta_call(&t, 1, &b, &r, 3000) && ta_errno(&r) == EOPNOTSUPP;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* A record whose length overruns the payload. */
        ta_exec_req(&b, "echo hi");
        b.len -= 2;
        ok = ok && ta_call(&t, 2, &b, &r, 3000) && ta_errno(&r) == EBADMSG && r.out.len == 0;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* OP of the wrong width, and no OP at all. */
        proto_put_u64(&b, PROTO_TAG_OP, PROTO_OP_EXEC);
        ok = ok && ta_call(&t, 3, &b, &r, 3000) && ta_errno(&r) == EBADMSG;
        proto_buf_free(&b);
        ta_res_free(&r);
        proto_put_str(&b, PROTO_TAG_CMD, "echo hi");
        ok = ok && ta_call(&t, 4, &b, &r, 3000) && ta_errno(&r) == EBADMSG;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* A CMD with a NUL in it. */
        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_EXEC);
        proto_put_bytes(&b, PROTO_TAG_CMD, "echo\0hi", 7);
        ok = ok && ta_call(&t, 5, &b, &r, 3000) && ta_errno(&r) == EBADMSG;
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_bad_header_resyncs)
{
        struct ta t;
        uint8_t bad[PROTO_HDR_SIZE];
        int ok = 0, again = 0;

        CHECK(ta_start(&t) == 0);
        /* Nonzero flags, then an oversize length: both lose sync. */
        proto_hdr_encode(bad, 4, 1, PROTO_T_PING);
        bad[11] = 1;
        CHECK(send(t.fd, bad, sizeof(bad), MSG_NOSIGNAL) == (ssize_t)sizeof(bad));
        usleep(50000);
        /* Anything that arrived together with the bad header is dropped with
         * it, so the host retries its PING; so does this test. */
        for (uint32_t id = 10; !ok && id < 20; id++)
                ok = ta_ping(&t, id, 300, NULL);
        proto_hdr_encode(bad, PROTO_MAX_PAYLOAD + 1, 1, PROTO_T_DATA);
        ok = ok && send(t.fd, bad, sizeof(bad), MSG_NOSIGNAL) == (ssize_t)sizeof(bad);
        usleep(50000);
        for (uint32_t id = 20; ok && !again && id < 30; id++)
                again = ta_ping(&t, id, 300, NULL);
        ok = ok && again;
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_split_frames_are_reassembled)
{
        struct ta t;
        struct proto_buf b = {0};
        uint8_t hdr[PROTO_HDR_SIZE];
        struct ta_res r = {.id = 3};
        int ok = 1;

        CHECK(ta_start(&t) == 0);
        /* A request dribbled in byte by byte is only parsed once whole. */
        ta_exec_req(&b, "echo whole");
        proto_hdr_encode(hdr, (uint32_t)b.len, 3, PROTO_T_REQ);
        for (size_t i = 0; ok && i < sizeof(hdr); i++)
                ok = send(t.fd, hdr + i, 1, MSG_NOSIGNAL) == 1;
        for (size_t i = 0; ok && i < b.len; i++) {
                ok = send(t.fd, b.data + i, 1, MSG_NOSIGNAL) == 1;
                if (i % 4 == 0)
                        usleep(1000);
        }
        ok = ok && ta_collect(&t, &r, 1, 5000) == 1 && ta_eq(&r.out, "whole\n");
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

/* ---------------------------------------------------------------- users */

/* USER tests act as "nobody" and need root to switch to it. */
static int ta_can_switch_user(const char *test)
{
        if (geteuid() != 0) {
                printf("note %s: skipped, needs root\n", test);
                return 0;
        }
        if (!getpwnam("nobody")) {
                printf("note %s: skipped, no user \"nobody\"\n", test);
                return 0;
        }
        return 1;
}

TEST(agent_user_exec)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        struct passwd *pw;
        char want[512];
        int ok;

        if (!ta_can_switch_user("agent_user_exec"))
                return;
        pw = getpwnam("nobody");
        CHECK(pw != NULL);
        snprintf(want, sizeof(want), "nobody %d %s %s\n", (int)pw->pw_uid, pw->pw_dir, pw->pw_shell);
        CHECK(ta_start(&t) == 0);
        ta_exec_req(&b, "echo \"$(id -un) $(id -u) $HOME $SHELL\"; cd \"$HOME\" 2>/dev/null || pwd");
        proto_put_str(&b, PROTO_TAG_USER, "nobody");
        ok = ta_call(&t, 1, &b, &r, 5000) && ta_errno(&r) == 0 && ta_u32(&r, PROTO_TAG_EXIT_CODE) == 0;
        /* nobody's home usually does not exist; the cwd then falls back to
         * "/", which the second command prints. */
        if (ok && access(pw->pw_dir, F_OK) < 0) {
                strncat(want, "/\n", sizeof(want) - strlen(want) - 1);
                ok = ta_eq(&r.out, want);
        }
        proto_buf_free(&b);
        ta_res_free(&r);

        ta_exec_req(&b, "true");
        proto_put_str(&b, PROTO_TAG_USER, "no-such-user-sprout");
        ok = ok && ta_call(&t, 2, &b, &r, 5000) && ta_errno(&r) == ESRCH &&
             ta_errmsg_has(&r, "user not found: no-such-user-sprout");
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_user_files)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        struct passwd *pw;
        char dir[64], path[160], owned[128];
        struct stat st;
        int ok;

        if (!ta_can_switch_user("agent_user_files"))
                return;
        pw = getpwnam("nobody");
        CHECK(pw != NULL);
        CHECK(ta_tmp(dir, sizeof(dir)) == 0);
        chmod(dir, 0755);
        snprintf(owned, sizeof(owned), "%s/home", dir);
        ok = mkdir(owned, 0755) == 0 && chown(owned, pw->pw_uid, pw->pw_gid) == 0;
        snprintf(path, sizeof(path), "%s/secret", dir);
        ok = ok && ta_write_file(path, "root only", 9, 0600) == 0;
        ok = ok && ta_start(&t) == 0;

        /* nobody cannot read root's 0600 file; root can. */
        ta_path_req(&b, PROTO_OP_READ, path);
        proto_put_str(&b, PROTO_TAG_USER, "nobody");
        ok = ok && ta_call(&t, 1, &b, &r, 3000) && ta_errno(&r) == EACCES && r.data.len == 0;
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_path_req(&b, PROTO_OP_READ, path);
        ok = ok && ta_call(&t, 2, &b, &r, 3000) && ta_errno(&r) == 0 && ta_eq(&r.data, "root only");
        proto_buf_free(&b);
        ta_res_free(&r);

        /* nobody cannot write into root's directory... */
        snprintf(path, sizeof(path), "%s/nope", dir);
        ta_path_req(&b, PROTO_OP_WRITE, path);
        proto_put_str(&b, PROTO_TAG_USER, "nobody");
        ok = ok && ta_write(&t, 3, &b, "x", 1, 1, &r) && ta_errno(&r) == EACCES && access(path, F_OK) < 0;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* ...but can into its own, and what it creates is its own. */
        snprintf(path, sizeof(path), "%s/home/new/f", dir);
        ta_path_req(&b, PROTO_OP_WRITE, path);
        proto_put_str(&b, PROTO_TAG_USER, "nobody");
        ok = ok && ta_write(&t, 4, &b, "mine", 4, 4, &r) && ta_errno(&r) == 0 && stat(path, &st) == 0 &&
             st.st_uid == pw->pw_uid && st.st_gid == pw->pw_gid;
        proto_buf_free(&b);
        ta_res_free(&r);
        snprintf(path, sizeof(path), "%s/home/new", dir);
        ok = ok && stat(path, &st) == 0 && st.st_uid == pw->pw_uid;

        /* The switch was undone: root still reads the secret. */
        snprintf(path, sizeof(path), "%s/secret", dir);
        ta_path_req(&b, PROTO_OP_STAT, path);
        ok = ok && ta_call(&t, 5, &b, &r, 3000) && ta_errno(&r) == 0 && ta_u32(&r, PROTO_TAG_MODE) == 0600;
        proto_buf_free(&b);
        ta_res_free(&r);

        ta_path_req(&b, PROTO_OP_STAT, path);
        proto_put_str(&b, PROTO_TAG_USER, "no-such-user-sprout");
        ok = ok && ta_call(&t, 6, &b, &r, 3000) && ta_errno(&r) == ESRCH;
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        ta_tmp_rm(dir);
        CHECK(ok);
}

/* ---------------------------------------------------------------- watch */

/* Receives frames until the DATA of stream id contains needle (or the
 * stream's RESULT arrives, or timeout_ms passes). Returns 1 if found. */
static int ta_data_wait(struct ta *t, struct ta_res *r, const char *needle, int timeout_ms)
{
        uint64_t end = ta_ms() + (uint64_t)timeout_ms;

        for (;;) {
                struct ta_frame f;
                uint64_t now = ta_ms();

                if (r->data.len && memmem(r->data.data, r->data.len, needle, strlen(needle)))
                        return 1;
                if (now >= end || r->done || ta_recv(t, &f, (int)(end - now)) <= 0)
                        break;
                if (f.stream == r->id && f.type == PROTO_T_DATA)
                        proto_buf_append(&r->data, f.p, f.len);
                else if (f.stream == r->id && f.type == PROTO_T_RESULT) {
                        proto_buf_append(&r->result, f.p, f.len);
                        r->done = 1;
                }
                free(f.p);
        }
        fprintf(stderr, "    no \"%s\" in watch events: \"%.*s\"\n", needle,
                (int)(r->data.len > 2000 ? 2000 : r->data.len), r->data.data ? (const char *)r->data.data : "");
        return 0;
}

/* Starts a WATCH on dir as stream id; a PING after it proves it is set up. */
static int ta_watch(struct ta *t, uint32_t id, const char *dir)
{
        struct proto_buf b = {0};
        int ok;

        ta_path_req(&b, PROTO_OP_WATCH, dir);
        ok = !b.oom && ta_send_req(t, id, &b) == 0;
        proto_buf_free(&b);
        return ok && ta_ping(t, id + 1000, 3000, NULL);
}

TEST(agent_watch_events)
{
        struct ta t;
        struct ta_res r = {.id = 1};
        char dir[64], a[128], b2[128], sub[128], f[160], q[128], want[512];
        int ok;

        CHECK(ta_tmp(dir, sizeof(dir)) == 0);
        snprintf(a, sizeof(a), "%s/a", dir);
        snprintf(b2, sizeof(b2), "%s/b", dir);
        snprintf(sub, sizeof(sub), "%s/sub", dir);
        snprintf(f, sizeof(f), "%s/sub/f", dir);
        snprintf(q, sizeof(q), "%s/q\"\\x", dir);
        ok = ta_start(&t) == 0 && ta_watch(&t, 1, dir);

        /* Three writes before the close: one "modified". */
        ok = ok && ta_write_file(a, "hello", 5, 0644) == 0;
        snprintf(want, sizeof(want), "{\"kind\":\"created\",\"path\":\"%s\"}\n", a);
        ok = ok && ta_data_wait(&t, &r, want, 3000);
        snprintf(want, sizeof(want), "{\"kind\":\"modified\",\"path\":\"%s\"}\n", a);
        ok = ok && ta_data_wait(&t, &r, want, 3000);
        ok = ok && rename(a, b2) == 0;
        snprintf(want, sizeof(want), "{\"kind\":\"renamed\",\"path\":\"%s\",\"oldPath\":\"%s\"}\n", b2, a);
        ok = ok && ta_data_wait(&t, &r, want, 3000);
        ok = ok && unlink(b2) == 0;
        snprintf(want, sizeof(want), "{\"kind\":\"deleted\",\"path\":\"%s\"}\n", b2);
        ok = ok && ta_data_wait(&t, &r, want, 3000);

        /* A new directory is watched: a file made in it is reported. */
        ok = ok && mkdir(sub, 0755) == 0 && ta_write_file(f, "x", 1, 0644) == 0;
        snprintf(want, sizeof(want), "{\"kind\":\"created\",\"path\":\"%s\"}\n", sub);
        ok = ok && ta_data_wait(&t, &r, want, 3000);
        snprintf(want, sizeof(want), "{\"kind\":\"created\",\"path\":\"%s\"}\n", f);
        ok = ok && ta_data_wait(&t, &r, want, 3000);
        usleep(100000);
        ok = ok && ta_write_file(f, "yy", 2, 0644) == 0;
        snprintf(want, sizeof(want), "{\"kind\":\"modified\",\"path\":\"%s\"}\n", f);
        ok = ok && ta_data_wait(&t, &r, want, 3000);

        /* Quotes and backslashes are escaped. */
        ok = ok && ta_write_file(q, "", 0, 0644) == 0;
        snprintf(want, sizeof(want), "{\"kind\":\"created\",\"path\":\"%s/q\\\"\\\\x\"}\n", dir);
        ok = ok && ta_data_wait(&t, &r, want, 3000);

        /* Only the writes were reported as modified, and nothing ended. */
        ok = ok && !r.done;
        ok = ok && ta_send(&t, 1, PROTO_T_CANCEL, NULL, 0) == 0 && ta_collect(&t, &r, 1, 3000) == 1 &&
             ta_errno(&r) == ECANCELED;
        ta_res_free(&r);
        /* The watch is gone: new files raise no events on stream 1, and the
         * agent still answers. */
        snprintf(a, sizeof(a), "%s/after", dir);
        ok = ok && ta_write_file(a, "x", 1, 0644) == 0 && ta_ping(&t, 5, 3000, NULL);
        ta_stop(&t);
        ta_tmp_rm(dir);
        CHECK(ok);
}

TEST(agent_watch_errors)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        char dir[64], sub[128], file[128];
        int ok;

        CHECK(ta_tmp(dir, sizeof(dir)) == 0);
        snprintf(sub, sizeof(sub), "%s/gone", dir);
        snprintf(file, sizeof(file), "%s/file", dir);
        ok = mkdir(sub, 0755) == 0 && ta_write_file(file, "x", 1, 0644) == 0 && ta_start(&t) == 0;

        ta_path_req(&b, PROTO_OP_WATCH, "/nonexistent/sprout-dir");
        ok = ok && ta_call(&t, 1, &b, &r, 3000) && ta_errno(&r) == ENOENT;
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_path_req(&b, PROTO_OP_WATCH, file);
        ok = ok && ta_call(&t, 2, &b, &r, 3000) && ta_errno(&r) == ENOTDIR;
        proto_buf_free(&b);
        ta_res_free(&r);

        /* The watched directory disappearing ends the stream. */
        r = (struct ta_res){.id = 3};
        ok = ok && ta_watch(&t, 3, sub) && rmdir(sub) == 0 && ta_collect(&t, &r, 1, 3000) == 1 &&
             ta_errno(&r) == ENOENT;
        ta_res_free(&r);
        ta_stop(&t);
        ta_tmp_rm(dir);
        CHECK(ok);
}

/* ---------------------------------------------------------------- terminals */

/* Runs cmd in terminal name and waits for its RESULT. */
static int ta_term(struct ta *t, uint32_t id, const char *name, const char *cmd, uint64_t timeout_ms,
                   struct ta_res *r)
{
        struct proto_buf b = {0};
        int ok;

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_TERMINAL);
        proto_put_str(&b, PROTO_TAG_TERMINAL, name);
        proto_put_str(&b, PROTO_TAG_CMD, cmd);
        if (timeout_ms)
                proto_put_u64(&b, PROTO_TAG_TIMEOUT_MS, timeout_ms);
        ok = ta_call(t, id, &b, r, 10000);
        proto_buf_free(&b);
        return ok;
}

/* Runs cmd in terminal name; succeeds if it exits with code and prints want. */
static int ta_term_ok(struct ta *t, uint32_t id, const char *name, const char *cmd, int code, const char *want)
{
        struct ta_res r = {0};
        int ok = ta_term(t, id, name, cmd, 0, &r) && ta_errno(&r) == 0 && ta_u32(&r, PROTO_TAG_EXIT_CODE) == code &&
                 ta_u32(&r, PROTO_TAG_TIMED_OUT) == 0 && (!want || ta_eq(&r.out, want));

        if (!ok)
                fprintf(stderr, "    terminal %s: `%s`: errno %u exit %lld\n", name, cmd, ta_errno(&r),
                        (long long)ta_u32(&r, PROTO_TAG_EXIT_CODE));
        ta_res_free(&r);
        return ok;
}

TEST(agent_terminal_sessions)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        struct proto_iter it;
        struct proto_tlv tlv;
        const char *want[] = {"\003t1", "\003t2"};
        int ok, i = 0;
        uint64_t t0;

        CHECK(ta_start(&t) == 0);
        ok = ta_term_ok(&t, 1, "t1", "cd /tmp", 0, "");
        ok = ok && ta_term_ok(&t, 2, "t1", "pwd", 0, "/tmp\n");
        ok = ok && ta_term_ok(&t, 3, "t1", "X=42; Y='it''s'", 0, "");
        ok = ok && ta_term_ok(&t, 4, "t1", "echo \"$X $Y\"; echo 'a '\"'b'\"", 0, "42 its\na 'b'\n");
        ok = ok && ta_term_ok(&t, 5, "t1", "false", 1, "");
        ok = ok && ta_term_ok(&t, 6, "t1", "printf 'no newline'", 0, "no newline");
        ok = ok && ta_term_ok(&t, 7, "t1", "echo err >&2; (exit 7)", 7, "err\n");
        ok = ok && ta_term_ok(&t, 8, "t1", "for i in 1 2; do\n  echo \"l$i\"\ndone", 0, "l1\nl2\n");
        ok = ok && ta_term_ok(&t, 9, "t1", "if then fi", 2, NULL); /* a syntax error is only an error */
        ok = ok && ta_term_ok(&t, 10, "t1", "echo $X", 0, "42\n");
        /* A second terminal has its own shell. */
        ok = ok && ta_term_ok(&t, 11, "t2", "echo ${X:-unset}; [ \"$(pwd)\" != /tmp ] && echo elsewhere", 0,
                              "unset\nelsewhere\n");

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_TERM_LIST);
        ok = ok && ta_call(&t, 12, &b, &r, 3000) && ta_errno(&r) == 0;
        proto_buf_free(&b);
        proto_iter_init(&it, r.result.data, r.result.len);
        while (ok && proto_iter_next(&it, &tlv) > 0) {
                if (tlv.tag != PROTO_TAG_ENTRY)
                        continue;
                ok = i < 2 && tlv.len == 3 && memcmp(tlv.val, want[i], 3) == 0;
                i++;
        }
        ok = ok && i == 2;
        ta_res_free(&r);

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_TERM_LOG);
        proto_put_str(&b, PROTO_TAG_TERMINAL, "t1");
        ok = ok && ta_call(&t, 13, &b, &r, 3000) && ta_errno(&r) == 0 &&
             ta_u64(&r, PROTO_TAG_SIZE) == (int64_t)r.data.len && memmem(r.data.data, r.data.len, "/tmp\n42 its\n", 12) &&
             !memmem(r.data.data, r.data.len, "SPROUT-", 7);
        proto_buf_free(&b);
        ta_res_free(&r);

        /* A timeout interrupts the command; the terminal keeps working. */
        t0 = ta_ms();
        ok = ok && ta_term(&t, 14, "t1", "sleep 100", 300, &r) && ta_errno(&r) == 0 &&
             ta_u32(&r, PROTO_TAG_TIMED_OUT) == 1 && ta_ms() - t0 < 5000;
        ta_res_free(&r);
        ok = ok && ta_term_ok(&t, 15, "t1", "echo after; pwd", 0, "after\n/tmp\n");

        /* The shell exiting ends the session with its status. */
        ok = ok && ta_term_ok(&t, 16, "t2", "exit 3", 3, NULL);
        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_TERM_LOG);
        proto_put_str(&b, PROTO_TAG_TERMINAL, "t2");
        ok = ok && ta_call(&t, 17, &b, &r, 3000) && ta_errno(&r) == ENOENT;
        proto_buf_free(&b);
        ta_res_free(&r);
        ok = ok && ta_term_ok(&t, 18, "t2", "echo ${X:-fresh}", 0, "fresh\n");
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_terminal_errors)
{
        struct ta t;
        struct ta_res r = {0}, r2 = {.id = 2};
        struct proto_buf b = {0};
        int ok;

        CHECK(ta_start(&t) == 0);
        ok = ta_term(&t, 1, "bad name", "true", 0, &r) && ta_errno(&r) == EINVAL;
        ta_res_free(&r);
        ok = ok && ta_term(&t, 1, "t", "echo \003", 0, &r) && ta_errno(&r) == EINVAL;
        ta_res_free(&r);

        /* One command at a time: a second one is refused, not queued. */
        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_TERMINAL);
        proto_put_str(&b, PROTO_TAG_TERMINAL, "t");
        proto_put_str(&b, PROTO_TAG_CMD, "sleep 100");
        ok = ok && ta_send_req(&t, 2, &b) == 0;
        proto_buf_free(&b);
        ok = ok && ta_term(&t, 3, "t", "true", 0, &r) && ta_errno(&r) == EBUSY;
        ta_res_free(&r);

        /* CANCEL interrupts it; its leftovers never reach the next command. */
        ok = ok && ta_send(&t, 2, PROTO_T_CANCEL, NULL, 0) == 0 && ta_collect(&t, &r2, 1, 3000) == 1 &&
             ta_errno(&r2) == ECANCELED;
        ta_res_free(&r2);
        ok = ok && ta_term_ok(&t, 4, "t", "echo next", 0, "next\n");

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_TERM_LOG);
        proto_put_str(&b, PROTO_TAG_TERMINAL, "nope");
        ok = ok && ta_call(&t, 5, &b, &r, 3000) && ta_errno(&r) == ENOENT;
        proto_buf_free(&b);
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

TEST(agent_user_terminal)
{
        struct ta t;
        struct ta_res r = {0};
        struct proto_buf b = {0};
        int ok;

        if (!ta_can_switch_user("agent_user_terminal"))
                return;
        CHECK(ta_start(&t) == 0);
        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_TERMINAL);
        proto_put_str(&b, PROTO_TAG_TERMINAL, "mine");
        proto_put_str(&b, PROTO_TAG_CMD, "id -un");
        proto_put_str(&b, PROTO_TAG_USER, "nobody");
        ok = ta_call(&t, 1, &b, &r, 10000) && ta_errno(&r) == 0 && ta_eq(&r.out, "nobody\n");
        proto_buf_free(&b);
        ta_res_free(&r);
        /* The session is nobody's: root may not use it. */
        ok = ok && ta_term(&t, 2, "mine", "id -un", 0, &r) && ta_errno(&r) == EPERM &&
             ta_errmsg_has(&r, "belongs to user nobody");
        ta_res_free(&r);
        ta_stop(&t);
        CHECK(ok);
}

/* The rest of a frame an earlier host left half sent (a VM restored from a
 * snapshot taken mid-transfer) never comes: the agent drops it once it
 * goes quiet, and a PING sent after that is answered. */
TEST(agent_drops_a_partial_frame_that_goes_quiet)
{
        struct ta t;
        uint8_t hdr[PROTO_HDR_SIZE], some[100] = {0};

        CHECK(ta_start(&t) == 0);
        proto_hdr_encode(hdr, 50000, 77, PROTO_T_DATA);
        CHECK(send(t.fd, hdr, sizeof(hdr), MSG_NOSIGNAL) == (ssize_t)sizeof(hdr));
        CHECK(send(t.fd, some, sizeof(some), MSG_NOSIGNAL) == (ssize_t)sizeof(some));
        /* A PING now only feeds the stale frame. */
        CHECK(!ta_ping(&t, 8, 1000, NULL));
        usleep(12500 * 1000);
        CHECK(ta_ping(&t, 9, 3000, NULL));
        ta_stop(&t);
}

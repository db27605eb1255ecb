/*
 * agent: main loop of sprout-agent. Owns the port: buffered reads, frame
 * parsing and dispatch, whole-frame blocking writes, the stream table and
 * host disconnects. Depends on proto/ and libc only (built static with musl).
 *
 * The port is a virtio-serial character device in a VM. When sproutd closes
 * its side, read() returns 0 and poll() reports POLLHUP until a host opens it
 * again, so a disconnect is a state we wait out, never a reason to exit. With
 * --fd (host tests, a socketpair) EOF is final and the agent exits 0.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define AGENT_DEFAULT_DEVICE "/dev/virtio-ports/agent"
#define AGENT_DISCONNECTED_POLL_MS 5
/* A partial frame that gets no more bytes for this long is dropped: its
 * host is gone (see loop). Longer than a host waits to send one frame
 * (10 s, after which it gives up the connection), so a slow host's frame
 * is never cut; the host sends PING again after 15 s. */
#define AGENT_PARTIAL_NS (12000ull * 1000000ull)

/* ---------------------------------------------------------------- helpers */

uint64_t agent_now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void agent_log(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fputs("sprout-agent: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
}

/* ---------------------------------------------------------------- output */

/* Writes all of iov to the port. The port fd is non-blocking (so reads can
 * tell "no data" from "host gone"); writes wait in poll() because the host
 * always drains the port. POLLHUP without POLLOUT while waiting means the
 * host went away: a virtio port then blocks writers forever. */
static int port_write_all(struct agent *a, struct iovec *iov, int iovcnt)
{
        while (iovcnt > 0) {
                ssize_t n = writev(a->port_fd, iov, iovcnt);

                if (n < 0) {
                        struct pollfd pfd = {.fd = a->port_fd, .events = POLLOUT};

                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return -errno;
                        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                                return -errno;
                        if ((pfd.revents & (POLLHUP | POLLERR)) && !(pfd.revents & POLLOUT))
                                return -EPIPE;
                        continue;
                }
                while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
                        n -= (ssize_t)iov->iov_len;
                        iov++;
                        iovcnt--;
                }
                if (iovcnt > 0) {
                        iov->iov_base = (uint8_t *)iov->iov_base + n;
                        iov->iov_len -= (size_t)n;
                }
        }
        return 0;
}

/*
 * Sends one logical message, split into frames of at most AGENT_CHUNK bytes
 * when it is raw data (DATA/STDOUT/STDERR). TLV payloads are never split; the
 * caller makes sure they fit. Once a write has failed the host is treated as
 * gone (a->lost) and everything else is dropped until the loop handles it.
 */
int agent_send(struct agent *a, uint32_t stream, uint16_t type, const void *p, size_t n)
{
        /* An empty payload may come as NULL (an empty proto_buf), which
         * the loop below must not do arithmetic on. */
        const uint8_t *data = p ? p : (const uint8_t *)"";
        size_t max = PROTO_MAX_PAYLOAD;

        if (a->lost || !a->connected)
                return -EPIPE;
        if (type == PROTO_T_DATA || type == PROTO_T_STDOUT || type == PROTO_T_STDERR)
                max = AGENT_CHUNK;
        else if (n > PROTO_MAX_PAYLOAD)
                return -EMSGSIZE;

        do {
                size_t len = n > max ? max : n;
                uint8_t hdr[PROTO_HDR_SIZE];
                struct iovec iov[2] = {
                    {.iov_base = hdr, .iov_len = sizeof(hdr)},
                    {.iov_base = (void *)data, .iov_len = len},
                };
                int r;

                proto_hdr_encode(hdr, (uint32_t)len, stream, type);
                r = port_write_all(a, iov, len ? 2 : 1);
                if (r < 0) {
                        agent_log("write to host failed: %s", strerror(-r));
                        a->lost = 1;
                        return r;
                }
                data += len;
                n -= len;
        } while (n > 0);
        return 0;
}

/* Sends b as the RESULT of stream, or ENOMEM if building it failed. */
void agent_send_result(struct agent *a, uint32_t stream, struct proto_buf *b)
{
        if (b->oom || b->len > PROTO_MAX_PAYLOAD) {
                struct proto_buf e = {0};

                proto_put_u32(&e, PROTO_TAG_ERRNO, b->oom ? ENOMEM : E2BIG);
                proto_put_str(&e, PROTO_TAG_ERRMSG, b->oom ? "out of memory" : "result too large");
                agent_send(a, stream, PROTO_T_RESULT, e.data, e.oom ? 0 : e.len);
                proto_buf_free(&e);
                return;
        }
        agent_send(a, stream, PROTO_T_RESULT, b->data, b->len);
}

void agent_send_error(struct agent *a, uint32_t stream, int err, const char *fmt, ...)
{
        struct proto_buf b = {0};
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        proto_put_u32(&b, PROTO_TAG_ERRNO, (uint32_t)err);
        proto_put_str(&b, PROTO_TAG_ERRMSG, msg);
        agent_send_result(a, stream, &b);
        proto_buf_free(&b);
}

/* ---------------------------------------------------------------- streams */

static struct agent_stream *stream_find(struct agent *a, uint32_t id)
{
        for (struct agent_stream *s = a->streams; s; s = s->next)
                if (s->id == id)
                        return s;
        return NULL;
}

/* Adds a stream; the caller has checked the id is free and the cap. */
struct agent_stream *agent_stream_new(struct agent *a, uint32_t id, enum agent_stream_kind kind)
{
        struct agent_stream *s = calloc(1, sizeof(*s));

        if (!s)
                return NULL;
        s->id = id;
        s->kind = kind;
        s->next = a->streams;
        a->streams = s;
        a->n_streams++;
        return s;
}

/* Unlinks and frees s. Kind-specific resources must already be released. */
void agent_stream_free(struct agent *a, struct agent_stream *s)
{
        for (struct agent_stream **pp = &a->streams; *pp; pp = &(*pp)->next) {
                if (*pp == s) {
                        *pp = s->next;
                        a->n_streams--;
                        free(s);
                        return;
                }
        }
}

/*
 * Keeps a pipe of a finished exec open and reads it to /dev/null. A
 * background job (`nohup server &`) still holding the exec's stdout would
 * otherwise die of SIGPIPE on its next log line. Past the cap the pipe is
 * closed after all: the cap matters more than the job.
 */
void agent_drain_add(struct agent *a, int fd)
{
        if (fd < 0)
                return;
        if (a->n_drain >= AGENT_MAX_DRAIN) {
                close(fd);
                return;
        }
        a->drain_fds[a->n_drain++] = fd;
}

/* Ends s early (CANCEL, or the host is gone); RESULT ECANCELED if
 * send_result. Frees s. */
static void stream_cancel(struct agent *a, struct agent_stream *s, int send_result)
{
        switch (s->kind) {
        case AGENT_STREAM_EXEC:
                agent_exec_cancel(a, s, send_result);
                break;
        case AGENT_STREAM_WRITE:
                agent_fs_write_cancel(a, s, send_result);
                break;
        case AGENT_STREAM_WATCH:
                agent_watch_cancel(a, s, send_result);
                break;
        case AGENT_STREAM_TERM:
                agent_term_cancel(a, s, send_result);
                break;
        case AGENT_STREAM_PTY:
                agent_term_pty_detach(a, s, send_result);
                break;
        }
}

/* Abandons every stream without a RESULT: the host that asked is gone. */
static void streams_abandon(struct agent *a)
{
        while (a->streams) {
                struct agent_stream *s = a->streams;

                stream_cancel(a, s, 0);
        }
}

/* ---------------------------------------------------------------- requests */

static void handle_ping(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct proto_buf b = {0};
        struct proto_tlv t;
        uint64_t ns;
        char boot_id[64] = "";
        uint32_t fresh = 0;
        int fd;

        /* A new host connection: streams still open belong to an earlier
         * one that went without our seeing it (this guest was restored
         * from a snapshot or resumed), and their ids will be used again. */
        if (proto_get_u32(p, n, PROTO_TAG_NEW_SESSION, &fresh) == 0 && fresh)
                streams_abandon(a);
        /* A malformed PING still gets its HELLO: the host is asking whether
         * we are alive, and the fields are best effort anyway. */
        if (proto_get_u64(p, n, PROTO_TAG_TIME_NS, &ns) == 0) {
                struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ULL),
                                      .tv_nsec = (long)(ns % 1000000000ULL)};

                if (clock_settime(CLOCK_REALTIME, &ts) < 0 && errno != EPERM)
                        agent_log("setting the clock failed: %s", strerror(errno));
        }
        if (proto_find(p, n, PROTO_TAG_ENTROPY, &t) == 1 && t.len > 0)
                agent_add_entropy(t.val, t.len);
        /* Only in a VM: an agent on a socket (--fd) runs on a host. */
        if (!a->exit_on_eof) {
                char *host = NULL, *mid = NULL;

                if (proto_get_str(p, n, PROTO_TAG_HOSTNAME, &host) < 0)
                        host = NULL;
                if (proto_get_str(p, n, PROTO_TAG_MACHINE_ID, &mid) < 0)
                        mid = NULL;
                agent_set_identity(host, mid);
                free(host);
                free(mid);
        }

        fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                ssize_t r = read(fd, boot_id, sizeof(boot_id) - 1);

                boot_id[r > 0 ? r : 0] = 0;
                boot_id[strcspn(boot_id, " \t\r\n")] = 0;
                close(fd);
        }

        proto_put_u32(&b, PROTO_TAG_VERSION, PROTO_VERSION);
        proto_put_str(&b, PROTO_TAG_BOOT_ID, boot_id);
        if (!b.oom)
                agent_send(a, id, PROTO_T_HELLO, b.data, b.len);
        proto_buf_free(&b);
}

static void handle_req(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct proto_iter it;
        struct proto_tlv t;
        uint32_t op;
        int r;

        if (stream_find(a, id)) {
                agent_send_error(a, id, EBUSY, "stream %u is already in use", id);
                return;
        }
        /* Check the whole payload once so op handlers only see sound TLV. */
        proto_iter_init(&it, p, n);
        while ((r = proto_iter_next(&it, &t)) > 0)
                ;
        if (r < 0) {
                agent_send_error(a, id, EBADMSG, "malformed TLV in request");
                return;
        }
        r = proto_get_u32(p, n, PROTO_TAG_OP, &op);
        if (r < 0) {
                agent_send_error(a, id, EBADMSG, "request without a valid OP");
                return;
        }
        if ((op == PROTO_OP_EXEC || op == PROTO_OP_WRITE || op == PROTO_OP_WATCH || op == PROTO_OP_TERMINAL ||
             op == PROTO_OP_PTY) &&
            a->n_streams >= AGENT_MAX_STREAMS) {
                agent_send_error(a, id, EAGAIN, "too many concurrent streams (max %d)", AGENT_MAX_STREAMS);
                return;
        }

        switch (op) {
        case PROTO_OP_EXEC:
                agent_exec_start(a, id, p, n);
                break;
        case PROTO_OP_READ:
                agent_fs_read(a, id, p, n);
                break;
        case PROTO_OP_WRITE:
                agent_fs_write_start(a, id, p, n);
                break;
        case PROTO_OP_STAT:
                agent_fs_stat(a, id, p, n);
                break;
        case PROTO_OP_WATCH:
                agent_watch_start(a, id, p, n);
                break;
        case PROTO_OP_TERMINAL:
                agent_term_start(a, id, p, n);
                break;
        case PROTO_OP_TERM_LIST:
                agent_term_list(a, id);
                break;
        case PROTO_OP_TERM_LOG:
                agent_term_log(a, id, p, n);
                break;
        case PROTO_OP_PTY:
                agent_term_pty(a, id, p, n);
                break;
        case PROTO_OP_PTY_RESIZE:
                agent_term_pty_resize(a, id, p, n);
                break;
        default:
                agent_send_error(a, id, EOPNOTSUPP, "unknown op %u", op);
                break;
        }
}

static void dispatch(struct agent *a, const struct proto_hdr *h, const uint8_t *p)
{
        struct agent_stream *s;

        switch (h->type) {
        case PROTO_T_PING:
                handle_ping(a, h->stream, p, h->len);
                return;
        case PROTO_T_REQ:
                handle_req(a, h->stream, p, h->len);
                return;
        case PROTO_T_DATA:
        case PROTO_T_EOF:
        case PROTO_T_CANCEL:
                break;
        default:
                return; /* not something the host sends; ignore */
        }

        /* Frames for streams we do not know (finished, or failed early with a
         * RESULT the host has not seen yet) are dropped silently. */
        s = stream_find(a, h->stream);
        if (!s)
                return;
        if (h->type == PROTO_T_CANCEL) {
                stream_cancel(a, s, 1);
        } else if (s->kind == AGENT_STREAM_WRITE) {
                if (h->type == PROTO_T_DATA)
                        agent_fs_write_data(a, s, p, h->len);
                else
                        agent_fs_write_eof(a, s);
        } else if (s->kind == AGENT_STREAM_PTY && h->type == PROTO_T_DATA) {
                agent_term_pty_input(a, s, p, h->len);
        }
        /* An exec, a watch and a terminal command have no stdin: DATA/EOF
         * for them are ignored. */
}

/* Parses and dispatches every complete frame in the input buffer. */
static void port_parse(struct agent *a)
{
        size_t off = 0;

        while (a->in_len - off >= PROTO_HDR_SIZE) {
                struct proto_hdr h;

                if (proto_hdr_decode(a->in + off, &h) < 0) {
                        /* We no longer know where frames start. Dropping
                         * what we have is the only resync there is; the
                         * host retries its PING. */
                        agent_log("bad frame header, dropping %zu buffered bytes", a->in_len - off);
                        a->in_len = 0;
                        return;
                }
                if (a->in_len - off - PROTO_HDR_SIZE < h.len)
                        break;
                dispatch(a, &h, a->in + off + PROTO_HDR_SIZE);
                off += PROTO_HDR_SIZE + h.len;
                if (a->lost) {
                        a->in_len = 0;
                        return;
                }
        }
        memmove(a->in, a->in + off, a->in_len - off);
        a->in_len -= off;
}

/* ---------------------------------------------------------------- the port */

static void host_gone(struct agent *a, const char *why)
{
        if (a->exit_on_eof) {
                streams_abandon(a);
                exit(0);
        }
        if (a->connected)
                agent_log("host disconnected (%s); waiting for it", why);
        streams_abandon(a);
        a->in_len = 0;
        a->connected = 0;
        a->lost = 0;
}

/* Reads what the port has. Returns 1 if bytes arrived, 0 if none (EAGAIN),
 * -1 if the host side is closed (EOF or error). */
static int port_read(struct agent *a)
{
        ssize_t n;

        do
                n = read(a->port_fd, a->in + a->in_len, AGENT_IN_CAP - a->in_len);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
                a->in_len += (size_t)n;
                a->in_at = agent_now_ns();
                return 1;
        }
        if (n < 0 && errno == EAGAIN)
                return 0;
        return -1;
}

static void on_port(struct agent *a, short revents)
{
        int r;

        if (!(revents & (POLLIN | POLLHUP | POLLERR)))
                return;
        r = port_read(a);
        if (r > 0)
                port_parse(a);
        else if (r < 0)
                host_gone(a, "EOF");
}

/*
 * While disconnected a virtio port reports POLLHUP without pause, so it is
 * left out of poll() and probed every few ms instead: read() returns 0 while
 * nobody is there, and data or EAGAIN once a host has opened its side.
 */
static void probe_port(struct agent *a)
{
        int r = port_read(a);

        if (r < 0)
                return;
        agent_log("host connected");
        a->connected = 1;
        if (r > 0)
                port_parse(a);
}

/* ---------------------------------------------------------------- children */

static void on_sigchld(struct agent *a)
{
        struct signalfd_siginfo si;
        int status;
        pid_t pid;

        while (read(a->sig_fd, &si, sizeof(si)) == sizeof(si))
                ;
        /* Reap every child, ours by stream or abandoned, so none lingers. */
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        {
                agent_exec_on_reaped(a, pid, status);
                agent_term_on_reaped(a, pid, status);
        }
}

static void on_drain(struct agent *a, unsigned i)
{
        char buf[4096];
        ssize_t n = read(a->drain_fds[i], buf, sizeof(buf));

        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                close(a->drain_fds[i]);
                a->drain_fds[i] = -1;
        }
}

/* ---------------------------------------------------------------- loop */

/* Runs forever: builds the poll set (port, signalfd, exec pipes, drained
 * pipes), waits until the nearest deadline, and handles what is ready. */
static void loop(struct agent *a)
{
        struct pollfd *pfds = a->pfds;
        struct agent_slot *slots = a->slots;

        for (;;) {
                uint64_t now = agent_now_ns(), next = UINT64_MAX;
                int nfds = 0, timeout = -1;

                if (a->connected) {
                        pfds[nfds] = (struct pollfd){.fd = a->port_fd, .events = POLLIN};
                        slots[nfds++] = (struct agent_slot){.what = SLOT_PORT};
                }
                pfds[nfds] = (struct pollfd){.fd = a->sig_fd, .events = POLLIN};
                slots[nfds++] = (struct agent_slot){.what = SLOT_SIG};
                for (struct agent_stream *s = a->streams; s; s = s->next) {
                        uint64_t d;

                        if (s->kind == AGENT_STREAM_WATCH) {
                                pfds[nfds] = (struct pollfd){.fd = agent_watch_fd(s), .events = POLLIN};
                                slots[nfds++] = (struct agent_slot){.what = SLOT_WATCH, .s = s};
                                d = agent_watch_next_deadline(s);
                                if (d && d < next)
                                        next = d;
                                continue;
                        }
                        if (s->kind != AGENT_STREAM_EXEC)
                                continue;
                        if (s->exec.out_fd >= 0) {
                                pfds[nfds] = (struct pollfd){.fd = s->exec.out_fd, .events = POLLIN};
                                slots[nfds++] = (struct agent_slot){.what = SLOT_EXEC, .s = s};
                        }
                        if (s->exec.err_fd >= 0) {
                                pfds[nfds] = (struct pollfd){.fd = s->exec.err_fd, .events = POLLIN};
                                slots[nfds++] = (struct agent_slot){.what = SLOT_EXEC, .s = s};
                        }
                        d = agent_exec_next_deadline(s);
                        if (d && d < next)
                                next = d;
                }
                nfds = agent_term_poll_add(a, nfds);
                {
                        uint64_t d = agent_term_next_deadline(a);

                        if (d && d < next)
                                next = d;
                }
                for (unsigned i = 0; i < a->n_drain; i++) {
                        pfds[nfds] = (struct pollfd){.fd = a->drain_fds[i], .events = POLLIN};
                        slots[nfds++] = (struct agent_slot){.what = SLOT_DRAIN, .idx = i};
                }
                /* The rest of a frame that went quiet never comes: a
                 * frame an earlier host (before a restore from a snapshot
                 * taken mid-transfer) did not finish. */
                if (a->connected && a->in_len > 0 && a->in_at + AGENT_PARTIAL_NS < next)
                        next = a->in_at + AGENT_PARTIAL_NS;
                if (next != UINT64_MAX)
                        timeout = next <= now ? 0 : (int)((next - now + 999999) / 1000000);
                if (!a->connected && (timeout < 0 || timeout > AGENT_DISCONNECTED_POLL_MS))
                        timeout = AGENT_DISCONNECTED_POLL_MS;

                if (poll(pfds, (nfds_t)nfds, timeout) < 0) {
                        if (errno == EINTR)
                                continue;
                        agent_log("poll: %s", strerror(errno));
                        exit(1);
                }

                /* Child output first, then the port, so a CANCEL cannot free
                 * a stream that a slot still points to. */
                for (int i = 0; i < nfds; i++) {
                        if (!pfds[i].revents)
                                continue;
                        if (slots[i].what == SLOT_SIG)
                                on_sigchld(a);
                        else if (slots[i].what == SLOT_EXEC)
                                agent_exec_on_readable(a, slots[i].s, pfds[i].fd);
                        else if (slots[i].what == SLOT_DRAIN)
                                on_drain(a, slots[i].idx);
                        else if (slots[i].what == SLOT_WATCH)
                                agent_watch_on_readable(a, slots[i].s);
                        else if (slots[i].what == SLOT_TERM)
                                agent_term_on_io(a, slots[i].t, pfds[i].revents);
                }
                /* on_drain marks closed pipes -1; compact only now, so the
                 * slot indexes stayed valid during the pass above. */
                unsigned kept = 0;

                for (unsigned i = 0; i < a->n_drain; i++)
                        if (a->drain_fds[i] >= 0)
                                a->drain_fds[kept++] = a->drain_fds[i];
                a->n_drain = kept;
                if (a->connected && pfds[0].revents && slots[0].what == SLOT_PORT)
                        on_port(a, pfds[0].revents);
                else if (!a->connected)
                        probe_port(a);

                now = agent_now_ns();
                for (struct agent_stream *s = a->streams, *next_s; s; s = next_s) {
                        next_s = s->next;
                        if (s->kind == AGENT_STREAM_EXEC)
                                agent_exec_tick(a, s, now);
                        else if (s->kind == AGENT_STREAM_WATCH)
                                agent_watch_tick(a, s, now);
                }
                agent_term_tick(a, now);
                if (a->connected && a->in_len > 0 && now >= a->in_at + AGENT_PARTIAL_NS) {
                        agent_log("a partial frame went quiet; dropping %zu buffered bytes", a->in_len);
                        a->in_len = 0;
                }
                if (a->lost)
                        host_gone(a, "write failed");
        }
}

/* ---------------------------------------------------------------- setup */

static void usage(void)
{
        fprintf(stderr, "usage: sprout-agent [--device PATH | --fd N]\n"
                        "  --device PATH  virtio-serial port (default " AGENT_DEFAULT_DEVICE ")\n"
                        "  --fd N         use an inherited, connected fd; EOF ends the agent\n");
}

/* Opens the port, waiting for udev to create it if the agent won the race
 * at boot. */
static int open_device(const char *path)
{
        int logged = 0;

        for (;;) {
                int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

                if (fd >= 0)
                        return fd;
                if (errno != ENOENT && errno != ENXIO && errno != ENODEV)
                        return -errno;
                if (!logged)
                        agent_log("waiting for %s: %s", path, strerror(errno));
                logged = 1;
                usleep(100 * 1000);
        }
}

/* Makes sure fds 0-2 are open, so pipes we create never land on them and
 * get clobbered by the dup2() calls in exec children. */
static void ensure_stdio(void)
{
        for (int fd = 0; fd < 3; fd++) {
                if (fcntl(fd, F_GETFD) < 0) {
                        int n = open("/dev/null", O_RDWR);

                        if (n >= 0 && n != fd)
                                close(n);
                }
        }
}

int main(int argc, char **argv)
{
        static struct agent agent;
        struct agent *a = &agent;
        const char *device = AGENT_DEFAULT_DEVICE;
        struct rlimit rl;
        sigset_t mask;
        int fd = -1;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
                        device = argv[++i];
                } else if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc) {
                        char *end;
                        long v = strtol(argv[++i], &end, 10);

                        if (*end || v < 0 || v > 1 << 20) {
                                usage();
                                return 2;
                        }
                        fd = (int)v;
                } else {
                        usage();
                        return 2;
                }
        }

        ensure_stdio();
        umask(022);
        signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        a->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        a->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        a->in = malloc(AGENT_IN_CAP);
        if (a->sig_fd < 0 || a->null_fd < 0 || !a->in) {
                agent_log("setup failed: %s", strerror(errno));
                return 1;
        }

        /* 256 streams with two pipes each need more than the usual 1024
         * fds; children get the original limit back. */
        getrlimit(RLIMIT_NOFILE, &a->nofile);
        rl = a->nofile;
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);

        a->ngroups = getgroups(0, NULL);
        if (a->ngroups > 0) {
                a->groups = calloc((size_t)a->ngroups, sizeof(gid_t));
                if (!a->groups || (a->ngroups = getgroups(a->ngroups, a->groups)) < 0)
                        a->ngroups = 0;
        } else {
                a->ngroups = 0;
        }

        if (fd >= 0) {
                int fl = fcntl(fd, F_GETFL);

                if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                        agent_log("--fd %d: %s", fd, strerror(errno));
                        return 1;
                }
                a->port_fd = fd;
                a->exit_on_eof = 1;
                a->connected = 1;
        } else {
                a->port_fd = open_device(device);
                if (a->port_fd < 0) {
                        agent_log("open %s: %s", device, strerror(-a->port_fd));
                        return 1;
                }
                /* Until a first read proves otherwise, assume nobody is
                 * there; probing finds a connected host within ms. */
                a->connected = 0;
        }

        agent_log("started (protocol %d)", PROTO_VERSION);
        loop(a);
        return 0;
}

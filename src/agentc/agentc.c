/*
 * agentc: multiplexed client for sprout-agent. Depends on proto and util.
 * Frames from the guest are untrusted: every header is checked by
 * proto_hdr_decode, payloads are read into bounded buffers, and frames for
 * streams nobody waits on are dropped.
 */
#include "agentc/agentc.h"
#include "lib/util.h"
#include "proto.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define AGENTC_CHUNK (64 * 1024)
/* How long past an exec's own timeout the host waits for its answer. */
#define AGENTC_EXEC_GRACE_MS 10000
/* The longest one frame may take to go out. A guest that stops reading
 * its port (its agent stopped) fills the socket; past this the connection
 * is given up, so no request, and no lock it holds, waits on the guest
 * for longer. */
#define AGENTC_SEND_TIMEOUT_MS 10000
/* A PING without its HELLO this long is sent again: longer than the
 * agent waits before it drops a partial frame that went quiet (12 s). */
#define AGENTC_PING_RETRY_MS 15000

/* What came back on one stream: the RESULT frame's TLV payload, and the
 * DATA, STDOUT and STDERR bytes, each collection bounded by the stream's
 * cap (overflow set past it). */
struct agentc_reply {
        uint8_t *result;
        size_t result_len;
        struct proto_buf data, out, err;
        int overflow;
};

struct stream {
        uint32_t id;
        int done;
        size_t cap;
        struct agentc_reply reply;
        struct stream *next;
};

struct agentc {
        int fd;
        int refs;       /* under lock */
        int dead;       /* transport closed; under lock */
        uint32_t next_id;
        int pinged;                /* a PING went out (the first says NEW_SESSION); under lock */
        pthread_mutex_t lock;      /* streams, refs, dead */
        pthread_mutex_t write_lock; /* whole frames go out one at a time */
        pthread_cond_t cond;       /* a stream finished or the transport died */
        pthread_t reader;
        struct stream *streams;
        /* What every PING tells the guest it is; "": nothing. Set before
         * the first PING (agentc_set_identity). */
        char hostname[64];
        char machine_id[33];
};

static int read_full(int fd, void *buf, size_t n)
{
        uint8_t *p = buf;

        while (n > 0) {
                ssize_t r = read(fd, p, n);

                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        return -ECONNRESET;
                p += r;
                n -= (size_t)r;
        }
        return 0;
}

static int send_frame(struct agentc *a, uint32_t stream, uint16_t type, const void *payload, size_t len)
{
        uint8_t hdr[PROTO_HDR_SIZE];
        int64_t deadline;
        int r;

        if (len > PROTO_MAX_PAYLOAD)
                return -EMSGSIZE;
        proto_hdr_encode(hdr, (uint32_t)len, stream, type);
        pthread_mutex_lock(&a->write_lock);
        deadline = now_ms() + AGENTC_SEND_TIMEOUT_MS;
        r = sock_send_all(a->fd, hdr, sizeof(hdr), deadline);
        if (r == 0 && len)
                r = sock_send_all(a->fd, payload, len, deadline);
        /* A frame cut short leaves the byte stream unusable, and a full
         * socket means a guest that does not read: either way the
         * connection is over, and every waiter hears so at once. */
        if (r < 0)
                shutdown(a->fd, SHUT_RDWR);
        pthread_mutex_unlock(&a->write_lock);
        if (r < 0) {
                /* Said here, not only when the reader thread notices, so
                 * the caller that saw the failure sees a dead transport. */
                pthread_mutex_lock(&a->lock);
                a->dead = 1;
                pthread_cond_broadcast(&a->cond);
                pthread_mutex_unlock(&a->lock);
        }
        return r;
}

static struct stream *stream_find(struct agentc *a, uint32_t id)
{
        for (struct stream *s = a->streams; s; s = s->next)
                if (s->id == id)
                        return s;
        return NULL;
}

static void stream_unlink(struct agentc *a, struct stream *s)
{
        for (struct stream **pp = &a->streams; *pp; pp = &(*pp)->next) {
                if (*pp == s) {
                        *pp = s->next;
                        return;
                }
        }
}

/* Appends to a bounded collection; past the cap it only records overflow. */
static void collect(struct stream *s, struct proto_buf *b, const uint8_t *p, size_t n)
{
        if (b->len + n > s->cap) {
                s->reply.overflow = 1;
                return;
        }
        proto_buf_append(b, p, n);
}

static void *reader_main(void *arg)
{
        struct agentc *a = arg;
        uint8_t *payload = malloc(PROTO_MAX_PAYLOAD);

        while (payload) {
                uint8_t hdr[PROTO_HDR_SIZE];
                struct proto_hdr h;
                struct stream *s;

                if (read_full(a->fd, hdr, sizeof(hdr)) < 0)
                        break;
                /* A bad header means the byte stream cannot be trusted any
                 * more: drop the connection rather than guess. */
                if (proto_hdr_decode(hdr, &h) < 0)
                        break;
                if (read_full(a->fd, payload, h.len) < 0)
                        break;
                pthread_mutex_lock(&a->lock);
                s = stream_find(a, h.stream);
                if (s && !s->done) {
                        switch (h.type) {
                        case PROTO_T_DATA:
                                collect(s, &s->reply.data, payload, h.len);
                                pthread_cond_broadcast(&a->cond);
                                break;
                        case PROTO_T_STDOUT:
                                collect(s, &s->reply.out, payload, h.len);
                                break;
                        case PROTO_T_STDERR:
                                collect(s, &s->reply.err, payload, h.len);
                                break;
                        case PROTO_T_RESULT:
                        case PROTO_T_HELLO:
                                s->reply.result = malloc(h.len ? h.len : 1);
                                if (s->reply.result) {
                                        memcpy(s->reply.result, payload, h.len);
                                        s->reply.result_len = h.len;
                                }
                                s->done = 1;
                                pthread_cond_broadcast(&a->cond);
                                break;
                        default:
                                break;
                        }
                }
                pthread_mutex_unlock(&a->lock);
        }
        free(payload);
        pthread_mutex_lock(&a->lock);
        a->dead = 1;
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->lock);
        return NULL;
}

int agentc_connect(const char *path, int timeout_ms, struct agentc **ret)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int64_t deadline = now_ms() + timeout_ms;
        int fd, r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        for (;;) {
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                        break;
                r = -errno;
                close(fd);
                if ((r != -ENOENT && r != -ECONNREFUSED) || now_ms() >= deadline)
                        return r == -ENOENT || r == -ECONNREFUSED ? -ETIMEDOUT : r;
                sleep_ms(2);
        }
        return agentc_open_fd(fd, ret);
}

int agentc_open_fd(int fd, struct agentc **ret)
{
        struct agentc *a = calloc(1, sizeof(*a));
        int r;

        if (!a) {
                close(fd);
                return -ENOMEM;
        }
        a->fd = fd;
        a->refs = 1;
        a->next_id = 1;
        pthread_mutex_init(&a->lock, NULL);
        pthread_mutex_init(&a->write_lock, NULL);
        pthread_cond_init(&a->cond, NULL);
        r = pthread_create(&a->reader, NULL, reader_main, a);
        if (r != 0) {
                close(fd);
                free(a);
                return -r;
        }
        *ret = a;
        return 0;
}

void agentc_set_identity(struct agentc *a, const char *hostname, const char *machine_id)
{
        snprintf(a->hostname, sizeof(a->hostname), "%s", hostname);
        snprintf(a->machine_id, sizeof(a->machine_id), "%s", machine_id);
}

struct agentc *agentc_ref(struct agentc *a)
{
        pthread_mutex_lock(&a->lock);
        a->refs++;
        pthread_mutex_unlock(&a->lock);
        return a;
}

void agentc_shutdown(struct agentc *a)
{
        if (a)
                shutdown(a->fd, SHUT_RDWR);
}

void agentc_unref(struct agentc *a)
{
        int last;

        if (!a)
                return;
        pthread_mutex_lock(&a->lock);
        last = --a->refs == 0;
        pthread_mutex_unlock(&a->lock);
        if (!last)
                return;
        shutdown(a->fd, SHUT_RDWR);
        pthread_join(a->reader, NULL);
        close(a->fd);
        pthread_mutex_destroy(&a->lock);
        pthread_mutex_destroy(&a->write_lock);
        pthread_cond_destroy(&a->cond);
        free(a);
}

int agentc_alive(struct agentc *a)
{
        int alive;

        pthread_mutex_lock(&a->lock);
        alive = !a->dead;
        pthread_mutex_unlock(&a->lock);
        return alive;
}

static void reply_free(struct agentc_reply *r)
{
        if (!r)
                return;
        free(r->result);
        proto_buf_free(&r->data);
        proto_buf_free(&r->out);
        proto_buf_free(&r->err);
        memset(r, 0, sizeof(*r));
}

static struct stream *stream_open(struct agentc *a, size_t cap)
{
        struct stream *s = calloc(1, sizeof(*s));

        if (!s)
                return NULL;
        s->cap = cap;
        pthread_mutex_lock(&a->lock);
        do {
                s->id = a->next_id++;
        } while (s->id == 0 || stream_find(a, s->id));
        s->next = a->streams;
        a->streams = s;
        pthread_mutex_unlock(&a->lock);
        return s;
}

/* Waits for any change (data, end, transport death) until deadline.
 * Called with a->lock held; -ETIMEDOUT when the deadline passed. */
static int stream_wait_data(struct agentc *a, int64_t deadline)
{
        struct timespec ts;
        int64_t left = deadline - now_ms();

        if (left <= 0)
                return -ETIMEDOUT;
        realtime_in(left, &ts);
        pthread_cond_timedwait(&a->cond, &a->lock, &ts);
        return 0;
}

/* Waits until the stream is done, the transport dies or deadline (now_ms()
 * value, <0 for none) passes. Called with a->lock held. */
static int stream_wait(struct agentc *a, struct stream *s, int64_t deadline)
{
        while (!s->done && !a->dead) {
                if (deadline < 0)
                        pthread_cond_wait(&a->cond, &a->lock);
                else if (stream_wait_data(a, deadline) < 0)
                        return -ETIMEDOUT;
        }
        return s->done ? 0 : -ECONNRESET;
}

/* One PING and its wait: 0 on HELLO, -ETIMEDOUT, or -errno. */
static int ping_once(struct agentc *a, int64_t deadline)
{
        struct proto_buf b = {0};
        struct timespec ts;
        uint8_t entropy[64];
        struct stream *s = stream_open(a, 0);
        int r, fresh;

        if (!s)
                return -ENOMEM;
        /* Until an agent has answered on this connection, every PING says
         * "new session": the first may be lost in a stale partial frame. */
        pthread_mutex_lock(&a->lock);
        fresh = !a->pinged;
        pthread_mutex_unlock(&a->lock);
        if (fresh)
                proto_put_u32(&b, PROTO_TAG_NEW_SESSION, 1);
        clock_gettime(CLOCK_REALTIME, &ts);
        proto_put_u64(&b, PROTO_TAG_TIME_NS, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
        if (random_bytes(entropy, sizeof(entropy)) == 0)
                proto_put_bytes(&b, PROTO_TAG_ENTROPY, entropy, sizeof(entropy));
        if (a->hostname[0])
                proto_put_str(&b, PROTO_TAG_HOSTNAME, a->hostname);
        if (a->machine_id[0])
                proto_put_str(&b, PROTO_TAG_MACHINE_ID, a->machine_id);
        r = b.oom ? -ENOMEM : send_frame(a, s->id, PROTO_T_PING, b.data, b.len);
        proto_buf_free(&b);
        pthread_mutex_lock(&a->lock);
        if (r == 0)
                r = stream_wait(a, s, deadline);
        if (r == 0)
                a->pinged = 1;
        stream_unlink(a, s);
        pthread_mutex_unlock(&a->lock);
        reply_free(&s->reply);
        free(s);
        return r;
}

int agentc_ping(struct agentc *a, int timeout_ms)
{
        int64_t end = now_ms() + timeout_ms;
        int r;

        /* A PING that meets the rest of a frame the agent's buffer still
         * held from an earlier host (a VM restored from a snapshot taken
         * mid-transfer) is lost: the agent drops a partial frame that goes
         * quiet, and the next PING gets through. */
        do {
                int64_t step = now_ms() + AGENTC_PING_RETRY_MS;

                r = ping_once(a, step < end ? step : end);
        } while (r == -ETIMEDOUT && now_ms() < end);
        return r;
}

/* Opens a stream and sends its REQ. On failure to send, the stream stays
 * registered (the caller's cleanup removes it) and the error is returned. */
static int stream_start(struct agentc *a, const struct proto_buf *req, size_t cap, struct stream **ret)
{
        if (req->oom)
                return -ENOMEM;
        *ret = stream_open(a, cap);
        if (!*ret)
                return -ENOMEM;
        return send_frame(a, (*ret)->id, PROTO_T_REQ, req->data, req->len);
}

/* Opens a stream with the TLV request req. If upload is not NULL, sends its
 * bytes as DATA frames followed by EOF. Waits for the RESULT at most
 * timeout_ms (<0: no limit); on timeout sends CANCEL and returns -ETIMEDOUT
 * (whatever output arrived is still in *ret). cap bounds each collection in
 * the reply. On success or timeout the caller frees *ret with reply_free. */
static int request(struct agentc *a, const struct proto_buf *req, const void *upload, size_t upload_len, size_t cap,
                   int64_t timeout_ms, struct agentc_reply *ret)
{
        int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
        struct stream *s = NULL;
        int r = stream_start(a, req, cap, &s);

        if (!s)
                return r;
        if (r == 0 && upload) {
                r = agentc_stream_write(a, s->id, upload, upload_len);
                if (r == 0)
                        r = send_frame(a, s->id, PROTO_T_EOF, NULL, 0);
                else if (r == -EPIPE)
                        r = 0; /* the agent refused the upload already: its RESULT says why */
        }
        pthread_mutex_lock(&a->lock);
        if (r == 0)
                r = stream_wait(a, s, deadline);
        if (r == -ETIMEDOUT) {
                /* Let the agent kill what it runs; give it a moment to say
                 * so, so the caller gets the output produced so far. */
                pthread_mutex_unlock(&a->lock);
                send_frame(a, s->id, PROTO_T_CANCEL, NULL, 0);
                pthread_mutex_lock(&a->lock);
                if (stream_wait(a, s, now_ms() + 2000) == 0)
                        r = -ETIMEDOUT;
        }
        stream_unlink(a, s);
        pthread_mutex_unlock(&a->lock);
        if (r == 0 || r == -ETIMEDOUT)
                *ret = s->reply;
        else
                reply_free(&s->reply);
        free(s);
        return r;
}

/* Opens a long-lived stream whose DATA bytes queue up for
 * agentc_stream_read. */
static int stream_open_req(struct agentc *a, const struct proto_buf *req, size_t cap, uint32_t *ret_id)
{
        struct stream *s = NULL;
        int r = stream_start(a, req, cap, &s);

        if (!s)
                return r;
        if (r < 0) {
                agentc_stream_close(a, s->id);
                return r;
        }
        *ret_id = s->id;
        return 0;
}

int agentc_watch_open(struct agentc *a, const char *path, const char *user, size_t cap, uint32_t *ret_id)
{
        struct proto_buf req = {0};
        int r;

        proto_put_u32(&req, PROTO_TAG_OP, PROTO_OP_WATCH);
        proto_put_str(&req, PROTO_TAG_PATH, path);
        if (user)
                proto_put_str(&req, PROTO_TAG_USER, user);
        r = stream_open_req(a, &req, cap, ret_id);
        proto_buf_free(&req);
        return r;
}

int agentc_pty_open(struct agentc *a, const struct agentc_pty *p, size_t cap, uint32_t *ret_id)
{
        struct proto_buf req = {0};
        int r;

        proto_put_u32(&req, PROTO_TAG_OP, PROTO_OP_PTY);
        proto_put_str(&req, PROTO_TAG_TERMINAL, p->terminal);
        if (p->user)
                proto_put_str(&req, PROTO_TAG_USER, p->user);
        if (p->rows && p->cols) {
                proto_put_u32(&req, PROTO_TAG_ROWS, (uint32_t)p->rows);
                proto_put_u32(&req, PROTO_TAG_COLS, (uint32_t)p->cols);
        }
        if (p->ephemeral)
                proto_put_u32(&req, PROTO_TAG_EPHEMERAL, 1);
        r = stream_open_req(a, &req, cap, ret_id);
        proto_buf_free(&req);
        return r;
}

/* Whether stream id is open: known, not ended, the transport alive. */
static int stream_open_now(struct agentc *a, uint32_t id)
{
        struct stream *s;
        int open;

        pthread_mutex_lock(&a->lock);
        s = stream_find(a, id);
        open = s && !s->done && !a->dead;
        pthread_mutex_unlock(&a->lock);
        return open;
}

int agentc_stream_write(struct agentc *a, uint32_t id, const void *data, size_t len)
{
        const uint8_t *p = data;
        int r = 0;

        for (size_t off = 0; r == 0 && off < len; off += AGENTC_CHUNK) {
                if (!stream_open_now(a, id))
                        return -EPIPE;
                r = send_frame(a, id, PROTO_T_DATA, p + off, len - off < AGENTC_CHUNK ? len - off : AGENTC_CHUNK);
        }
        return r;
}

long agentc_stream_read(struct agentc *a, uint32_t id, void *buf, size_t max, int timeout_ms)
{
        int64_t deadline = now_ms() + timeout_ms;
        struct stream *s;
        long n = 0;

        pthread_mutex_lock(&a->lock);
        for (;;) {
                s = stream_find(a, id);
                if (!s) {
                        n = -EPIPE;
                        break;
                }
                if (s->reply.data.len > 0) {
                        n = (long)(s->reply.data.len < max ? s->reply.data.len : max);
                        memcpy(buf, s->reply.data.data, (size_t)n);
                        memmove(s->reply.data.data, s->reply.data.data + n, s->reply.data.len - (size_t)n);
                        s->reply.data.len -= (size_t)n;
                        break;
                }
                if (s->done) {
                        n = -EPIPE;
                        break;
                }
                if (a->dead) {
                        n = -ECONNRESET;
                        break;
                }
                if (stream_wait_data(a, deadline) < 0)
                        break;
        }
        pthread_mutex_unlock(&a->lock);
        return n;
}

void agentc_stream_close(struct agentc *a, uint32_t id)
{
        struct stream *s;

        if (stream_open_now(a, id))
                send_frame(a, id, PROTO_T_CANCEL, NULL, 0);
        pthread_mutex_lock(&a->lock);
        s = stream_find(a, id);
        if (s)
                stream_unlink(a, s);
        pthread_mutex_unlock(&a->lock);
        if (s) {
                reply_free(&s->reply);
                free(s);
        }
}

/* ---- typed operations ---- */

void agentc_result_free(struct agentc_result *r)
{
        if (!r)
                return;
        free(r->errmsg);
        free(r->out.data);
        free(r->errout.data);
        free(r->data.data);
        for (size_t i = 0; i < r->nentries; i++)
                free(r->entries[i].name);
        free(r->entries);
        memset(r, 0, sizeof(*r));
}

/* Hands a collection's bytes over to a result. */
static void take_bytes(struct agentc_bytes *to, struct proto_buf *from)
{
        to->data = from->data;
        to->len = from->len;
        *from = (struct proto_buf){0};
}

/* Turns a reply into a result: the RESULT record's fields, the listing in
 * its ENTRY records, and the collected bytes. Frees the reply. */
static int reply_to_result(struct agentc_reply *rep, struct agentc_result *ret)
{
        struct proto_iter it;
        struct proto_tlv t;
        uint32_t v;
        size_t n = 0;

        memset(ret, 0, sizeof(*ret));
        /* Callers negate err and look it up: a value past Linux's errno
         * range (INT_MIN would overflow) is the guest's protocol error. */
        if (proto_get_u32(rep->result, rep->result_len, PROTO_TAG_ERRNO, &v) == 0)
                ret->err = v < 4096 ? (int)v : EPROTO;
        proto_get_str(rep->result, rep->result_len, PROTO_TAG_ERRMSG, &ret->errmsg);
        if (proto_get_u32(rep->result, rep->result_len, PROTO_TAG_EXIT_CODE, &v) == 0)
                ret->exit_code = (int)v;
        if (proto_get_u32(rep->result, rep->result_len, PROTO_TAG_TIMED_OUT, &v) == 0)
                ret->timed_out = v != 0;
        if (proto_get_u32(rep->result, rep->result_len, PROTO_TAG_KIND, &v) == 0)
                ret->is_dir = v == PROTO_KIND_DIR;
        proto_iter_init(&it, rep->result, rep->result_len);
        while (proto_iter_next(&it, &t) > 0)
                n += t.tag == PROTO_TAG_ENTRY && t.len >= 2;
        if (n > 0 && !(ret->entries = calloc(n, sizeof(*ret->entries)))) {
                reply_free(rep);
                agentc_result_free(ret);
                return -ENOMEM;
        }
        proto_iter_init(&it, rep->result, rep->result_len);
        while (ret->nentries < n && proto_iter_next(&it, &t) > 0) {
                struct agentc_entry *e = &ret->entries[ret->nentries];

                if (t.tag != PROTO_TAG_ENTRY || t.len < 2)
                        continue;
                /* A name holds no NUL byte; a guest that sends one gets its
                 * name cut there. */
                e->name = strndup((const char *)t.val + 1, t.len - 1);
                if (!e->name)
                        continue;
                e->is_dir = t.val[0] == PROTO_KIND_DIR;
                ret->nentries++;
        }
        ret->overflow = rep->overflow;
        take_bytes(&ret->out, &rep->out);
        take_bytes(&ret->errout, &rep->err);
        take_bytes(&ret->data, &rep->data);
        reply_free(rep);
        return 0;
}

/* Runs req (with an optional upload) and turns the answer into *ret. An
 * exec keeps what it got when the host stops waiting. */
static int call(struct agentc *a, struct proto_buf *req, const void *upload, size_t upload_len, size_t cap,
                int64_t timeout_ms, int keep_on_timeout, struct agentc_result *ret)
{
        struct agentc_reply rep = {0};
        int r = request(a, req, upload, upload_len, cap, timeout_ms, &rep);

        proto_buf_free(req);
        if (r == -ETIMEDOUT && keep_on_timeout) {
                r = reply_to_result(&rep, ret);
                ret->timed_out = 1;
                return r;
        }
        if (r == -ETIMEDOUT)
                reply_free(&rep);
        return r < 0 ? r : reply_to_result(&rep, ret);
}

int agentc_exec(struct agentc *a, const struct agentc_exec *e, struct agentc_result *ret)
{
        struct proto_buf b = {0};

        proto_put_u32(&b, PROTO_TAG_OP, e->terminal ? PROTO_OP_TERMINAL : PROTO_OP_EXEC);
        proto_put_str(&b, PROTO_TAG_CMD, e->command);
        if (e->terminal)
                proto_put_str(&b, PROTO_TAG_TERMINAL, e->terminal);
        else if (e->cwd)
                proto_put_str(&b, PROTO_TAG_CWD, e->cwd);
        if (e->user)
                proto_put_str(&b, PROTO_TAG_USER, e->user);
        if (e->timeout_ms > 0)
                proto_put_u64(&b, PROTO_TAG_TIMEOUT_MS, (uint64_t)e->timeout_ms);
        proto_put_u64(&b, PROTO_TAG_MAX_OUTPUT, e->max_output);
        return call(a, &b, NULL, 0, e->max_output, e->timeout_ms > 0 ? e->timeout_ms + AGENTC_EXEC_GRACE_MS : -1, 1,
                    ret);
}

/* The fields a READ and a WRITE share. */
static void file_req(struct proto_buf *b, uint32_t op, const char *path, const char *user, size_t max)
{
        proto_put_u32(b, PROTO_TAG_OP, op);
        proto_put_str(b, PROTO_TAG_PATH, path);
        proto_put_u64(b, PROTO_TAG_MAX_SIZE, max);
        if (user)
                proto_put_str(b, PROTO_TAG_USER, user);
}

int agentc_read(struct agentc *a, const char *path, const char *user, size_t max, int64_t timeout_ms,
                struct agentc_result *ret)
{
        struct proto_buf b = {0};

        file_req(&b, PROTO_OP_READ, path, user, max);
        return call(a, &b, NULL, 0, max, timeout_ms, 0, ret);
}

int agentc_write(struct agentc *a, const char *path, const char *user, const void *data, size_t len, unsigned mode,
                 size_t max, int64_t timeout_ms, struct agentc_result *ret)
{
        struct proto_buf b = {0};

        file_req(&b, PROTO_OP_WRITE, path, user, max);
        proto_put_u32(&b, PROTO_TAG_MODE, mode);
        return call(a, &b, data ? data : "", len, 1 << 16, timeout_ms, 0, ret);
}

int agentc_term_list(struct agentc *a, int64_t timeout_ms, struct agentc_result *ret)
{
        struct proto_buf b = {0};

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_TERM_LIST);
        return call(a, &b, NULL, 0, 1 << 16, timeout_ms, 0, ret);
}

int agentc_stream_result(struct agentc *a, uint32_t id, struct agentc_result *ret)
{
        struct agentc_reply rep = {0};
        struct stream *s;
        int r = -EAGAIN;

        pthread_mutex_lock(&a->lock);
        s = stream_find(a, id);
        if (!s)
                r = -ENOENT;
        else if (s->done && s->reply.result) {
                rep.result = s->reply.result;
                rep.result_len = s->reply.result_len;
                s->reply.result = NULL;
                s->reply.result_len = 0;
                r = 0;
        }
        pthread_mutex_unlock(&a->lock);
        return r < 0 ? r : reply_to_result(&rep, ret);
}

int agentc_pty_resize(struct agentc *a, const struct agentc_pty *p, int64_t timeout_ms, struct agentc_result *ret)
{
        struct proto_buf req = {0};

        proto_put_u32(&req, PROTO_TAG_OP, PROTO_OP_PTY_RESIZE);
        proto_put_str(&req, PROTO_TAG_TERMINAL, p->terminal);
        if (p->user)
                proto_put_str(&req, PROTO_TAG_USER, p->user);
        proto_put_u32(&req, PROTO_TAG_ROWS, (uint32_t)p->rows);
        proto_put_u32(&req, PROTO_TAG_COLS, (uint32_t)p->cols);
        return call(a, &req, NULL, 0, 0, timeout_ms, 0, ret);
}

int agentc_term_log(struct agentc *a, const char *terminal, size_t max, int64_t timeout_ms,
                    struct agentc_result *ret)
{
        struct proto_buf b = {0};

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_TERM_LOG);
        proto_put_str(&b, PROTO_TAG_TERMINAL, terminal);
        return call(a, &b, NULL, 0, max, timeout_ms, 0, ret);
}

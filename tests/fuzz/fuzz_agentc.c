/*
 * fuzz_agentc: the daemon's agent client (src/agentc/) against a hostile
 * guest. The client end of a socketpair is handed to agentc_open_fd, so
 * its real reader thread demultiplexes frames; a fake agent thread on the
 * other end waits for the client's request and answers with the fuzz
 * bytes, raw (stream ids, types and lengths as the fuzzer made them). The
 * client meanwhile runs one typed operation, which decodes the answer.
 *
 * Input: byte 0 picks the operation (low 3 bits) and, with bit 7, a guest
 * that sends its bytes and then goes silent until the client cancels (the
 * timeout paths, with deadlines of a few ms); the rest is what the guest
 * sends. A fresh connection numbers its first stream 1, so seeds use
 * stream 1. No run can hang: a guest that is not silent closes its side
 * once its bytes are out, which fails every waiter at once.
 */
#include "agentc/agentc.h"
#include "fuzz.h"
#include "proto.h"

#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long a silent guest is waited for. */
#define HOLD_TIMEOUT_MS 2

struct guest {
        int fd;
        const uint8_t *data;
        size_t len;
        int hold; /* stay until the client sends CANCEL */
};

/* Reads one whole frame from the client; its type, or -1 at EOF/error. */
static int read_frame(int fd)
{
        uint8_t hdr[PROTO_HDR_SIZE], payload[4096];
        struct proto_hdr h;
        size_t got = 0;

        while (got < sizeof(hdr)) {
                ssize_t n = read(fd, hdr + got, sizeof(hdr) - got);

                if (n <= 0)
                        return -1;
                got += (size_t)n;
        }
        /* The client only sends what proto_hdr_encode makes. */
        FUZZ_CHECK(proto_hdr_decode(hdr, &h) == 0);
        for (got = 0; got < h.len;) {
                ssize_t n = read(fd, payload, h.len - got < sizeof(payload) ? h.len - got : sizeof(payload));

                if (n <= 0)
                        return -1;
                got += (size_t)n;
        }
        return h.type;
}

static void *guest_main(void *arg)
{
        struct guest *g = arg;
        size_t off = 0;
        int type;

        /* The client's stream exists once its first frame is out. */
        if (read_frame(g->fd) >= 0) {
                while (off < g->len) {
                        ssize_t n = send(g->fd, g->data + off, g->len - off, MSG_NOSIGNAL);

                        if (n <= 0)
                                break;
                        off += (size_t)n;
                }
                while (g->hold && (type = read_frame(g->fd)) >= 0 && type != PROTO_T_CANCEL)
                        ;
        }
        shutdown(g->fd, SHUT_WR);
        /* Take whatever else the client sends until it closes. */
        while (read_frame(g->fd) >= 0)
                ;
        return NULL;
}

/* What agentc promises about a result it returned 0 with. */
static void check_result(const struct agentc_result *res, size_t cap)
{
        FUZZ_CHECK(res->err >= 0 && res->err < 4096);
        FUZZ_CHECK(res->out.len <= cap && res->errout.len <= cap && res->data.len <= cap);
        FUZZ_CHECK((res->out.len == 0 || res->out.data) && (res->errout.len == 0 || res->errout.data) &&
                   (res->data.len == 0 || res->data.data));
        FUZZ_CHECK(res->nentries == 0 || res->entries);
        for (size_t i = 0; i < res->nentries; i++)
                FUZZ_CHECK(res->entries[i].name != NULL);
}

/* An operation's return and result as agentc_* documents them. */
static void check_call(int r, struct agentc_result *res, size_t cap)
{
        static const struct agentc_result zero;

        FUZZ_CHECK(r == 0 || r == -ETIMEDOUT || r == -ECONNRESET || r == -ENOMEM || r == -EPIPE);
        if (r == 0)
                check_result(res, cap);
        else
                FUZZ_CHECK(!memcmp(res, &zero, sizeof(zero)));
        agentc_result_free(res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct agentc_result res = {0};
        struct guest g = {0};
        struct agentc *a = NULL;
        pthread_t guest;
        uint8_t op = size ? data[0] : 0;
        int64_t timeout;
        size_t cap = 4096;
        int sv[2];

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return 0;
        g = (struct guest){sv[1], data + !!size, size - !!size, op >> 7};
        /* An exec's own deadline is its timeout plus a long grace, so a
         * silent guest is tried only where the deadline is short. */
        if ((op & 7) <= 1)
                g.hold = 0;
        timeout = g.hold ? HOLD_TIMEOUT_MS : 5000;
        if (pthread_create(&guest, NULL, guest_main, &g) != 0) {
                close(sv[0]);
                close(sv[1]);
                return 0;
        }
        FUZZ_CHECK(agentc_open_fd(sv[0], &a) == 0);

        switch (op & 7) {
        case 0: {
                struct agentc_exec e = {.command = "echo hi", .cwd = "/tmp", .user = "app", .max_output = cap};

                check_call(agentc_exec(a, &e, &res), &res, cap);
                break;
        }
        case 1: {
                struct agentc_exec e = {.command = "ls", .terminal = "t1", .timeout_ms = 0, .max_output = cap};

                check_call(agentc_exec(a, &e, &res), &res, cap);
                break;
        }
        case 2:
                check_call(agentc_read(a, "/etc/hostname", NULL, cap, timeout, &res), &res, cap);
                break;
        case 3:
                check_call(agentc_write(a, "/tmp/f", "app", "hello", 5, 0644, cap, timeout, &res), &res, 1 << 16);
                break;
        case 4:
                check_call(agentc_term_list(a, timeout, &res), &res, 1 << 16);
                break;
        case 5:
                check_call(agentc_term_log(a, "t1", cap, timeout, &res), &res, cap);
                break;
        case 6: {
                char buf[512];
                uint32_t id = 0;

                if (agentc_watch_open(a, "/srv", NULL, cap, &id) == 0) {
                        for (int i = 0; i < 64; i++) {
                                long n = agentc_stream_read(a, id, buf, sizeof(buf), (int)HOLD_TIMEOUT_MS);

                                FUZZ_CHECK(n == -EPIPE || n == -ECONNRESET || (n >= 0 && (size_t)n <= sizeof(buf)));
                                if (n < 0 || (n == 0 && g.hold))
                                        break;
                        }
                        agentc_stream_close(a, id);
                }
                break;
        }
        default: {
                int r = agentc_ping(a, (int)timeout);

                FUZZ_CHECK(r == 0 || r == -ETIMEDOUT || r == -ECONNRESET || r == -ENOMEM);
                break;
        }
        }
        agentc_unref(a);
        pthread_join(guest, NULL);
        close(sv[1]);
        return 0;
}

/*
 * http: libmicrohttpd glue. Depends on jansson and util. It must never
 * buffer more than max_body bytes of a request, and every answer it sends
 * is JSON.
 */
#include "http/http.h"
#include "lib/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The most of an oversize body that is read and dropped before the
 * connection is simply closed. */
#define HTTP_DRAIN_MAX (1ull << 30)

struct http {
        struct MHD_Daemon *mhd;
        struct http_config cfg;
        http_handler fn;
        void *ud;
};

/* Per-connection request state, kept between the handler's calls. */
struct upgrade;

struct req_ctx {
        struct strbuf body;
        int too_large;
        uint64_t drained;         /* bytes received, kept or not */
        struct upgrade *upgrade;  /* a 101 queued whose socket nobody took yet */
};

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

char *http_decode(const char *s, size_t len, int plus)
{
        char *out = malloc(len + 1);
        size_t o = 0;

        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];

                if (c == '%') {
                        int hi, lo;

                        if (i + 2 >= len || (hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0 ||
                            (hi == 0 && lo == 0)) {
                                free(out);
                                return NULL;
                        }
                        out[o++] = (char)(hi << 4 | lo);
                        i += 2;
                } else if (c == '+' && plus) {
                        out[o++] = ' ';
                } else if (c == 0) {
                        free(out);
                        return NULL;
                } else {
                        out[o++] = c;
                }
        }
        out[o] = 0;
        return out;
}

char *http_header(const struct http_req *r, const char *name)
{
        const char *v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);

        return v ? strdup(v) : NULL;
}

char *http_query(const struct http_req *r, const char *name)
{
        const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);

        return v ? http_decode(v, strlen(v), 1) : NULL;
}

void http_error(struct http_resp *resp, unsigned status, const char *code, const char *fmt, ...)
{
        char msg[1024], *text;
        va_list ap;
        size_t n;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        /* A message quotes paths, ids and a guest's words: bytes that are
         * not UTF-8 (or a character cut at the size above) would make
         * json_pack fail and the answer go out without its error. */
        text = utf8_sanitize(msg, strlen(msg), &n);
        json_decref(resp->body);
        resp->status = status;
        resp->body = json_pack("{s:s,s:s,s:s}", "error", code, "code", code, "message", text ? text : "");
        free(text);
}

struct stream_call {
        http_stream_fn fn;
        void *ctx;
        void (*done)(void *ctx);
};

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
        struct stream_call *s = cls;
        long n;

        (void)pos;
        n = s->fn(s->ctx, buf, max);
        return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : (ssize_t)n;
}

static void stream_free(void *cls)
{
        struct stream_call *s = cls;

        if (s->done)
                s->done(s->ctx);
        free(s);
}

static enum MHD_Result send_stream(struct MHD_Connection *conn, const struct http_resp *resp)
{
        struct stream_call *s = malloc(sizeof(*s));
        struct MHD_Response *r;
        enum MHD_Result ret;

        if (!s) {
                resp->stream_done(resp->stream_ctx);
                return MHD_NO;
        }
        *s = (struct stream_call){resp->stream, resp->stream_ctx, resp->stream_done};
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_reader, s, stream_free);
        if (!r) {
                stream_free(s);
                return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "application/x-ndjson");
        MHD_add_response_header(r, "Cache-Control", "no-store");
        ret = MHD_queue_response(conn, resp->status ? resp->status : 200, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, const struct http_resp *resp)
{
        struct MHD_Response *r;
        enum MHD_Result ret;
        char *text = resp->body ? json_dumps(resp->body, JSON_COMPACT) : strdup("{}");

        if (!text)
                return MHD_NO;
        r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!r) {
                free(text);
                return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "application/json");
        if (resp->allow[0])
                MHD_add_response_header(r, "Allow", resp->allow);
        ret = MHD_queue_response(conn, resp->status, r);
        MHD_destroy_response(r);
        return ret;
}

/* An upgraded connection's work, handed to its own thread. */
struct upgrade {
        void (*fn)(void *ctx, int fd, const char *extra, size_t extra_len);
        void (*done)(void *ctx);
        void *ctx;
        MHD_socket fd;
        struct MHD_UpgradeResponseHandle *urh;
        char *extra;
        size_t extra_len;
};

static void *upgrade_main(void *arg)
{
        struct upgrade *u = arg;
        int flags = fcntl(u->fd, F_GETFL);

        /* MHD's sockets are non-blocking; the handler gets a blocking one. */
        if (flags >= 0)
                fcntl(u->fd, F_SETFL, flags & ~O_NONBLOCK);
        u->fn(u->ctx, u->fd, u->extra, u->extra_len);
        MHD_upgrade_action(u->urh, MHD_UPGRADE_ACTION_CLOSE);
        u->done(u->ctx);
        free(u->extra);
        free(u);
        return NULL;
}

static void on_upgrade(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra_in,
                       size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
        struct upgrade *u = cls;
        pthread_attr_t attr;
        pthread_t t;

        (void)conn;
        /* The upgrade's thread owns it now (see on_completed). */
        if (con_cls)
                ((struct req_ctx *)con_cls)->upgrade = NULL;
        u->fd = sock;
        u->urh = urh;
        u->extra = extra_in_size ? malloc(extra_in_size) : NULL;
        if (u->extra) {
                memcpy(u->extra, extra_in, extra_in_size);
                u->extra_len = extra_in_size;
        }
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if ((extra_in_size && !u->extra) || pthread_create(&t, &attr, upgrade_main, u) != 0) {
                MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
                u->done(u->ctx);
                free(u->extra);
                free(u);
        }
        pthread_attr_destroy(&attr);
}

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 4.2.2):
 * base64 of the SHA-1 of the key and a fixed GUID. */
static int ws_accept(const char *key, char out[32])
{
        char in[128];
        uint8_t digest[20];
        char *b64;
        int n = snprintf(in, sizeof(in), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);

        if (n <= 0 || (size_t)n >= sizeof(in) ||
            gnutls_hash_fast(GNUTLS_DIG_SHA1, in, (size_t)n, digest) < 0 || !(b64 = base64_encode(digest, 20)))
                return -EINVAL;
        snprintf(out, 32, "%s", b64);
        free(b64);
        return 0;
}

static enum MHD_Result send_upgrade(struct MHD_Connection *conn, struct req_ctx *ctx, const struct http_resp *resp)
{
        const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
        struct upgrade *u = calloc(1, sizeof(*u));
        struct MHD_Response *r = NULL;
        enum MHD_Result ret = MHD_NO;
        char accept[32];

        if (u && key && strlen(key) == 24 && ws_accept(key, accept) == 0) {
                *u = (struct upgrade){.fn = resp->upgrade, .done = resp->upgrade_done, .ctx = resp->upgrade_ctx};
                r = MHD_create_response_for_upgrade(on_upgrade, u);
        }
        if (r) {
                MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket");
                MHD_add_response_header(r, "Sec-WebSocket-Accept", accept);
                if (resp->ws_protocol)
                        MHD_add_response_header(r, "Sec-WebSocket-Protocol", resp->ws_protocol);
                ret = MHD_queue_response(conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
                MHD_destroy_response(r);
        }
        if (ret != MHD_YES) {
                resp->upgrade_done(resp->upgrade_ctx);
                free(u);
        } else {
                ctx->upgrade = u;
        }
        return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
        struct http *h = cls;
        struct req_ctx *ctx = *con_cls;
        struct http_resp resp = {0};
        enum MHD_Result ret;

        (void)version;
        if (!ctx) {
                const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");

                ctx = calloc(1, sizeof(*ctx));
                if (!ctx)
                        return MHD_NO;
                *con_cls = ctx;
                const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Expect");
                unsigned long long announced = cl ? strtoull(cl, NULL, 10) : 0;

                /* A body announced too large is refused before any of it is
                 * read when the client waits for that ("Expect:
                 * 100-continue"), or when it is too large to be worth
                 * draining. Other clients send the body regardless and would
                 * see a reset rather than the answer: drain theirs below. */
                if (announced > HTTP_DRAIN_MAX ||
                    (announced > h->cfg.max_body && expect && !strcasecmp(expect, "100-continue"))) {
                        http_error(&resp, 413, "PAYLOAD_TOO_LARGE", "request body exceeds %zu bytes", h->cfg.max_body);
                        ret = send_json(conn, &resp);
                        json_decref(resp.body);
                        return ret;
                }
                return MHD_YES;
        }
        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;

                /* A body that grows past the cap is read to its end and
                 * dropped, so the client is still reading when the 413 comes
                 * (answering mid-upload makes many clients see a reset
                 * instead). Past HTTP_DRAIN_MAX the connection is cut. */
                ctx->drained += n;
                if (ctx->drained > HTTP_DRAIN_MAX)
                        return MHD_NO;
                if (ctx->body.len + n > h->cfg.max_body) {
                        ctx->too_large = 1;
                        free(ctx->body.s);
                        ctx->body = (struct strbuf){0};
                } else if (!ctx->too_large && strbuf_add(&ctx->body, upload_data, n) < 0) {
                        return MHD_NO;
                }
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (ctx->too_large) {
                http_error(&resp, 413, "PAYLOAD_TOO_LARGE", "request body exceeds %zu bytes", h->cfg.max_body);
        } else {
                struct http_req req = {
                        .conn = conn,
                        .method = method,
                        .path = url,
                        .body = ctx->body.s ? ctx->body.s : "",
                        .body_len = ctx->body.len,
                };

                h->fn(h->ud, &req, &resp);
        }
        if (resp.upgrade) {
                json_decref(resp.body);
                free(resp.text);
                return send_upgrade(conn, ctx, &resp);
        }
        if (resp.stream) {
                json_decref(resp.body);
                free(resp.text);
                return send_stream(conn, &resp);
        }
        if (resp.text && !resp.body) {
                struct MHD_Response *r =
                    MHD_create_response_from_buffer(strlen(resp.text), resp.text, MHD_RESPMEM_MUST_FREE);

                if (!r) {
                        free(resp.text);
                        return MHD_NO;
                }
                MHD_add_response_header(r, "Content-Type", resp.content_type ? resp.content_type : "text/plain");
                MHD_add_response_header(r, "Cache-Control", "no-store");
                ret = MHD_queue_response(conn, resp.status ? resp.status : 200, r);
                MHD_destroy_response(r);
                return ret;
        }
        free(resp.text);
        if (resp.status == 0)
                http_error(&resp, 500, "INTERNAL_ERROR", "no answer");
        ret = send_json(conn, &resp);
        json_decref(resp.body);
        return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
        struct req_ctx *ctx = *con_cls;

        (void)cls, (void)conn, (void)toe;
        if (ctx) {
                /* A client gone before its 101 went out: the upgrade never
                 * ran, and what it holds is let go here. */
                if (ctx->upgrade) {
                        ctx->upgrade->done(ctx->upgrade->ctx);
                        free(ctx->upgrade);
                }
                free(ctx->body.s);
                free(ctx);
                *con_cls = NULL;
        }
}

/* Keep the URL and query exactly as sent: the API decodes per segment. */
static size_t unescape_none(void *cls, struct MHD_Connection *c, char *s)
{
        (void)cls, (void)c;
        return strlen(s);
}

int http_start(const struct http_config *c, http_handler fn, void *ud, struct http **ret)
{
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
        struct http *h;

        if (inet_pton(AF_INET, c->host, &sa.sin_addr) != 1)
                return -EINVAL;
        h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->cfg = *c;
        h->cfg.host = NULL; /* not kept */
        h->fn = fn;
        h->ud = ud;
        h->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                          MHD_USE_ERROR_LOG | MHD_USE_ITC | MHD_ALLOW_UPGRADE,
                                  (uint16_t)c->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &sa,
                                  MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_UNESCAPE_CALLBACK,
                                  unescape_none, NULL, MHD_OPTION_CONNECTION_LIMIT, c->max_connections,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_END);
        if (!h->mhd) {
                free(h);
                return -EADDRINUSE;
        }
        *ret = h;
        return 0;
}

int http_drain(struct http *h, int timeout_ms)
{
        int64_t deadline = now_ms() + timeout_ms;
        const union MHD_DaemonInfo *info;

        if (!h)
                return 0;
        MHD_quiesce_daemon(h->mhd);
        for (;;) {
                info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
                if (!info || info->num_connections == 0)
                        return 0;
                if (now_ms() >= deadline)
                        return (int)info->num_connections;
                sleep_ms(20);
        }
}

void http_stop(struct http *h)
{
        if (!h)
                return;
        MHD_stop_daemon(h->mhd);
        free(h);
}

/*
 * http: the HTTP server glue around libmicrohttpd. Accepts connections (one
 * thread each, so a handler may block on a VM), collects request bodies up
 * to a cap, and hands complete requests to the handler it was started
 * with; sends its JSON answers. It knows nothing of the API behind the
 * handler. The URL path arrives undecoded so that "%2F" inside a segment
 * stays part of that segment; the handler decodes segment by segment.
 */
#ifndef SPROUT_HTTP_H
#define SPROUT_HTTP_H

#include <jansson.h>
#include <stddef.h>

struct MHD_Connection;

/* One request as the handler sees it. */
struct http_req {
        struct MHD_Connection *conn;
        const char *method;
        const char *path; /* raw, percent-encoded, no query string */
        const char *body; /* NUL-terminated; may contain NULs before body_len */
        size_t body_len;
};

/* A streamed body: called from the connection's thread (so it may block)
 * to fill buf with up to max bytes. Returns the count, 0 to be called again,
 * or -1 at the end of the stream. done is called once the connection ends,
 * whoever ended it, and frees ctx. */
typedef long (*http_stream_fn)(void *ctx, char *buf, size_t max);

/* What the handler answers: a status and a JSON body (owned, may be
 * NULL for an empty body), or a text body (owned, malloc'd) of
 * content_type, or, when stream is set, newline-delimited JSON produced
 * by stream. allow, when not empty, is sent as the Allow header (a 405's
 * methods). */
struct http_resp {
        unsigned status;
        json_t *body;
        char *text;
        const char *content_type;
        char allow[64];
        http_stream_fn stream;
        void *stream_ctx;
        void (*stream_done)(void *ctx);
        /* When upgrade is set, the answer is 101 Switching Protocols to a
         * WebSocket (the request's Sec-WebSocket-Key answered, ws_protocol
         * named when set): upgrade(ctx, fd, extra, extra_len) then runs on
         * a thread of its own with the connection's socket (blocking), extra being
         * what the client sent after its request. upgrade_done(ctx) is
         * called once afterwards, or at once when the 101 could not be
         * sent, and frees ctx. */
        void (*upgrade)(void *ctx, int fd, const char *extra, size_t extra_len);
        void *upgrade_ctx;
        void (*upgrade_done)(void *ctx);
        const char *ws_protocol;
};

/* Looks up a request header (case-insensitive) or a query argument, decoded.
 * The returned string is malloc'd; NULL when absent. */
char *http_header(const struct http_req *r, const char *name);
char *http_query(const struct http_req *r, const char *name);

/* Percent-decodes s (and '+' as space when plus is set) into a malloc'd
 * string. Returns NULL on a malformed escape or an encoded NUL byte. */
char *http_decode(const char *s, size_t len, int plus);

/* Sets resp to an error: {"error": code, "code": code, "message": ...}. */
void http_error(struct http_resp *resp, unsigned status, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Answers one complete request; called from the connection's thread. */
typedef void (*http_handler)(void *ud, const struct http_req *req, struct http_resp *resp);

struct http_config {
        const char *host; /* IPv4 address to listen on */
        int port;
        size_t max_body;          /* cap on a request body, bytes */
        unsigned max_connections; /* cap on concurrent connections */
};

struct http;

/* Starts serving; fn(ud, ...) answers every request. */
int http_start(const struct http_config *c, http_handler fn, void *ud, struct http **ret);
/* Stops accepting connections and waits up to timeout_ms for the open ones
 * to finish. Returns how many are still open. */
int http_drain(struct http *h, int timeout_ms);
/* Stops the server and frees h; NULL is a no-op. */
void http_stop(struct http *h);

#endif

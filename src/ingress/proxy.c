/*
 * proxy: see proxy.h. Each connection is a loop over poll(2) on the client
 * and the upstream (the VM) socket: what the client sends goes through a
 * small state machine that finds each request's head (rewritten on its
 * way) and the end of its body, so that every request of a keep-alive
 * connection is routed and marked; what the VM sends back is copied as it
 * comes. Neither direction holds more than a buffer, so a slow reader
 * slows the sender rather than growing memory.
 */
#include "ingress/proxy.h"
#include "ingress/tls.h"
#include "lib/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX (16 * 1024) /* a request head, request line included */
#define BUF (32 * 1024)
#define LINE_MAX_ 256 /* a chunk-size or trailer line */

struct proxy {
        struct proxy_config cfg;
        char *domain;
        struct tls_ctx *tls; /* NULL: plain HTTP only */
        struct vmm *m;
        struct store *s;
        int fd;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct conn *conns; /* open, under lock */
        int n;
        int stopping;
};

enum state { HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, RAW };

struct conn {
        struct proxy *p;
        struct conn *next;
        int c, u; /* client and upstream sockets; -1: none */
        struct tls *tls; /* the client's TLS session; NULL: plain */
        char peer[INET6_ADDRSTRLEN];
        char vm[32];
        int port;          /* the VM port u is connected to */
        char instance[21]; /* the VM's instance then */
        enum state st;
        int64_t left; /* BODY, CHUNK_DATA: bytes to go; CHUNK_CRLF: 2 */
        size_t line;  /* CHUNK_SIZE, TRAILER: bytes of the current line so far */
        char chunk[LINE_MAX_ + 1];
        int c_eof, u_eof, upgrade;
        int awaiting;    /* a request went to the VM, which has not answered yet */
        int64_t touched; /* now_ms() the VM was last told it is used */
        char in[HEAD_MAX];
        size_t in_len;
        char out[HEAD_MAX + 1024];
        size_t out_off, out_len;
        char back[BUF];
        size_t back_off, back_len;
};

int proxy_host_name(char *buf, size_t size, const char *id, int port, const char *domain)
{
        if (port == 443)
                return path_fmt(buf, size, "%s.%s", id, domain);
        return path_fmt(buf, size, "%d-%s.%s", port, id, domain);
}

/* What the client sent, read as recv(2) with MSG_DONTWAIT does. */
static ssize_t c_recv(struct conn *x, char *buf, size_t n)
{
        return x->tls ? tls_recv(x->tls, buf, n) : recv(x->c, buf, n, MSG_DONTWAIT);
}

static ssize_t c_send(struct conn *x, const char *buf, size_t n)
{
        return x->tls ? tls_send(x->tls, buf, n) : send(x->c, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* Writes all of n bytes to the client, waiting up to a second for room:
 * for the proxy's own short answers. */
static void send_all(struct conn *x, const char *s, size_t n)
{
        int64_t end = now_ms() + 1000;

        while (n > 0) {
                struct pollfd f = {.fd = x->c, .events = POLLOUT};
                ssize_t r = c_send(x, s, n);

                if (r > 0) {
                        s += r, n -= (size_t)r;
                        continue;
                }
                if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                        return;
                if (now_ms() >= end || poll(&f, 1, (int)(end - now_ms())) <= 0)
                        return;
        }
}

/* The proxy's own answer, and the end of the connection. */
static void answer(struct conn *x, int status, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void answer(struct conn *x, int status, const char *reason, const char *fmt, ...)
{
        char body[512], head[256];
        va_list ap;
        int n;

        va_start(ap, fmt);
        vsnprintf(body, sizeof(body) - 1, fmt, ap);
        va_end(ap);
        strcat(body, "\n");
        n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\nServer: sprout\r\n\r\n",
                     status, reason, strlen(body));
        send_all(x, head, (size_t)n);
        send_all(x, body, strlen(body));
        x->c_eof = x->u_eof = 1;
}

/* The value of header name in the head's header lines, or NULL; *len its
 * length. A second one with another value is *dup. */
static const char *header(const char *h, const char *end, const char *name, size_t *len, int *dup)
{
        size_t nl = strlen(name);
        const char *found = NULL;

        *dup = 0;
        for (const char *l = h; l < end;) {
                const char *e = memchr(l, '\n', (size_t)(end - l)), *v, *ve;

                if (!e)
                        break;
                if ((size_t)(e - l) > nl && !strncasecmp(l, name, nl) && l[nl] == ':') {
                        for (v = l + nl + 1; v < e && (*v == ' ' || *v == '\t'); v++)
                                ;
                        for (ve = e; ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'); ve--)
                                ;
                        if (found && ((size_t)(ve - v) != *len || strncasecmp(found, v, *len)))
                                *dup = 1;
                        found = v;
                        *len = (size_t)(ve - v);
                }
                l = e + 1;
        }
        return found;
}

/* 1 when the comma-separated value v (len) holds token. */
static int has_token(const char *v, size_t len, const char *token)
{
        size_t tl = strlen(token);

        for (size_t i = 0; i + tl <= len; i++)
                if (!strncasecmp(v + i, token, tl) && (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
                    (i + tl == len || v[i + tl] == ',' || v[i + tl] == ' '))
                        return 1;
        return 0;
}

/* Where host (lower case, no port) goes: the VM and its port; or an
 * answer (status, message) when nowhere. */
static int route(struct conn *x, const char *host, char vm[32], int *port)
{
        struct proxy *p = x->p;
        size_t hl = strlen(host), dl = strlen(p->domain);
        int ext = 443, r;

        if (hl > dl + 1 && host[hl - dl - 1] == '.' && !strcmp(host + hl - dl, p->domain)) {
                char label[64];
                const char *id = label, *dash;
                size_t ll = hl - dl - 1;

                if (ll >= sizeof(label))
                        return -ENOENT;
                memcpy(label, host, ll);
                label[ll] = 0;
                dash = strchr(label, '-');
                if (dash) {
                        char *end;
                        long v = strtol(label, &end, 10);

                        if (end != dash || v <= 0 || v > 65535)
                                return -ENOENT;
                        ext = (int)v;
                        id = dash + 1;
                }
                if (strlen(id) != 20 || strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789") != 20)
                        return -ENOENT;
                snprintf(vm, 32, "%s", id);
                r = store_port_target(p->s, vm, ext, port);
                return r;
        }
        return store_domain_route(p->s, host, vm, port);
}

/* Connects to what the head's Host names (once per target). 0, or the
 * connection was answered and ends. */
static int reach(struct conn *x, const char *host_raw, size_t host_len)
{
        char host[256], vm[32] = "";
        int port = 0, r, fd = -1;

        if (host_len == 0 || host_len >= sizeof(host)) {
                answer(x, 400, "Bad Request", "this request has no usable Host header");
                return -1;
        }
        for (size_t i = 0; i < host_len; i++)
                host[i] = (char)tolower((unsigned char)host_raw[i]);
        host[host_len] = 0;
        if (host[0] != '[')
                host[strcspn(host, ":")] = 0;
        if (!host[0] || strspn(host, "abcdefghijklmnopqrstuvwxyz0123456789.-") != strlen(host)) {
                answer(x, 400, "Bad Request", "'%.100s' is not a host name", host);
                return -1;
        }
        r = route(x, host, vm, &port);
        if (r < 0) {
                if (r == -ENOENT)
                        answer(x, 404, "Not Found", "no VM is served at %s", host);
                else
                        answer(x, 500, "Internal Server Error", "routing %s failed: %s", host, strerror(-r));
                return -1;
        }
        if (x->u >= 0 && (strcmp(x->vm, vm) || x->port != port)) {
                close(x->u);
                x->u = -1;
        }
        /* A connection kept alive still needs its VM running: it may have
         * been suspended since the last request. */
        if (x->u >= 0) {
                r = vmm_ingress_wake(x->p->m, vm, x->instance);
                if (r == 0)
                        return 0;
                close(x->u); /* the VM was suspended or stopped since: a new one */
                x->u = -1;
        }
        if (r >= 0)
                r = vmm_ingress_connect(x->p->m, vm, port, x->p->cfg.timeout_s * 1000, &fd, x->instance);
        if (r < 0) {
                if (r == -ENOENT)
                        answer(x, 404, "Not Found", "no VM is served at %s (its VM is gone)", host);
                else if (r == -ENOTCONN)
                        answer(x, 503, "Service Unavailable",
                               "the VM behind %s is stopped; start it to serve", host);
                else if (r == -ECONNREFUSED)
                        answer(x, 502, "Bad Gateway", "nothing listens on port %d in the VM behind %s", port,
                               host);
                else if (r == -ETIMEDOUT)
                        answer(x, 504, "Gateway Timeout", "the VM behind %s did not answer on port %d", host,
                               port);
                else if (r == -EOPNOTSUPP)
                        answer(x, 502, "Bad Gateway",
                               "this server runs VMs unconfined: the proxy cannot reach them");
                else
                        answer(x, 502, "Bad Gateway", "the VM behind %s cannot be reached: %s", host,
                               strerror(-r));
                return -1;
        }
        x->u = fd;
        snprintf(x->vm, sizeof(x->vm), "%s", vm);
        x->port = port;
        x->touched = now_ms();
        return 0;
}

/* No control character but a tab: a bare CR or a NUL in a head is how
 * requests get smuggled past one parser and not another. */
static int valid_text(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (((unsigned char)s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
                        return 0;
        return 1;
}

static int valid_token(const char *s, size_t n)
{
        if (n == 0)
                return 0;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)s[i]) && (!s[i] || !strchr("!#$%&'*+-.^_`|~", s[i])))
                        return 0;
        return 1;
}

/* A whole head is at in[0..n): checks it, routes it and queues it,
 * rewritten, for the VM. 0, or the connection was answered and ends. */
static int take_head(struct conn *x, size_t n)
{
        const char *h = x->in, *end = x->in + n, *eol = memchr(h, '\n', n), *sp1, *sp2;
        const char *host, *cl, *te, *up, *conn;
        size_t len, hlen = 0, cllen = 0, telen = 0, uplen = 0, connlen = 0, rl;
        int dup = 0, d;
        char *o;

        rl = (size_t)(eol - h);
        sp1 = memchr(h, ' ', rl);
        sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
        if (!sp1 || !sp2 || !valid_token(h, (size_t)(sp1 - h)) || sp2 == sp1 + 1 ||
            !valid_text(sp1, (size_t)(sp2 - sp1)) || memchr(sp1 + 1, '\t', (size_t)(sp2 - sp1 - 1)) ||
            (strncmp(sp2 + 1, "HTTP/1.1", 8) && strncmp(sp2 + 1, "HTTP/1.0", 8)) ||
            (eol - (sp2 + 9) != 0 && !(eol - (sp2 + 9) == 1 && sp2[9] == '\r'))) {
                answer(x, 400, "Bad Request", "a malformed request line");
                return -1;
        }
        for (const char *l = eol + 1; l < end;) {
                const char *e = memchr(l, '\n', (size_t)(end - l)), *colon;

                if (!e)
                        break;
                len = (size_t)(e - l) - (e > l && e[-1] == '\r');
                if (len == 0)
                        break;
                colon = memchr(l, ':', len);
                if (!colon || !valid_token(l, (size_t)(colon - l)) ||
                    !valid_text(colon + 1, (size_t)(l + len - colon - 1))) {
                        answer(x, 400, "Bad Request", "a malformed header line");
                        return -1;
                }
                l = e + 1;
        }
        host = header(eol + 1, end, "Host", &hlen, &d);
        dup |= d;
        cl = header(eol + 1, end, "Content-Length", &cllen, &d);
        dup |= d;
        te = header(eol + 1, end, "Transfer-Encoding", &telen, &d);
        up = header(eol + 1, end, "Upgrade", &uplen, &d);
        conn = header(eol + 1, end, "Connection", &connlen, &d);
        if (dup || (cl && te) || (cl && (cllen == 0 || cllen > 18 || strspn(cl, "0123456789") < cllen))) {
                answer(x, 400, "Bad Request",
                       "conflicting or malformed Host, Content-Length or Transfer-Encoding");
                return -1;
        }
        if (te && !(telen == 7 && !strncasecmp(te, "chunked", 7))) {
                answer(x, 501, "Not Implemented", "only the chunked transfer coding is taken");
                return -1;
        }
        if (!host) {
                answer(x, 400, "Bad Request", "this request has no Host header");
                return -1;
        }
        if (reach(x, host, hlen) < 0)
                return -1;
        /* The head, without what the client said of forwarding, and then
         * what this proxy knows of it; every line ends in CRLF. */
        o = x->out + x->out_off + x->out_len;
        len = rl - (rl > 0 && h[rl - 1] == '\r');
        memcpy(o, h, len);
        memcpy(o + len, "\r\n", 2);
        o += len + 2;
        for (const char *l = eol + 1; l < end;) {
                const char *e = memchr(l, '\n', (size_t)(end - l));

                len = (size_t)(e - l) - (e[-1] == '\r');
                if (len == 0)
                        break;
                if (strncasecmp(l, "X-Forwarded-", 12) && strncasecmp(l, "Forwarded:", 10)) {
                        memcpy(o, l, len);
                        memcpy(o + len, "\r\n", 2);
                        o += len + 2;
                }
                l = e + 1;
        }
        o += sprintf(o, "X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: %.*s\r\n\r\n",
                     x->peer, x->tls ? "https" : "http", (int)hlen, host);
        x->out_len = (size_t)(o - (x->out + x->out_off));
        x->awaiting = 1;
        x->upgrade = up && conn && has_token(conn, connlen, "upgrade");
        if (x->upgrade)
                x->st = RAW;
        else if (te)
                x->st = CHUNK_SIZE, x->line = 0;
        else if (cl && (x->left = strtoll(cl, NULL, 10)) > 0)
                x->st = BODY;
        else
                x->st = HEAD;
        return 0;
}

/* The length of the head at the start of in[0..n) through the empty line
 * that ends it (lines end in LF or CRLF), and its number of lines; 0 while
 * the empty line has not come. */
static size_t head_len(const char *in, size_t n, size_t *lines)
{
        const char *l = in, *end = in + n, *e;

        *lines = 0;
        for (; (e = memchr(l, '\n', (size_t)(end - l))); l = e + 1) {
                (*lines)++;
                if (e == l || (e == l + 1 && *l == '\r'))
                        return (size_t)(e + 1 - in);
        }
        return 0;
}

/* Moves what the client sent from in to out, as the state allows. 0, or
 * the connection was answered and ends. */
static int pump_in(struct conn *x)
{
        for (;;) {
                size_t room = sizeof(x->out) - x->out_off - x->out_len, take = 0, lines;

                if (x->in_len == 0)
                        return 0;
                if (x->st == HEAD) {
                        /* A head goes into an empty out buffer, whole. */
                        if (x->out_len)
                                return 0;
                        x->out_off = 0;
                        /* Empty lines before a request line are let go. */
                        while (x->in_len && (x->in[0] == '\n' || (x->in_len > 1 && !memcmp(x->in, "\r\n", 2)))) {
                                take = x->in[0] == '\n' ? 1 : 2;
                                memmove(x->in, x->in + take, x->in_len - take);
                                x->in_len -= take;
                        }
                        take = head_len(x->in, x->in_len, &lines);
                        if (!take) {
                                if (x->in_len == sizeof(x->in)) {
                                        answer(x, 431, "Request Header Fields Too Large",
                                               "a request head is at most %d bytes", HEAD_MAX);
                                        return -1;
                                }
                                return 0;
                        }
                        /* Room for the head with a CR added to each line,
                         * and the proxy's own lines. */
                        if (take + lines + 600 > sizeof(x->out)) {
                                answer(x, 431, "Request Header Fields Too Large",
                                       "a request head is at most %d bytes", HEAD_MAX - 2048);
                                return -1;
                        }
                        if (take_head(x, take) < 0)
                                return -1;
                        memmove(x->in, x->in + take, x->in_len - take);
                        x->in_len -= take;
                        continue;
                }
                if (x->out_len == 0)
                        x->out_off = 0, room = sizeof(x->out);
                if (room == 0)
                        return 0;
                switch (x->st) {
                case RAW:
                        take = x->in_len;
                        break;
                case BODY:
                case CHUNK_DATA:
                        take = x->in_len < (size_t)x->left ? x->in_len : (size_t)x->left;
                        break;
                case CHUNK_CRLF:
                        take = x->in_len < (size_t)x->left ? x->in_len : (size_t)x->left;
                        break;
                case CHUNK_SIZE:
                case TRAILER: {
                        char *nl = memchr(x->in, '\n', x->in_len);

                        take = nl ? (size_t)(nl - x->in) + 1 : x->in_len;
                        if (x->line + take > LINE_MAX_) {
                                answer(x, 400, "Bad Request", "a chunk size or trailer line is too long");
                                return -1;
                        }
                        memcpy(x->chunk + x->line, x->in, take);
                        x->line += take;
                        x->chunk[x->line] = 0;
                        break;
                }
                default:
                        return 0;
                }
                if (take > room)
                        take = room;
                memcpy(x->out + x->out_off + x->out_len, x->in, take);
                x->out_len += take;
                memmove(x->in, x->in + take, x->in_len - take);
                x->in_len -= take;
                switch (x->st) {
                case BODY:
                        if ((x->left -= (int64_t)take) == 0)
                                x->st = HEAD;
                        break;
                case CHUNK_DATA:
                        if ((x->left -= (int64_t)take) == 0)
                                x->st = CHUNK_CRLF, x->left = 2;
                        break;
                case CHUNK_CRLF:
                        if ((x->left -= (int64_t)take) == 0)
                                x->st = CHUNK_SIZE, x->line = 0;
                        break;
                case CHUNK_SIZE:
                        if (x->line && x->chunk[x->line - 1] == '\n') {
                                char *end;
                                long long size = strtoll(x->chunk, &end, 16);

                                if (end == x->chunk || size < 0 || !isxdigit((unsigned char)x->chunk[0])) {
                                        answer(x, 400, "Bad Request", "a malformed chunk size");
                                        return -1;
                                }
                                x->line = 0;
                                if (size == 0)
                                        x->st = TRAILER;
                                else
                                        x->st = CHUNK_DATA, x->left = size;
                        }
                        break;
                case TRAILER:
                        if (x->line && x->chunk[x->line - 1] == '\n') {
                                int blank = x->line <= 2;

                                x->line = 0;
                                if (blank)
                                        x->st = HEAD;
                        }
                        break;
                default:
                        break;
                }
        }
}

/* Reads what is there from the client (or the VM) into buf; 0 at EOF, -1
 * when nothing (or an error: *eof then). */
static ssize_t take(struct conn *x, int client, char *buf, size_t n, int *eof)
{
        ssize_t r = client ? c_recv(x, buf, n) : recv(x->u, buf, n, MSG_DONTWAIT);

        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                *eof = 1;
        return r;
}

static ssize_t give(struct conn *x, int client, const char *buf, size_t n, int *eof)
{
        ssize_t r = client ? c_send(x, buf, n) : send(x->u, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);

        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                *eof = 1;
        return r;
}

static void serve(struct conn *x)
{
        int64_t idle = (int64_t)x->p->cfg.timeout_s * 1000, last = now_ms();

        for (;;) {
                struct pollfd f[2];
                int moved = 0, r, pending;

                if (!x->c_eof && pump_in(x) < 0)
                        return;
                /* After pump_in, which may have connected x->u. */
                f[0] = (struct pollfd){.fd = x->c};
                f[1] = (struct pollfd){.fd = x->u};
                if (x->c_eof && x->u < 0)
                        return;
                if (x->u_eof && x->back_len == 0)
                        return; /* the VM closed: so does the client */
                if (x->c_eof && x->out_len == 0 && x->u >= 0 && !x->u_eof)
                        shutdown(x->u, SHUT_WR);
                if (!x->c_eof && x->in_len < sizeof(x->in))
                        f[0].events |= POLLIN;
                if (x->back_len)
                        f[0].events |= POLLOUT;
                if (x->u >= 0 && !x->u_eof && x->back_len == 0)
                        f[1].events |= POLLIN;
                if (x->u >= 0 && x->out_len)
                        f[1].events |= POLLOUT;
                if (x->u < 0)
                        f[1].fd = -1;
                /* TLS may hold decrypted bytes that poll cannot see. */
                pending = x->tls && (f[0].events & POLLIN) && tls_pending(x->tls) > 0;
                r = poll(f, 2, pending ? 0 : 1000);
                if (r < 0 && errno != EINTR)
                        return;
                if (x->p->stopping)
                        return;
                if (pending)
                        f[0].revents |= POLLIN;
                if ((f[0].revents & (POLLIN | POLLHUP | POLLERR)) && !x->c_eof && x->in_len < sizeof(x->in)) {
                        ssize_t n = take(x, 1, x->in + x->in_len, sizeof(x->in) - x->in_len, &x->c_eof);

                        if (n > 0)
                                x->in_len += (size_t)n, moved = 1;
                }
                if ((f[1].revents & (POLLIN | POLLHUP | POLLERR)) && !x->u_eof && x->back_len == 0) {
                        ssize_t n = take(x, 0, x->back, sizeof(x->back), &x->u_eof);

                        if (n > 0)
                                x->back_off = 0, x->back_len = (size_t)n, moved = 1, x->awaiting = 0;
                }
                if (x->back_len && (f[0].revents & POLLOUT || moved)) {
                        int gone = 0;
                        ssize_t n = give(x, 1, x->back + x->back_off, x->back_len, &gone);

                        if (gone)
                                return;
                        if (n > 0)
                                x->back_off += (size_t)n, x->back_len -= (size_t)n, moved = 1;
                }
                if (x->u >= 0 && x->out_len) {
                        int gone = 0;
                        ssize_t n = give(x, 0, x->out + x->out_off, x->out_len, &gone);

                        if (gone) {
                                x->u_eof = 1;
                                x->out_len = 0;
                        } else if (n > 0) {
                                x->out_off += (size_t)n, x->out_len -= (size_t)n, moved = 1;
                        }
                }
                if (moved) {
                        last = now_ms();
                        if (x->u >= 0 && last - x->touched >= 1000) {
                                vmm_ingress_touch(x->p->m, x->vm);
                                x->touched = last;
                        }
                } else if (now_ms() - last >= idle) {
                        /* An idle keep-alive connection just ends. */
                        if (x->u >= 0 && x->awaiting && x->st != RAW)
                                answer(x, 504, "Gateway Timeout", "the VM did not answer within %d s",
                                       x->p->cfg.timeout_s);
                        return;
                }
        }
}

/* With TLS configured, a connection whose first byte opens a TLS
 * handshake is TLS; any other is plain HTTP, so one port serves both.
 * 0, or the connection ends. */
static int start_tls(struct conn *x)
{
        struct pollfd f = {.fd = x->c, .events = POLLIN};
        int wait = x->p->cfg.timeout_s * 1000;
        unsigned char b;

        if (!x->p->tls)
                return 0;
        if (poll(&f, 1, wait) <= 0 || recv(x->c, &b, 1, MSG_PEEK) != 1)
                return -1;
        if (b != 0x16) /* a TLS record of type handshake */
                return 0;
        return tls_accept(x->p->tls, x->c, wait, &x->tls);
}

static void *conn_main(void *arg)
{
        struct conn *x = arg;
        struct proxy *p = x->p;

        if (!x->c_eof && start_tls(x) == 0)
                serve(x);
        pthread_mutex_lock(&p->lock);
        for (struct conn **q = &p->conns; *q; q = &(*q)->next) {
                if (*q == x) {
                        *q = x->next;
                        break;
                }
        }
        p->n--;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        if (x->u >= 0)
                close(x->u);
        tls_free(x->tls);
        /* What the client still sends is read and dropped for a moment, so
         * that closing does not reset the connection under the answer. */
        shutdown(x->c, SHUT_WR);
        for (int64_t end = now_ms() + 1000, n = 0; n < (1 << 20) && now_ms() < end;) {
                struct pollfd f = {.fd = x->c, .events = POLLIN};
                char junk[4096];
                ssize_t r;

                if (poll(&f, 1, 200) <= 0)
                        break;
                r = recv(x->c, junk, sizeof(junk), MSG_DONTWAIT);
                if (r <= 0)
                        break;
                n += r;
        }
        close(x->c);
        free(x);
        return NULL;
}

static void *accept_main(void *arg)
{
        struct proxy *p = arg;

        for (;;) {
                struct sockaddr_storage a;
                socklen_t al = sizeof(a);
                int fd = accept4(p->fd, (struct sockaddr *)&a, &al, SOCK_CLOEXEC | SOCK_NONBLOCK), one = 1;
                struct conn *x;
                pthread_attr_t attr;
                pthread_t t;

                if (fd < 0) {
                        if (p->stopping)
                                return NULL;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM)
                                sleep_ms(100);
                        continue;
                }
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                x = calloc(1, sizeof(*x));
                if (!x) {
                        close(fd);
                        continue;
                }
                x->p = p;
                x->c = fd;
                x->u = -1;
                if (a.ss_family == AF_INET)
                        inet_ntop(AF_INET, &((struct sockaddr_in *)&a)->sin_addr, x->peer, sizeof(x->peer));
                else if (a.ss_family == AF_INET6)
                        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a)->sin6_addr, x->peer,
                                  sizeof(x->peer));
                pthread_mutex_lock(&p->lock);
                if (p->n >= p->cfg.max_conns) {
                        pthread_mutex_unlock(&p->lock);
                        answer(x, 503, "Service Unavailable", "too many connections; try again");
                        close(fd);
                        free(x);
                        continue;
                }
                p->n++;
                x->next = p->conns;
                p->conns = x;
                pthread_mutex_unlock(&p->lock);
                pthread_attr_init(&attr);
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                pthread_attr_setstacksize(&attr, 256 * 1024);
                if (pthread_create(&t, &attr, conn_main, x) != 0) {
                        x->c_eof = 1;
                        conn_main(x);
                }
                pthread_attr_destroy(&attr);
        }
}

int proxy_start(const struct proxy_config *c, struct vmm *m, struct store *s, struct proxy **ret, char *msg,
                size_t size)
{
        struct proxy *p = calloc(1, sizeof(*p));
        struct sockaddr_in a = {.sin_family = AF_INET};
        char host[64];
        const char *colon = strrchr(c->listen, ':');
        int one = 1, r;

        if (!p)
                return -ENOMEM;
        if (!colon || (size_t)(colon - c->listen) >= sizeof(host) || atoi(colon + 1) <= 0 ||
            atoi(colon + 1) > 65535) {
                free(p);
                snprintf(msg, size, "--proxy-listen wants HOST:PORT, not %s", c->listen);
                return -EINVAL;
        }
        memcpy(host, c->listen, (size_t)(colon - c->listen));
        host[colon - c->listen] = 0;
        a.sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
                free(p);
                snprintf(msg, size, "--proxy-listen wants an IPv4 address, not %s", host);
                return -EINVAL;
        }
        if ((c->tls_cert != NULL) != (c->tls_key != NULL)) {
                free(p);
                snprintf(msg, size, "--proxy-tls-cert and --proxy-tls-key go together");
                return -EINVAL;
        }
        if (c->tls_cert) {
                r = tls_ctx_new(c->tls_cert, c->tls_key, &p->tls, msg, size);
                if (r < 0) {
                        free(p);
                        return r;
                }
        }
        p->cfg = *c;
        p->domain = strdup(c->domain);
        for (char *d = p->domain; d && *d; d++)
                *d = (char)tolower((unsigned char)*d);
        p->m = m;
        p->s = s;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (!p->domain || p->fd < 0 || setsockopt(p->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(p->fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(p->fd, 1024) < 0) {
                r = p->domain ? -errno : -ENOMEM;
                snprintf(msg, size, "cannot listen on %s: %s", c->listen, strerror(-r));
                if (p->fd >= 0)
                        close(p->fd);
                tls_ctx_free(p->tls);
                free(p->domain);
                free(p);
                return r;
        }
        r = -pthread_create(&p->thread, NULL, accept_main, p);
        if (r < 0) {
                close(p->fd);
                tls_ctx_free(p->tls);
                free(p->domain);
                free(p);
                snprintf(msg, size, "cannot start the proxy: %s", strerror(-r));
                return r;
        }
        *ret = p;
        return 0;
}

void proxy_stop(struct proxy *p)
{
        if (!p)
                return;
        p->stopping = 1;
        shutdown(p->fd, SHUT_RDWR);
        pthread_join(p->thread, NULL);
        close(p->fd);
        pthread_mutex_lock(&p->lock);
        for (struct conn *x = p->conns; x; x = x->next)
                shutdown(x->c, SHUT_RDWR);
        while (p->n > 0)
                pthread_cond_wait(&p->cond, &p->lock);
        pthread_mutex_unlock(&p->lock);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
        tls_ctx_free(p->tls);
        free(p->domain);
        free(p);
}

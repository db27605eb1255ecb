/*
 * api_pty: GET /v1/vms/{vm_id}/terminals/{terminal_id}/ws, an interactive
 * terminal in the VM over a WebSocket (beside the spec's terminals; the
 * dashboard and `sprout vm shell` use it). The key comes in the
 * Authorization header or, from a browser, as the subprotocol
 * "bearer.KEY" beside "sprout-terminal". Query: rows, cols (the size),
 * ephemeral=1 (the shell ends with the connection, as with ssh; otherwise
 * the terminal persists and a later connection gets its scrollback).
 *
 * On the socket: binary messages are the terminal's bytes both ways; text
 * messages are JSON controls: from the client {"type":"resize","rows":R,
 * "cols":C}; from the server, last, {"type":"exit","code":N} when the
 * shell exited, or {"type":"error","message":...} when the terminal went
 * (another connection took it over, the VM stopped). Depends on the VM
 * manager's terminals and the ws frame codec.
 */
#include "api/api_int.h"
#include "lib/util.h"
#include "lib/ws.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define PTY_MAX_MESSAGE (1 << 20) /* a client frame past this closes the connection (1009) */
#define PTY_PING_MS 30000         /* a quiet connection is pinged this often */

struct pty_session {
        struct api *a;
        struct vmm_pty *pty;
        char vm_id[21];
        int fd;
        int64_t end;                /* now_ms() past which the connection is closed */
        pthread_mutex_t write_lock; /* one frame at a time on the socket */
        int closing;                /* a close frame went out; under write_lock */
        volatile int done;          /* the reader stopped: the writer stops too */
};

/* One unmasked frame; nothing once a close frame went. */
static int send_frame(struct pty_session *s, int opcode, const void *p, size_t n)
{
        uint8_t hdr[WS_HDR_MAX];
        size_t h = ws_header(hdr, opcode, n, NULL);
        int r = -1;

        pthread_mutex_lock(&s->write_lock);
        if (!s->closing) {
                /* A client that takes nothing for 30 s is dropped. */
                r = sock_send_all(s->fd, hdr, h, now_ms() + 30000);
                if (r == 0 && n)
                        r = sock_send_all(s->fd, p, n, now_ms() + 30000);
                if (opcode == WS_CLOSE)
                        s->closing = 1;
        }
        pthread_mutex_unlock(&s->write_lock);
        return r;
}

static void send_close(struct pty_session *s, unsigned code, const char *reason)
{
        uint8_t body[125];
        size_t n = strlen(reason) > sizeof(body) - 2 ? sizeof(body) - 2 : strlen(reason);

        body[0] = (uint8_t)(code >> 8);
        body[1] = (uint8_t)code;
        memcpy(body + 2, reason, n);
        send_frame(s, WS_CLOSE, body, n + 2);
}

static void send_json(struct pty_session *s, json_t *j)
{
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;

        if (text)
                send_frame(s, WS_TEXT, text, strlen(text));
        free(text);
        json_decref(j);
}

/* The terminal's output to the client until it ends or the reader stops;
 * then the way it ended, a close frame, and the socket shut so the reader
 * wakes. */
static void *writer_main(void *arg)
{
        struct pty_session *s = arg;
        char *buf = malloc(64 << 10);
        int64_t quiet_since = now_ms();
        long n = 0;

        while (buf && !s->done && now_ms() < s->end) {
                n = vmm_pty_read(s->pty, buf, 64 << 10, 1000);
                if (n < 0)
                        break;
                if (n > 0 && send_frame(s, WS_BINARY, buf, (size_t)n) < 0)
                        break;
                if (n > 0)
                        quiet_since = now_ms();
                else if (now_ms() - quiet_since >= PTY_PING_MS) {
                        send_frame(s, WS_PING, NULL, 0);
                        quiet_since = now_ms();
                }
        }
        free(buf);
        if (!s->done) {
                int st = n < 0 ? vmm_pty_status(s->pty) : -ETIMEDOUT;

                if (st >= 0)
                        send_json(s, json_pack("{s:s,s:i}", "type", "exit", "code", st));
                else
                        send_json(s, json_pack("{s:s,s:s}", "type", "error", "message",
                                               st == -EBUSY ? "the terminal was attached elsewhere"
                                               : st == -ETIMEDOUT
                                                   ? "the connection reached the server's time limit"
                                                   : "the terminal is gone (the VM stopped?)"));
                send_close(s, 1000, st >= 0 ? "exited" : "ended");
        }
        shutdown(s->fd, SHUT_RDWR);
        return NULL;
}

/* A text message from the client: a control. */
static void on_control(struct pty_session *s, const char *text, size_t len)
{
        json_t *j = json_loadb(text, len, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        json_int_t rows = json_integer_value(json_object_get(j, "rows"));
        json_int_t cols = json_integer_value(json_object_get(j, "cols"));

        if (type && !strcmp(type, "resize") && rows >= 1 && rows <= 1000 && cols >= 1 && cols <= 1000)
                vmm_pty_resize(s->pty, (int)rows, (int)cols);
        json_decref(j);
}

/* Reads the client's frames: input, controls, pings, close. */
static void pty_run(void *ctx, int fd, const char *extra, size_t extra_len)
{
        struct pty_session *s = ctx;
        uint8_t *in = malloc(PTY_MAX_MESSAGE + WS_HDR_MAX);
        char ctl[4096]; /* a control message being put together */
        size_t have = 0, text_len = 0;
        int64_t touched = 0;
        int text = 0; /* the message under way is text (a control) */
        pthread_t writer;

        s->fd = fd;
        if (!in || extra_len > PTY_MAX_MESSAGE || pthread_create(&writer, NULL, writer_main, s) != 0) {
                free(in);
                return;
        }
        memcpy(in, extra, extra_len);
        have = extra_len;
        for (;;) {
                struct ws_frame f;
                int h = ws_parse(in, have, &f);
                uint8_t *payload;

                if (h < 0 || (h > 0 && !f.masked)) {
                        send_close(s, 1002, "protocol error");
                        break;
                }
                if (h > 0 && f.len > PTY_MAX_MESSAGE - (uint64_t)h) {
                        send_close(s, 1009, "message too big");
                        break;
                }
                if (h == 0 || have < (size_t)h + f.len) {
                        ssize_t n = recv(fd, in + have, PTY_MAX_MESSAGE + WS_HDR_MAX - have, 0);

                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0)
                                break;
                        have += (size_t)n;
                        continue;
                }
                payload = in + h;
                ws_mask(payload, f.len, f.mask, 0);
                if (f.opcode == WS_CLOSE) {
                        send_close(s, 1000, "bye");
                        break;
                }
                if (f.opcode == WS_PING)
                        send_frame(s, WS_PONG, payload, f.len);
                if (f.opcode == WS_TEXT || f.opcode == WS_BINARY) {
                        text = f.opcode == WS_TEXT;
                        text_len = 0;
                }
                if (text && (f.opcode == WS_TEXT || f.opcode == WS_CONT)) {
                        /* A control, kept whole until its last frame; one
                         * past sizeof(ctl) is cut short (and not JSON). */
                        if (text_len + f.len <= sizeof(ctl)) {
                                memcpy(ctl + text_len, payload, f.len);
                                text_len += f.len;
                        }
                        if (f.fin)
                                on_control(s, ctl, text_len);
                } else if (f.opcode == WS_BINARY || f.opcode == WS_CONT) {
                        if (f.len && vmm_pty_write(s->pty, payload, f.len) < 0)
                                break;
                        /* Typing is using the VM: its idle timer starts again. */
                        if (now_ms() - touched > 1000) {
                                vmm_ingress_touch(s->a->vmm, s->vm_id);
                                touched = now_ms();
                        }
                }
                memmove(in, in + h + f.len, have - (size_t)h - f.len);
                have -= (size_t)h + f.len;
        }
        s->done = 1;
        shutdown(fd, SHUT_RDWR);
        pthread_join(writer, NULL);
        free(in);
}

static void pty_done(void *ctx)
{
        struct pty_session *s = ctx;

        vmm_pty_close(s->pty);
        pthread_mutex_destroy(&s->write_lock);
        free(s);
}

/* The key a browser sends as the subprotocol "bearer.KEY", malloc'd. */
char *api_ws_key(const struct http_req *req)
{
        char *h = http_header(req, "Sec-WebSocket-Protocol"), *tok, *save = NULL, *key = NULL;

        for (tok = h ? strtok_r(h, ", ", &save) : NULL; tok && !key; tok = strtok_r(NULL, ", ", &save))
                if (!strncmp(tok, "bearer.", 7) && tok[7])
                        key = strdup(tok + 7);
        free(h);
        return key;
}

/* A query argument as a number in [lo, hi]; def when absent; -1 when bad. */
static long query_num(struct api_call *c, const char *name, long lo, long hi, long def)
{
        char *v = http_query(c->req, name), *end = NULL;
        long n = def;

        if (v) {
                errno = 0;
                n = strtol(v, &end, 10);
                if (errno || end == v || *end || n < lo || n > hi)
                        n = -1;
        }
        free(v);
        return n;
}

void api_terminal_ws(struct api_call *c)
{
        char *upgrade = http_header(c->req, "Upgrade"),
             *version = http_header(c->req, "Sec-WebSocket-Version");
        char *proto = http_header(c->req, "Sec-WebSocket-Protocol"), *name = api_param(c), *user = NULL;
        long rows = query_num(c, "rows", 1, 1000, 0), cols = query_num(c, "cols", 1, 1000, 0);
        long eph = query_num(c, "ephemeral", 0, 1, 0);
        struct pty_session *s = NULL;
        struct vmm_guest *g = NULL;
        int ws = upgrade && !strcasecmp(upgrade, "websocket") && version && !strcmp(version, "13"), r;

        free(upgrade);
        free(version);
        if (!ws) {
                api_error(c, 426, "UPGRADE_REQUIRED",
                          "this endpoint is a WebSocket (Upgrade: websocket, Sec-WebSocket-Version: 13)");
                goto out;
        }
        if (!name || !*name || strlen(name) > 64 ||
            strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         "0123456789._-") != strlen(name)) {
                api_error(c, 400, "INVALID_TERMINAL", "a terminal id is 1 to 64 of A-Z a-z 0-9 . _ -");
                goto out;
        }
        if (rows < 0 || cols < 0 || eph < 0 || (rows == 0) != (cols == 0)) {
                api_error(c, 400, "INVALID_REQUEST",
                          "rows and cols go together, each 1 to 1000; ephemeral is 0 or 1");
                goto out;
        }
        if (api_linux_user(c, &user) < 0)
                goto out;
        s = calloc(1, sizeof(*s));
        r = s ? vmm_guest_open(c->a->vmm, c->account, c->vm_id, &g) : -ENOMEM;
        if (r == 0) {
                struct agentc_pty p = {.terminal = name,
                                       .user = user,
                                       .rows = (int)rows,
                                       .cols = (int)cols,
                                       .ephemeral = (int)eph};

                r = vmm_guest_pty(g, &p, &s->pty);
        }
        vmm_guest_close(g);
        if (r < 0) {
                free(s);
                api_fail(c, r, API_VM, c->vm_id, NULL);
                goto out;
        }
        s->a = c->a;
        memcpy(s->vm_id, c->vm_id, sizeof(s->vm_id));
        s->end = now_ms() + c->a->max_request_ms;
        pthread_mutex_init(&s->write_lock, NULL);
        c->resp->status = 101;
        c->resp->upgrade = pty_run;
        c->resp->upgrade_ctx = s;
        c->resp->upgrade_done = pty_done;
        /* A browser that offered subprotocols must see one chosen. */
        c->resp->ws_protocol = proto && strstr(proto, "sprout-terminal") ? "sprout-terminal" : NULL;
out:
        free(proto);
        free(name);
        free(user);
}

/*
 * shell: `sprout vm shell ID`, an interactive shell in the VM over the
 * server's WebSocket terminal (GET /v1/vms/{id}/terminals/{name}/ws), as
 * `ssh` or `docker exec -it` give one: the local terminal in raw mode, its
 * size sent at the start and at every SIGWINCH, the remote shell's exit
 * status as the command's own. Without --terminal the shell is ephemeral
 * (it ends when the connection does); --terminal NAME attaches to a
 * persistent one, made if missing. Plain http:// server URLs only: the API
 * socket is spoken to directly (libcurl here has no WebSocket support).
 */
#include "cli.h"
#include "lib/ws.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#define SHELL_MAX_FRAME (1 << 20)

static int winch_pipe[2] = {-1, -1};
static struct termios saved_tio;
static int raw_mode;

static void on_winch(int sig)
{
        int saved = errno;

        (void)sig;
        if (write(winch_pipe[1], "w", 1) < 0) {
        }
        errno = saved;
}

static void restore_tty(void)
{
        if (raw_mode)
                tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
        raw_mode = 0;
}

/* Killed (or the local terminal hung up): the terminal's settings back,
 * and out; a persistent remote terminal stays, detached. */
static void on_fatal(int sig)
{
        if (raw_mode)
                tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
        _exit(128 + sig);
}

/* One masked frame, as a client sends. */
static int send_frame(int fd, int opcode, const void *p, size_t n)
{
        uint8_t hdr[WS_HDR_MAX], mask[4], *body = malloc(n ? n : 1);
        size_t h;
        int r;

        if (!body || getrandom(mask, sizeof(mask), 0) != sizeof(mask)) {
                free(body);
                return -1;
        }
        h = ws_header(hdr, opcode, n, mask);
        memcpy(body, p, n);
        ws_mask(body, n, mask, 0);
        r = sock_send_all(fd, hdr, h, -1);
        if (r == 0 && n)
                r = sock_send_all(fd, body, n, -1);
        free(body);
        return r;
}

static void window_size(int *rows, int *cols)
{
        struct winsize ws;

        *rows = 24, *cols = 80;
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col)
                *rows = ws.ws_row, *cols = ws.ws_col;
}

static int send_resize(int fd)
{
        char msg[96];
        int rows, cols;

        window_size(&rows, &cols);
        snprintf(msg, sizeof(msg), "{\"type\":\"resize\",\"rows\":%d,\"cols\":%d}", rows, cols);
        return send_frame(fd, WS_TEXT, msg, strlen(msg));
}

/* Connects to the host and port of an http:// base URL (libcurl's URL
 * parser takes it apart); prefix gets the path after them, without a
 * trailing slash ("" or "/something"). */
static int connect_url(struct cli *c, const char *url, char prefix[512])
{
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
        char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
        CURLU *u = curl_url();
        int fd = -1, ok;

        ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK;
        if (!ok || strcasecmp(scheme, "http") || strlen(path) >= 512) {
                fail(c, "`vm shell` needs an http:// server URL, not %s", url);
        } else {
                size_t n = strlen(path), hl = strlen(host);

                while (n > 0 && path[n - 1] == '/')
                        n--;
                snprintf(prefix, 512, "%.*s", (int)n, path);
                /* An IPv6 literal comes in brackets. */
                if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
                        memmove(host, host + 1, hl - 2);
                        host[hl - 2] = 0;
                }
                if (getaddrinfo(host, port, &hints, &res) != 0)
                        fail(c, "cannot resolve %s", host);
                for (ai = res; ai && fd < 0; ai = ai->ai_next) {
                        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
                        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                                close(fd);
                                fd = -1;
                        }
                }
                if (res && fd < 0)
                        fail(c, "cannot connect to %s port %s: %s", host, port, strerror(errno));
                if (res)
                        freeaddrinfo(res);
        }
        curl_free(scheme);
        curl_free(host);
        curl_free(port);
        curl_free(path);
        curl_url_cleanup(u);
        return fd;
}

/* Sends the upgrade request and reads the answer's head; a refusal is
 * reported with the server's JSON error. Bytes read past the head go to
 * buf (*have). 0 when switched. */
static int handshake(struct cli *c, int fd, const char *path, char *buf, size_t size, size_t *have)
{
        uint8_t nonce[16];
        char *key64, req[4096], *end = NULL;
        long status = 0;
        size_t len = 0;

        if (getrandom(nonce, sizeof(nonce), 0) != sizeof(nonce) ||
            !(key64 = base64_encode(nonce, sizeof(nonce))))
                return fail(c, "out of randomness or memory");
        snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: sprout\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                 path, key64, c->api.key ? "Authorization: Bearer " : "", c->api.key ? c->api.key : "",
                 c->api.key ? "\r\n" : "");
        free(key64);
        if (sock_send_all(fd, req, strlen(req), -1) < 0)
                return fail(c, "cannot send: %s", strerror(errno));
        while (!(end = len ? strstr(buf, "\r\n\r\n") : NULL)) {
                ssize_t n = len + 1 < size ? recv(fd, buf + len, size - 1 - len, 0) : 0;

                if (n <= 0)
                        return fail(c, "the server closed the connection");
                len += (size_t)n;
                buf[len] = 0;
        }
        sscanf(buf, "HTTP/1.%*d %ld", &status);
        if (status != 101) {
                struct client_response r = {.status = status};
                const char *cl = strcasestr(buf, "\r\nContent-Length:");
                size_t want = cl ? strtoul(cl + 17, NULL, 10) : 0, got = len - (size_t)(end + 4 - buf);

                while (got < want && len + 1 < size) {
                        ssize_t n = recv(fd, buf + len, size - 1 - len, 0);

                        if (n <= 0)
                                break;
                        len += (size_t)n, got += (size_t)n;
                        buf[len] = 0;
                }
                r.body = end + 4;
                r.len = strlen(r.body);
                r.json = json_loads(r.body, 0, NULL);
                fail_response(c, &r);
                json_decref(r.json);
                return EXIT_API;
        }
        *have = len - (size_t)(end + 4 - buf);
        memmove(buf, end + 4, *have);
        return 0;
}

/* The server's frames in buf: output to stdout, the end's text message
 * into *code (exit status) or a message; returns 1 once the connection is
 * to end, 0 for more, -1 on a protocol error. */
static int take_frames(struct cli *c, int fd, char *buf, size_t *have, int *code)
{
        for (;;) {
                struct ws_frame f;
                int h = ws_parse((uint8_t *)buf, *have, &f);
                char *payload = buf + h;

                if (h < 0 || (h > 0 && (f.masked || f.len > SHELL_MAX_FRAME)))
                        return -1;
                if (h == 0 || *have < (size_t)h + f.len)
                        return 0;
                if (f.opcode == WS_BINARY || f.opcode == WS_CONT) {
                        for (size_t off = 0; off < f.len;) {
                                ssize_t n = write(STDOUT_FILENO, payload + off, f.len - off);

                                if (n < 0 && errno == EINTR)
                                        continue;
                                if (n <= 0)
                                        break;
                                off += (size_t)n;
                        }
                } else if (f.opcode == WS_TEXT) {
                        json_t *j = json_loadb(payload, f.len, 0, NULL);
                        const char *type = json_string_value(json_object_get(j, "type"));

                        if (type && !strcmp(type, "exit"))
                                *code = (int)json_integer_value(json_object_get(j, "code"));
                        else if (type && !strcmp(type, "error")) {
                                restore_tty();
                                fail(c, "%s", json_string_value(json_object_get(j, "message")));
                        }
                        json_decref(j);
                } else if (f.opcode == WS_PING) {
                        send_frame(fd, WS_PONG, payload, f.len);
                } else if (f.opcode == WS_CLOSE) {
                        return 1;
                }
                memmove(buf, buf + h + f.len, *have - (size_t)h - f.len);
                *have -= (size_t)h + f.len;
        }
}

int cmd_vm_shell(struct cli *c, int argc, char **argv)
{
        const char *terminal = NULL;
        char name[80], path[1024], prefix[512], *buf = malloc(SHELL_MAX_FRAME + WS_HDR_MAX + 1),
                                                *vpath = NULL, *id;
        struct opt opts[] = {{"--terminal", NULL, &terminal, NULL}, {0}};
        size_t have = 0;
        int fd, code = -1, rows, cols, in_open = 1, r;
        struct sigaction sa = {.sa_handler = on_winch};

        if (!buf)
                return fail(c, "out of memory");
        r = want_args(c, argc, argv, opts, &id, 1);
        if (r) {
                free(buf);
                return r;
        }
        if (terminal)
                snprintf(name, sizeof(name), "%s", terminal);
        else
                snprintf(name, sizeof(name), "shell-%08x", (unsigned)getpid() ^ (unsigned)time(NULL));
        window_size(&rows, &cols);
        fd = connect_url(c, c->api.base_url, prefix);
        vpath = fd >= 0 ? vm_path(id, "/terminals/") : NULL;
        if (fd < 0 || !vpath) {
                free(buf);
                if (fd >= 0)
                        close(fd);
                return fd < 0 ? EXIT_API : fail(c, "out of memory");
        }
        if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
            strlen(name)) {
                free(vpath);
                free(buf);
                close(fd);
                return fail(c, "a terminal name is 1 to 64 of A-Z a-z 0-9 . _ -");
        }
        snprintf(path, sizeof(path), "%s%s%s/ws?rows=%d&cols=%d%s", prefix, vpath, name, rows, cols,
                 terminal ? "" : "&ephemeral=1");
        free(vpath);
        r = handshake(c, fd, path, buf, SHELL_MAX_FRAME + WS_HDR_MAX + 1, &have);
        if (r) {
                close(fd);
                free(buf);
                return r;
        }
        if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tio) == 0) {
                struct termios tio = saved_tio;

                cfmakeraw(&tio);
                raw_mode = tcsetattr(STDIN_FILENO, TCSAFLUSH, &tio) == 0;
                atexit(restore_tty);
        }
        if (pipe2(winch_pipe, O_CLOEXEC | O_NONBLOCK) == 0)
                sigaction(SIGWINCH, &sa, NULL);
        sa.sa_handler = on_fatal;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        r = 0;
        while (r == 0) {
                struct pollfd p[3] = {{.fd = fd, .events = POLLIN},
                                      {.fd = in_open ? STDIN_FILENO : -1, .events = POLLIN},
                                      {.fd = winch_pipe[0], .events = POLLIN}};
                char in[4096];

                r = take_frames(c, fd, buf, &have, &code);
                if (r)
                        break;
                if (poll(p, 3, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[2].revents & POLLIN) {
                        while (read(winch_pipe[0], in, sizeof(in)) > 0)
                                ;
                        send_resize(fd);
                }
                if (p[1].revents & (POLLIN | POLLHUP)) {
                        ssize_t n = read(STDIN_FILENO, in, sizeof(in));

                        if (n > 0)
                                send_frame(fd, WS_BINARY, in, (size_t)n);
                        else if (n == 0 || errno != EINTR)
                                in_open = 0; /* input ended: the shell's own exit ends the session */
                }
                if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t n = have < SHELL_MAX_FRAME + WS_HDR_MAX
                                        ? recv(fd, buf + have, SHELL_MAX_FRAME + WS_HDR_MAX - have, 0)
                                        : -1;

                        if (n <= 0 && !(n < 0 && errno == EINTR))
                                break;
                        if (n > 0)
                                have += (size_t)n;
                }
        }
        restore_tty();
        if (r >= 0 && code < 0)
                take_frames(c, fd, buf, &have, &code);
        close(fd);
        free(buf);
        if (code >= 0)
                return code;
        if (r < 0)
                return fail(c, "the server broke the WebSocket protocol");
        return fail(c, "the connection ended before the shell did");
}

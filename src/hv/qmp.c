/*
 * qmp: QMP client over a Unix socket. Depends on jansson and util. Reply
 * lines longer than QMP_MAX_LINE are treated as a protocol failure rather
 * than buffered without bound.
 */
#include "hv/qmp.h"
#include "lib/util.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define QMP_MAX_LINE (1024 * 1024)

struct qmp {
        int fd;
        pthread_mutex_t lock;
        char *buf; /* bytes received and not yet consumed */
        size_t len;
        size_t cap;
        char last_error[256]; /* under lock */
        uint64_t next_id;     /* under lock; the id of the next command */
};

static int unix_connect(const char *path)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;

                close(fd);
                return r;
        }
        return fd;
}

/* Reads one line (without the newline) into a malloc'd string, waiting at
 * most until deadline (a now_ms() value). */
static int read_line(struct qmp *q, int64_t deadline, char **ret)
{
        for (;;) {
                char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
                struct pollfd pfd = {.fd = q->fd, .events = POLLIN};
                int64_t left;
                ssize_t n;

                if (nl) {
                        size_t l = (size_t)(nl - q->buf);
                        char *line = malloc(l + 1);

                        if (!line)
                                return -ENOMEM;
                        memcpy(line, q->buf, l);
                        line[l] = 0;
                        memmove(q->buf, nl + 1, q->len - l - 1);
                        q->len -= l + 1;
                        *ret = line;
                        return 0;
                }
                if (q->len >= QMP_MAX_LINE)
                        return -EMSGSIZE;
                if (q->cap - q->len < 4096) {
                        size_t cap = q->cap ? q->cap * 2 : 8192;
                        char *b = realloc(q->buf, cap);

                        if (!b)
                                return -ENOMEM;
                        q->buf = b;
                        q->cap = cap;
                }
                left = deadline - now_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                n = poll(&pfd, 1, (int)left);
                if (n < 0 && errno != EINTR)
                        return -errno;
                if (n <= 0)
                        continue;
                n = read(q->fd, q->buf + q->len, q->cap - q->len);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -ECONNRESET;
                q->len += (size_t)n;
        }
}

/* Sends the first byte of a command with fd attached (SCM_RIGHTS), as
 * QMP's getfd takes it. */
static int send_fd(int sock, const char *text, int fd)
{
        char control[CMSG_SPACE(sizeof(int))] = {0};
        struct iovec iov = {.iov_base = (void *)text, .iov_len = 1};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = sizeof(control)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
        while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

int qmp_parse_reply(const char *line, uint64_t want_id, json_t **ret_return, char **ret_desc)
{
        json_t *msg = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
        json_t *id, *v;
        int r = 0;

        if (!json_is_object(msg)) {
                json_decref(msg);
                return -EBADMSG;
        }
        id = json_object_get(msg, "id");
        /* Events carry no id; a reply with another id answers a command
         * whose caller gave up waiting. Neither is ours. */
        if (!json_is_integer(id) || (uint64_t)json_integer_value(id) != want_id) {
                json_decref(msg);
                return 0;
        }
        if ((v = json_object_get(msg, "return"))) {
                if (ret_return)
                        *ret_return = json_incref(v);
                r = 1;
        } else if ((v = json_object_get(msg, "error"))) {
                const char *desc = json_string_value(json_object_get(v, "desc"));

                if (ret_desc)
                        *ret_desc = strdup(desc ? desc : "unknown QMP error");
                r = -EPROTO;
        } else {
                r = -EBADMSG;
        }
        json_decref(msg);
        return r;
}

/* Sends a command (with fd attached when >= 0) under a fresh id and waits
 * for the reply with that id, skipping events and late replies to earlier
 * commands that timed out. */
static int call_locked(struct qmp *q, const char *cmd, json_t *args, int fd, int timeout_ms, json_t **ret_return,
                       char **ret_error)
{
        int64_t deadline = now_ms() + timeout_ms;
        uint64_t id = ++q->next_id;
        json_t *req = json_pack("{s:s, s:I}", "execute", cmd, "id", (json_int_t)id);
        char *text;
        int r;

        if (!req)
                return -ENOMEM;
        if (args)
                json_object_set(req, "arguments", args);
        text = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        if (!text)
                return -ENOMEM;
        if (fd >= 0) {
                r = send_fd(q->fd, text, fd);
                if (r == 0)
                        r = sock_send_all(q->fd, text + 1, strlen(text) - 1, deadline);
        } else {
                r = sock_send_all(q->fd, text, strlen(text), deadline);
        }
        free(text);
        if (r == 0)
                r = sock_send_all(q->fd, "\n", 1, deadline);
        if (r < 0)
                return r;

        for (;;) {
                char *line, *desc = NULL;

                r = read_line(q, deadline, &line);
                if (r < 0)
                        return r;
                r = qmp_parse_reply(line, id, ret_return, &desc);
                free(line);
                if (r == 0)
                        continue;
                if (r == -EPROTO) {
                        snprintf(q->last_error, sizeof(q->last_error), "%s: %s", cmd, desc ? desc : "error");
                        if (ret_error)
                                *ret_error = desc;
                        else
                                free(desc);
                }
                return r < 0 ? r : 0;
        }
}

int qmp_connect(const char *path, int timeout_ms, struct qmp **ret)
{
        int64_t deadline = now_ms() + timeout_ms;
        struct qmp *q;
        char *greeting = NULL;
        int fd, r;

        for (;;) {
                fd = unix_connect(path);
                if (fd >= 0)
                        break;
                if (fd != -ENOENT && fd != -ECONNREFUSED)
                        return fd;
                if (now_ms() >= deadline)
                        return -ETIMEDOUT;
                sleep_ms(2);
        }
        q = calloc(1, sizeof(*q));
        if (!q) {
                close(fd);
                return -ENOMEM;
        }
        q->fd = fd;
        pthread_mutex_init(&q->lock, NULL);
        r = read_line(q, deadline, &greeting);
        free(greeting);
        if (r == 0)
                r = call_locked(q, "qmp_capabilities", NULL, -1, timeout_ms, NULL, NULL);
        if (r < 0) {
                qmp_close(q);
                return r;
        }
        *ret = q;
        return 0;
}

int qmp_call(struct qmp *q, const char *cmd, json_t *args, int timeout_ms, json_t **ret_return, char **ret_error)
{
        int r;

        pthread_mutex_lock(&q->lock);
        r = call_locked(q, cmd, args, -1, timeout_ms, ret_return, ret_error);
        pthread_mutex_unlock(&q->lock);
        return r;
}

int qmp_pass_fd(struct qmp *q, const char *name, int fd, int timeout_ms)
{
        json_t *args = json_pack("{s:s}", "fdname", name);
        int r;

        if (!args)
                return -ENOMEM;
        pthread_mutex_lock(&q->lock);
        r = call_locked(q, "getfd", args, fd, timeout_ms, NULL, NULL);
        pthread_mutex_unlock(&q->lock);
        json_decref(args);
        return r;
}

const char *qmp_last_error(struct qmp *q)
{
        return q ? q->last_error : "";
}

void qmp_close(struct qmp *q)
{
        if (!q)
                return;
        close(q->fd);
        pthread_mutex_destroy(&q->lock);
        free(q->buf);
        free(q);
}

/*
 * agent_pty: the interactive terminals' requests (PTY, PTY_RESIZE, and a
 * PTY stream's input and end). The terminals themselves, their output and
 * their shells' lives are agent/term.c's; see there.
 */
#include "term.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ROWS and COLS of a request into ws (both or neither; 0: absent). */
static int req_size(const uint8_t *p, size_t n, struct winsize *ws)
{
        uint32_t rows = 0, cols = 0;
        int r1 = proto_get_u32(p, n, PROTO_TAG_ROWS, &rows), r2 = proto_get_u32(p, n, PROTO_TAG_COLS, &cols);

        if ((r1 < 0 && r1 != -ENOENT) || (r2 < 0 && r2 != -ENOENT) || (r1 == 0) != (r2 == 0) ||
            (r1 == 0 && (rows < 1 || rows > 1000 || cols < 1 || cols > 1000)))
                return -EINVAL;
        *ws = (struct winsize){.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        return r1 == 0;
}

/* The interactive terminal a PTY request names, for its user; NULL after
 * answering the request with an error. */
static struct agent_term *pty_find(struct agent *a, uint32_t id, const char *name, const struct agent_user *u)
{
        struct agent_term *t = term_find(a, name);

        if (!t)
                return NULL;
        if (t->exited || t->hup || t->hup_ns)
                agent_send_error(a, id, EBUSY, "terminal %s is closing", name);
        else if (!t->interactive)
                agent_send_error(a, id, EBUSY, "terminal %s runs commands; it cannot be attached", name);
        else if (t->uid != (u->set ? u->uid : geteuid()))
                agent_send_error(a, id, EPERM, "terminal %s belongs to user %s", name, t->owner);
        else
                return t;
        return NULL;
}

void agent_term_pty(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct agent_user u = {0};
        struct agent_term *t;
        struct agent_stream *s;
        struct winsize ws = {.ws_row = 24, .ws_col = 80};
        char *name = NULL, *msg = NULL;
        const char *cmsg = NULL;
        uint32_t eph = 0;
        int sized, r;

        if (req_name(a, id, p, n, &name) < 0)
                return;
        sized = req_size(p, n, &ws);
        if (sized < 0 || ((r = proto_get_u32(p, n, PROTO_TAG_EPHEMERAL, &eph)) < 0 && r != -ENOENT)) {
                agent_send_error(a, id, EBADMSG, "bad ROWS, COLS or EPHEMERAL");
                goto out;
        }
        r = agent_req_user(p, n, &u, &msg);
        if (r < 0) {
                agent_send_error(a, id, -r, "%s", msg ? msg : strerror(-r));
                goto out;
        }
        t = pty_find(a, id, name, &u);
        if (!t && term_find(a, name))
                goto out; /* answered */
        if (!t && a->n_terms >= AGENT_MAX_TERMS) {
                agent_send_error(a, id, EAGAIN, "too many terminals (max %d)", AGENT_MAX_TERMS);
                goto out;
        }
        s = agent_stream_new(a, id, AGENT_STREAM_PTY);
        if (!s) {
                agent_send_error(a, id, ENOMEM, "out of memory");
                goto out;
        }
        if (!t) {
                r = term_create(a, name, &u, &ws, &t, &cmsg);
                if (r < 0) {
                        agent_stream_free(a, s);
                        agent_send_error(a, id, -r, "terminal %s: %s: %s", name, cmsg, strerror(-r));
                        goto out;
                }
                t->ephemeral = eph == 1;
        } else {
                if (t->att) {
                        agent_send_error(a, t->att->id, EBUSY, "terminal %s was attached elsewhere", name);
                        agent_stream_free(a, t->att);
                }
                if (sized)
                        ioctl(t->master, TIOCSWINSZ, &ws);
                sb_send(a, id, t);
        }
        s->term = t;
        t->att = s;
out:
        free(name);
        free(msg);
        agent_user_clear(&u);
}

void agent_term_pty_resize(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct agent_user u = {0};
        struct proto_buf b = {0};
        struct agent_term *t;
        struct winsize ws;
        char *name = NULL, *msg = NULL;
        int r;

        if (req_name(a, id, p, n, &name) < 0)
                return;
        if (req_size(p, n, &ws) != 1) {
                agent_send_error(a, id, EINVAL, "PTY_RESIZE needs ROWS and COLS, 1 to 1000");
        } else if ((r = agent_req_user(p, n, &u, &msg)) < 0) {
                agent_send_error(a, id, -r, "%s", msg ? msg : strerror(-r));
        } else if (!(t = pty_find(a, id, name, &u))) {
                if (!term_find(a, name))
                        agent_send_error(a, id, ENOENT, "no terminal named %s", name);
        } else if (ioctl(t->master, TIOCSWINSZ, &ws) < 0) {
                agent_send_error(a, id, errno, "resize: %s", strerror(errno));
        } else {
                agent_send_result(a, id, &b);
        }
        free(name);
        free(msg);
        agent_user_clear(&u);
}

void agent_term_pty_input(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n)
{
        struct agent_term *t = s->term;

        (void)a;
        /* A shell that reads nothing (stopped, stuck) does not make the
         * agent hold unbounded input: past the cap it is dropped. */
        if (t->in_len - t->in_off + n <= TERM_PTY_IN_MAX)
                queue_input(t, (const char *)p, n);
}

void agent_term_pty_detach(struct agent *a, struct agent_stream *s, int send_result)
{
        struct agent_term *t = s->term;

        if (send_result)
                agent_send_error(a, s->id, ECANCELED, "detached");
        agent_stream_free(a, s);
        t->att = NULL;
        /* Hung up as a closed terminal would be: its session's foreground
         * job and the shell. */
        if (t->ephemeral && !t->exited) {
                pid_t pg = fg_pgrp(t);

                if (pg > 0)
                        kill(-pg, SIGHUP);
                kill(-t->pid, SIGHUP);
                kill(t->pid, SIGCONT);
                /* A shell that ignores SIGHUP (trap '' HUP) is killed. */
                t->hup_ns = agent_now_ns() + TERM_GRACE_NS;
        }
}

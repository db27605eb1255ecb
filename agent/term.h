/*
 * term.h: what agent/term.c (terminals, command and interactive) shares
 * with agent/pty.c (the interactive terminals' requests). Nothing else
 * includes it.
 */
#ifndef SPROUT_AGENT_TERM_H
#define SPROUT_AGENT_TERM_H

#include "agent.h"

#include <sys/ioctl.h>
#include <sys/types.h>

#define TERM_NAME_MAX 64
#define TERM_NONCE_LEN 16
#define TERM_GRACE_NS (2000ULL * 1000000) /* SIGINT -> SIGKILL -> give up */
#define TERM_CHECK_NS (50ULL * 1000000)   /* look for a foreground job to interrupt */
#define TERM_MAX_LINE 4000                /* the tty's canonical line limit is 4095 */
#define TERM_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct agent_term {
        struct agent_term *next;
        char name[TERM_NAME_MAX + 1];
        uid_t uid;   /* the owner: only its requests may use the terminal */
        char *owner; /* its name, for messages */
        pid_t pid;   /* the shell */
        int master;  /* PTY master, non-blocking */
        int hup;     /* the master reported EOF/EIO: stop polling it */
        int exited;  /* the shell was reaped; removed at the next tick */
        int status;
        uint8_t *sb; /* scrollback ring, AGENT_TERM_SCROLLBACK bytes */
        size_t sb_start, sb_len;
        char *in; /* input not yet written to the shell */
        size_t in_len, in_off;
        struct agent_stream *cur;       /* the command's stream, NULL when idle */
        char nonce[TERM_NONCE_LEN + 1]; /* marker of cur's command, "" if none */
        char stale[TERM_NONCE_LEN + 1]; /* marker of an abandoned command, "" if none */
        uint8_t hold[64];               /* output that may be the start of a marker */
        size_t hold_len;
        uint64_t deadline_ns; /* cur's timeout, 0 = none */
        uint64_t kill_ns;     /* next escalation step, 0 = none */
        int kill_stage;       /* 1: interrupting, 2: SIGKILL sent */
        uint64_t check_ns;    /* stage 1: next look for a foreground job */
        pid_t int_pg;         /* stage 1: the group SIGINT was sent to */
        int timed_out;
        int interactive;          /* a PTY for a person: no commands, bytes both ways */
        int ephemeral;            /* interactive: its shell is hung up when its stream ends */
        struct agent_stream *att; /* interactive: the stream attached to it, or NULL */
        uint64_t hup_ns;          /* ephemeral, hung up: killed at this time if still there */
};

#define TERM_PTY_IN_MAX (1 << 20) /* input queued for an interactive shell that does not read */

struct agent_term *term_find(struct agent *a, const char *name);
/* The request's TERMINAL (malloc'd); -1 after answering it with an error. */
int req_name(struct agent *a, uint32_t id, const uint8_t *p, size_t n, char **ret_name);
/* The PTY's foreground process group, or -1. */
pid_t fg_pgrp(const struct agent_term *t);
/* Queues s for the shell. Returns 0 or -ENOMEM. */
int queue_input(struct agent_term *t, const char *s, size_t n);
/* Starts a terminal named name for user u: a command terminal when size
 * is NULL, else an interactive one of that size. 0 with *ret_term linked
 * into a->terms, or -errno with *ret_msg a static message. */
int term_create(struct agent *a, const char *name, const struct agent_user *u, const struct winsize *size,
                struct agent_term **ret_term, const char **ret_msg);
/* Sends t's scrollback, oldest first, as DATA on stream id. */
void sb_send(struct agent *a, uint32_t id, const struct agent_term *t);

#endif

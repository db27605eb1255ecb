/*
 * agentc: the daemon's side of the agent protocol (proto/proto.h). One
 * connection per VM over the Unix socket that QEMU exposes for the guest's
 * virtio-serial port. A reader thread demultiplexes frames onto streams, so
 * any number of threads can run requests at once; each request waits for
 * its own RESULT. Connections are reference-counted: whoever uses one holds
 * a reference, and agentc_shutdown wakes every waiter with -ECONNRESET.
 * Never logs; errors are returned as -errno.
 */
#ifndef SPROUT_AGENTC_H
#define SPROUT_AGENTC_H

#include <stddef.h>
#include <stdint.h>

struct agentc;

/* Bytes the agent sent (malloc'd; data may be NULL when len is 0). */
struct agentc_bytes {
        uint8_t *data;
        size_t len;
};

/* One name in a directory listing or the terminal list. */
struct agentc_entry {
        char *name;
        int is_dir;
};

/* What the agent answered for one operation; free with agentc_result_free.
 * err is the errno of a failure inside the guest (0: it succeeded), with
 * the agent's own words in errmsg. The other fields are filled as the
 * operation gives them. */
struct agentc_result {
        int err;
        char *errmsg;                 /* may be NULL */
        int exit_code;                /* exec: exit status, 128+signal when killed */
        int timed_out;                /* exec: ended at its timeout (output so far is kept) */
        int overflow;                 /* output or file past the cap it was given */
        int is_dir;                   /* read: a directory, listed in entries */
        struct agentc_bytes out, errout; /* exec: stdout and stderr */
        struct agentc_bytes data;     /* read: the file; terminal log: its scrollback */
        struct agentc_entry *entries; /* read of a directory; terminal list */
        size_t nentries;
};

void agentc_result_free(struct agentc_result *r);

/* Connects to the socket at path (retrying while it does not exist yet,
 * up to timeout_ms) and starts the reader thread. The returned connection
 * holds one reference. */
int agentc_connect(const char *path, int timeout_ms, struct agentc **ret);

/* The same over a connected stream socket fd, which the connection then
 * owns (closed on failure too). */
int agentc_open_fd(int fd, struct agentc **ret);

/* The host name and machine id (32 hex digits) that every PING on this
 * connection gives the guest, which takes them on if they differ: a VM
 * restored from a snapshot is then its own machine. Before the first
 * PING. */
void agentc_set_identity(struct agentc *a, const char *hostname, const char *machine_id);

struct agentc *agentc_ref(struct agentc *a);
/* Drops a reference; the last one closes the socket and joins the reader. */
void agentc_unref(struct agentc *a);

/* Closes the transport: pending and future requests fail with -ECONNRESET. */
void agentc_shutdown(struct agentc *a);

/* 1 while the connection is up. */
int agentc_alive(struct agentc *a);

/* Sends PING with the host clock and fresh entropy and waits for HELLO,
 * sending it again every 15 s (the agent may have lost the first in what an
 * earlier host left half sent). 0, -ETIMEDOUT or -ECONNRESET. */
int agentc_ping(struct agentc *a, int timeout_ms);

/*
 * Operations. Each returns 0 once the agent answered (the outcome, failure
 * inside the guest included, is in *ret, which the caller then frees), or
 * -errno when it did not: -ETIMEDOUT, -ECONNRESET (the transport died),
 * -ENOMEM. On -errno *ret holds nothing to free.
 */
struct agentc_exec {
        const char *command;  /* run by /bin/sh -c */
        const char *cwd;      /* NULL: the agent's default */
        const char *terminal; /* run in this persistent PTY session; NULL: a fresh process */
        const char *user;     /* Linux user; NULL: root */
        int64_t timeout_ms;   /* the agent kills the command after this; <= 0: never */
        size_t max_output;    /* cap on stdout plus stderr */
};

/* Runs a command. The host waits 10 s past the agent's own timeout, so
 * that a guest that stops answering cannot hold the caller; if that passes
 * too, *ret says timed_out with whatever output arrived. */
int agentc_exec(struct agentc *a, const struct agentc_exec *e, struct agentc_result *ret);

/* Reads a file (data, at most max bytes; overflow past it) or lists a
 * directory (is_dir, entries), as user (NULL: root). */
int agentc_read(struct agentc *a, const char *path, const char *user, size_t max, int64_t timeout_ms,
                struct agentc_result *ret);

/* Writes len bytes to path with mode, as user (NULL: root); the agent
 * refuses files over max. */
int agentc_write(struct agentc *a, const char *path, const char *user, const void *data, size_t len, unsigned mode,
                 size_t max, int64_t timeout_ms, struct agentc_result *ret);

/* The persistent terminals' names (entries), and one terminal's raw
 * scrollback (data, at most max bytes). */
int agentc_term_list(struct agentc *a, int64_t timeout_ms, struct agentc_result *ret);
int agentc_term_log(struct agentc *a, const char *terminal, size_t max, int64_t timeout_ms,
                    struct agentc_result *ret);

/* Watches the directory tree at path, as user (NULL: root): the agent's
 * events (one JSON object and a newline each) queue up, at most cap bytes
 * (past it they are dropped), for agentc_stream_read. */
int agentc_watch_open(struct agentc *a, const char *path, const char *user, size_t cap, uint32_t *ret_id);

/* An interactive terminal (a login shell on a PTY, made if none has
 * that name), attached: its scrollback, then its output queue up (at most
 * cap bytes, past it dropped) for agentc_stream_read, and
 * agentc_stream_write sends it input. The stream ends when its shell exits
 * (agentc_stream_result: exit_code) or another attach takes it over (err
 * EBUSY); agentc_stream_close detaches (an ephemeral one then ends). */
struct agentc_pty {
        const char *terminal; /* 1..64 of [A-Za-z0-9._-] */
        const char *user;     /* Linux user or NULL for root */
        int rows, cols;       /* 1..1000, or 0: unchanged (24x80 when made) */
        int ephemeral;
};
int agentc_pty_open(struct agentc *a, const struct agentc_pty *p, size_t cap, uint32_t *ret_id);
int agentc_pty_resize(struct agentc *a, const struct agentc_pty *p, int64_t timeout_ms, struct agentc_result *ret);
/* Sends len bytes on an open stream: 0, -EPIPE once the stream ended, or
 * -errno of the transport. */
int agentc_stream_write(struct agentc *a, uint32_t id, const void *data, size_t len);
/* What an ended stream's RESULT said (once): 0, -EAGAIN while it runs,
 * -ENOENT for a stream not open. */
int agentc_stream_result(struct agentc *a, uint32_t id, struct agentc_result *ret);

/* Takes up to max queued bytes, waiting at most timeout_ms. Returns the
 * count, 0 on timeout, -EPIPE once the agent ended the stream and the queue
 * is empty, -ECONNRESET when the transport died. */
long agentc_stream_read(struct agentc *a, uint32_t id, void *buf, size_t max, int timeout_ms);

/* Sends CANCEL (if the stream is still open) and forgets the stream. */
void agentc_stream_close(struct agentc *a, uint32_t id);

#endif

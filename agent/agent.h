/*
 * agent: sprout-agent, the guest side of proto/. It runs inside every VM as a
 * single-threaded poll() loop over the virtio-serial port, a signalfd for
 * SIGCHLD and the pipes of the commands it runs.
 *
 * Modules: agent.c owns the port (framing, dispatch, stream table,
 * disconnects), exec.c runs commands (EXEC), fs.c serves files (READ, WRITE,
 * STAT) and switches the filesystem identity for USER requests, watch.c
 * streams inotify events (WATCH), term.c keeps persistent PTY shells
 * (TERMINAL, TERM_LIST, TERM_LOG). They share
 * the structures below; nothing here is thread-safe because nothing needs
 * to be: the agent never starts a thread.
 *
 * The agent must never exit because of anything the host sends, never block
 * on a child, and never leave a child unreaped or a temp file behind.
 */
#ifndef SPROUT_AGENT_H
#define SPROUT_AGENT_H

#include "proto.h"

#include <poll.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#define AGENT_MAX_STREAMS 256                  /* live EXEC/WRITE streams; past it EAGAIN */
#define AGENT_MAX_DRAIN 256                    /* pipes kept open for background processes */
#define AGENT_CHUNK (64 * 1024)                /* bytes per DATA/STDOUT/STDERR frame we send */
#define AGENT_DEFAULT_MAX_OUTPUT (16ULL << 20) /* EXEC stdout+stderr cap */
#define AGENT_DEFAULT_MAX_SIZE (64ULL << 20)   /* READ/WRITE file size cap */
#define AGENT_LINGER_NS (50ULL * 1000000)      /* wait for pipes after the main child exits */
#define AGENT_IN_CAP (2 * (PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD))
#define AGENT_MAX_WATCH_STREAMS 16             /* concurrent WATCH streams; past it EAGAIN */
#define AGENT_MAX_WATCH_DIRS 8192              /* directories watched per stream; more are skipped */
#define AGENT_MAX_TERMS 32                     /* terminal sessions; past it EAGAIN */
#define AGENT_TERM_SCROLLBACK (256 * 1024)     /* raw output kept per terminal */

enum agent_stream_kind {
        AGENT_STREAM_EXEC = 1,
        AGENT_STREAM_WRITE = 2,
        AGENT_STREAM_WATCH = 3, /* a WATCH: s->watch */
        AGENT_STREAM_TERM = 4,  /* a command running in a terminal: s->term */
        AGENT_STREAM_PTY = 5,   /* attached to an interactive terminal: s->term */
};

struct agent_watch; /* watch.c */
struct agent_term;  /* term.c */

/* A resolved Linux user: what USER names, looked up once per request. */
struct agent_user {
        int set; /* 0: no USER given, act as the agent itself */
        uid_t uid;
        gid_t gid;
        gid_t *groups; /* supplementary groups (getgrouplist), malloc'd */
        int ngroups;
        char *name;
        char *home;
        char *shell;
};

/* State of a running command. */
struct agent_exec {
        pid_t pid;            /* the main child; also its process group id */
        int out_fd;           /* read end of stdout, -1 once closed */
        int err_fd;           /* read end of stderr, -1 once closed */
        int exited;           /* main child reaped; status is valid */
        int status;           /* waitpid status */
        uint64_t exit_ns;     /* monotonic time of the reap */
        uint64_t deadline_ns; /* monotonic timeout, 0 = none */
        int timed_out;        /* we killed the group because of the timeout */
        uint64_t max_output;  /* cap on stdout+stderr bytes sent */
        uint64_t output;      /* stdout+stderr bytes sent so far */
        int over_limit;       /* we killed the group because of max_output */
};

/* State of a file upload: DATA goes to a temp file renamed over path on EOF. */
struct agent_upload {
        int fd;         /* the temp file */
        char *tmp_path; /* unlinked on any failure or cancel */
        char *path;     /* final absolute path */
        mode_t mode;
        uint64_t max_size;
        uint64_t size; /* bytes written so far */
        struct agent_user user;
};

struct agent_stream {
        uint32_t id;
        enum agent_stream_kind kind;
        union {
                struct agent_exec exec;
                struct agent_upload up;
                struct agent_watch *watch; /* owned by the stream */
                struct agent_term *term;   /* the terminal; it outlives the stream */
        };
        struct agent_stream *next;
};

#define AGENT_MAX_POLL (2 + 2 * AGENT_MAX_STREAMS + AGENT_MAX_DRAIN + AGENT_MAX_TERMS)

/* What one pollfd of the loop stands for. */
enum { SLOT_PORT, SLOT_SIG, SLOT_EXEC, SLOT_DRAIN, SLOT_WATCH, SLOT_TERM };
struct agent_slot {
        int what;               /* SLOT_* */
        struct agent_stream *s; /* SLOT_EXEC, SLOT_WATCH: the stream */
        struct agent_term *t;   /* SLOT_TERM: the terminal */
        unsigned idx;           /* SLOT_DRAIN: index in drain_fds */
};

/* The one agent. Every field is owned by the event loop. */
struct agent {
        int port_fd;     /* virtio-serial port or --fd socket, O_NONBLOCK */
        int exit_on_eof; /* --fd: EOF means the peer is gone for good */
        int connected;   /* 0 while the host side is closed */
        int lost;        /* a write to the port failed; handled by the loop */
        int sig_fd;      /* signalfd for SIGCHLD */
        int null_fd;     /* /dev/null, the stdin of every command */
        uint8_t *in;     /* buffered port input, AGENT_IN_CAP bytes */
        size_t in_len;
        uint64_t in_at;  /* agent_now_ns() of the last bytes read */
        struct agent_stream *streams; /* live EXEC and WRITE streams */
        unsigned n_streams;
        int drain_fds[AGENT_MAX_DRAIN]; /* pipes of finished execs still held by background jobs */
        unsigned n_drain;
        struct rlimit nofile; /* RLIMIT_NOFILE we started with; children get it back */
        gid_t *groups;        /* our own supplementary groups, restored after USER access */
        int ngroups;
        unsigned n_watches;      /* live WATCH streams */
        struct agent_term *terms; /* terminal sessions, unordered */
        unsigned n_terms;
        uint64_t term_seq;       /* makes each command's end marker unique */
        struct pollfd pfds[AGENT_MAX_POLL];      /* the loop's poll set, rebuilt each round */
        struct agent_slot slots[AGENT_MAX_POLL]; /* what each pfds entry is */
};

/* ident.c: fresh entropy (credited, the CRNG reseeded), and the VM's own
 * host name and machine id; a NULL or malformed one is left as it is. */
void agent_add_entropy(const uint8_t *p, size_t n);
void agent_set_identity(const char *hostname, const char *machine_id);

/* agent.c */
uint64_t agent_now_ns(void);
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int agent_send(struct agent *a, uint32_t stream, uint16_t type, const void *p, size_t n);
void agent_send_result(struct agent *a, uint32_t stream, struct proto_buf *b);
void agent_send_error(struct agent *a, uint32_t stream, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
struct agent_stream *agent_stream_new(struct agent *a, uint32_t id, enum agent_stream_kind kind);
void agent_stream_free(struct agent *a, struct agent_stream *s);
void agent_drain_add(struct agent *a, int fd);

/* exec.c */
void agent_exec_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
void agent_exec_on_readable(struct agent *a, struct agent_stream *s, int fd);
void agent_exec_on_reaped(struct agent *a, pid_t pid, int status);
void agent_exec_tick(struct agent *a, struct agent_stream *s, uint64_t now);
uint64_t agent_exec_next_deadline(const struct agent_stream *s);
void agent_exec_cancel(struct agent *a, struct agent_stream *s, int send_result);

/* fs.c */
int agent_user_lookup(const char *name, struct agent_user *ret_user);
void agent_user_clear(struct agent_user *u);
int agent_req_user(const uint8_t *p, size_t n, struct agent_user *ret_user, char **ret_errmsg);
int agent_fs_become(struct agent *a, const struct agent_user *u);
void agent_fs_restore(struct agent *a, const struct agent_user *u);
void agent_fs_read(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
void agent_fs_stat(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
void agent_fs_write_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
void agent_fs_write_data(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n);
void agent_fs_write_eof(struct agent *a, struct agent_stream *s);
void agent_fs_write_cancel(struct agent *a, struct agent_stream *s, int send_result);

/* watch.c: the stream owns an inotify fd polled by the loop (SLOT_WATCH). */
void agent_watch_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
int agent_watch_fd(const struct agent_stream *s);
void agent_watch_on_readable(struct agent *a, struct agent_stream *s);
uint64_t agent_watch_next_deadline(const struct agent_stream *s);
void agent_watch_tick(struct agent *a, struct agent_stream *s, uint64_t now);
void agent_watch_cancel(struct agent *a, struct agent_stream *s, int send_result);

/*
 * term.c: terminals live in a->terms independently of streams and of the
 * host connection; a TERMINAL stream only borrows one for one command.
 * Terminals are freed only by agent_term_tick, never while the loop's slots
 * may point at them.
 */
void agent_term_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
void agent_term_list(struct agent *a, uint32_t id);
void agent_term_log(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
/* Appends a pollfd (SLOT_TERM) per live terminal to a->pfds from index
 * nfds; returns the new count. */
int agent_term_poll_add(struct agent *a, int nfds);
void agent_term_on_io(struct agent *a, struct agent_term *t, short revents);
void agent_term_on_reaped(struct agent *a, pid_t pid, int status);
uint64_t agent_term_next_deadline(const struct agent *a);
void agent_term_tick(struct agent *a, uint64_t now);
void agent_term_cancel(struct agent *a, struct agent_stream *s, int send_result);
/* Interactive terminals (PTY, PTY_RESIZE): input from the host, and the
 * end of an attached stream (CANCEL, or the host gone). */
void agent_term_pty(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
void agent_term_pty_resize(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
void agent_term_pty_input(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n);
void agent_term_pty_detach(struct agent *a, struct agent_stream *s, int send_result);

#endif

/*
 * util: small helpers shared by the daemon's modules: logging, clocks,
 * random ids, SHA-256, base64, UTF-8 checks, file-system helpers and running
 * a helper program to completion, crash points for tests. Nothing here
 * keeps state between calls except the log lock and the crash point's
 * counter; everything is safe to call from any thread.
 */
#ifndef SPROUT_UTIL_H
#define SPROUT_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Logging goes to stderr, one line per call, with a timestamp and level.
 * Log once, where a decision is made (STYLE.md rule 6). */
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_info(...) log_msg("info", __VA_ARGS__)
#define log_warn(...) log_msg("warn", __VA_ARGS__)
#define log_err(...) log_msg("error", __VA_ARGS__)

/* Named crash points, for tests of what a daemon that dies at any moment
 * leaves behind: with SPROUT_CRASH_AT=name[:count] in the environment
 * when crash_init ran, the count-th (default: first) passage through
 * crash_point(name) logs and aborts the process. Otherwise a no-op. Names
 * are string literals "operation.step": tests find them in the source. */
void crash_init(void);
void crash_point(const char *name);

int64_t now_ms(void);      /* CLOCK_MONOTONIC in milliseconds */
int64_t now_us(void);      /* CLOCK_MONOTONIC in microseconds */
int64_t wall_ms(void);     /* CLOCK_REALTIME in milliseconds */
void sleep_ms(int ms);

struct timespec;
/* The CLOCK_REALTIME time ms from now, as pthread_cond_timedwait takes. */
void realtime_in(int64_t ms, struct timespec *ret);

/* Writes an RFC 3339 UTC timestamp ("2026-11-24T10:00:00.000Z") for a
 * wall-clock time in milliseconds. out must hold 32 bytes. */
void format_time(int64_t wall, char out[32]);

/* Fills buf with n random bytes from the kernel. Returns 0 or -errno. */
int random_bytes(void *buf, size_t n);

/* Writes n random characters from [a-z0-9] and a NUL into out (n+1 bytes).
 * Returns 0 or -errno. */
int random_id(char *out, size_t n);

/* SHA-256 of data as 64 lowercase hex characters plus NUL. */
void sha256_hex(const void *data, size_t len, char out[65]);

/* base64 (RFC 4648, with padding). encode returns a malloc'd NUL-terminated
 * string, or NULL when out of memory. decode returns 0 and a malloc'd buffer
 * in *ret (owned by the caller; may be NULL when the length is 0), or -EINVAL
 * for malformed input, -ENOMEM. */
char *base64_encode(const void *data, size_t len);
int base64_decode(const char *s, size_t slen, uint8_t **ret, size_t *ret_len);

/* 1 if the bytes are valid UTF-8 with no NUL byte, else 0. */
int utf8_valid(const void *data, size_t len);

/* Copies data into a new NUL-terminated string, replacing invalid UTF-8
 * sequences with U+FFFD, so it can be placed in a JSON string. Returns NULL
 * when out of memory; *ret_len gets the length without the NUL. */
char *utf8_sanitize(const void *data, size_t len, size_t *ret_len);

/* Copies the file src to dst (created, or replaced, with mode 0600):
 * a reflink clone where the file system can share blocks, otherwise a copy
 * of the data extents only, so holes stay holes (between two file systems,
 * 64 KiB runs of zeros become holes too). 0 or -errno. */
int copy_sparse(const char *src, const char *dst);

/* Bytes allocated on disk by the regular files under dir (recursively,
 * not into other file systems mounted below it).
 * With own_only, files that have other names too (hard links shared with
 * a snapshot layer) are not counted. Missing dir: 0. */
int64_t dir_usage(const char *dir, int own_only);

/* mkdir -p with mode; 0 or -errno. */
int mkdir_p(const char *path, unsigned mode);

/* rm -rf; a missing path is success. 0 or -errno. */
int rm_rf(const char *path);

/* Writes data to path atomically and durably: a temp file next to it,
 * fsync, rename, fsync of the directory. 0 or -errno. */
int write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);

/* fsync of the file or directory at path. 0 or -errno. */
int fsync_path(const char *path);
/* fsync of the directory that holds path, so that a name made, renamed
 * or removed there survives a power loss. 0 or -errno. */
int fsync_parent(const char *path);

/* Writes text into an existing file (a sysfs or cgroup knob), in one
 * write. 0 or -errno. */
int write_existing(const char *path, const char *text);

/* Makes path a file of size bytes whose blocks are all allocated (holes
 * filled, data kept), so that writing into it later never needs disk
 * space. 0 or -errno (-ENOSPC). */
int file_allocate(const char *path, int64_t size);

/* Reads a whole small file (up to max bytes) into a malloc'd NUL-terminated
 * buffer. 0 or -errno (-EFBIG past max). */
int read_file(const char *path, size_t max, char **ret, size_t *ret_len);

/* Runs argv[0] with argv (PATH searched), stdin from /dev/null, stdout and
 * stderr appended to log_path (or /dev/null when NULL), and waits for it.
 * Returns its exit status (0..255), 128+signal, or -errno if it could not
 * be started. */
int run_wait(char *const argv[], const char *log_path);

/* Sends all n bytes on a socket (MSG_NOSIGNAL, retrying on EINTR), by
 * deadline (a now_ms() value; < 0: none). 0, -ETIMEDOUT when the peer did
 * not take them in time (some may have gone), or -errno. */
int sock_send_all(int fd, const void *buf, size_t n, int64_t deadline);

/* 1 if s is a Linux user or group name as useradd and groupadd take it:
 * 1 to 32 of [a-z0-9_.-], starting with a letter or '_'. */
int unix_name_valid(const char *s);

/* A growable NUL-terminated byte string: start from {0}, free s when
 * done. An allocation that fails sets oom; later appends then do nothing,
 * so a builder checks once at the end. */
struct strbuf {
        char *s;
        size_t len, cap;
        int oom;
};

/* Appends n bytes (which may hold NULs); 0 or -ENOMEM. */
int strbuf_add(struct strbuf *b, const void *p, size_t n);
/* Appends printf's output; 0 or -ENOMEM. */
int strbuf_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* snprintf into a fixed buffer; returns 0, or -ENAMETOOLONG on truncation. */
int path_fmt(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif

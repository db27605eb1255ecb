/*
 * agent_watch: WATCH streams a directory tree's changes to the host.
 *
 * One inotify instance per stream watches every directory of the tree;
 * directories that appear later (created or moved in) are added and scanned,
 * and what the scan finds is reported as created, so files made in a new
 * directory before its watch existed are not lost. Each event is one DATA
 * frame holding one JSON object and "\n":
 *   {"kind":"created"|"modified"|"deleted"|"renamed","path":"/abs"[,"oldPath":"/abs"]}
 * MOVED_FROM/MOVED_TO pairs (same cookie) become one "renamed"; an unpaired
 * MOVED_TO is "created", an unpaired MOVED_FROM "deleted". IN_MODIFY bursts
 * on one file are coalesced: "modified" is sent on IN_CLOSE_WRITE or at the
 * latest WATCH_MODIFY_NS after the first unreported write.
 *
 * The stream ends on CANCEL (ECANCELED), when the watched directory goes
 * away (ENOENT) or when the kernel's queue overflowed (EOVERFLOW: events were
 * lost, the host should re-list and watch again). Depends on agent.c for
 * output; never blocks except in agent_send, like every other stream.
 */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define WATCH_MASK                                                                                           \
        (IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | \
         IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
#define WATCH_MODIFY_NS (250ULL * 1000000) /* longest a write goes unreported */
#define WATCH_MOVE_NS (20ULL * 1000000)    /* wait for the MOVED_TO of a MOVED_FROM */
#define WATCH_MAX_DIRTY 256                /* files with unreported writes */

/* A watched directory. */
struct watch_dir {
        int wd;
        char *path; /* absolute, no trailing slash (except "/") */
};

/* A file written to since its last "modified". */
struct watch_dirty {
        char *path;
        uint64_t since_ns;
};

struct agent_watch {
        int fd; /* inotify, non-blocking */
        int root_wd;
        struct watch_dir *dirs; /* sorted by wd */
        size_t n_dirs, cap_dirs;
        int full_logged; /* the directory cap was hit and logged */
        /* A MOVED_FROM waiting for its MOVED_TO. */
        uint32_t move_cookie; /* 0: none */
        char *move_path;
        int move_isdir;
        uint64_t move_ns;
        struct watch_dirty dirty[WATCH_MAX_DIRTY];
        size_t n_dirty;
};

/* ---------------------------------------------------------------- JSON */

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if the
 * bytes there are not one (overlong, surrogate, past U+10FFFF, truncated). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
        uint32_t cp;
        size_t len;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                len = 2, cp = s[0] & 0x1f;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                len = 3, cp = s[0] & 0x0f;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                len = 4, cp = s[0] & 0x07;
        else
                return 0;
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return len;
}

/* Appends s as a JSON string, quotes included. Control characters are
 * escaped; bytes that are not valid UTF-8 become U+FFFD, so the output is
 * always valid JSON (the exact name is then lost, which a path from a
 * Linux filesystem can make unavoidable). */
static void json_str(struct proto_buf *b, const char *str)
{
        const unsigned char *s = (const unsigned char *)str;
        size_t n = strlen(str);

        proto_buf_append(b, "\"", 1);
        for (size_t i = 0; i < n;) {
                unsigned char c = s[i];
                char esc[8];
                size_t len;

                if (c == '"' || c == '\\') {
                        esc[0] = '\\';
                        esc[1] = (char)c;
                        proto_buf_append(b, esc, 2);
                        i++;
                } else if (c < 0x20 || c == 0x7f) {
                        const char *short_esc = c == '\n'   ? "\\n"
                                                : c == '\t' ? "\\t"
                                                : c == '\r' ? "\\r"
                                                            : NULL;

                        if (short_esc)
                                proto_buf_append(b, short_esc, 2);
                        else {
                                snprintf(esc, sizeof(esc), "\\u%04x", c);
                                proto_buf_append(b, esc, 6);
                        }
                        i++;
                } else if ((len = utf8_len(s + i, n - i)) > 0) {
                        proto_buf_append(b, s + i, len);
                        i += len;
                } else {
                        proto_buf_append(b, "\\ufffd", 6);
                        i++;
                }
        }
        proto_buf_append(b, "\"", 1);
}

/* Sends one event as a DATA frame. old_path only for "renamed". */
static void emit(struct agent *a, struct agent_stream *s, const char *kind, const char *path,
                 const char *old_path)
{
        struct proto_buf b = {0};

        proto_buf_append(&b, "{\"kind\":\"", 9);
        proto_buf_append(&b, kind, strlen(kind));
        proto_buf_append(&b, "\",\"path\":", 9);
        json_str(&b, path);
        if (old_path) {
                proto_buf_append(&b, ",\"oldPath\":", 11);
                json_str(&b, old_path);
        }
        proto_buf_append(&b, "}\n", 2);
        if (b.oom)
                agent_log("watch %u: out of memory, event for %s dropped", s->id, path);
        else
                agent_send(a, s->id, PROTO_T_DATA, b.data, b.len);
        proto_buf_free(&b);
}

/* ---------------------------------------------------------------- directories */

static char *path_join(const char *dir, const char *name)
{
        char *p;

        if (asprintf(&p, "%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", name) < 0)
                return NULL;
        return p;
}

/* Index of wd in w->dirs, or of where it would go (*ret_found 0). */
static size_t dir_index(const struct agent_watch *w, int wd, int *ret_found)
{
        size_t lo = 0, hi = w->n_dirs;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (w->dirs[mid].wd < wd)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *ret_found = lo < w->n_dirs && w->dirs[lo].wd == wd;
        return lo;
}

static const char *dir_path(const struct agent_watch *w, int wd)
{
        int found;
        size_t i = dir_index(w, wd, &found);

        return found ? w->dirs[i].path : NULL;
}

static void dir_forget(struct agent_watch *w, int wd)
{
        int found;
        size_t i = dir_index(w, wd, &found);

        if (!found)
                return;
        free(w->dirs[i].path);
        memmove(&w->dirs[i], &w->dirs[i + 1], (w->n_dirs - i - 1) * sizeof(w->dirs[0]));
        w->n_dirs--;
}

/*
 * Watches the directory at path. Returns 1 if it is watched now (newly), 0
 * if it was skipped (cap reached, gone, not a directory, already watched
 * under that wd), -ENOMEM.
 */
static int dir_add(struct agent_stream *s, const char *path)
{
        struct agent_watch *w = s->watch;
        int wd, found;
        size_t i;
        char *copy;

        if (w->n_dirs >= AGENT_MAX_WATCH_DIRS) {
                if (!w->full_logged)
                        agent_log("watch %u: %d directories watched, not watching more (first skipped: %s)",
                                  s->id, AGENT_MAX_WATCH_DIRS, path);
                w->full_logged = 1;
                return 0;
        }
        wd = inotify_add_watch(w->fd, path, WATCH_MASK);
        if (wd < 0) {
                if (errno == ENOSPC && !w->full_logged) {
                        agent_log("watch %u: kernel inotify watch limit reached at %s", s->id, path);
                        w->full_logged = 1;
                }
                return 0;
        }
        copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        i = dir_index(w, wd, &found);
        if (found) {
                /* The same directory under a new name (a move we missed). */
                free(w->dirs[i].path);
                w->dirs[i].path = copy;
                return 0;
        }
        if (w->n_dirs == w->cap_dirs) {
                size_t cap = w->cap_dirs ? w->cap_dirs * 2 : 64;
                struct watch_dir *d = realloc(w->dirs, cap * sizeof(*d));

                if (!d) {
                        free(copy);
                        inotify_rm_watch(w->fd, wd);
                        return -ENOMEM;
                }
                w->dirs = d;
                w->cap_dirs = cap;
        }
        memmove(&w->dirs[i + 1], &w->dirs[i], (w->n_dirs - i) * sizeof(w->dirs[0]));
        w->dirs[i] = (struct watch_dir){.wd = wd, .path = copy};
        w->n_dirs++;
        return 1;
}

/*
 * Watches path and every directory below it. With report, every entry found
 * below path is sent as "created" (path itself is the caller's to report).
 * Symlinks are never followed. Recursion depth is bounded by PATH_MAX.
 */
static void tree_add(struct agent *a, struct agent_stream *s, const char *path, int report)
{
        struct dirent *de;
        DIR *d;

        if (dir_add(s, path) <= 0)
                return;
        d = opendir(path);
        if (!d)
                return;
        while ((de = readdir(d))) {
                int is_dir = de->d_type == DT_DIR;
                char *child;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                child = path_join(path, de->d_name);
                if (!child)
                        break;
                if (de->d_type == DT_UNKNOWN) {
                        struct stat st;

                        is_dir = lstat(child, &st) == 0 && S_ISDIR(st.st_mode);
                }
                if (report)
                        emit(a, s, "created", child, NULL);
                if (is_dir && strlen(child) < PATH_MAX)
                        tree_add(a, s, child, report);
                free(child);
        }
        closedir(d);
}

/* Whether path is prefix or below it. */
static int path_under(const char *path, const char *prefix)
{
        size_t n = strlen(prefix);

        return strncmp(path, prefix, n) == 0 && (path[n] == 0 || path[n] == '/');
}

/* A directory moved within the tree: rewrite the paths of it and below. */
static void tree_rename(struct agent_watch *w, const char *from, const char *to)
{
        size_t n = strlen(from);

        for (size_t i = 0; i < w->n_dirs; i++) {
                char *p;

                if (!path_under(w->dirs[i].path, from))
                        continue;
                if (asprintf(&p, "%s%s", to, w->dirs[i].path + n) < 0)
                        continue;
                free(w->dirs[i].path);
                w->dirs[i].path = p;
        }
}

/* A directory left the tree: stop watching it and what is below. */
static void tree_remove(struct agent_watch *w, const char *path)
{
        for (size_t i = 0; i < w->n_dirs;) {
                if (w->dirs[i].wd != w->root_wd && path_under(w->dirs[i].path, path)) {
                        inotify_rm_watch(w->fd, w->dirs[i].wd);
                        dir_forget(w, w->dirs[i].wd);
                        continue;
                }
                i++;
        }
}

/* ---------------------------------------------------------------- events */

static void dirty_flush(struct agent *a, struct agent_stream *s, size_t i)
{
        struct agent_watch *w = s->watch;

        emit(a, s, "modified", w->dirty[i].path, NULL);
        free(w->dirty[i].path);
        w->dirty[i] = w->dirty[--w->n_dirty];
}

static ssize_t dirty_find(const struct agent_watch *w, const char *path)
{
        for (size_t i = 0; i < w->n_dirty; i++)
                if (strcmp(w->dirty[i].path, path) == 0)
                        return (ssize_t)i;
        return -1;
}

/* Forgets unreported writes to path (it was deleted or renamed). */
static void dirty_drop(struct agent_watch *w, const char *path)
{
        ssize_t i = dirty_find(w, path);

        if (i >= 0) {
                free(w->dirty[i].path);
                w->dirty[i] = w->dirty[--w->n_dirty];
        }
}

/* An unpaired MOVED_FROM: the entry left the tree. */
static void move_flush(struct agent *a, struct agent_stream *s)
{
        struct agent_watch *w = s->watch;

        if (!w->move_cookie)
                return;
        emit(a, s, "deleted", w->move_path, NULL);
        if (w->move_isdir)
                tree_remove(w, w->move_path);
        free(w->move_path);
        w->move_path = NULL;
        w->move_cookie = 0;
}

/* Ends the stream with an error RESULT and frees it. */
static void watch_end(struct agent *a, struct agent_stream *s, int err, const char *msg)
{
        agent_send_error(a, s->id, err, "%s", msg);
        agent_watch_cancel(a, s, 0);
}

/* Handles one event. Returns 1 if the stream ended (s is freed). */
static int on_event(struct agent *a, struct agent_stream *s, const struct inotify_event *ev)
{
        struct agent_watch *w = s->watch;
        int is_dir = (ev->mask & IN_ISDIR) != 0;
        const char *dir;
        char *path = NULL;
        ssize_t di;

        if (ev->mask & IN_Q_OVERFLOW) {
                agent_log("watch %u: inotify queue overflowed", s->id);
                watch_end(a, s, EOVERFLOW, "inotify queue overflowed; events were lost");
                return 1;
        }
        if (ev->wd == w->root_wd && (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))) {
                move_flush(a, s);
                watch_end(a, s, ENOENT, "the watched directory is gone");
                return 1;
        }
        if (ev->mask & IN_IGNORED) {
                dir_forget(w, ev->wd);
                return 0;
        }
        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))
                return 0; /* reported by the parent's DELETE / MOVED_FROM */
        dir = dir_path(w, ev->wd);
        if (!dir || ev->len == 0 || !ev->name[0])
                return 0;
        path = path_join(dir, ev->name);
        if (!path)
                return 0;

        /* A MOVED_FROM pairs only with the event right after it. */
        if (w->move_cookie && !((ev->mask & IN_MOVED_TO) && ev->cookie == w->move_cookie))
                move_flush(a, s);

        if (ev->mask & IN_MOVED_FROM) {
                w->move_cookie = ev->cookie ? ev->cookie : 1;
                w->move_path = path;
                w->move_isdir = is_dir;
                w->move_ns = agent_now_ns();
                dirty_drop(w, path);
                return 0;
        }
        if (ev->mask & IN_MOVED_TO) {
                if (w->move_cookie) {
                        emit(a, s, "renamed", path, w->move_path);
                        if (is_dir)
                                tree_rename(w, w->move_path, path);
                        free(w->move_path);
                        w->move_path = NULL;
                        w->move_cookie = 0;
                } else {
                        emit(a, s, "created", path, NULL);
                        if (is_dir)
                                tree_add(a, s, path, 1);
                }
        } else if (ev->mask & IN_CREATE) {
                emit(a, s, "created", path, NULL);
                if (is_dir)
                        tree_add(a, s, path, 1);
        } else if (ev->mask & IN_DELETE) {
                dirty_drop(w, path);
                emit(a, s, "deleted", path, NULL);
        } else if (ev->mask & IN_MODIFY) {
                if (dirty_find(w, path) < 0) {
                        if (w->n_dirty == WATCH_MAX_DIRTY)
                                dirty_flush(a, s, 0);
                        w->dirty[w->n_dirty++] =
                            (struct watch_dirty){.path = path, .since_ns = agent_now_ns()};
                        path = NULL;
                }
        } else if (ev->mask & IN_CLOSE_WRITE) {
                /* Opened for writing and closed without a write: nothing
                 * changed, nothing to report. */
                if ((di = dirty_find(w, path)) >= 0)
                        dirty_flush(a, s, (size_t)di);
        }
        free(path);
        return 0;
}

/* ---------------------------------------------------------------- API */

void agent_watch_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct agent_stream *s = NULL;
        struct agent_watch *w = NULL;
        char *path = NULL;
        struct stat st;
        size_t len;
        int r;

        if (a->n_watches >= AGENT_MAX_WATCH_STREAMS) {
                agent_send_error(a, id, EAGAIN, "too many watches (max %d)", AGENT_MAX_WATCH_STREAMS);
                return;
        }
        r = proto_get_str(p, n, PROTO_TAG_PATH, &path);
        if (r < 0 || !*path || path[0] != '/' || strlen(path) >= PATH_MAX) {
                agent_send_error(a, id, r == -EBADMSG ? EBADMSG : EINVAL, "PATH must be an absolute path");
                goto out;
        }
        /* "/a/b/" and "/a/b" name the same tree; events use the latter. */
        for (len = strlen(path); len > 1 && path[len - 1] == '/'; len--)
                path[len - 1] = 0;
        if (stat(path, &st) < 0) {
                agent_send_error(a, id, errno, "%s: %s", path, strerror(errno));
                goto out;
        }
        if (!S_ISDIR(st.st_mode)) {
                agent_send_error(a, id, ENOTDIR, "%s: not a directory", path);
                goto out;
        }
        w = calloc(1, sizeof(*w));
        if (!w || (w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
                r = w ? errno : ENOMEM;
                agent_send_error(a, id, r, "inotify: %s", strerror(r));
                free(w);
                goto out;
        }
        s = agent_stream_new(a, id, AGENT_STREAM_WATCH);
        if (!s) {
                close(w->fd);
                free(w);
                agent_send_error(a, id, ENOMEM, "out of memory");
                goto out;
        }
        s->watch = w;
        a->n_watches++;
        if (dir_add(s, path) <= 0) {
                r = errno ? errno : ENOENT;
                watch_end(a, s, r, "cannot watch the directory");
                goto out;
        }
        w->root_wd = w->dirs[0].wd;
        /* Existing subdirectories: watched, not reported. tree_add would
         * add the root again; its dir_add then returns 0 and stops, so
         * walk the root's children here. */
        {
                DIR *d = opendir(path);
                struct dirent *de;

                while (d && (de = readdir(d))) {
                        char *child;
                        struct stat cst;

                        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                                continue;
                        if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
                                continue;
                        child = path_join(path, de->d_name);
                        if (child &&
                            (de->d_type == DT_DIR || (lstat(child, &cst) == 0 && S_ISDIR(cst.st_mode))))
                                tree_add(a, s, child, 0);
                        free(child);
                }
                if (d)
                        closedir(d);
        }
out:
        free(path);
}

int agent_watch_fd(const struct agent_stream *s)
{
        return s->watch->fd;
}

void agent_watch_on_readable(struct agent *a, struct agent_stream *s)
{
        /* Aligned for struct inotify_event; one read never splits one. */
        char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));

        /* A bounded number of reads per round keeps other streams served. */
        for (int round = 0; round < 8; round++) {
                ssize_t n = read(s->watch->fd, buf, sizeof(buf));

                if (n <= 0)
                        break;
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;

                        p += sizeof(*ev) + ev->len;
                        if (on_event(a, s, ev))
                                return;
                }
        }
}

uint64_t agent_watch_next_deadline(const struct agent_stream *s)
{
        const struct agent_watch *w = s->watch;
        uint64_t next = 0;

        if (w->move_cookie)
                next = w->move_ns + WATCH_MOVE_NS;
        for (size_t i = 0; i < w->n_dirty; i++) {
                uint64_t d = w->dirty[i].since_ns + WATCH_MODIFY_NS;

                if (!next || d < next)
                        next = d;
        }
        return next;
}

/* Reports what waited long enough: a MOVED_FROM that got no MOVED_TO, and
 * files written to without a close for WATCH_MODIFY_NS. */
void agent_watch_tick(struct agent *a, struct agent_stream *s, uint64_t now)
{
        struct agent_watch *w = s->watch;

        if (w->move_cookie && now >= w->move_ns + WATCH_MOVE_NS)
                move_flush(a, s);
        for (size_t i = 0; i < w->n_dirty;) {
                if (now >= w->dirty[i].since_ns + WATCH_MODIFY_NS)
                        dirty_flush(a, s, i);
                else
                        i++;
        }
}

/* Releases every watch (closing the inotify fd drops them all) and frees s. */
void agent_watch_cancel(struct agent *a, struct agent_stream *s, int send_result)
{
        struct agent_watch *w = s->watch;

        if (send_result)
                agent_send_error(a, s->id, ECANCELED, "cancelled");
        close(w->fd);
        for (size_t i = 0; i < w->n_dirs; i++)
                free(w->dirs[i].path);
        for (size_t i = 0; i < w->n_dirty; i++)
                free(w->dirty[i].path);
        free(w->dirs);
        free(w->move_path);
        free(w);
        a->n_watches--;
        agent_stream_free(a, s);
}

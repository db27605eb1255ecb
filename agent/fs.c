/*
 * agent_fs: READ, WRITE and STAT requests, and the USER identity switch.
 *
 * When a request names a USER, every filesystem call it makes runs with that
 * user's fsuid, fsgid and groups (setfsuid/setfsgid/setgroups), so the kernel
 * checks permissions and new files and directories belong to the user. The
 * agent is single-threaded, so switching around each call is safe; the
 * switch is always undone before returning to the loop.
 *
 * Uploads go to a temp file next to the target and are renamed into place on
 * EOF, so a reader never sees half a file; every failure unlinks the temp.
 * READ and STAT answer at once; only WRITE keeps a stream.
 */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- users */

void agent_user_clear(struct agent_user *u)
{
        free(u->groups);
        free(u->name);
        free(u->home);
        free(u->shell);
        *u = (struct agent_user){0};
}

/* Looks up name in the passwd database. Returns 0, -ESRCH if there is no
 * such user, -ENOMEM. */
int agent_user_lookup(const char *name, struct agent_user *ret_user)
{
        struct agent_user u = {.set = 1};
        struct passwd *pw;
        int ng = 32;

        errno = 0;
        pw = getpwnam(name);
        if (!pw)
                return -ESRCH;
        u.uid = pw->pw_uid;
        u.gid = pw->pw_gid;
        u.name = strdup(pw->pw_name);
        u.home = strdup(*pw->pw_dir ? pw->pw_dir : "/");
        u.shell = strdup(*pw->pw_shell ? pw->pw_shell : "/bin/sh");
        if (!u.name || !u.home || !u.shell)
                goto oom;
        /* getgrouplist reports the size it needs when the array is short. */
        for (int tries = 0; tries < 4; tries++) {
                gid_t *g = realloc(u.groups, (size_t)ng * sizeof(gid_t));
                int want = ng;

                if (!g)
                        goto oom;
                u.groups = g;
                if (getgrouplist(u.name, u.gid, u.groups, &want) >= 0) {
                        u.ngroups = want;
                        *ret_user = u;
                        return 0;
                }
                ng = want > ng ? want : ng * 2;
        }
        /* Absurdly many groups: fall back to the primary one. */
        u.groups[0] = u.gid;
        u.ngroups = 1;
        *ret_user = u;
        return 0;
oom:
        agent_user_clear(&u);
        return -ENOMEM;
}

/*
 * Resolves the optional USER of a request. Returns 0 (ret_user->set says
 * whether one was given) or -errno with *ret_errmsg malloc'd.
 */
int agent_req_user(const uint8_t *p, size_t n, struct agent_user *ret_user, char **ret_errmsg)
{
        char *name = NULL;
        int r = proto_get_str(p, n, PROTO_TAG_USER, &name);

        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                *ret_errmsg = strdup("bad USER");
                return r;
        }
        r = agent_user_lookup(name, ret_user);
        if (r == -ESRCH && asprintf(ret_errmsg, "user not found: %s", name) < 0)
                *ret_errmsg = NULL;
        free(name);
        return r;
}

static int user_needs_switch(const struct agent_user *u)
{
        return u && u->set && (u->uid != geteuid() || u->gid != getegid());
}

/* Takes on u's filesystem identity. Returns 0 or -errno (nothing changed). */
int agent_fs_become(struct agent *a, const struct agent_user *u)
{
        if (!user_needs_switch(u))
                return 0;
        if (geteuid() != 0)
                return -EPERM;
        if (setgroups((size_t)u->ngroups, u->groups) < 0)
                return -errno;
        setfsgid(u->gid);
        setfsuid(u->uid);
        /* setfs*id report the previous id, not errors; ask again to check. */
        if ((uid_t)setfsuid((uid_t)-1) != u->uid || (gid_t)setfsgid((gid_t)-1) != u->gid) {
                agent_fs_restore(a, u);
                return -EPERM;
        }
        return 0;
}

void agent_fs_restore(struct agent *a, const struct agent_user *u)
{
        if (!user_needs_switch(u))
                return;
        setfsuid(geteuid());
        setfsgid(getegid());
        if (setgroups((size_t)a->ngroups, a->groups) < 0)
                agent_log("restoring groups failed: %s", strerror(errno));
}

/* ---------------------------------------------------------------- paths */

/* Gets PATH as an absolute path (relative ones are relative to "/"). */
static int req_path(struct agent *a, uint32_t id, const uint8_t *p, size_t n, char **ret_path)
{
        char *path = NULL;
        int r = proto_get_str(p, n, PROTO_TAG_PATH, &path);

        if (r == -ENOENT || (r == 0 && !*path)) {
                free(path);
                agent_send_error(a, id, EINVAL, "PATH is required");
                return -EINVAL;
        }
        if (r < 0) {
                agent_send_error(a, id, -r, "bad PATH");
                return r;
        }
        if (strlen(path) >= PATH_MAX) {
                agent_send_error(a, id, ENAMETOOLONG, "PATH is too long");
                free(path);
                return -ENAMETOOLONG;
        }
        if (path[0] != '/') {
                char *abs;

                if (asprintf(&abs, "/%s", path) < 0) {
                        free(path);
                        agent_send_error(a, id, ENOMEM, "out of memory");
                        return -ENOMEM;
                }
                free(path);
                path = abs;
        }
        *ret_path = path;
        return 0;
}

/* Gets an optional u64 cap with a default; absent and 0 both mean the
 * default, never "unlimited". Sends EBADMSG if malformed. */
static int req_u64(struct agent *a, uint32_t id, const uint8_t *p, size_t n, uint16_t tag, uint64_t def,
                   const char *what, uint64_t *ret)
{
        int r = proto_get_u64(p, n, tag, ret);

        if (r == -ENOENT || (r == 0 && *ret == 0)) {
                *ret = def;
                return 0;
        }
        if (r < 0)
                agent_send_error(a, id, EBADMSG, "bad %s", what);
        return r;
}

/* Resolves USER, sending the error RESULT itself on failure. */
static int req_user(struct agent *a, uint32_t id, const uint8_t *p, size_t n, struct agent_user *ret_user)
{
        char *msg = NULL;
        int r = agent_req_user(p, n, ret_user, &msg);

        if (r < 0)
                agent_send_error(a, id, -r, "%s", msg ? msg : strerror(-r));
        free(msg);
        return r;
}

static uint32_t kind_of(mode_t m)
{
        if (S_ISREG(m))
                return PROTO_KIND_FILE;
        if (S_ISDIR(m))
                return PROTO_KIND_DIR;
        return PROTO_KIND_OTHER;
}

/* ---------------------------------------------------------------- read */

struct dir_entry {
        uint8_t kind;
        char *name;
};

static int entry_cmp(const void *x, const void *y)
{
        return strcmp(((const struct dir_entry *)x)->name, ((const struct dir_entry *)y)->name);
}

/*
 * Answers a READ of a directory: one ENTRY per entry, sorted by name. A
 * RESULT is one frame, so a listing that does not fit in PROTO_MAX_PAYLOAD
 * is refused with E2BIG rather than silently cut short. Takes ownership of
 * fd.
 */
static void read_dir(struct agent *a, uint32_t id, int fd, const char *path)
{
        struct dir_entry *ents = NULL;
        struct proto_buf b = {0};
        size_t n = 0, cap = 0, bytes = 0;
        struct dirent *de;
        DIR *d = fdopendir(fd);

        if (!d) {
                agent_send_error(a, id, errno, "opendir %s: %s", path, strerror(errno));
                close(fd);
                return;
        }
        while ((errno = 0, de = readdir(d))) {
                uint8_t kind;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                bytes += 6 + 1 + strlen(de->d_name);
                if (bytes > PROTO_MAX_PAYLOAD - 64) {
                        agent_send_error(a, id, E2BIG, "directory %s has too many entries to list", path);
                        goto out;
                }
                if (de->d_type == DT_REG) {
                        kind = PROTO_KIND_FILE;
                } else if (de->d_type == DT_DIR) {
                        kind = PROTO_KIND_DIR;
                } else if (de->d_type == DT_UNKNOWN) {
                        struct stat st;

                        kind = fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
                                   ? (uint8_t)kind_of(st.st_mode)
                                   : PROTO_KIND_OTHER;
                } else {
                        kind = PROTO_KIND_OTHER; /* symlinks too: we do not follow them */
                }
                if (n == cap) {
                        size_t c = cap ? cap * 2 : 64;
                        struct dir_entry *e = realloc(ents, c * sizeof(*e));

                        if (!e)
                                goto oom;
                        ents = e;
                        cap = c;
                }
                ents[n].kind = kind;
                ents[n].name = strdup(de->d_name);
                if (!ents[n].name)
                        goto oom;
                n++;
        }
        if (errno) {
                agent_send_error(a, id, errno, "readdir %s: %s", path, strerror(errno));
                goto out;
        }
        if (n)
                qsort(ents, n, sizeof(*ents), entry_cmp);
        proto_put_u32(&b, PROTO_TAG_KIND, PROTO_KIND_DIR);
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(ents[i].name);
                uint8_t hdr[6] = {PROTO_TAG_ENTRY >> 8,       PROTO_TAG_ENTRY & 0xff,
                                  (uint8_t)((len + 1) >> 24), (uint8_t)((len + 1) >> 16),
                                  (uint8_t)((len + 1) >> 8),  (uint8_t)(len + 1)};

                /* Built by hand: an ENTRY is a kind byte and the name in one
                 * record, which proto_put_bytes cannot assemble. */
                proto_buf_append(&b, hdr, sizeof(hdr));
                proto_buf_append(&b, &ents[i].kind, 1);
                proto_buf_append(&b, ents[i].name, len);
        }
        agent_send_result(a, id, &b);
        goto out;
oom:
        agent_send_error(a, id, ENOMEM, "out of memory listing %s", path);
out:
        for (size_t i = 0; i < n; i++)
                free(ents[i].name);
        free(ents);
        proto_buf_free(&b);
        closedir(d);
}

/* Streams a regular file as DATA frames, then RESULT. Takes ownership of fd. */
static void read_file(struct agent *a, uint32_t id, int fd, const char *path, uint64_t max_size)
{
        struct proto_buf b = {0};
        uint8_t buf[AGENT_CHUNK];
        uint64_t size = 0;

        /* st_size is checked by the caller, but files grow and /proc files
         * claim size 0, so the cap is enforced on what is actually read. */
        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        agent_send_error(a, id, errno, "read %s: %s", path, strerror(errno));
                        goto out;
                }
                if (n == 0)
                        break;
                if ((uint64_t)n > max_size - size) {
                        agent_send_error(a, id, EFBIG, "%s is larger than %llu bytes", path,
                                         (unsigned long long)max_size);
                        goto out;
                }
                size += (uint64_t)n;
                if (agent_send(a, id, PROTO_T_DATA, buf, (size_t)n) < 0)
                        goto out;
        }
        proto_put_u32(&b, PROTO_TAG_KIND, PROTO_KIND_FILE);
        proto_put_u64(&b, PROTO_TAG_SIZE, size);
        agent_send_result(a, id, &b);
out:
        proto_buf_free(&b);
        close(fd);
}

void agent_fs_read(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct agent_user user = {0};
        uint64_t max_size;
        char *path = NULL;
        struct stat st;
        int fd, r, err;

        if (req_path(a, id, p, n, &path) < 0 ||
            req_u64(a, id, p, n, PROTO_TAG_MAX_SIZE, AGENT_DEFAULT_MAX_SIZE, "MAX_SIZE", &max_size) < 0 ||
            req_user(a, id, p, n, &user) < 0)
                goto out;

        r = agent_fs_become(a, &user);
        if (r < 0) {
                agent_send_error(a, id, -r, "cannot act as %s: %s", user.name, strerror(-r));
                goto out;
        }
        /* O_NONBLOCK so a FIFO cannot hang the agent in open(). */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        err = errno;
        agent_fs_restore(a, &user);
        if (fd < 0) {
                agent_send_error(a, id, err, "open %s: %s", path, strerror(err));
                goto out;
        }
        if (fstat(fd, &st) < 0) {
                agent_send_error(a, id, errno, "stat %s: %s", path, strerror(errno));
                close(fd);
                goto out;
        }
        if (S_ISDIR(st.st_mode)) {
                read_dir(a, id, fd, path);
        } else if (!S_ISREG(st.st_mode)) {
                agent_send_error(a, id, EINVAL, "%s is not a regular file or directory", path);
                close(fd);
        } else if ((uint64_t)st.st_size > max_size) {
                agent_send_error(a, id, EFBIG, "%s is %lld bytes, more than %llu", path,
                                 (long long)st.st_size, (unsigned long long)max_size);
                close(fd);
        } else {
                fcntl(fd, F_SETFL, 0);
                read_file(a, id, fd, path, max_size);
        }
out:
        agent_user_clear(&user);
        free(path);
}

/* ---------------------------------------------------------------- stat */

void agent_fs_stat(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct agent_user user = {0};
        struct proto_buf b = {0};
        char *path = NULL;
        struct stat st;
        int r, err;

        if (req_path(a, id, p, n, &path) < 0 || req_user(a, id, p, n, &user) < 0)
                goto out;
        r = agent_fs_become(a, &user);
        if (r < 0) {
                agent_send_error(a, id, -r, "cannot act as %s: %s", user.name, strerror(-r));
                goto out;
        }
        r = stat(path, &st);
        err = errno;
        agent_fs_restore(a, &user);
        if (r < 0) {
                agent_send_error(a, id, err, "stat %s: %s", path, strerror(err));
                goto out;
        }
        proto_put_u32(&b, PROTO_TAG_KIND, kind_of(st.st_mode));
        proto_put_u64(&b, PROTO_TAG_SIZE, (uint64_t)st.st_size);
        proto_put_u32(&b, PROTO_TAG_MODE, st.st_mode & 07777);
        agent_send_result(a, id, &b);
out:
        proto_buf_free(&b);
        agent_user_clear(&user);
        free(path);
}

/* ---------------------------------------------------------------- write */

/* Creates every missing directory above path (which is absolute), 0755.
 * Runs under the caller's identity, so new directories belong to USER. */
static int mkdir_parents(char *path)
{
        for (char *s = strchr(path + 1, '/'); s; s = strchr(s + 1, '/')) {
                *s = 0;
                if (mkdir(path, 0755) < 0 && errno != EEXIST) {
                        int r = -errno;

                        *s = '/';
                        return r;
                }
                *s = '/';
        }
        return 0;
}

static void upload_free(struct agent_upload *up)
{
        if (up->fd >= 0)
                close(up->fd);
        if (up->tmp_path)
                unlink(up->tmp_path);
        free(up->tmp_path);
        free(up->path);
        agent_user_clear(&up->user);
        up->fd = -1;
        up->tmp_path = up->path = NULL;
}

/* Ends the stream s with an error RESULT and removes its temp file. The
 * temp file goes first: once the host has the RESULT it may look. */
static void upload_fail_msg(struct agent *a, struct agent_stream *s, int err, const char *msg)
{
        uint32_t id = s->id;

        upload_free(&s->up);
        agent_stream_free(a, s);
        agent_send_error(a, id, err, "%s", msg);
}

/* upload_fail_msg with "WHAT PATH: strerror(err)". */
static void upload_fail(struct agent *a, struct agent_stream *s, int err, const char *what)
{
        char msg[PATH_MAX + 128];

        snprintf(msg, sizeof(msg), "%s %s: %s", what, s->up.path, strerror(err));
        upload_fail_msg(a, s, err, msg);
}

void agent_fs_write_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct agent_upload up = {.fd = -1};
        struct agent_stream *s;
        const char *base;
        uint32_t mode = 0644;
        char *dir = NULL;
        struct stat st;
        int r, err, fd;

        if (req_path(a, id, p, n, &up.path) < 0 ||
            req_u64(a, id, p, n, PROTO_TAG_MAX_SIZE, AGENT_DEFAULT_MAX_SIZE, "MAX_SIZE", &up.max_size) < 0 ||
            req_user(a, id, p, n, &up.user) < 0)
                goto fail;
        r = proto_get_u32(p, n, PROTO_TAG_MODE, &mode);
        if (r < 0 && r != -ENOENT) {
                agent_send_error(a, id, EBADMSG, "bad MODE");
                goto fail;
        }
        up.mode = (mode_t)(mode & 07777);

        base = strrchr(up.path, '/') + 1;
        if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
                agent_send_error(a, id, EISDIR, "%s is a directory", up.path);
                goto fail;
        }
        dir = strndup(up.path, (size_t)(base - up.path));
        /* ".NAME.sprout-XXXXXX" next to the target: same filesystem, so the
         * rename is atomic; the name says where it came from. */
        if (!dir || asprintf(&up.tmp_path, "%s.%.100s.sprout-XXXXXX", dir, base) < 0) {
                up.tmp_path = NULL;
                agent_send_error(a, id, ENOMEM, "out of memory");
                goto fail;
        }

        r = agent_fs_become(a, &up.user);
        if (r < 0) {
                agent_send_error(a, id, -r, "cannot act as %s: %s", up.user.name, strerror(-r));
                goto fail_notmp;
        }
        err = 0;
        if (stat(up.path, &st) == 0 && S_ISDIR(st.st_mode))
                err = EISDIR;
        else if ((r = mkdir_parents(up.path)) < 0)
                err = -r;
        fd = err ? -1 : mkostemp(up.tmp_path, O_CLOEXEC);
        if (!err && fd < 0)
                err = errno;
        agent_fs_restore(a, &up.user);
        if (err) {
                agent_send_error(a, id, err, "%s %s: %s", err == EISDIR ? "write" : "create", up.path,
                                 strerror(err));
                goto fail_notmp;
        }
        up.fd = fd;

        s = agent_stream_new(a, id, AGENT_STREAM_WRITE);
        if (!s) {
                agent_send_error(a, id, ENOMEM, "out of memory");
                goto fail;
        }
        s->up = up;
        free(dir);
        return;

fail_notmp:
        free(up.tmp_path); /* never created: nothing to unlink */
        up.tmp_path = NULL;
fail:
        upload_free(&up);
        free(dir);
}

void agent_fs_write_data(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n)
{
        struct agent_upload *up = &s->up;

        if ((uint64_t)n > up->max_size - up->size) {
                char msg[PATH_MAX + 128];

                snprintf(msg, sizeof(msg), "upload to %s exceeds %llu bytes", up->path,
                         (unsigned long long)up->max_size);
                upload_fail_msg(a, s, EFBIG, msg);
                return;
        }
        while (n > 0) {
                ssize_t w = write(up->fd, p, n);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0) {
                        upload_fail(a, s, errno, "write");
                        return;
                }
                p += w;
                n -= (size_t)w;
                up->size += (uint64_t)w;
        }
}

void agent_fs_write_eof(struct agent *a, struct agent_stream *s)
{
        struct agent_upload *up = &s->up;
        struct proto_buf b = {0};
        int r, err;

        /* Owner first: chown clears set-id bits that fchmod may set. */
        if (user_needs_switch(&up->user) && fchown(up->fd, up->user.uid, up->user.gid) < 0) {
                upload_fail(a, s, errno, "chown");
                return;
        }
        if (fchmod(up->fd, up->mode) < 0) {
                upload_fail(a, s, errno, "chmod");
                return;
        }
        r = close(up->fd);
        up->fd = -1;
        if (r < 0) {
                upload_fail(a, s, errno, "close");
                return;
        }
        r = agent_fs_become(a, &up->user);
        if (r < 0) {
                upload_fail(a, s, -r, "become user for");
                return;
        }
        r = rename(up->tmp_path, up->path);
        err = errno;
        agent_fs_restore(a, &up->user);
        if (r < 0) {
                upload_fail(a, s, err, "rename onto");
                return;
        }
        free(up->tmp_path);
        up->tmp_path = NULL; /* renamed: nothing left to unlink */

        proto_put_u64(&b, PROTO_TAG_SIZE, up->size);
        agent_send_result(a, s->id, &b);
        proto_buf_free(&b);
        upload_free(up);
        agent_stream_free(a, s);
}

void agent_fs_write_cancel(struct agent *a, struct agent_stream *s, int send_result)
{
        uint32_t id = s->id;

        upload_free(&s->up);
        agent_stream_free(a, s);
        if (send_result)
                agent_send_error(a, id, ECANCELED, "cancelled");
}

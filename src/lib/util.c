/*
 * util: logging, clocks, ids, SHA-256, base64, UTF-8 and file helpers for
 * the daemon. Depends on libc only; holds no state but the log lock.
 */
#include "lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void log_msg(const char *level, const char *fmt, ...)
{
        char ts[32];
        va_list ap;

        format_time(wall_ms(), ts);
        pthread_mutex_lock(&log_lock);
        fprintf(stderr, "%s %-5s ", ts, level);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        fflush(stderr);
        pthread_mutex_unlock(&log_lock);
}

static char crash_name[128];
static long crash_at, crash_hits;

void crash_init(void)
{
        const char *v = getenv("SPROUT_CRASH_AT");
        const char *colon;

        if (!v || !*v)
                return;
        colon = strchr(v, ':');
        snprintf(crash_name, sizeof(crash_name), "%.*s", colon ? (int)(colon - v) : (int)strlen(v), v);
        crash_at = colon ? strtol(colon + 1, NULL, 10) : 1;
        if (crash_at < 1)
                crash_at = 1;
        log_warn("SPROUT_CRASH_AT: dying at passage %ld through crash point %s", crash_at, crash_name);
}

void crash_point(const char *name)
{
        if (!crash_name[0] || strcmp(name, crash_name))
                return;
        if (__atomic_add_fetch(&crash_hits, 1, __ATOMIC_SEQ_CST) != crash_at)
                return;
        log_err("crash point %s reached: aborting (SPROUT_CRASH_AT)", name);
        abort();
}

int64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t wall_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms)
{
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

void realtime_in(int64_t ms, struct timespec *ret)
{
        clock_gettime(CLOCK_REALTIME, ret);
        ret->tv_sec += ms / 1000;
        ret->tv_nsec += (ms % 1000) * 1000000;
        if (ret->tv_nsec >= 1000000000) {
                ret->tv_sec++;
                ret->tv_nsec -= 1000000000;
        }
}

void format_time(int64_t wall, char out[32])
{
        /* RFC 3339 years have four digits: a time outside 1970..9999 (a
         * guest's journal may claim any) is clamped into that range,
         * where gmtime_r cannot fail and the text always fits. */
        const int64_t max = 253402300799999; /* 9999-12-31T23:59:59.999Z */
        time_t s;
        struct tm tm;
        size_t n;

        wall = wall < 0 ? 0 : wall > max ? max : wall;
        s = (time_t)(wall / 1000);

        gmtime_r(&s, &tm);
        n = strftime(out, 20, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(wall % 1000) % 1000u);
}

int random_bytes(void *buf, size_t n)
{
        uint8_t *p = buf;

        while (n > 0) {
                ssize_t r = getrandom(p, n, 0);

                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += r;
                n -= (size_t)r;
        }
        return 0;
}

int random_id(char *out, size_t n)
{
        static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        size_t i = 0;

        while (i < n) {
                uint8_t b[32];
                int r = random_bytes(b, sizeof(b));

                if (r < 0)
                        return r;
                /* 252 = 7 * 36: rejecting larger bytes keeps the choice uniform. */
                for (size_t k = 0; k < sizeof(b) && i < n; k++)
                        if (b[k] < 252)
                                out[i++] = alphabet[b[k] % 36];
        }
        out[n] = 0;
        return 0;
}

/* ---- SHA-256 (FIPS 180-4) ---- */

static const uint32_t sha_k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
        uint32_t w[64], a, b, c, d, e, f, g, hh;

        for (int i = 0; i < 16; i++)
                w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
                       p[4 * i + 3];
        for (int i = 16; i < 64; i++) {
                uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
                uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);

                w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i++) {
                uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
                uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));

                hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

void sha256_hex(const void *data, size_t len, char out[65])
{
        uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        const uint8_t *p = data;
        uint8_t tail[128] = {0};
        size_t full = len / 64, rest = len % 64, tlen;
        uint64_t bits = (uint64_t)len * 8;

        for (size_t i = 0; i < full; i++)
                sha256_block(h, p + 64 * i);
        memcpy(tail, p + 64 * full, rest);
        tail[rest] = 0x80;
        tlen = rest + 1 + 8 <= 64 ? 64 : 128;
        for (int i = 0; i < 8; i++)
                tail[tlen - 1 - i] = (uint8_t)(bits >> (8 * i));
        sha256_block(h, tail);
        if (tlen == 128)
                sha256_block(h, tail + 64);
        for (int i = 0; i < 8; i++)
                snprintf(out + 8 * i, 9, "%08x", h[i]);
}

/* ---- base64 ---- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *base64_encode(const void *data, size_t len)
{
        const uint8_t *p = data;
        size_t olen = 4 * ((len + 2) / 3);
        char *out = malloc(olen + 1), *o = out;

        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t)p[i] << 16;

                if (i + 1 < len)
                        v |= (uint32_t)p[i + 1] << 8;
                if (i + 2 < len)
                        v |= p[i + 2];
                *o++ = b64_chars[(v >> 18) & 63];
                *o++ = b64_chars[(v >> 12) & 63];
                *o++ = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
                *o++ = i + 2 < len ? b64_chars[v & 63] : '=';
        }
        *o = 0;
        return out;
}

static int b64_value(char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+' || c == '-')
                return 62;
        if (c == '/' || c == '_')
                return 63;
        return -1;
}

int base64_decode(const char *s, size_t slen, uint8_t **ret, size_t *ret_len)
{
        uint8_t *out = malloc(slen / 4 * 3 + 3);
        size_t n = 0;
        uint32_t acc = 0;
        int bits = 0, pad = 0;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < slen; i++) {
                char c = s[i];
                int v;

                if (c == '\n' || c == '\r' || c == ' ' || c == '\t')
                        continue;
                if (c == '=') {
                        pad++;
                        continue;
                }
                v = b64_value(c);
                if (v < 0 || pad)
                        goto bad;
                acc = acc << 6 | (uint32_t)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[n++] = (uint8_t)(acc >> bits);
                }
        }
        /* Leftover bits must be padding zeros, and at most two '=' may follow. */
        if (pad > 2 || bits >= 6 || (acc & ((1u << bits) - 1)) != 0)
                goto bad;
        *ret = out;
        *ret_len = n;
        return 0;
bad:
        free(out);
        return -EINVAL;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static size_t utf8_seq(const uint8_t *p, size_t left)
{
        uint8_t c = p[0];
        size_t n;
        uint32_t cp;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                n = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
                n = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
                n = 4, cp = c & 0x07;
        else
                return 0;
        if (n > left)
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
                return 0;
        return n;
}

int utf8_valid(const void *data, size_t len)
{
        const uint8_t *p = data;

        for (size_t i = 0; i < len;) {
                size_t n;

                if (p[i] == 0)
                        return 0;
                n = utf8_seq(p + i, len - i);
                if (!n)
                        return 0;
                i += n;
        }
        return 1;
}

char *utf8_sanitize(const void *data, size_t len, size_t *ret_len)
{
        const uint8_t *p = data;
        char *out = malloc(len * 3 + 1);
        size_t o = 0;

        if (!out)
                return NULL;
        for (size_t i = 0; i < len;) {
                size_t n = utf8_seq(p + i, len - i);

                if (n == 0) {
                        memcpy(out + o, "\xef\xbf\xbd", 3);
                        o += 3;
                        i++;
                        continue;
                }
                memcpy(out + o, p + i, n);
                o += n;
                i += n;
        }
        out[o] = 0;
        *ret_len = o;
        return out;
}

/* ---- files ---- */

/* copy_file_range works within one file system only: between two (guest
 * RAM on tmpfs and the data dir, say) the data is read and written, in
 * chunks, and a chunk of zeros is skipped (it reads back as a hole). */
#define COPY_CHUNK (1 << 20)

static int all_zero(const char *p, size_t len)
{
        return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

static int pwrite_all(int fd, const char *p, size_t len, off_t at)
{
        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, at);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        if (n == 0)
                                errno = EIO;
                        return -1;
                }
                p += n;
                len -= (size_t)n;
                at += n;
        }
        return 0;
}

/* Copies [*at, end) of in to the same offsets of out, at most COPY_CHUNK
 * bytes, moving *at on. */
static int copy_chunk(int in, int out, char *buf, off_t *at, off_t end)
{
        size_t want = end - *at < COPY_CHUNK ? (size_t)(end - *at) : COPY_CHUNK;
        ssize_t n = pread(in, buf, want, *at);

        if (n < 0)
                return errno == EINTR ? 0 : -errno;
        if (n == 0)
                return -EIO;
        for (ssize_t i = 0; i < n; i += 65536) {
                size_t len = n - i < 65536 ? (size_t)(n - i) : 65536;

                if (!all_zero(buf + i, len) && pwrite_all(out, buf + i, len, *at + i) < 0)
                        return -errno;
        }
        *at += n;
        return 0;
}

int copy_sparse(const char *src, const char *dst)
{
        struct stat st;
        int in, out, r = 0;
        off_t data = 0;
        char *buf = NULL;

        in = open(src, O_RDONLY | O_CLOEXEC);
        if (in < 0)
                return -errno;
        out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0) {
                r = -errno;
                close(in);
                return r;
        }
        if (fstat(in, &st) < 0) {
                r = -errno;
                goto out;
        }
        if (ioctl(out, FICLONE, in) == 0)
                goto out;
        /* No shared blocks here: copy each data extent, skip the holes. */
        for (;;) {
                off_t hole;

                data = lseek(in, data, SEEK_DATA);
                if (data < 0) {
                        if (errno != ENXIO)
                                r = -errno;
                        break;
                }
                hole = lseek(in, data, SEEK_HOLE);
                if (hole < 0) {
                        r = -errno;
                        break;
                }
                while (data < hole) {
                        off_t o = data;
                        ssize_t n = buf ? -1 : copy_file_range(in, &data, out, &o, (size_t)(hole - data), 0);

                        if (n < 0 && !buf && (errno == EXDEV || errno == EOPNOTSUPP || errno == ENOSYS)) {
                                buf = malloc(COPY_CHUNK);
                                if (!buf) {
                                        r = -ENOMEM;
                                        goto out;
                                }
                        }
                        if (buf) {
                                r = copy_chunk(in, out, buf, &data, hole);
                                if (r < 0)
                                        goto out;
                                continue;
                        }
                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                r = -errno;
                                goto out;
                        }
                        if (n == 0) {
                                r = -EIO;
                                goto out;
                        }
                }
        }
        if (r == 0 && ftruncate(out, st.st_size) < 0)
                r = -errno;
out:
        free(buf);
        close(in);
        if (close(out) < 0 && r == 0)
                r = -errno;
        if (r < 0)
                unlink(dst);
        return r;
}

static int64_t usage_at(int fd, int own_only, int depth)
{
        struct stat self;
        dev_t dev = fstat(fd, &self) == 0 ? self.st_dev : 0;
        DIR *d = fdopendir(fd);
        struct dirent *de;
        int64_t total = 0;

        if (!d) {
                close(fd);
                return 0;
        }
        while ((de = readdir(d))) {
                struct stat st;

                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                /* A file system mounted below (a VM's RAM) is not disk. */
                if (S_ISDIR(st.st_mode) && st.st_dev != dev)
                        continue;
                if (S_ISDIR(st.st_mode) && depth < 8) {
                        int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

                        if (sub >= 0)
                                total += usage_at(sub, own_only, depth + 1);
                } else if (S_ISREG(st.st_mode) && !(own_only && st.st_nlink > 1)) {
                        total += (int64_t)st.st_blocks * 512;
                }
        }
        closedir(d);
        return total;
}

int64_t dir_usage(const char *dir, int own_only)
{
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        return fd < 0 ? 0 : usage_at(fd, own_only, 0);
}

int mkdir_p(const char *path, unsigned mode)
{
        char buf[4096];
        size_t len = strlen(path);

        if (len == 0 || len >= sizeof(buf))
                return -ENAMETOOLONG;
        memcpy(buf, path, len + 1);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int rm_rf_at(int parent, const char *name)
{
        struct stat st;
        int fd, r = 0;
        DIR *d;
        struct dirent *de;

        if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
                return unlinkat(parent, name, 0) < 0 && errno != ENOENT ? -errno : 0;
        fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -errno;
        }
        while ((de = readdir(d))) {
                int k;

                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                k = rm_rf_at(dirfd(d), de->d_name);
                if (k < 0 && r == 0)
                        r = k;
        }
        closedir(d);
        if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
                r = -errno;
        return r;
}

int rm_rf(const char *path)
{
        return rm_rf_at(AT_FDCWD, path);
}

int write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
        char tmp[4096];
        const uint8_t *p = data;
        int fd, r = 0;

        if (path_fmt(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid()) < 0)
                return -ENAMETOOLONG;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        while (len > 0) {
                ssize_t n = write(fd, p, len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                p += n;
                len -= (size_t)n;
        }
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r < 0 ? r : fsync_parent(path);
}

int fsync_path(const char *path)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC), r = 0;

        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                r = -errno;
        close(fd);
        return r;
}

int fsync_parent(const char *path)
{
        char dir[4096];
        const char *slash = strrchr(path, '/');

        if (!slash)
                return fsync_path(".");
        if ((size_t)(slash - path) >= sizeof(dir))
                return -ENAMETOOLONG;
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = 0;
        return fsync_path(slash == path ? "/" : dir);
}

int read_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        char *buf;
        size_t len = 0;

        if (fd < 0)
                return -errno;
        buf = malloc(max + 1);
        if (!buf) {
                close(fd);
                return -ENOMEM;
        }
        for (;;) {
                ssize_t n = read(fd, buf + len, max + 1 - len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        n = -errno;
                        free(buf);
                        close(fd);
                        return (int)n;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
                if (len > max) {
                        free(buf);
                        close(fd);
                        return -EFBIG;
                }
        }
        close(fd);
        buf[len] = 0;
        *ret = buf;
        if (ret_len)
                *ret_len = len;
        return 0;
}

int run_wait(char *const argv[], const char *log_path)
{
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status, r;

        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, log_path ? log_path : "/dev/null",
                                         O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (r != 0)
                return -r;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return 128 + WTERMSIG(status);
}

int strbuf_printf(struct strbuf *b, const char *fmt, ...)
{
        va_list ap;
        char *s;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (n < 0) {
                b->oom = 1;
                return -ENOMEM;
        }
        n = strbuf_add(b, s, (size_t)n);
        free(s);
        return n;
}

int path_fmt(char *out, size_t size, const char *fmt, ...)
{
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(out, size, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= size)
                return -ENAMETOOLONG;
        return 0;
}

int sock_send_all(int fd, const void *buf, size_t n, int64_t deadline)
{
        const uint8_t *p = buf;

        while (n > 0) {
                ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                int64_t left;

                if (w > 0) {
                        p += w;
                        n -= (size_t)w;
                        continue;
                }
                if (w < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
                        return -errno;
                left = deadline < 0 ? -1 : deadline - now_ms();
                if (deadline >= 0 && left <= 0)
                        return -ETIMEDOUT;
                if (poll(&pfd, 1, left < 0 ? -1 : left > 60000 ? 60000 : (int)left) < 0 && errno != EINTR)
                        return -errno;
        }
        return 0;
}

int unix_name_valid(const char *s)
{
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > 32 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
                return 0;
        for (size_t i = 1; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || strchr("_.-", s[i])))
                        return 0;
        return 1;
}

int strbuf_add(struct strbuf *b, const void *p, size_t n)
{
        if (b->oom)
                return -ENOMEM;
        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 512;
                char *s;

                while (cap < b->len + n + 1)
                        cap *= 2;
                s = realloc(b->s, cap);
                if (!s) {
                        b->oom = 1;
                        return -ENOMEM;
                }
                b->s = s;
                b->cap = cap;
        }
        memcpy(b->s + b->len, p, n);
        b->len += n;
        b->s[b->len] = 0;
        return 0;
}

int write_existing(const char *path, const char *text)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC), r = 0;
        size_t n = strlen(text);

        if (fd < 0)
                return -errno;
        if (write(fd, text, n) != (ssize_t)n)
                r = errno ? -errno : -EIO;
        close(fd);
        return r;
}

int file_allocate(const char *path, int64_t size)
{
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600), r = 0;

        if (fd < 0)
                return -errno;
        if (fallocate(fd, 0, 0, size) < 0)
                r = -errno;
        close(fd);
        return r;
}

/*
 * baseimg: see baseimg.h. Runs skopeo, debootstrap and tar as child
 * processes; parses skopeo's manifest with jansson.
 */
#include "build/baseimg.h"
#include "lib/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* The most a fetched image may take (its compressed layers). */
#define BASEIMG_MAX_BYTES (4LL << 30)

/* What debootstrap adds to minbase: Sprout boots VMs with systemd. */
#define DEBOOTSTRAP_INCLUDE "systemd,systemd-sysv,udev,dbus,iproute2,ca-certificates"

/* ref without docker.io/ and library/: how Docker Hub's names are written. */
static const char *short_name(const char *ref)
{
        if (!strncmp(ref, "docker.io/", 10))
                ref += 10;
        if (!strncmp(ref, "library/", 8))
                ref += 8;
        return ref;
}

int baseimg_is_guest(const char *ref)
{
        static const char *const names[] = {"debian:bookworm", "debian:bookworm-slim", "debian:12",
                                            "debian:12-slim"};
        const char *s = short_name(ref);

        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (!strcmp(s, names[i]))
                        return 1;
        return 0;
}

/* The suite of debian:<suite>[-slim] (letters only), or 0. */
static int debian_suite(const char *ref, char *suite, size_t size)
{
        const char *s = short_name(ref);
        size_t n;

        if (strncmp(s, "debian:", 7))
                return 0;
        s += 7;
        n = strspn(s, "abcdefghijklmnopqrstuvwxyz");
        if (n == 0 || n >= size || (s[n] && strcmp(s + n, "-slim")))
                return 0;
        memcpy(suite, s, n);
        suite[n] = 0;
        return 1;
}

/* Runs argv with its output in a fresh file out; its exit status, or
 * -errno. */
static int run_to(char *const argv[], const char *out)
{
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0)
                return -errno;
        close(fd);
        return run_wait(argv, out);
}

/* The last non-empty line of a tool's output, for an error message. */
static void last_line(const char *path, char *buf, size_t size)
{
        char *text = NULL, *end, *start;

        buf[0] = 0;
        if (read_file(path, 1 << 20, &text, NULL) < 0)
                return;
        end = text + strlen(text);
        while (end > text && (end[-1] == '\n' || end[-1] == ' '))
                *--end = 0;
        start = strrchr(text, '\n');
        start = start ? start + 1 : text;
        /* skopeo's logrus line: time="..." level=fatal msg="what": what. */
        if ((end = strstr(start, "msg=\"")) != NULL) {
                char *w = start;

                for (char *r = end + 5; *r && !(*r == '"' && !r[1]); r++) {
                        if (*r == '\\' && r[1])
                                r++;
                        *w++ = *r;
                }
                *w = 0;
        }
        snprintf(buf, size, "%s", start);
        free(text);
}

/* skopeo's argv: its global options, then the command's. */
static void skopeo_argv(const struct baseimg_where *w, const char *timeout, char **argv, int *n)
{
        argv[(*n)++] = "skopeo";
        argv[(*n)++] = "--command-timeout";
        argv[(*n)++] = (char *)timeout;
        if (w->registries_conf) {
                argv[(*n)++] = "--registries-conf";
                argv[(*n)++] = (char *)w->registries_conf;
        }
}

int baseimg_resolve(const struct baseimg_where *w, const char *ref, char *digest, size_t dsize, char *msg,
                    size_t size)
{
        char tmp[] = "/tmp/sprout-skopeo.XXXXXX", url[300], why[512], suite[32], *out = NULL, *d, *argv[16];
        int fd = mkstemp(tmp), r, n = 0;

        skopeo_argv(w, "30s", argv, &n);
        argv[n++] = "inspect";
        argv[n++] = "--retry-times";
        argv[n++] = "0";
        argv[n++] = "--format";
        argv[n++] = "{{.Digest}}";
        argv[n++] = url;
        argv[n] = NULL;
        if (fd < 0)
                return -errno;
        close(fd);
        snprintf(url, sizeof(url), "docker://%s", ref);
        r = run_to(argv, tmp);
        if (r == 0 && read_file(tmp, 1 << 20, &out, NULL) == 0 && (d = strstr(out, "sha256:")) != NULL &&
            strspn(d + 7, "0123456789abcdef") == 64) {
                snprintf(digest, dsize, "%.71s", d);
                free(out);
                unlink(tmp);
                return 0;
        }
        free(out);
        if (r < 0)
                snprintf(why, sizeof(why), "skopeo could not run: %s", strerror(-r));
        else
                last_line(tmp, why, sizeof(why));
        unlink(tmp);
        if (debian_suite(ref, suite, sizeof(suite))) {
                snprintf(digest, dsize, "debootstrap:%s", suite);
                return 0;
        }
        snprintf(msg, size, "base image '%s' could not be resolved through the registries: %s", ref, why);
        return -ENOENT;
}

/* The host's Debian mirror, as apt has it: the first http(s) URI that is
 * not security or backports. */
static void debian_mirror(char *buf, size_t size)
{
        glob_t g = {0};

        snprintf(buf, size, "http://deb.debian.org/debian");
        if (glob("/etc/apt/sources.list.d/*.sources", 0, NULL, &g) == 0) {
                for (size_t i = 0; i < g.gl_pathc; i++) {
                        char *text = NULL, *line, *save = NULL;

                        if (read_file(g.gl_pathv[i], 1 << 20, &text, NULL) < 0)
                                continue;
                        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                                char *u = line + strspn(line, " \t");

                                if (strncmp(u, "URIs:", 5))
                                        continue;
                                u += 5;
                                for (char *w = strtok(u, " \t"); w; w = strtok(NULL, " \t")) {
                                        if ((!strncmp(w, "http://", 7) || !strncmp(w, "https://", 8)) &&
                                            !strstr(w, "security") && !strstr(w, "backports")) {
                                                snprintf(buf, size, "%s", w);
                                                free(text);
                                                globfree(&g);
                                                return;
                                        }
                                }
                        }
                        free(text);
                }
        }
        globfree(&g);
        {
                char *text = NULL, *line, *save = NULL;

                if (read_file("/etc/apt/sources.list", 1 << 20, &text, NULL) < 0)
                        return;
                for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                        char *w, *ws = NULL;

                        if (strncmp(line, "deb ", 4))
                                continue;
                        for (w = strtok_r(line + 4, " \t", &ws); w && *w == '[';
                             w = strtok_r(NULL, " \t", &ws))
                                while (w && !strchr(w, ']'))
                                        w = strtok_r(NULL, " \t", &ws);
                        if (w && (!strncmp(w, "http://", 7) || !strncmp(w, "https://", 8)) &&
                            !strstr(w, "security") && !strstr(w, "backports")) {
                                snprintf(buf, size, "%s", w);
                                break;
                        }
                }
                free(text);
        }
}

/* Nothing may stay mounted under dir before it is removed. */
static int unmount_under(const char *dir)
{
        size_t n = strlen(dir);
        int left = 0;

        for (int pass = 0; pass < 3; pass++) {
                char *text = NULL, *line, *save = NULL;

                left = 0;
                if (read_file("/proc/self/mounts", 4 << 20, &text, NULL) < 0)
                        return -EIO;
                for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                        char *mnt = strchr(line, ' ');

                        if (!mnt)
                                continue;
                        mnt++;
                        mnt[strcspn(mnt, " ")] = 0;
                        if (!strncmp(mnt, dir, n) && mnt[n] == '/') {
                                char *argv[] = {"umount", "-l", mnt, NULL};

                                run_wait(argv, NULL);
                                left++;
                        }
                }
                free(text);
                if (!left)
                        return 0;
        }
        return -EBUSY;
}

static int remove_tree(const char *dir)
{
        char *argv[] = {"rm", "-rf", "--one-file-system", (char *)dir, NULL};

        if (unmount_under(dir) < 0)
                return -EBUSY; /* never through a mount */
        return run_wait(argv, NULL) == 0 ? 0 : -EIO;
}

/* dir/name holding text, whole or not at all. */
static int write_in(const char *dir, const char *name, const char *text)
{
        char path[PATH_MAX];

        if (path_fmt(path, sizeof(path), "%s/%s", dir, name) < 0)
                return -ENAMETOOLONG;
        return write_file_atomic(path, text, strlen(text), 0600);
}

/* A Debian suite with debootstrap, packed as one zstd tarball. */
static int fetch_debootstrap(const char *tmp, const char *suite, const char *log, char *msg, size_t size)
{
        char root[PATH_MAX], tar[PATH_MAX], mirror[512];
        char *boot[] = {
            "debootstrap", "--variant=minbase", "--include=" DEBOOTSTRAP_INCLUDE, (char *)suite, root, mirror,
            NULL};
        char *pack[] = {"tar", "--numeric-owner", "-I", "zstd -1 -T0", "-C", root, "-cf", tar, ".", NULL};
        int r;

        debian_mirror(mirror, sizeof(mirror));
        if (path_fmt(root, sizeof(root), "%s/root", tmp) < 0 || path_fmt(tar, sizeof(tar), "%s/0", tmp) < 0)
                return -ENAMETOOLONG;
        if (geteuid() != 0) {
                snprintf(msg, size, "debian:%s is made with debootstrap, which needs sproutd to run as root",
                         suite);
                return -EIO;
        }
        r = run_wait(boot, log);
        unmount_under(root);
        if (r != 0) {
                snprintf(msg, size, "debootstrap of Debian %s from %s failed (exit %d)", suite, mirror, r);
                return -EIO;
        }
        r = run_wait(pack, log);
        remove_tree(root);
        if (r != 0) {
                snprintf(msg, size, "packing Debian %s failed (tar exit %d)", suite, r);
                return -EIO;
        }
        return write_in(tmp, "layers", "0\n");
}

/* The bytes the files of folder dir (flat, as skopeo's dir: is) take. */
static int64_t dir_bytes(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        int64_t n = 0;

        if (!d)
                return 0;
        while ((e = readdir(d)) != NULL) {
                struct stat st;

                if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                        n += (int64_t)st.st_blocks * 512;
        }
        closedir(d);
        return n;
}

/* Runs argv (skopeo copy into dir), stopping it once dir holds more than
 * BASEIMG_MAX_BYTES: a registry decides how big an image is. Its exit
 * status, -EFBIG when stopped, or -errno. */
static int run_capped(char *const argv[], const char *log, const char *dir)
{
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status, r;

        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND,
                                         0644);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (r != 0)
                return -r;
        for (int big = 0;;) {
                r = waitpid(pid, &status, WNOHANG);
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r == pid)
                        break;
                if (!big && dir_bytes(dir) > BASEIMG_MAX_BYTES) {
                        kill(pid, SIGKILL);
                        big = 1;
                }
                if (big)
                        continue; /* reap it */
                sleep_ms(250);
        }
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && dir_bytes(dir) > BASEIMG_MAX_BYTES)
                return -EFBIG;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ref without its tag or digest, for name@digest. */
static void repository_of(const char *ref, char *buf, size_t size)
{
        const char *slash = strrchr(ref, '/'), *at = strchr(ref, '@'), *colon;
        size_t n = at ? (size_t)(at - ref) : strlen(ref);

        colon = memchr(slash ? slash : ref, ':', n - (size_t)((slash ? slash : ref) - ref));
        if (colon)
                n = (size_t)(colon - ref);
        snprintf(buf, size, "%.*s", (int)n, ref);
}

static int fetch_registry(const struct baseimg_where *w, const char *tmp, const char *ref, const char *digest,
                          char *msg, size_t size)
{
        char repo[300], src[400], dst[PATH_MAX], path[PATH_MAX], *text = NULL, *argv[16];
        struct strbuf list = {0};
        json_t *m, *layers, *l;
        size_t i;
        int r, n = 0;

        /* No signature policy: the digest pins what is fetched. */
        skopeo_argv(w, "1200s", argv, &n);
        argv[n++] = "--insecure-policy";
        argv[n++] = "copy";
        argv[n++] = "--retry-times";
        argv[n++] = "2";
        argv[n++] = "--quiet";
        argv[n++] = src;
        argv[n++] = dst;
        argv[n] = NULL;
        repository_of(ref, repo, sizeof(repo));
        snprintf(src, sizeof(src), "docker://%s@%s", repo, digest);
        if (path_fmt(dst, sizeof(dst), "dir:%s", tmp) < 0 ||
            path_fmt(path, sizeof(path), "%s/manifest.json", tmp) < 0)
                return -ENAMETOOLONG;
        r = run_capped(argv, w->log_path, tmp);
        if (r == -EFBIG) {
                snprintf(msg, size, "base image '%s' is over %lld MiB", ref,
                         (long long)BASEIMG_MAX_BYTES >> 20);
                return -EIO;
        }
        if (r != 0) {
                snprintf(msg, size, "fetching base image '%s' failed (skopeo exit %d)", ref, r);
                return -EIO;
        }
        r = read_file(path, 4 << 20, &text, NULL);
        if (r < 0)
                return r;
        m = json_loads(text, 0, NULL);
        free(text);
        layers = json_object_get(m, "layers");
        json_array_foreach(layers, i, l)
        {
                const char *d = json_string_value(json_object_get(l, "digest"));

                if (!d || strncmp(d, "sha256:", 7) || strspn(d + 7, "0123456789abcdef") != 64)
                        break;
                strbuf_add(&list, d + 7, 64);
                strbuf_add(&list, "\n", 1);
        }
        if (!json_is_array(layers) || json_array_size(layers) == 0 || i < json_array_size(layers)) {
                json_decref(m);
                free(list.s);
                snprintf(msg, size, "base image '%s' has no layers Sprout can read", ref);
                return -EIO;
        }
        json_decref(m);
        strbuf_add(&list, "", 1);
        r = list.oom ? -ENOMEM : write_in(tmp, "layers", list.s);
        free(list.s);
        return r;
}

/* The layer files that folder dir lists. */
static int read_layers(const char *dir, char ***ret)
{
        char path[PATH_MAX], *text = NULL, *line, *save = NULL, **v = NULL;
        size_t n = 0;
        int r;

        if (path_fmt(path, sizeof(path), "%s/layers", dir) < 0)
                return -ENAMETOOLONG;
        r = read_file(path, 1 << 20, &text, NULL);
        if (r < 0)
                return r;
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char **nv = realloc(v, (n + 2) * sizeof(*v));

                if (!nv || asprintf(&nv[n], "%s/%s", dir, line) < 0) {
                        if (nv)
                                nv[n] = NULL;
                        v = nv ? nv : v;
                        if (v)
                                v[n] = NULL;
                        baseimg_free(v);
                        free(text);
                        return -ENOMEM;
                }
                v = nv;
                v[++n] = NULL;
        }
        free(text);
        if (n == 0) {
                free(v);
                return -EBADMSG;
        }
        *ret = v;
        return 0;
}

int baseimg_fetch(const struct baseimg_where *w, const char *ref, const char *digest, char ***ret, char *msg,
                  size_t size)
{
        const char *cache_dir = w->cache_dir;
        char name[96], dir[PATH_MAX], tmp[PATH_MAX], lock[PATH_MAX], suite[32];
        int fd, r;

        snprintf(name, sizeof(name), "%s", digest);
        name[strcspn(name, ":")] = '-';
        if (strchr(name, '/') || path_fmt(dir, sizeof(dir), "%s/%s", cache_dir, name) < 0 ||
            path_fmt(tmp, sizeof(tmp), "%s/.%s.tmp", cache_dir, name) < 0 ||
            path_fmt(lock, sizeof(lock), "%s/.%s.lock", cache_dir, name) < 0)
                return -ENAMETOOLONG;
        r = mkdir_p(cache_dir, 0700);
        if (r < 0)
                return r;
        /* One fetch per image at a time; a second caller finds it done. */
        fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        while (flock(fd, LOCK_EX) < 0)
                if (errno != EINTR) {
                        r = -errno;
                        close(fd);
                        return r;
                }
        r = read_layers(dir, ret);
        if (r == 0)
                goto out;
        remove_tree(tmp);
        r = mkdir(tmp, 0700) < 0 ? -errno : 0;
        if (r == 0 && !strncmp(digest, "debootstrap:", 12)) {
                snprintf(suite, sizeof(suite), "%s", digest + 12);
                r = fetch_debootstrap(tmp, suite, w->log_path, msg, size);
        } else if (r == 0) {
                r = fetch_registry(w, tmp, ref, digest, msg, size);
        }
        if (r == 0 && rename(tmp, dir) < 0)
                r = -errno;
        if (r == 0)
                r = read_layers(dir, ret);
        else
                remove_tree(tmp);
out:
        close(fd);
        return r;
}

void baseimg_free(char **layers)
{
        for (size_t i = 0; layers && layers[i]; i++)
                free(layers[i]);
        free(layers);
}

/*
 * api_static: the web console's files, served without a key at / (its
 * page) and /ui/... (scripts, styles and the front-end libraries `make
 * web` copied out of web/node_modules). They come from the web directory
 * (--web-dir) only: a path is plain names under it, no "..", no dotfiles,
 * and it resolves to a file inside it. The page itself asks for the key and calls /v1 with
 * it. Depends on util.
 */
#include "api/api_int.h"
#include "lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATIC_MAX (8 << 20) /* the largest file served (xterm.js is 0.3 MiB) */

static const char *content_type(const char *name)
{
        static const struct {
                const char *ext, *type;
        } types[] = {
            {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
            {".css", "text/css; charset=utf-8"},   {".svg", "image/svg+xml"},
            {".json", "application/json"},         {".map", "application/json"},
        };
        const char *dot = strrchr(name, '.');

        for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
                if (!strcmp(dot, types[i].ext))
                        return types[i].type;
        return "application/octet-stream";
}

/* A relative path of plain names: [A-Za-z0-9_.-] segments, none starting
 * with a dot. */
static int path_ok(const char *p)
{
        if (!*p || strlen(p) > 200)
                return 0;
        for (const char *seg = p; *seg;) {
                size_t n = strcspn(seg, "/");

                if (n == 0 || seg[0] == '.' ||
                    strspn(seg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") < n)
                        return 0;
                seg += n;
                if (*seg == '/')
                        seg++;
        }
        return p[strlen(p) - 1] != '/';
}

static void serve(struct api_call *c, const char *rel)
{
        char path[PATH_MAX], real[PATH_MAX], *data = NULL;
        size_t len = 0, dl = c->a->web_dir ? strlen(c->a->web_dir) : 0;
        struct stat st;
        int fd = -1;

        if (!c->a->web_dir || !path_ok(rel) ||
            path_fmt(path, sizeof(path), "%s/%s", c->a->web_dir, rel) < 0) {
                api_error(c, 404, "NOT_FOUND", "no such file");
                return;
        }
        /* Whatever links there are, the file is inside the web directory
         * (itself resolved when the daemon started). */
        if (realpath(path, real) && !strncmp(real, c->a->web_dir, dl) && real[dl] == '/')
                fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > STATIC_MAX) {
                if (fd >= 0)
                        close(fd);
                api_error(c, 404, "NOT_FOUND",
                          c->a->web_dir && !strcmp(rel, "index.html")
                              ? "the web console is not built (make web)"
                              : "no such file");
                return;
        }
        close(fd);
        if (read_file(real, STATIC_MAX, &data, &len) < 0) {
                api_error(c, 500, "INTERNAL_ERROR", "could not read %s", rel);
                return;
        }
        c->resp->status = 200;
        c->resp->text = data; /* text files only: the body ends at a NUL */
        c->resp->content_type = content_type(rel);
}

void api_console(struct api_call *c)
{
        serve(c, "index.html");
}

void api_console_file(struct api_call *c)
{
        char *rel = c->rest ? http_decode(c->rest, strlen(c->rest), 0) : NULL;

        serve(c, rel ? rel : "");
        free(rel);
}

/*
 * ident: what makes a VM restored from a snapshot its own. Every copy of
 * one snapshot wakes with the same kernel random state, host name and
 * machine id; the host's PING brings fresh entropy and the VM's own name
 * and id, applied here before the HELLO answers, so that the create or
 * fork that waits on it returns a VM whose random numbers, UUIDs and keys
 * are its own.
 */
#include "agent.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* From <linux/random.h>, which musl does not ship. */
#ifndef RNDADDENTROPY
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#endif
#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07)
#endif

void agent_add_entropy(const uint8_t *p, size_t n)
{
        struct {
                int entropy_count; /* bits */
                int buf_size;
                uint8_t buf[256];
        } info;
        int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC | O_NOCTTY);

        if (fd < 0)
                return;
        if (n > sizeof(info.buf))
                n = sizeof(info.buf);
        info.entropy_count = (int)n * 8;
        info.buf_size = (int)n;
        memcpy(info.buf, p, n);
        /* Credited to the pool (root only); else at least mixed in. */
        if (ioctl(fd, RNDADDENTROPY, &info) < 0 && write(fd, p, n) < 0 && errno != EPERM)
                agent_log("writing entropy failed: %s", strerror(errno));
        /* The CRNG takes the new pool now, not at its next timed reseed. */
        (void)ioctl(fd, RNDRESEEDCRNG);
        close(fd);
}

/* Replaces path with text (mode), through a file beside it. */
static int replace_file(const char *path, const char *text, size_t len, mode_t mode)
{
        char tmp[256];
        int fd, r = 0;

        snprintf(tmp, sizeof(tmp), "%s.sprout-tmp", path);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        if (write(fd, text, len) != (ssize_t)len)
                r = -EIO;
        else if (fchmod(fd, mode) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

/* The first line of a small file, without its newline; "" when unreadable. */
static void read_line(const char *path, char *buf, size_t size)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);

        if (fd >= 0)
                close(fd);
        buf[n > 0 ? n : 0] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
}

static int all_of(const char *s, const char *set)
{
        return s[0] && strspn(s, set) == strlen(s);
}

static void set_hostname(const char *name)
{
        char cur[256] = "", hosts[8192], out[8192 + 128];
        size_t o = 0;
        int fd, had = 0;
        ssize_t n;

        if (strlen(name) > 63 || !all_of(name, "abcdefghijklmnopqrstuvwxyz0123456789-"))
                return;
        if (gethostname(cur, sizeof(cur) - 1) == 0 && !strcmp(cur, name))
                return;
        if (sethostname(name, strlen(name)) < 0) {
                agent_log("setting the host name failed: %s", strerror(errno));
                return;
        }
        snprintf(out, sizeof(out), "%s\n", name);
        replace_file("/etc/hostname", out, strlen(out), 0644);
        /* /etc/hosts: the 127.0.1.1 line names this host (Debian's way). */
        fd = open("/etc/hosts", O_RDONLY | O_CLOEXEC);
        n = fd < 0 ? -1 : read(fd, hosts, sizeof(hosts) - 1);
        if (fd >= 0)
                close(fd);
        if (n < 0 || (size_t)n == sizeof(hosts) - 1)
                return; /* unreadable, or too big to be ours: left alone */
        hosts[n] = 0;
        for (char *l = hosts, *e; *l; l = e) {
                size_t len;

                e = strchr(l, '\n');
                e = e ? e + 1 : l + strlen(l);
                len = (size_t)(e - l);
                if (!strncmp(l, "127.0.1.1", 9) && isspace((unsigned char)l[9])) {
                        if (!had)
                                o += (size_t)snprintf(out + o, sizeof(out) - o, "127.0.1.1\t%s\n", name);
                        had = 1;
                        continue;
                }
                memcpy(out + o, l, len);
                o += len;
        }
        if (!had) {
                if (o && out[o - 1] != '\n')
                        out[o++] = '\n';
                o += (size_t)snprintf(out + o, sizeof(out) - o, "127.0.1.1\t%s\n", name);
        }
        replace_file("/etc/hosts", out, o, 0644);
}

static void set_machine_id(const char *id)
{
        static const char *const journals[] = {"/run/log/journal", "/var/log/journal"};
        char cur[64], line[40];

        if (strlen(id) != 32 || !all_of(id, "0123456789abcdef"))
                return;
        read_line("/etc/machine-id", cur, sizeof(cur));
        if (!strcmp(cur, id))
                return;
        /* journald keeps writing where it started, under the old id, and
         * journalctl reads the directory named by the new one: name it. */
        for (size_t i = 0; i < sizeof(journals) / sizeof(journals[0]); i++) {
                char old[128], new[128];
                struct stat st;

                if (strlen(cur) != 32)
                        break;
                snprintf(old, sizeof(old), "%s/%s", journals[i], cur);
                snprintf(new, sizeof(new), "%s/%s", journals[i], id);
                if (lstat(old, &st) == 0 && lstat(new, &st) < 0 && symlink(cur, new) < 0)
                        agent_log("linking %s failed: %s", new, strerror(errno));
        }
        snprintf(line, sizeof(line), "%s\n", id);
        if (replace_file("/etc/machine-id", line, strlen(line), 0444) < 0)
                agent_log("writing /etc/machine-id failed: %s", strerror(errno));
}

void agent_set_identity(const char *hostname, const char *machine_id)
{
        if (hostname)
                set_hostname(hostname);
        if (machine_id)
                set_machine_id(machine_id);
}

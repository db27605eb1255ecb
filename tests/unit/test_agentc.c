/*
 * The daemon's agent client against the real agent over a socketpair: its
 * typed operations (exec, files, directory listings, terminals, watches)
 * give the answers the layers above rely on, and a dead transport fails
 * every operation at once.
 */
#include "agent_proc.h"
#include "agentc/agentc.h"
#include "lib/util.h"
#include "unit.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A client on a fresh agent; the agent is reaped by stop(). */
static struct agentc *start(pid_t *ret_pid)
{
        struct agentc *a = NULL;
        int fd;

        if (unit_agent_spawn(ret_pid, &fd) < 0)
                return NULL;
        if (agentc_open_fd(fd, &a) < 0 || agentc_ping(a, 5000) < 0) {
                agentc_unref(a);
                unit_agent_reap(*ret_pid, 2000);
                return NULL;
        }
        return a;
}

static void stop(struct agentc *a, pid_t pid)
{
        agentc_unref(a);
        unit_agent_reap(pid, 2000);
}

static int bytes_are(const struct agentc_bytes *b, const char *s)
{
        return b->len == strlen(s) && (b->len == 0 || !memcmp(b->data, s, b->len));
}

TEST(agentc_exec_typed)
{
        struct agentc_result res = {0};
        pid_t pid;
        struct agentc *a = start(&pid);

        CHECK(a);
        struct agentc_exec e = {.command = "echo out; echo err >&2; exit 3", .max_output = 4096};
        CHECK(agentc_exec(a, &e, &res) == 0);
        CHECK(res.err == 0 && res.exit_code == 3 && !res.timed_out);
        CHECK(bytes_are(&res.out, "out\n") && bytes_are(&res.errout, "err\n"));
        agentc_result_free(&res);

        e = (struct agentc_exec){.command = "pwd", .cwd = "/tmp", .max_output = 4096};
        CHECK(agentc_exec(a, &e, &res) == 0 && bytes_are(&res.out, "/tmp\n"));
        agentc_result_free(&res);

        e = (struct agentc_exec){.command = "echo before; sleep 5", .timeout_ms = 300, .max_output = 4096};
        CHECK(agentc_exec(a, &e, &res) == 0 && res.timed_out && bytes_are(&res.out, "before\n"));
        agentc_result_free(&res);

        e = (struct agentc_exec){.command = "head -c 10000 /dev/zero", .max_output = 100};
        CHECK(agentc_exec(a, &e, &res) == 0 && (res.overflow || res.err == E2BIG));
        agentc_result_free(&res);
        stop(a, pid);
}

TEST(agentc_files_typed)
{
        char dir[] = "/tmp/sprout-agentc-XXXXXX", path[128], sub[128];
        struct agentc_result res = {0};
        int saw_file = 0, saw_dir = 0;
        pid_t pid;
        struct agentc *a;

        CHECK(mkdtemp(dir) != NULL);
        a = start(&pid);
        CHECK(a);
        snprintf(path, sizeof(path), "%s/f.bin", dir);
        snprintf(sub, sizeof(sub), "%s/d", dir);
        CHECK(mkdir_p(sub, 0700) == 0);
        CHECK(agentc_write(a, path, NULL, "a\0b", 3, 0600, 1 << 20, 5000, &res) == 0 && res.err == 0);
        agentc_result_free(&res);
        CHECK(agentc_read(a, path, NULL, 1 << 20, 5000, &res) == 0 && res.err == 0 && !res.is_dir);
        CHECK(res.data.len == 3 && !memcmp(res.data.data, "a\0b", 3));
        agentc_result_free(&res);

        CHECK(agentc_read(a, dir, NULL, 1 << 20, 5000, &res) == 0 && res.err == 0 && res.is_dir);
        for (size_t i = 0; i < res.nentries; i++) {
                saw_file += !strcmp(res.entries[i].name, "f.bin") && !res.entries[i].is_dir;
                saw_dir += !strcmp(res.entries[i].name, "d") && res.entries[i].is_dir;
        }
        CHECK(res.nentries == 2 && saw_file == 1 && saw_dir == 1);
        agentc_result_free(&res);

        snprintf(path, sizeof(path), "%s/missing", dir);
        CHECK(agentc_read(a, path, NULL, 1 << 20, 5000, &res) == 0 && res.err == ENOENT);
        agentc_result_free(&res);
        stop(a, pid);
        rm_rf(dir);
}

TEST(agentc_terminals_and_watch)
{
        char dir[] = "/tmp/sprout-agentc-XXXXXX", path[128], buf[4096];
        struct agentc_result res = {0};
        uint32_t stream;
        long n = 0;
        pid_t pid;
        struct agentc *a;

        CHECK(mkdtemp(dir) != NULL);
        a = start(&pid);
        CHECK(a);
        struct agentc_exec e = {.command = "echo in-terminal", .terminal = "t1", .max_output = 4096};
        CHECK(agentc_exec(a, &e, &res) == 0 && res.err == 0 && bytes_are(&res.out, "in-terminal\n"));
        agentc_result_free(&res);
        CHECK(agentc_term_list(a, 5000, &res) == 0 && res.nentries == 1 && !strcmp(res.entries[0].name, "t1"));
        agentc_result_free(&res);
        CHECK(agentc_term_log(a, "t1", 1 << 16, 5000, &res) == 0 && res.err == 0);
        CHECK(res.data.len > 0 && memmem(res.data.data, res.data.len, "in-terminal", 11));
        agentc_result_free(&res);
        CHECK(agentc_term_log(a, "nope", 1 << 16, 5000, &res) == 0 && res.err != 0);
        agentc_result_free(&res);

        CHECK(agentc_watch_open(a, dir, NULL, 1 << 16, &stream) == 0);
        usleep(200000);
        snprintf(path, sizeof(path), "%s/new.txt", dir);
        CHECK(write_file_atomic(path, "x", 1, 0644) == 0);
        for (int i = 0; i < 50 && n <= 0; i++)
                n = agentc_stream_read(a, stream, buf, sizeof(buf) - 1, 100);
        CHECK(n > 0);
        buf[n] = 0;
        CHECK(strstr(buf, "new.txt") != NULL);
        agentc_stream_close(a, stream);
        stop(a, pid);
        rm_rf(dir);
}

/* Reads stream id until its output so far (in out, NUL-terminated)
 * contains want, for up to 10 s; 1 when it did. */
static int read_until(struct agentc *a, uint32_t id, char *out, size_t size, const char *want)
{
        size_t len = strlen(out);

        for (int i = 0; i < 100 && !strstr(out, want); i++) {
                long n = agentc_stream_read(a, id, out + len, size - 1 - len, 100);

                if (n < 0)
                        break;
                len += (size_t)n;
                out[len] = 0;
        }
        return strstr(out, want) != NULL;
}

/* An interactive terminal: a shell at the size asked, input passed through,
 * a resize seen by the shell, a detach that keeps it, a second attach that
 * gets the scrollback, the shell's exit status at its end; an ephemeral
 * one ends with its stream; and the two kinds of terminal do not mix. */
TEST(agentc_interactive_terminal)
{
        static char out[1 << 17];
        struct agentc_result res = {0};
        struct agentc_pty p = {.terminal = "p1", .rows = 30, .cols = 100};
        const char *cmd = "stty size; echo hi-$((40+2))\n";
        uint32_t id;
        pid_t pid;
        struct agentc *a = start(&pid);

        CHECK(a);
        CHECK(agentc_pty_open(a, &p, 1 << 20, &id) == 0);
        out[0] = 0;
        CHECK(agentc_stream_write(a, id, cmd, strlen(cmd)) == 0);
        CHECK(read_until(a, id, out, sizeof(out), "hi-42"));
        CHECK(strstr(out, "30 100") != NULL);
        p.rows = 40, p.cols = 120;
        CHECK(agentc_pty_resize(a, &p, 5000, &res) == 0 && res.err == 0);
        agentc_result_free(&res);
        CHECK(agentc_stream_write(a, id, "stty size\n", 10) == 0);
        CHECK(read_until(a, id, out, sizeof(out), "40 120"));
        agentc_stream_close(a, id);

        /* Still there; a new attach starts with what it printed. */
        struct agentc_exec e = {.command = "true", .terminal = "p1", .max_output = 4096};
        CHECK(agentc_exec(a, &e, &res) == 0 && res.err == EBUSY);
        agentc_result_free(&res);
        p.rows = p.cols = 0;
        CHECK(agentc_pty_open(a, &p, 1 << 20, &id) == 0);
        out[0] = 0;
        CHECK(read_until(a, id, out, sizeof(out), "hi-42"));
        CHECK(agentc_stream_write(a, id, "exit 7\n", 7) == 0);
        for (int i = 0; i < 100 && agentc_stream_read(a, id, out, sizeof(out), 100) >= 0; i++)
                ;
        CHECK(agentc_stream_result(a, id, &res) == 0 && res.err == 0 && res.exit_code == 7);
        agentc_result_free(&res);
        agentc_stream_close(a, id);

        /* Ephemeral: gone once its stream is. */
        p = (struct agentc_pty){.terminal = "p2", .ephemeral = 1};
        CHECK(agentc_pty_open(a, &p, 1 << 20, &id) == 0);
        out[0] = 0;
        CHECK(agentc_stream_write(a, id, "echo up\n", 8) == 0);
        CHECK(read_until(a, id, out, sizeof(out), "up"));
        agentc_stream_close(a, id);
        int gone = 0;
        for (int i = 0; i < 50 && !gone; i++) {
                usleep(100000);
                CHECK(agentc_term_list(a, 5000, &res) == 0);
                gone = res.nentries == 0;
                agentc_result_free(&res);
        }
        CHECK(gone);

        /* A command terminal cannot be attached; bad sizes are refused. */
        e.terminal = "c1";
        CHECK(agentc_exec(a, &e, &res) == 0 && res.err == 0);
        agentc_result_free(&res);
        p = (struct agentc_pty){.terminal = "c1"};
        CHECK(agentc_pty_open(a, &p, 1 << 20, &id) == 0);
        CHECK(agentc_stream_read(a, id, out, sizeof(out), 5000) == -EPIPE);
        CHECK(agentc_stream_result(a, id, &res) == 0 && res.err == EBUSY);
        agentc_result_free(&res);
        agentc_stream_close(a, id);
        p = (struct agentc_pty){.terminal = "c1", .rows = 5000, .cols = 10};
        CHECK(agentc_pty_resize(a, &p, 5000, &res) == 0 && res.err == EINVAL);
        agentc_result_free(&res);
        stop(a, pid);
}

TEST(agentc_dead_transport_fails_at_once)
{
        struct agentc_result res = {0};
        pid_t pid;
        struct agentc *a = start(&pid);
        int64_t t0;

        CHECK(a);
        kill(pid, SIGKILL);
        unit_agent_reap(pid, 2000);
        t0 = now_ms();
        struct agentc_exec e = {.command = "true", .max_output = 4096};
        CHECK(agentc_exec(a, &e, &res) < 0);
        CHECK(agentc_read(a, "/", NULL, 4096, 5000, &res) < 0);
        CHECK(now_ms() - t0 < 2000);
        CHECK(!agentc_alive(a));
        agentc_unref(a);
}

TEST(agentc_stalled_guest_fails_an_upload_within_the_deadline)
{
        size_t len = 24u << 20;
        char *data = calloc(1, len);
        struct agentc_result res = {0};
        pid_t pid;
        struct agentc *a = start(&pid);
        int64_t ms;
        int r, ping;

        CHECK(a && data);
        /* The guest stops its agent: nothing reads the port any more. */
        kill(pid, SIGSTOP);
        ms = now_ms();
        r = agentc_write(a, "/tmp/sprout-agentc-stalled", NULL, data, len, 0600, len, 60000, &res);
        ms = now_ms() - ms;
        /* The connection is over for everyone. */
        ping = agentc_ping(a, 1000);
        kill(pid, SIGKILL);
        free(data);
        stop(a, pid);
        unlink("/tmp/sprout-agentc-stalled");
        CHECK(r == -ETIMEDOUT || r == -ECONNRESET);
        CHECK(ms < 15000);
        CHECK(ping < 0);
}

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

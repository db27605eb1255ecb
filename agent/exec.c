/*
 * agent_exec: runs `bash -c CMD` for an EXEC request and streams its output.
 *
 * Each command gets its own session (setsid), so a timeout, the output cap,
 * a CANCEL or a host disconnect can kill the whole process group. A failure
 * between fork() and exec() (chdir, setuid, exec) travels to the parent over
 * a close-on-exec pipe, libuv style, and becomes the RESULT's ERRNO.
 *
 * Everything the child needs (argv, envp, groups) is built before fork(), so
 * the child only makes async-signal-safe calls. This module never waits for
 * a child except one that has just reported an exec failure.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXEC_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

enum exec_stage { STAGE_SETGROUPS = 1, STAGE_SETGID, STAGE_SETUID, STAGE_CHDIR, STAGE_EXEC, STAGE_SETUP };

/* What a failed child writes to the error pipe before _exit(). */
struct exec_failure {
        int stage;
        int err;
};

/* A growable NULL-terminated vector of malloc'd strings. */
struct strv {
        char **v;
        size_t n;
        size_t cap;
        int oom;
};

static void strv_free(struct strv *sv)
{
        for (size_t i = 0; i < sv->n; i++)
                free(sv->v[i]);
        free(sv->v);
        sv->v = NULL;
        sv->n = sv->cap = 0;
}

/* Sets "NAME=value" in sv, replacing an entry with the same NAME. Takes
 * ownership of s. */
static void env_put(struct strv *sv, char *s)
{
        size_t klen;

        if (!s) {
                sv->oom = 1;
                return;
        }
        klen = strcspn(s, "=") + 1;
        for (size_t i = 0; i < sv->n; i++) {
                if (strncmp(sv->v[i], s, klen) == 0) {
                        free(sv->v[i]);
                        sv->v[i] = s;
                        return;
                }
        }
        if (sv->n + 2 > sv->cap) {
                size_t cap = sv->cap ? sv->cap * 2 : 16;
                char **v = realloc(sv->v, cap * sizeof(*v));

                if (!v) {
                        free(s);
                        sv->oom = 1;
                        return;
                }
                sv->v = v;
                sv->cap = cap;
        }
        sv->v[sv->n++] = s;
        sv->v[sv->n] = NULL;
}

static char *str_printf(const char *fmt, const char *a)
{
        char *s;

        if (asprintf(&s, fmt, a) < 0)
                return NULL;
        return s;
}

static const char *stage_name(int stage)
{
        switch (stage) {
        case STAGE_SETGROUPS:
                return "setgroups";
        case STAGE_SETGID:
                return "setgid";
        case STAGE_SETUID:
                return "setuid";
        case STAGE_CHDIR:
                return "chdir";
        case STAGE_EXEC:
                return "exec bash";
        default:
                return "child setup";
        }
}

/* Everything a child needs, prepared before fork(). */
struct exec_plan {
        char *cmd;
        char *cwd; /* explicit CWD, or NULL for the home directory */
        const char *home;
        int switch_user; /* setgroups/setgid/setuid in the child */
        struct agent_user user;
        struct strv env;
};

/*
 * The child, between fork() and exec(): async-signal-safe calls only. It
 * reports the first failure on err_w and exits 127.
 */
static void __attribute__((noreturn))
child(struct agent *a, struct exec_plan *pl, int out_w, int err_w, int fail_w)
{
        struct exec_failure f = {STAGE_SETUP, 0};
        char *argv[] = {"bash", "-c", pl->cmd, NULL};
        sigset_t empty;

        /* Undo what the agent set for itself: exec keeps ignored signals
         * ignored and the signal mask as it is. */
        sigemptyset(&empty);
        sigprocmask(SIG_SETMASK, &empty, NULL);
        signal(SIGPIPE, SIG_DFL);
        setrlimit(RLIMIT_NOFILE, &a->nofile);

        if (setsid() < 0 || dup2(a->null_fd, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
                goto fail;
        if (pl->switch_user) {
                f.stage = STAGE_SETGROUPS;
                if (setgroups((size_t)pl->user.ngroups, pl->user.groups) < 0)
                        goto fail;
                f.stage = STAGE_SETGID;
                if (setgid(pl->user.gid) < 0)
                        goto fail;
                f.stage = STAGE_SETUID;
                if (setuid(pl->user.uid) < 0)
                        goto fail;
        }
        /* chdir after setuid, so the directory is checked as the user. */
        f.stage = STAGE_CHDIR;
        if (pl->cwd) {
                if (chdir(pl->cwd) < 0)
                        goto fail;
        } else if (chdir(pl->home) < 0 && chdir("/") < 0) {
                goto fail;
        }

        f.stage = STAGE_EXEC;
        execve("/bin/bash", argv, pl->env.v);
        if (errno == ENOENT) {
                execve("/usr/bin/bash", argv, pl->env.v);
                argv[0] = "sh";
                execve("/bin/sh", argv, pl->env.v);
        }
fail:
        f.err = errno;
        while (write(fail_w, &f, sizeof(f)) < 0 && errno == EINTR)
                ;
        _exit(127);
}

static void plan_free(struct exec_plan *pl)
{
        free(pl->cmd);
        free(pl->cwd);
        agent_user_clear(&pl->user);
        strv_free(&pl->env);
}

/*
 * Parses the request into pl. Returns 0, or -errno with *ret_msg set to a
 * static message or left NULL when the errno says it all.
 */
static int plan_build(const uint8_t *p, size_t n, struct exec_plan *pl, char **ret_msg)
{
        struct proto_iter it;
        struct proto_tlv t;
        struct passwd *pw;
        int r;

        r = proto_get_str(p, n, PROTO_TAG_CMD, &pl->cmd);
        if (r < 0) {
                *ret_msg = strdup(r == -ENOENT ? "EXEC without CMD" : "bad CMD");
                return r == -ENOENT ? -EINVAL : r;
        }
        r = proto_get_str(p, n, PROTO_TAG_CWD, &pl->cwd);
        if (r < 0 && r != -ENOENT) {
                *ret_msg = strdup("bad CWD");
                return r;
        }
        r = agent_req_user(p, n, &pl->user, ret_msg);
        if (r < 0)
                return r;

        if (pl->user.set) {
                pl->home = pl->user.home;
                pl->switch_user = pl->user.uid != geteuid() || pl->user.gid != getegid();
                if (pl->switch_user && geteuid() != 0) {
                        *ret_msg = strdup("the agent is not root and cannot switch user");
                        return -EPERM;
                }
                env_put(&pl->env, str_printf("HOME=%s", pl->user.home));
                env_put(&pl->env, str_printf("USER=%s", pl->user.name));
                env_put(&pl->env, str_printf("LOGNAME=%s", pl->user.name));
                env_put(&pl->env, str_printf("SHELL=%s", pl->user.shell));
        } else {
                pw = getpwuid(geteuid());
                pl->home = "/root";
                env_put(&pl->env, str_printf("HOME=%s", pw && *pw->pw_dir ? pw->pw_dir : "/root"));
                env_put(&pl->env, str_printf("USER=%s", pw ? pw->pw_name : "root"));
                env_put(&pl->env, str_printf("LOGNAME=%s", pw ? pw->pw_name : "root"));
                env_put(&pl->env, str_printf("SHELL=%s", pw && *pw->pw_shell ? pw->pw_shell : "/bin/sh"));
                if (pw && *pw->pw_dir) {
                        /* getpwuid's buffer is overwritten by the next call;
                         * copy the home we keep. */
                        free(pl->user.home);
                        pl->user.home = strdup(pw->pw_dir);
                        pl->home = pl->user.home ? pl->user.home : "/root";
                }
        }
        env_put(&pl->env, strdup(EXEC_PATH));
        env_put(&pl->env, strdup("LANG=C.UTF-8"));
        env_put(&pl->env, strdup("TERM=xterm-256color"));

        proto_iter_init(&it, p, n);
        while (proto_iter_next(&it, &t) > 0) {
                char *s;

                if (t.tag != PROTO_TAG_ENV)
                        continue;
                if (t.len == 0 || memchr(t.val, 0, t.len) || !memchr(t.val, '=', t.len) || t.val[0] == '=') {
                        *ret_msg = strdup("ENV records must be NAME=value");
                        return -EINVAL;
                }
                s = strndup((const char *)t.val, t.len);
                env_put(&pl->env, s);
        }
        if (pl->env.oom)
                return -ENOMEM;
        return 0;
}

/* Reads the child's exec-failure report. Returns 0 if it exec'd, or the
 * positive failure with *ret_f filled in. */
static int read_failure(int fd, struct exec_failure *ret_f)
{
        ssize_t n;

        do
                n = read(fd, ret_f, sizeof(*ret_f));
        while (n < 0 && errno == EINTR);
        return n == (ssize_t)sizeof(*ret_f);
}

void agent_exec_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct exec_plan pl = {0};
        struct exec_failure f;
        struct agent_stream *s;
        char *msg = NULL;
        int out[2] = {-1, -1}, err[2] = {-1, -1}, fail[2] = {-1, -1};
        uint64_t timeout_ms = 0, max_output = AGENT_DEFAULT_MAX_OUTPUT;
        pid_t pid;
        int r;

        r = plan_build(p, n, &pl, &msg);
        if (r < 0) {
                agent_send_error(a, id, -r, "%s", msg ? msg : strerror(-r));
                goto out;
        }
        if ((r = proto_get_u64(p, n, PROTO_TAG_TIMEOUT_MS, &timeout_ms)) < 0 && r != -ENOENT) {
                agent_send_error(a, id, EBADMSG, "bad TIMEOUT_MS");
                goto out;
        }
        if ((r = proto_get_u64(p, n, PROTO_TAG_MAX_OUTPUT, &max_output)) < 0 && r != -ENOENT) {
                agent_send_error(a, id, EBADMSG, "bad MAX_OUTPUT");
                goto out;
        }
        if (max_output == 0) /* 0 means "not set", like TIMEOUT_MS; never unlimited */
                max_output = AGENT_DEFAULT_MAX_OUTPUT;

        if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || pipe2(fail, O_CLOEXEC) < 0) {
                agent_send_error(a, id, errno, "pipe: %s", strerror(errno));
                goto out;
        }
        pid = fork();
        if (pid < 0) {
                agent_send_error(a, id, errno, "fork: %s", strerror(errno));
                goto out;
        }
        if (pid == 0)
                child(a, &pl, out[1], err[1], fail[1]);

        close(out[1]);
        close(err[1]);
        close(fail[1]);
        out[1] = err[1] = fail[1] = -1;

        if (read_failure(fail[0], &f)) {
                int status;

                /* The child _exit()s right after reporting, so this wait is
                 * short; SIGCHLD's waitpid(-1) then finds nothing. */
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                        ;
                if (f.stage == STAGE_CHDIR)
                        agent_send_error(a, id, f.err, "chdir %s: %s", pl.cwd ? pl.cwd : pl.home,
                                         strerror(f.err));
                else
                        agent_send_error(a, id, f.err, "%s: %s", stage_name(f.stage), strerror(f.err));
                goto out;
        }

        s = agent_stream_new(a, id, AGENT_STREAM_EXEC);
        if (!s) {
                kill(-pid, SIGKILL);
                agent_send_error(a, id, ENOMEM, "out of memory");
                goto out;
        }
        fcntl(out[0], F_SETFL, O_NONBLOCK);
        fcntl(err[0], F_SETFL, O_NONBLOCK);
        s->exec.pid = pid;
        s->exec.out_fd = out[0];
        s->exec.err_fd = err[0];
        s->exec.max_output = max_output;
        if (timeout_ms) {
                uint64_t now = agent_now_ns();

                s->exec.deadline_ns =
                    timeout_ms > (UINT64_MAX - now) / 1000000 ? UINT64_MAX : now + timeout_ms * 1000000;
        }
        out[0] = err[0] = -1;

out:
        for (int i = 0; i < 2; i++) {
                if (out[i] >= 0)
                        close(out[i]);
                if (err[i] >= 0)
                        close(err[i]);
                if (fail[i] >= 0)
                        close(fail[i]);
        }
        free(msg);
        plan_free(&pl);
}

static void close_pipes(struct agent_exec *e)
{
        if (e->out_fd >= 0)
                close(e->out_fd);
        if (e->err_fd >= 0)
                close(e->err_fd);
        e->out_fd = e->err_fd = -1;
}

/* Reads once from fd (stdout or stderr of s) and forwards it. */
void agent_exec_on_readable(struct agent *a, struct agent_stream *s, int fd)
{
        struct agent_exec *e = &s->exec;
        uint8_t buf[AGENT_CHUNK];
        ssize_t n;
        int is_err = fd == e->err_fd;

        if (fd != e->out_fd && fd != e->err_fd)
                return; /* closed earlier in this round (output cap) */
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                close(fd);
                if (is_err)
                        e->err_fd = -1;
                else
                        e->out_fd = -1;
                return;
        }
        if ((uint64_t)n > e->max_output - e->output) {
                /* Send up to the cap, then stop the command: an agent that
                 * buffers or forwards unbounded output can be made to fill
                 * the host's memory. */
                n = (ssize_t)(e->max_output - e->output);
                e->over_limit = 1;
                kill(-e->pid, SIGKILL);
                close_pipes(e);
        }
        e->output += (uint64_t)n;
        if (n > 0)
                agent_send(a, s->id, is_err ? PROTO_T_STDERR : PROTO_T_STDOUT, buf, (size_t)n);
}

void agent_exec_on_reaped(struct agent *a, pid_t pid, int status)
{
        for (struct agent_stream *s = a->streams; s; s = s->next) {
                if (s->kind == AGENT_STREAM_EXEC && s->exec.pid == pid && !s->exec.exited) {
                        s->exec.exited = 1;
                        s->exec.status = status;
                        s->exec.exit_ns = agent_now_ns();
                        return;
                }
        }
        /* A child of an abandoned or cancelled stream: reaped, nothing else. */
}

uint64_t agent_exec_next_deadline(const struct agent_stream *s)
{
        if (s->exec.exited)
                return s->exec.exit_ns + AGENT_LINGER_NS;
        return s->exec.deadline_ns;
}

/* Forwards whatever the pipes hold right now, without waiting for more. A
 * background job writing nonstop cannot keep us here: the reads are capped. */
static void drain_now(struct agent *a, struct agent_stream *s)
{
        for (int i = 0; i < 16 && (s->exec.out_fd >= 0 || s->exec.err_fd >= 0); i++) {
                int before = (s->exec.out_fd >= 0) + (s->exec.err_fd >= 0);
                uint64_t sent = s->exec.output;

                if (s->exec.out_fd >= 0)
                        agent_exec_on_readable(a, s, s->exec.out_fd);
                if (s->exec.err_fd >= 0)
                        agent_exec_on_readable(a, s, s->exec.err_fd);
                if (sent == s->exec.output && before == (s->exec.out_fd >= 0) + (s->exec.err_fd >= 0))
                        break;
        }
}

static void send_exec_result(struct agent *a, struct agent_stream *s)
{
        struct agent_exec *e = &s->exec;
        struct proto_buf b = {0};
        int code;

        if (e->over_limit) {
                agent_send_error(a, s->id, E2BIG, "output exceeds %llu bytes",
                                 (unsigned long long)e->max_output);
                return;
        }
        if (WIFEXITED(e->status))
                code = WEXITSTATUS(e->status);
        else if (WIFSIGNALED(e->status))
                code = 128 + WTERMSIG(e->status);
        else
                code = -1;
        proto_put_u32(&b, PROTO_TAG_EXIT_CODE, (uint32_t)code);
        proto_put_u32(&b, PROTO_TAG_TIMED_OUT, (uint32_t)e->timed_out);
        agent_send_result(a, s->id, &b);
        proto_buf_free(&b);
}

/*
 * Enforces the timeout and decides when s is done: the main child has exited
 * and both pipes reached EOF, or AGENT_LINGER_NS passed since it exited (a
 * background job still holds the pipes; we do not wait for it).
 */
void agent_exec_tick(struct agent *a, struct agent_stream *s, uint64_t now)
{
        struct agent_exec *e = &s->exec;

        if (!e->exited) {
                if (e->deadline_ns && now >= e->deadline_ns) {
                        kill(-e->pid, SIGKILL);
                        e->timed_out = 1;
                        e->deadline_ns = 0;
                }
                return;
        }
        if ((e->out_fd >= 0 || e->err_fd >= 0) && now < e->exit_ns + AGENT_LINGER_NS)
                return;
        drain_now(a, s);
        send_exec_result(a, s);
        agent_drain_add(a, e->out_fd);
        agent_drain_add(a, e->err_fd);
        e->out_fd = e->err_fd = -1;
        agent_stream_free(a, s);
}

/*
 * Kills the command's process group and frees the stream. The RESULT (sent
 * when send_result) does not wait for the child: SIGCHLD reaps it later, and
 * the stream id is free for the host at once.
 */
void agent_exec_cancel(struct agent *a, struct agent_stream *s, int send_result)
{
        if (!s->exec.exited || s->exec.out_fd >= 0 || s->exec.err_fd >= 0)
                kill(-s->exec.pid, SIGKILL);
        close_pipes(&s->exec);
        if (send_result)
                agent_send_error(a, s->id, ECANCELED, "cancelled");
        agent_stream_free(a, s);
}

/*
 * agent_term: persistent named terminals (TERMINAL, TERM_LIST, TERM_LOG).
 *
 * A terminal is a shell (`bash --noprofile --norc --noediting -i`, else
 * `sh -i`) on a PTY, session leader with the PTY as controlling terminal, so
 * cwd, variables and background jobs persist between commands. Echo and
 * ONLCR are off on the PTY, so output bytes are exactly what programs write
 * ("\n", not "\r\n"). A command is written to the shell as
 *     eval '<CMD, single-quoted>'
 *     printf '\036SPROUT-<nonce>-%d\036\n' <nonce> "$?"
 * on two lines: when an interrupted foreground job makes the shell drop the
 * rest of its line, the marker line still runs. Everything before the marker
 * goes to the stream as STDOUT (stdout and stderr are one PTY), then RESULT
 * EXIT_CODE. A command that reads stdin would read the marker line; the
 * terminal is not meant for interactive programs.
 *
 * One command at a time per terminal: a second REQ while one runs gets
 * EBUSY. A cancelled command's marker is still awaited ("stale") so its
 * late output goes to the scrollback, never to the next command. TIMEOUT_MS
 * sends SIGINT to the PTY's foreground process group, SIGKILL after
 * TERM_GRACE_NS (never to the shell itself), and gives up after another
 * grace. Terminals survive host disconnects; they end when their shell
 * exits. Never blocks: the master fd is non-blocking and input is queued.
 *
 * An interactive terminal (PTY) is for a person: a login shell on a PTY
 * with the usual settings (echo, line editing) at the size the host
 * gives, bytes passed through both ways, no commands or markers. One
 * stream at a time is attached to it; a new attach gets the scrollback
 * first and takes it over. It outlives its streams unless EPHEMERAL.
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
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "term.h"

/* ---------------------------------------------------------------- helpers */

static int name_valid(const char *s)
{
        size_t n = strlen(s);

        if (n < 1 || n > TERM_NAME_MAX)
                return 0;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
                        return 0;
        return 1;
}

struct agent_term *term_find(struct agent *a, const char *name)
{
        for (struct agent_term *t = a->terms; t; t = t->next)
                if (strcmp(t->name, name) == 0)
                        return t;
        return NULL;
}

/* Gets and checks the TERMINAL name; sends the error RESULT on failure. */
int req_name(struct agent *a, uint32_t id, const uint8_t *p, size_t n, char **ret_name)
{
        int r = proto_get_str(p, n, PROTO_TAG_TERMINAL, ret_name);

        if (r < 0) {
                agent_send_error(a, id, r == -ENOENT ? EINVAL : EBADMSG, "TERMINAL is required");
                return r;
        }
        if (!name_valid(*ret_name)) {
                agent_send_error(a, id, EINVAL, "terminal names are 1..%d characters of [A-Za-z0-9._-]",
                                 TERM_NAME_MAX);
                free(*ret_name);
                *ret_name = NULL;
                return -EINVAL;
        }
        return 0;
}

static void sb_append(struct agent_term *t, const uint8_t *p, size_t n)
{
        const size_t cap = AGENT_TERM_SCROLLBACK;

        if (n >= cap) {
                memcpy(t->sb, p + n - cap, cap);
                t->sb_start = 0;
                t->sb_len = cap;
                return;
        }
        for (size_t i = 0; i < n;) {
                size_t end = (t->sb_start + t->sb_len) % cap;
                size_t room = cap - end, k = n - i < room ? n - i : room;

                memcpy(t->sb + end, p + i, k);
                i += k;
                t->sb_len += k;
                if (t->sb_len > cap) {
                        t->sb_start = (t->sb_start + t->sb_len - cap) % cap;
                        t->sb_len = cap;
                }
        }
}

pid_t fg_pgrp(const struct agent_term *t)
{
        return t->master >= 0 && !t->hup ? tcgetpgrp(t->master) : -1;
}

/*
 * Interrupting a command. SIGINT goes to the PTY's foreground job only, never
 * to the shell while it may still be reading our input: a shell interrupted
 * mid-line drops the part it has read and parses the rest as a new line.
 * So stage 1 (TERM_GRACE_NS) looks for a foreground job every
 * TERM_CHECK_NS and interrupts each new one; stage 2 SIGKILLs a foreground
 * job that survived, or interrupts the shell itself, which by then has long
 * parsed its input and must be running a builtin loop; after stage 2 the
 * marker is given up on.
 */
static void interrupt_start(struct agent_term *t, uint64_t now)
{
        t->kill_stage = 1;
        t->kill_ns = now + TERM_GRACE_NS;
        t->check_ns = now;
        t->int_pg = 0;
}

static void interrupt_check(struct agent_term *t, uint64_t now)
{
        pid_t pg = fg_pgrp(t);

        if (pg > 0 && pg != t->pid && pg != t->int_pg) {
                kill(-pg, SIGINT);
                t->int_pg = pg;
        }
        t->check_ns = now + TERM_CHECK_NS;
}

/* ---------------------------------------------------------------- output */

/* Bytes of output that belong to the current command (or to nobody). */
static void forward(struct agent *a, struct agent_term *t, const uint8_t *p, size_t n)
{
        if (!n)
                return;
        sb_append(t, p, n);
        if (t->interactive) {
                if (t->att)
                        agent_send(a, t->att->id, PROTO_T_DATA, p, n);
                return;
        }
        if (t->cur && !t->stale[0])
                agent_send(a, t->cur->id, PROTO_T_STDOUT, p, n);
}

/*
 * Whether p (n bytes) is "\036SPROUT-<nonce>-<code>\036\n": returns its
 * length when whole (*ret_code set), 0 when p could still become one, -1
 * when it is not one.
 */
static int marker_match(const uint8_t *p, size_t n, const char *nonce, int *ret_code)
{
        char pre[TERM_NONCE_LEN + 16];
        size_t L = (size_t)snprintf(pre, sizeof(pre), "\036SPROUT-%s-", nonce), k, digits = 0;
        int code = 0;

        if (!nonce[0])
                return -1;
        if (memcmp(p, pre, n < L ? n : L) != 0)
                return -1;
        if (n < L)
                return 0;
        for (k = L; k < n && p[k] >= '0' && p[k] <= '9'; k++) {
                if (++digits > 3)
                        return -1;
                code = code * 10 + (p[k] - '0');
        }
        if (k == n)
                return 0;
        if (!digits || p[k] != '\036')
                return -1;
        if (k + 1 == n)
                return 0;
        if (p[k + 1] != '\n')
                return -1;
        *ret_code = code;
        return (int)(k + 2);
}

static void term_finish(struct agent *a, struct agent_term *t, int code)
{
        struct proto_buf b = {0};

        if (t->cur) {
                proto_put_u32(&b, PROTO_TAG_EXIT_CODE, (uint32_t)code);
                proto_put_u32(&b, PROTO_TAG_TIMED_OUT, (uint32_t)t->timed_out);
                agent_send_result(a, t->cur->id, &b);
                proto_buf_free(&b);
                agent_stream_free(a, t->cur);
        }
        t->cur = NULL;
        t->nonce[0] = 0;
        t->deadline_ns = t->kill_ns = 0;
        t->kill_stage = t->timed_out = 0;
}

/* Splits PTY output into command output and end markers. */
static void on_output(struct agent *a, struct agent_term *t, const uint8_t *data, size_t n)
{
        uint8_t *buf;
        size_t len = t->hold_len + n, from = 0, i = 0;

        if (t->interactive) {
                forward(a, t, data, n);
                return;
        }
        buf = malloc(len);
        if (!buf) {
                forward(a, t, t->hold, t->hold_len);
                forward(a, t, data, n);
                t->hold_len = 0;
                return;
        }
        memcpy(buf, t->hold, t->hold_len);
        memcpy(buf + t->hold_len, data, n);
        t->hold_len = 0;
        while (i < len) {
                uint8_t *m = memchr(buf + i, '\036', len - i);
                int code = 0, r1, r2;
                size_t j;

                if (!m)
                        break;
                j = (size_t)(m - buf);
                r1 = marker_match(buf + j, len - j, t->stale, &code);
                r2 = r1 > 0 ? -1 : marker_match(buf + j, len - j, t->nonce, &code);
                if (r1 > 0 || r2 > 0) {
                        forward(a, t, buf + from, j - from);
                        if (r1 > 0) {
                                t->stale[0] = 0;
                                if (!t->timed_out) {
                                        t->kill_ns = 0;
                                        t->kill_stage = 0;
                                }
                        } else {
                                term_finish(a, t, code);
                        }
                        from = i = j + (size_t)(r1 > 0 ? r1 : r2);
                } else if ((r1 == 0 || r2 == 0) && len - j <= sizeof(t->hold)) {
                        forward(a, t, buf + from, j - from);
                        memcpy(t->hold, buf + j, len - j);
                        t->hold_len = len - j;
                        from = i = len;
                } else {
                        i = j + 1;
                }
        }
        forward(a, t, buf + from, len - from);
        free(buf);
}

/* Reads what the master has, at most a few chunks per call. */
static void read_master(struct agent *a, struct agent_term *t)
{
        uint8_t buf[AGENT_CHUNK];

        for (int round = 0; round < 4 && !t->hup; round++) {
                ssize_t n = read(t->master, buf, sizeof(buf));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n <= 0) {
                        /* EIO: every slave fd is closed (the shell exited). */
                        t->hup = 1;
                        return;
                }
                on_output(a, t, buf, (size_t)n);
        }
}

static void flush_input(struct agent_term *t)
{
        while (t->in && t->in_off < t->in_len) {
                ssize_t n = write(t->master, t->in + t->in_off, t->in_len - t->in_off);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n < 0) {
                        t->in_off = t->in_len;
                        break;
                }
                t->in_off += (size_t)n;
        }
        free(t->in);
        t->in = NULL;
        t->in_len = t->in_off = 0;
}

/* Queues s for the shell. Returns 0 or -ENOMEM. */
int queue_input(struct agent_term *t, const char *s, size_t n)
{
        char *in = realloc(t->in, t->in_len + n);

        if (!in)
                return -ENOMEM;
        memcpy(in + t->in_len, s, n);
        t->in = in;
        t->in_len += n;
        flush_input(t);
        return 0;
}

static void new_nonce(struct agent *a, char out[TERM_NONCE_LEN + 1])
{
        uint32_t r = 0;

        if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
                r = (uint32_t)agent_now_ns() ^ (uint32_t)getpid();
        snprintf(out, TERM_NONCE_LEN + 1, "%08x%08x", r, (uint32_t)++a->term_seq);
}

/*
 * Builds the two input lines for cmd (see the file comment). Returns 0 or
 * -errno: -EINVAL for control characters, which the PTY's line discipline
 * would act on (^C, ^D, ^U...), -E2BIG for a line the tty would cut.
 */
static int build_input(const char *cmd, const char *nonce, char **ret_in, size_t *ret_len)
{
        struct proto_buf b = {0};
        char tail[128];
        size_t line = 0;

        for (const unsigned char *c = (const unsigned char *)cmd; *c; c++)
                if ((*c < 0x20 && *c != '\n' && *c != '\t') || *c == 0x7f)
                        return -EINVAL;
        proto_buf_append(&b, "eval '", 6);
        for (const char *c = cmd; *c; c++) {
                if (*c == '\'')
                        proto_buf_append(&b, "'\\''", 4);
                else
                        proto_buf_append(&b, c, 1);
        }
        proto_buf_append(&b, "'\n", 2);
        snprintf(tail, sizeof(tail), "printf '\\036SPROUT-%%s-%%d\\036\\n' %s \"$?\"\n", nonce);
        proto_buf_append(&b, tail, strlen(tail));
        if (b.oom) {
                proto_buf_free(&b);
                return -ENOMEM;
        }
        for (size_t i = 0; i < b.len; i++) {
                if (b.data[i] == '\n')
                        line = 0;
                else if (++line > TERM_MAX_LINE) {
                        proto_buf_free(&b);
                        return -E2BIG;
                }
        }
        *ret_in = (char *)b.data;
        *ret_len = b.len;
        return 0;
}

/* ---------------------------------------------------------------- sessions */

static void __attribute__((noreturn)) shell_child(struct agent *a, int slave, const struct agent_user *u,
                                                  int switch_user, const char *home, char **envp, int login)
{
        char *quiet_argv[] = {"bash", "--noprofile", "--norc", "--noediting", "-i", NULL};
        char *login_argv[] = {"-bash", NULL};
        char **bash_argv = login ? login_argv : quiet_argv;
        char *sh_argv[] = {"sh", "-i", NULL};
        sigset_t empty;

        sigemptyset(&empty);
        sigprocmask(SIG_SETMASK, &empty, NULL);
        signal(SIGPIPE, SIG_DFL);
        setrlimit(RLIMIT_NOFILE, &a->nofile);
        if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) < 0)
                _exit(126);
        if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0)
                _exit(126);
        if (switch_user &&
            (setgroups((size_t)u->ngroups, u->groups) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0))
                _exit(126);
        if (chdir(home) < 0 && chdir("/") < 0)
                _exit(126);
        execve("/bin/bash", bash_argv, envp);
        execve("/usr/bin/bash", bash_argv, envp);
        execve("/bin/sh", sh_argv, envp);
        _exit(127);
}

/*
 * Starts a terminal named name for user u (u->set 0: the agent's own user).
 * Returns 0 with *ret_term linked into a->terms, or -errno with *ret_msg
 * set to a static message.
 */
int term_create(struct agent *a, const char *name, const struct agent_user *u, const struct winsize *size,
                       struct agent_term **ret_term, const char **ret_msg)
{
        struct agent_term *t = NULL;
        struct passwd *pw = NULL;
        struct termios tio;
        struct winsize ws = size ? *size : (struct winsize){.ws_row = 50, .ws_col = 200};
        char *env[16] = {0}, *home = NULL, *user = NULL, *shell = NULL, init[256];
        char inonce[TERM_NONCE_LEN + 1];
        int master = -1, slave = -1, switch_user = 0, ne = 0, r;
        pid_t pid;

        if (u->set) {
                switch_user = u->uid != geteuid() || u->gid != getegid();
                if (switch_user && geteuid() != 0) {
                        *ret_msg = "the agent is not root and cannot switch user";
                        return -EPERM;
                }
                home = strdup(u->home);
                user = strdup(u->name);
                shell = strdup(u->shell);
        } else {
                pw = getpwuid(geteuid());
                home = strdup(pw && *pw->pw_dir ? pw->pw_dir : "/root");
                user = strdup(pw ? pw->pw_name : "root");
                shell = strdup(pw && *pw->pw_shell ? pw->pw_shell : "/bin/sh");
        }
        r = -ENOMEM;
        *ret_msg = "out of memory";
        if (!home || !user || !shell)
                goto fail;
        if (asprintf(&env[ne++], "HOME=%s", home) < 0 || asprintf(&env[ne++], "USER=%s", user) < 0 ||
            asprintf(&env[ne++], "LOGNAME=%s", user) < 0 || asprintf(&env[ne++], "SHELL=%s", shell) < 0) {
                env[ne - 1] = NULL;
                goto fail;
        }
        env[ne++] = strdup(TERM_PATH);
        env[ne++] = strdup("LANG=C.UTF-8");
        env[ne++] = strdup("TERM=xterm-256color");
        if (!size) {
                env[ne++] = strdup("PS1=");
                env[ne++] = strdup("PS2=");
                env[ne++] = strdup("HISTFILE=");
        }
        for (int i = 0; i < ne; i++)
                if (!env[i])
                        goto fail;
        t = calloc(1, sizeof(*t));
        if (!t || !(t->sb = malloc(AGENT_TERM_SCROLLBACK)))
                goto fail;

        *ret_msg = "cannot open a PTY";
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) {
                r = -errno;
                goto fail;
        }
        slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (slave < 0) {
                r = -errno;
                goto fail;
        }
        /* No echo (the host sees output only), "\n" untranslated, no flow
         * control; set before the shell starts so it saves this state. A
         * person's terminal keeps the usual settings. */
        if (!size && tcgetattr(slave, &tio) == 0) {
                tio.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
                tio.c_oflag &= ~(tcflag_t)ONLCR;
                tio.c_iflag &= ~(tcflag_t)(IXON | IXOFF);
                tcsetattr(slave, TCSANOW, &tio);
        }
        ioctl(slave, TIOCSWINSZ, &ws);
        if (switch_user && fchown(slave, u->uid, u->gid) < 0)
                agent_log("terminal %s: chown pty: %s", name, strerror(errno));

        *ret_msg = "fork failed";
        pid = fork();
        if (pid < 0) {
                r = -errno;
                goto fail;
        }
        if (pid == 0)
                shell_child(a, slave, u, switch_user, home, env, size != NULL);
        close(slave);
        slave = -1;
        fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);

        snprintf(t->name, sizeof(t->name), "%s", name);
        t->uid = u->set ? u->uid : geteuid();
        t->owner = user;
        user = NULL;
        t->pid = pid;
        t->master = master;
        t->interactive = size != NULL;
        master = -1;
        t->next = a->terms;
        a->terms = t;
        a->n_terms++;
        *ret_term = t;
        r = 0;
        if (t->interactive) {
                t = NULL;
                goto fail;
        }
        /* Quiet the shell; whatever it prints on startup (job control
         * notes) ends before this marker and goes to the scrollback only. */
        new_nonce(a, inonce);
        snprintf(init, sizeof(init),
                 "set +H 2>/dev/null; set +o history 2>/dev/null; PS1=''; PS2=''; unset PROMPT_COMMAND\n"
                 "printf '\\036SPROUT-%%s-%%d\\036\\n' %s \"$?\"\n",
                 inonce);
        memcpy(t->stale, inonce, sizeof(inonce));
        queue_input(t, init, strlen(init));
        t = NULL;
fail:
        if (t) {
                free(t->sb);
                free(t);
        }
        if (master >= 0)
                close(master);
        if (slave >= 0)
                close(slave);
        for (int i = 0; i < ne; i++)
                free(env[i]);
        free(home);
        free(user);
        free(shell);
        return r;
}

static void term_free(struct agent *a, struct agent_term *t)
{
        for (struct agent_term **pp = &a->terms; *pp; pp = &(*pp)->next) {
                if (*pp == t) {
                        *pp = t->next;
                        a->n_terms--;
                        break;
                }
        }
        if (t->master >= 0)
                close(t->master);
        free(t->in);
        free(t->sb);
        free(t->owner);
        free(t);
}

/* ---------------------------------------------------------------- requests */

void agent_term_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct agent_user u = {0};
        struct agent_term *t;
        struct agent_stream *s;
        char *name = NULL, *cmd = NULL, *msg = NULL, *in = NULL;
        const char *cmsg = NULL;
        uint64_t timeout_ms = 0;
        size_t in_len = 0;
        uid_t uid;
        int r;

        if (req_name(a, id, p, n, &name) < 0)
                return;
        r = proto_get_str(p, n, PROTO_TAG_CMD, &cmd);
        if (r < 0) {
                agent_send_error(a, id, r == -ENOENT ? EINVAL : EBADMSG, "TERMINAL without a valid CMD");
                goto out;
        }
        if ((r = proto_get_u64(p, n, PROTO_TAG_TIMEOUT_MS, &timeout_ms)) < 0 && r != -ENOENT) {
                agent_send_error(a, id, EBADMSG, "bad TIMEOUT_MS");
                goto out;
        }
        r = agent_req_user(p, n, &u, &msg);
        if (r < 0) {
                agent_send_error(a, id, -r, "%s", msg ? msg : strerror(-r));
                goto out;
        }
        uid = u.set ? u.uid : geteuid();
        t = term_find(a, name);
        if (t && t->exited) {
                agent_send_error(a, id, EBUSY, "terminal %s is closing", name);
                goto out;
        }
        if (t && t->uid != uid) {
                agent_send_error(a, id, EPERM, "terminal %s belongs to user %s", name, t->owner);
                goto out;
        }
        if (t && (t->cur || t->hup)) {
                agent_send_error(a, id, EBUSY, "terminal %s is running a command", name);
                goto out;
        }
        if (t && t->interactive) {
                agent_send_error(a, id, EBUSY, "terminal %s is interactive: it takes no commands", name);
                goto out;
        }
        if (!t && a->n_terms >= AGENT_MAX_TERMS) {
                agent_send_error(a, id, EAGAIN, "too many terminals (max %d)", AGENT_MAX_TERMS);
                goto out;
        }
        s = agent_stream_new(a, id, AGENT_STREAM_TERM);
        if (!s) {
                agent_send_error(a, id, ENOMEM, "out of memory");
                goto out;
        }
        if (!t && (r = term_create(a, name, &u, NULL, &t, &cmsg)) < 0) {
                agent_stream_free(a, s);
                agent_send_error(a, id, -r, "terminal %s: %s: %s", name, cmsg, strerror(-r));
                goto out;
        }
        new_nonce(a, t->nonce);
        r = build_input(cmd, t->nonce, &in, &in_len);
        if (r == 0)
                r = queue_input(t, in, in_len);
        if (r < 0) {
                t->nonce[0] = 0;
                agent_stream_free(a, s);
                agent_send_error(a, id, -r, "%s",
                                 r == -EINVAL  ? "CMD may not contain control characters"
                                 : r == -E2BIG ? "CMD has a line longer than 4000 bytes"
                                               : strerror(-r));
                goto out;
        }
        s->term = t;
        t->cur = s;
        t->timed_out = 0;
        if (timeout_ms) {
                uint64_t now = agent_now_ns();

                t->deadline_ns =
                    timeout_ms > (UINT64_MAX - now) / 1000000 ? UINT64_MAX : now + timeout_ms * 1000000;
        }
out:
        free(in);
        free(name);
        free(cmd);
        free(msg);
        agent_user_clear(&u);
}

static int name_cmp(const void *x, const void *y)
{
        return strcmp(*(char *const *)x, *(char *const *)y);
}

void agent_term_list(struct agent *a, uint32_t id)
{
        const char *names[AGENT_MAX_TERMS];
        struct proto_buf b = {0};
        size_t n = 0;

        for (struct agent_term *t = a->terms; t && n < AGENT_MAX_TERMS; t = t->next)
                if (!t->exited)
                        names[n++] = t->name;
        qsort(names, n, sizeof(names[0]), name_cmp);
        for (size_t i = 0; i < n; i++) {
                uint8_t rec[1 + TERM_NAME_MAX];
                size_t len = strlen(names[i]);

                rec[0] = PROTO_KIND_OTHER;
                memcpy(rec + 1, names[i], len);
                proto_put_bytes(&b, PROTO_TAG_ENTRY, rec, 1 + len);
        }
        agent_send_result(a, id, &b);
        proto_buf_free(&b);
}

/* Sends t's scrollback, oldest first, as DATA on stream id. */
void sb_send(struct agent *a, uint32_t id, const struct agent_term *t)
{
        size_t first = AGENT_TERM_SCROLLBACK - t->sb_start;

        if (first > t->sb_len)
                first = t->sb_len;
        if (first)
                agent_send(a, id, PROTO_T_DATA, t->sb + t->sb_start, first);
        if (t->sb_len > first)
                agent_send(a, id, PROTO_T_DATA, t->sb, t->sb_len - first);
}

void agent_term_log(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
        struct proto_buf b = {0};
        struct agent_term *t;
        char *name = NULL;

        if (req_name(a, id, p, n, &name) < 0)
                return;
        t = term_find(a, name);
        if (!t) {
                agent_send_error(a, id, ENOENT, "no terminal named %s", name);
                free(name);
                return;
        }
        free(name);
        sb_send(a, id, t);
        proto_put_u64(&b, PROTO_TAG_SIZE, t->sb_len);
        agent_send_result(a, id, &b);
        proto_buf_free(&b);
}

/* ---------------------------------------------------------------- loop hooks */

int agent_term_poll_add(struct agent *a, int nfds)
{
        for (struct agent_term *t = a->terms; t; t = t->next) {
                if (t->hup || t->exited)
                        continue;
                a->pfds[nfds] = (struct pollfd){.fd = t->master, .events = POLLIN | (t->in ? POLLOUT : 0)};
                a->slots[nfds++] = (struct agent_slot){.what = SLOT_TERM, .t = t};
        }
        return nfds;
}

void agent_term_on_io(struct agent *a, struct agent_term *t, short revents)
{
        if (revents & POLLOUT)
                flush_input(t);
        if (revents & (POLLIN | POLLHUP | POLLERR))
                read_master(a, t);
}

void agent_term_on_reaped(struct agent *a, pid_t pid, int status)
{
        for (struct agent_term *t = a->terms; t; t = t->next) {
                if (t->pid == pid && !t->exited) {
                        t->exited = 1;
                        t->status = status;
                        return;
                }
        }
}

uint64_t agent_term_next_deadline(const struct agent *a)
{
        uint64_t next = 0;

        for (const struct agent_term *t = a->terms; t; t = t->next) {
                uint64_t d = t->exited ? 1 : 0;

                if (!d)
                        d = t->deadline_ns && (!t->kill_ns || t->deadline_ns < t->kill_ns) ? t->deadline_ns
                                                                                           : t->kill_ns;
                if (t->kill_stage == 1 && (!d || t->check_ns < d))
                        d = t->check_ns;
                if (t->hup_ns && (!d || t->hup_ns < d))
                        d = t->hup_ns;
                if (d && (!next || d < next))
                        next = d;
        }
        return next;
}

/*
 * Enforces timeouts (SIGINT, then SIGKILL, then giving up on the marker) and
 * removes terminals whose shell has exited; a command still running in one
 * gets the shell's exit status.
 */
void agent_term_tick(struct agent *a, uint64_t now)
{
        for (struct agent_term *t = a->terms, *next; t; t = next) {
                next = t->next;
                if (t->exited) {
                        int code = WIFEXITED(t->status) ? WEXITSTATUS(t->status) : 128 + WTERMSIG(t->status);

                        for (int i = 0; i < 16 && !t->hup; i++)
                                read_master(a, t);
                        forward(a, t, t->hold, t->hold_len);
                        t->hold_len = 0;
                        t->stale[0] = 0;
                        if (t->cur)
                                term_finish(a, t, code);
                        if (t->att) {
                                struct proto_buf b = {0};

                                proto_put_u32(&b, PROTO_TAG_EXIT_CODE, (uint32_t)code);
                                agent_send_result(a, t->att->id, &b);
                                proto_buf_free(&b);
                                agent_stream_free(a, t->att);
                                t->att = NULL;
                        }
                        agent_log("terminal %s: shell exited (%d)", t->name, code);
                        term_free(a, t);
                        continue;
                }
                if (t->hup_ns && now >= t->hup_ns) {
                        pid_t pg = fg_pgrp(t);

                        agent_log("terminal %s: still there after SIGHUP; killed", t->name);
                        if (pg > 0)
                                kill(-pg, SIGKILL);
                        kill(-t->pid, SIGKILL);
                        t->hup_ns = 0;
                }
                if (t->deadline_ns && now >= t->deadline_ns) {
                        t->deadline_ns = 0;
                        t->timed_out = 1;
                        interrupt_start(t, now);
                }
                if (t->kill_stage == 1 && now >= t->check_ns && now < t->kill_ns)
                        interrupt_check(t, now);
                if (t->kill_ns && now >= t->kill_ns) {
                        if (t->kill_stage == 1) {
                                pid_t pg = fg_pgrp(t);

                                if (pg > 0)
                                        kill(-pg, pg == t->pid ? SIGINT : SIGKILL);
                                t->kill_stage = 2;
                                t->kill_ns = now + TERM_GRACE_NS;
                        } else {
                                /* The marker is not coming (the shell itself
                                 * is stuck, or dropped the marker line). */
                                agent_log("terminal %s: no end marker after SIGKILL; giving up on it",
                                          t->name);
                                t->kill_ns = 0;
                                t->kill_stage = 0;
                                if (t->stale[0])
                                        t->stale[0] = 0;
                                else
                                        term_finish(a, t, 128 + SIGKILL);
                        }
                }
        }
}

/*
 * Ends the command's stream now. The command is interrupted (SIGINT, SIGKILL
 * later if needed) and its marker becomes stale: its remaining output goes
 * to the scrollback, and the terminal takes the next command at once.
 */
void agent_term_cancel(struct agent *a, struct agent_stream *s, int send_result)
{
        struct agent_term *t = s->term;

        if (send_result)
                agent_send_error(a, s->id, ECANCELED, "cancelled");
        agent_stream_free(a, s);
        t->cur = NULL;
        if (t->nonce[0]) {
                memcpy(t->stale, t->nonce, sizeof(t->stale));
                t->nonce[0] = 0;
                interrupt_start(t, agent_now_ns());
        }
        t->deadline_ns = 0;
        t->timed_out = 0;
}

/*
 * agent_proc: see agent_proc.h.
 */
#include "agent_proc.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *unit_agent_path(void)
{
        const char *p = getenv("SPROUT_AGENT");

        return p && *p ? p : "build/sprout-agent";
}

int unit_agent_spawn(pid_t *ret_pid, int *ret_fd)
{
        const char *path = unit_agent_path();
        pid_t pid;
        int sv[2];

        if (access(path, X_OK) < 0) {
                fprintf(stderr, "    %s not found (%s): run `make build/sprout-agent` in the repo root first\n", path,
                        strerror(errno));
                return -1;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return -1;
        pid = fork();
        if (pid < 0) {
                close(sv[0]);
                close(sv[1]);
                return -1;
        }
        if (pid == 0) {
                if (sv[1] == 3)
                        fcntl(3, F_SETFD, 0);
                else if (dup2(sv[1], 3) < 0)
                        _exit(126);
                if (!getenv("SPROUT_TEST_VERBOSE")) {
                        int null = open("/dev/null", O_WRONLY);

                        if (null >= 0)
                                dup2(null, 2);
                }
                execl(path, "sprout-agent", "--fd", "3", (char *)NULL);
                _exit(127);
        }
        close(sv[1]);
        *ret_pid = pid;
        *ret_fd = sv[0];
        return 0;
}

int unit_agent_reap(pid_t pid, int timeout_ms)
{
        struct timespec ts;
        int64_t end, now;
        int status;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        end = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
        do {
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return status;
                usleep(5000);
                clock_gettime(CLOCK_MONOTONIC, &ts);
                now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        } while (now < end);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
}

/*
 * agent_proc: runs build/sprout-agent (or $SPROUT_AGENT) on one end of a
 * socketpair, as sproutd runs it behind a virtio-serial port, for the
 * tests of the agent and of the daemon's agent client. The agent's stderr
 * is silenced unless $SPROUT_TEST_VERBOSE is set.
 */
#ifndef SPROUT_AGENT_PROC_H
#define SPROUT_AGENT_PROC_H

#include <sys/types.h>

const char *unit_agent_path(void);

/* Starts the agent; *ret_fd is the host end. 0, or -1 with a message on
 * stderr saying why. */
int unit_agent_spawn(pid_t *ret_pid, int *ret_fd);

/* Waits up to timeout_ms for the agent to exit; kills it if it does not.
 * Returns its wait status, or -1 if it had to be killed. */
int unit_agent_reap(pid_t pid, int timeout_ms);

#endif

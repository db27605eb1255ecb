/*
 * jail: starts a program (QEMU) confined: in its own session, optionally
 * in a network namespace with a TAP device handed to it as an fd, in
 * cgroups, in a mount namespace whose root holds only the system's
 * read-only program files and the paths it is given, as an unprivileged
 * uid with no new privileges and an environment of PATH alone. Modelled
 * on Firecracker's jailer. Never logs; a failure in the child is
 * reported back to the caller as -errno through a close-on-exec pipe.
 */
#ifndef SPROUT_JAIL_H
#define SPROUT_JAIL_H

#include <sys/types.h>

struct jail {
        uid_t uid; /* run as uid:gid; 0 with no root below: not confined */
        gid_t gid;
        gid_t extra_gid;     /* a supplementary group (/dev/kvm's); 0: none */
        const char *root;    /* an empty directory to build the jail's root on */
        const char *rw;      /* the one path shown read-write, at the same place */
        const char *const *ro; /* paths shown read-only at the same place; NULL-terminated, may be NULL */
        const char *const *devices; /* device nodes shown (/dev/null...); NULL-terminated, may be NULL */
        const char *netns;   /* a network namespace (a file under /run/netns) to run in; NULL: the host's */
        const char *tap;     /* with netns: a TAP device there, opened and passed as fd tap_fd */
        int tap_fd;
        const char *const *cgroups; /* cgroup.procs files to join; NULL-terminated, may be NULL */
};

/* Whether this process can build jails (it runs as root with the
 * capabilities to make namespaces, mount and change uid): 0, or -errno
 * saying what is missing. */
int jail_supported(void);

/* Kills (SIGKILL) every process running as uid: a jailed QEMU that no
 * handle knows of (a daemon that died while it started). Returns how
 * many. */
int jail_kill_uid(unsigned uid);

/* Runs argv (argv[0] an absolute path) confined as j says (NULL: only in
 * its own session), with stdin from /dev/null and stdout and stderr to
 * log_fd. Returns once it has exec'd, with its pid, or -errno of the step
 * that failed (nothing is left running then). Safe to call from any
 * thread. */
int jail_spawn(const struct jail *j, char *const argv[], int log_fd, pid_t *ret_pid);

#endif

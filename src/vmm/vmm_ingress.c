/*
 * vmm_ingress: TCP connections into a VM for the ingress proxy. The
 * socket is made inside the VM's network namespace (setns on this thread,
 * then back), so it reaches the guest's address over its TAP device the
 * way nothing else on the host can; the guest sees it come from its
 * gateway. A suspended VM is resumed first, and every connection counts
 * as a use of the VM.
 */
#include "vmm/vmm.h"
#include "vmm/vmm_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Every guest's own address (image/20-wired.network). */
#define GUEST_ADDR "10.0.2.15"

/* A TCP socket made in the network namespace at path. */
static int socket_in(const char *path)
{
        int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC), ns, s = -1, e = 0;

        if (self < 0)
                return -errno;
        ns = open(path, O_RDONLY | O_CLOEXEC);
        if (ns < 0) {
                e = errno;
                close(self);
                return e == ENOENT ? -ENOTCONN : -e;
        }
        if (setns(ns, CLONE_NEWNET) < 0) {
                e = errno;
        } else {
                s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                e = s < 0 ? errno : 0;
                /* This thread must not stay in a VM's namespace: whatever
                 * it did next would be inside that VM's network. */
                if (setns(self, CLONE_NEWNET) < 0) {
                        log_err("ingress: cannot leave a VM's network namespace: %s", strerror(errno));
                        abort();
                }
        }
        close(ns);
        close(self);
        return s < 0 ? -e : s;
}

/* Resumes the VM if need be and uses it; its instance into instance. */
static int wake(struct vmm *m, const char *id, char instance[21])
{
        struct vm *vm = vm_find(m, NULL, id);
        char account[128];
        int r;

        if (!vm)
                return -ENOENT;
        r = vm->internal ? -ENOENT : 0; /* a build's VM is not anyone's to reach */
        snprintf(account, sizeof(account), "%s", vm->account);
        vm_put(m, vm);
        if (r < 0)
                return r;
        vm = vm_lock(m, account, id);
        if (!vm)
                return -ENOENT;
        r = vm_use(m, vm);
        pthread_mutex_lock(&m->lock);
        memcpy(instance, vm->instance, 21);
        pthread_mutex_unlock(&m->lock);
        vm_unlock(m, vm);
        return r;
}

int vmm_ingress_wake(struct vmm *m, const char *id, const char instance[21])
{
        char now[21];
        int r = wake(m, id, now);

        return r < 0 ? r : strcmp(now, instance) != 0;
}

int vmm_ingress_connect(struct vmm *m, const char *id, int port, int timeout_ms, int *ret_fd,
                        char ret_instance[21])
{
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        struct pollfd p;
        char path[PATH_MAX];
        socklen_t len = sizeof(int);
        int r = wake(m, id, ret_instance), s, err = 0;

        if (r < 0)
                return r;
        if (m->cfg.unconfined)
                return -EOPNOTSUPP;
        if (path_fmt(path, sizeof(path), "/run/netns/sprout-%s", id) < 0)
                return -ENAMETOOLONG;
        s = socket_in(path);
        if (s < 0)
                return s;
        inet_pton(AF_INET, GUEST_ADDR, &a.sin_addr);
        if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
                r = -errno;
                close(s);
                return r;
        }
        p = (struct pollfd){.fd = s, .events = POLLOUT};
        r = poll(&p, 1, timeout_ms);
        if (r <= 0 || getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
                r = r == 0 ? -ETIMEDOUT : r < 0 ? -errno : err ? -err : -errno;
                close(s);
                return r;
        }
        *ret_fd = s;
        return 0;
}

void vmm_ingress_touch(struct vmm *m, const char *id)
{
        struct vm *vm = vm_find(m, NULL, id);

        if (vm) {
                vm_touch(m, vm);
                vm_put(m, vm);
        }
}

/*
 * vmm_jail: what confines each VM's QEMU: a uid of its own (so that VMs
 * cannot signal, trace or read each other), its directory as the one
 * writable path, and read-only the image and the chain of layers its disk
 * backs onto, nothing else of the data dir. Depends on the store, the
 * hypervisor driver's jail and util.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Memory a QEMU takes beyond its guest's RAM. */
#define QEMU_OVERHEAD_MB 512

/* Uids are handed out from uid_base up, one per VM for its life. */
#define UID_RANGE (BASE_SLOT + 1)

/* Gives vm the lowest uid no other VM has. m->lock held. */
static unsigned free_uid(struct vmm *m, const struct vm *self)
{
        static _Thread_local unsigned char used[UID_RANGE / 8];

        memset(used, 0, sizeof(used));
        for (struct vm *vm = m->vms; vm; vm = vm->next)
                if (vm != self && vm->uid >= m->cfg.uid_base && vm->uid - m->cfg.uid_base < UID_RANGE)
                        used[(vm->uid - m->cfg.uid_base) / 8] |= 1u << ((vm->uid - m->cfg.uid_base) % 8);
        for (unsigned i = 1; i < BASE_SLOT; i++)
                if (!(used[i / 8] & 1u << (i % 8)))
                        return m->cfg.uid_base + i;
        return 0;
}

static int assign_uid(struct vmm *m, struct vm *vm)
{
        unsigned uid;
        int r;

        if (vm->uid)
                return 0;
        pthread_mutex_lock(&m->lock);
        uid = free_uid(m, vm);
        vm->uid = uid; /* taken now, so no concurrent boot takes it too */
        pthread_mutex_unlock(&m->lock);
        if (!uid)
                return -EUSERS;
        r = store_vm_set_uid(m->store, vm->id, uid);
        if (r < 0)
                vm->uid = 0;
        return r;
}

/* A directory and every file in it belong to uid. */
static int own_dir(const char *dir, unsigned uid)
{
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (chown(dir, uid, uid) < 0 || chmod(dir, 0700) < 0)
                return -errno;
        d = opendir(dir);
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && fchownat(dirfd(d), de->d_name, uid, uid, AT_SYMLINK_NOFOLLOW) < 0 &&
                    errno != ENOENT)
                        r = -errno;
        /* Its RAM file, on the tmpfs mounted at ram/ (see vmm_ram.c). */
        if (fchownat(dirfd(d), "ram/mem", uid, uid, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOENT && r == 0)
                r = -errno;
        closedir(d);
        return r;
}

int layer_seal(const char *disk)
{
        char dir[PATH_MAX], *slash;

        if (path_fmt(dir, sizeof(dir), "%s", disk) < 0 || !(slash = strrchr(dir, '/')))
                return -EINVAL;
        *slash = 0;
        /* Its directory must let other uids through to it; the memory and
         * device state beside it stay the daemon's own (0600). */
        if (chown(disk, 0, 0) < 0 || chmod(disk, 0644) < 0 || chmod(dir, 0755) < 0)
                return -errno;
        return 0;
}

/* Adds path (a directory) to the read-only list. */
static int add_ro(struct vm_jail *vj, size_t *n, const char *fmt, const char *a, const char *b)
{
        if (*n + 1 >= sizeof(vj->ro) / sizeof(vj->ro[0]))
                return -E2BIG;
        if (path_fmt(vj->ro_paths[*n], PATH_MAX, fmt, a, b) < 0)
                return -ENAMETOOLONG;
        vj->ro[*n] = vj->ro_paths[*n];
        (*n)++;
        vj->ro[*n] = NULL;
        return 0;
}

/* The confinement of a guest named name (a VM id, or "base") in dir, run
 * as uid, numbered k for its network; ro already holds the read-only
 * paths (n of them). */
static int jail_for(struct vmm *m, const char *name, const char *dir, unsigned uid, unsigned k, int mem_mb,
                    int vcpus, int net_ready, struct vm_jail *ret)
{
        /* Its resources: guest RAM and what QEMU itself takes (TCG's
         * translation cache, device state, I/O buffers), its vCPUs and a
         * half core for the rest, and threads enough. */
        struct cgroup_limits limits = {
                .mem_bytes = ((int64_t)mem_mb + QEMU_OVERHEAD_MB) << 20,
                .cpu_quota_us = (int64_t)vcpus * 100000 + 50000,
                .pids = 512,
        };
        size_t nprocs = 0, nd = 0;
        int r = own_dir(dir, uid);

        if (r < 0)
                return r;
        ret->devices[nd++] = "/dev/null";
        ret->devices[nd++] = "/dev/zero";
        ret->devices[nd++] = "/dev/urandom";
        ret->devices[nd++] = "/dev/random";
        if (m->cfg.accel == QEMU_ACCEL_KVM) {
                struct stat st;

                ret->devices[nd++] = "/dev/kvm";
                if (stat("/dev/kvm", &st) == 0)
                        ret->jail.extra_gid = st.st_gid;
        }
        ret->devices[nd] = NULL;
        if (path_fmt(ret->root, sizeof(ret->root), "%s/jail", m->data_dir) < 0)
                return -ENAMETOOLONG;
        ret->jail.uid = uid;
        ret->jail.gid = uid;
        ret->jail.root = ret->root;
        ret->jail.rw = dir;
        ret->jail.ro = ret->ro;
        ret->jail.devices = ret->devices;
        r = cgroup_make(m->cgroups, name, &limits, ret->procs, &nprocs);
        if (r < 0)
                return r;
        for (size_t i = 0; i < nprocs; i++)
                ret->cgroups[i] = ret->procs[i];
        ret->cgroups[nprocs] = NULL;
        ret->jail.cgroups = ret->cgroups;
        if (!net_ready) {
                r = net_create(m->net, name, k, ret->netns);
                if (r < 0)
                        return r;
        } else if (path_fmt(ret->netns, sizeof(ret->netns), "/run/netns/sprout-%s", name) < 0) {
                return -ENAMETOOLONG;
        }
        ret->jail.netns = ret->netns;
        ret->jail.tap = "tap0";
        ret->jail.tap_fd = VM_TAP_FD;
        return 0;
}

int vm_jail_prepare(struct vmm *m, struct vm *vm, struct vm_jail *ret)
{
        char *layer = vm->layer ? strdup(vm->layer) : NULL, disk[PATH_MAX];
        size_t n = 0;
        int r;

        memset(ret, 0, sizeof(*ret));
        if (m->cfg.unconfined) {
                free(layer);
                return 1;
        }
        if (vm->layer && !layer)
                return -ENOMEM;
        r = assign_uid(m, vm);
        if (r == 0)
                r = add_ro(ret, &n, "%s%s", m->image_dir, "");
        if (r == 0)
                r = add_ro(ret, &n, "%s%s", m->base_dir, "");
        if (r == 0 && layer_path(m, NULL, disk, "disk.qcow2") == 0)
                r = layer_seal(disk);
        /* The layers its disk backs onto, newest first. */
        while (r == 0 && layer) {
                char *parent = NULL;

                r = add_ro(ret, &n, "%s/layers/%s", m->data_dir, layer);
                if (r == 0 && layer_path(m, layer, disk, "disk.qcow2") == 0)
                        r = layer_seal(disk);
                if (r == 0)
                        r = store_layer_parent(m->store, layer, &parent);
                free(layer);
                layer = parent;
        }
        free(layer);
        if (r < 0)
                return r;
        r = jail_for(m, vm->id, vm->dir, vm->uid, vm->uid - m->cfg.uid_base, vm->mem_mb, vm->vcpus, vm->net_ready, ret);
        vm->net_ready = 0; /* once per boot */
        return r;
}

int base_jail_prepare(struct vmm *m, const char *dir, struct vm_jail *ret)
{
        size_t n = 0;
        int r;

        memset(ret, 0, sizeof(*ret));
        if (m->cfg.unconfined)
                return 1;
        r = add_ro(ret, &n, "%s%s", m->image_dir, "");
        return r < 0 ? r
                     : jail_for(m, "base", dir, m->cfg.uid_base + BASE_SLOT, BASE_SLOT, m->cfg.mem_mb, m->cfg.vcpus, 0,
                                ret);
}

struct net_job {
        struct net *net;
        char id[21];
        unsigned k;
        int *result;
};

static void *net_main(void *arg)
{
        struct net_job *j = arg;
        char path[PATH_MAX];

        *j->result = net_create(j->net, j->id, j->k, path);
        free(j);
        return NULL;
}

int vm_net_early(struct vmm *m, struct vm *vm, pthread_t *ret_thread, int *ret_result)
{
        struct net_job *j;
        int r;

        if (m->cfg.unconfined || !m->net)
                return 1;
        r = assign_uid(m, vm);
        if (r < 0)
                return r;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (struct net_job){.net = m->net, .k = vm->uid - m->cfg.uid_base, .result = ret_result};
        memcpy(j->id, vm->id, sizeof(j->id));
        r = pthread_create(ret_thread, NULL, net_main, j);
        if (r != 0) {
                free(j);
                return -r;
        }
        return 0;
}

int vm_net_wait(struct vm *vm, pthread_t thread, int *result)
{
        pthread_join(thread, NULL);
        vm->net_ready = *result == 0;
        return *result;
}

void jail_release(struct vmm *m, const char *name, unsigned k)
{
        cgroup_remove(m->cgroups, name);
        if (m->net)
                net_destroy(m->net, name, k);
}

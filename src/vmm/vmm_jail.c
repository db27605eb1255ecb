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
#define UID_RANGE 65536

/* Gives vm the lowest uid no other VM has. m->lock held. */
static unsigned free_uid(struct vmm *m, const struct vm *self)
{
        static _Thread_local unsigned char used[UID_RANGE / 8];

        memset(used, 0, sizeof(used));
        for (struct vm *vm = m->vms; vm; vm = vm->next)
                if (vm != self && vm->uid >= m->cfg.uid_base && vm->uid - m->cfg.uid_base < UID_RANGE)
                        used[(vm->uid - m->cfg.uid_base) / 8] |= 1u << ((vm->uid - m->cfg.uid_base) % 8);
        for (unsigned i = 1; i < UID_RANGE; i++)
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

/* The VM's directory and every file in it belong to its uid. */
static int own_dir(const struct vm *vm)
{
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (chown(vm->dir, vm->uid, vm->uid) < 0 || chmod(vm->dir, 0700) < 0)
                return -errno;
        d = opendir(vm->dir);
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && fchownat(dirfd(d), de->d_name, vm->uid, vm->uid, AT_SYMLINK_NOFOLLOW) < 0 &&
                    errno != ENOENT)
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

int vm_jail_prepare(struct vmm *m, struct vm *vm, struct vm_jail *ret)
{
        char *layer = vm->layer ? strdup(vm->layer) : NULL, disk[PATH_MAX];
        size_t n = 0, nd = 0;
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
                r = own_dir(vm);
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
        /* Its resources: guest RAM and what QEMU itself takes (TCG's
         * translation cache, device state, I/O buffers), its vCPUs and a
         * half core for the rest, and threads enough. */
        struct cgroup_limits limits = {
                .mem_bytes = ((int64_t)vm->mem_mb + QEMU_OVERHEAD_MB) << 20,
                .cpu_quota_us = (int64_t)vm->vcpus * 100000 + 50000,
                .pids = 512,
        };
        size_t nprocs = 0;

        r = cgroup_make(m->cgroups, vm->id, &limits, ret->procs, &nprocs);
        if (r < 0)
                return r;
        for (size_t i = 0; i < nprocs; i++)
                ret->cgroups[i] = ret->procs[i];
        ret->cgroups[nprocs] = NULL;
        ret->jail.cgroups = ret->cgroups;
        ret->jail.uid = vm->uid;
        ret->jail.gid = vm->uid;
        ret->jail.root = ret->root;
        ret->jail.rw = vm->dir;
        ret->jail.ro = ret->ro;
        ret->jail.devices = ret->devices;
        return 0;
}

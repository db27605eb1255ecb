/*
 * vmm_ram: where a VM's guest RAM lives. QEMU maps it shared from a file,
 * so that suspend, snapshot and fork save only device state. On the data
 * dir that file is page cache the kernel writes back to disk again and
 * again while the guest runs (130 MiB for each create, 1.7 GiB in 30 s of
 * 26 idle VMs). So a VM restored from a layer (a create, a fork, the warm
 * pool) or cold-booted keeps its RAM on a tmpfs of its own, mounted at
 * <vm dir>/ram and sized to its memory, which reaches the disk only when
 * the VM is suspended: once, as <vm dir>/mem. A resume maps that file
 * where it is rather than copy it back (a request is waiting), so a
 * resumed VM's RAM stays in the data dir until it next stops. Where the
 * daemon may not mount (not root), every RAM file is in the data dir.
 * Depends on util.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <errno.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

static int ram_dir(const char *vm_dir, char out[PATH_MAX])
{
        return path_fmt(out, PATH_MAX, "%s/ram", vm_dir);
}

static int is_tmpfs(const char *path)
{
        struct statfs st;

        return statfs(path, &st) == 0 && st.f_type == TMPFS_MAGIC;
}

int vm_ram_path(const struct vm *vm, char out[PATH_MAX])
{
        char dir[PATH_MAX];

        if (ram_dir(vm->dir, dir) < 0)
                return -ENAMETOOLONG;
        if (is_tmpfs(dir))
                return path_fmt(out, PATH_MAX, "%s/mem", dir) < 0 ? -ENAMETOOLONG : 1;
        return vm_path(vm, out, "mem");
}

void vm_ram_release(const char *vm_dir)
{
        char dir[PATH_MAX];

        if (ram_dir(vm_dir, dir) < 0)
                return;
        /* Detached: a QEMU that still maps the file keeps it until it
         * ends, and nothing else sees it. */
        if (is_tmpfs(dir) && umount2(dir, MNT_DETACH) < 0)
                log_warn("could not unmount %s: %s", dir, strerror(errno));
        rmdir(dir);
}

int vm_ram_prepare(struct vmm *m, struct vm *vm, const char *from)
{
        char dir[PATH_MAX], mem[PATH_MAX], opts[96];
        int in_ram, r;

        if (ram_dir(vm->dir, dir) < 0)
                return -ENAMETOOLONG;
        vm_ram_release(vm->dir); /* left from a daemon that died */
        if (!__atomic_load_n(&m->ram_unmountable, __ATOMIC_RELAXED)) {
                /* Room for exactly its RAM (and the file's own blocks):
                 * a guest's memory can never take more of the host's. */
                snprintf(opts, sizeof(opts), "size=%dm,nr_inodes=8,mode=0700,huge=never", vm->mem_mb + 1);
                if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                        return -errno;
                if (mount("sprout-ram", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0) {
                        r = -errno;
                        rmdir(dir);
                        if (r != -EPERM)
                                return r;
                        __atomic_store_n(&m->ram_unmountable, 1, __ATOMIC_RELAXED);
                        log_warn(
                            "cannot mount a tmpfs for guest RAM (%s): VM memory files stay in the data dir",
                            strerror(-r));
                }
        }
        in_ram = vm_ram_path(vm, mem);
        if (in_ram < 0)
                return in_ram;
        if (from && strcmp(from, mem))
                r = copy_sparse(from, mem);
        else if (!from && unlink(mem) < 0 && errno != ENOENT)
                r = -errno;
        else
                r = 0;
        if (r < 0) {
                vm_ram_release(vm->dir);
                return r;
        }
        return in_ram;
}

int vm_ram_save(const struct vm *vm)
{
        char ram[PATH_MAX], mem[PATH_MAX], tmp[PATH_MAX];
        int in_ram = vm_ram_path(vm, ram), r;

        if (in_ram < 0 || vm_path(vm, mem, "mem") < 0 || vm_path(vm, tmp, "mem.tmp") < 0)
                return -ENAMETOOLONG;
        if (!in_ram)
                return fsync_path(mem);
        r = copy_sparse(ram, tmp);
        if (r == 0)
                r = fsync_path(tmp);
        if (r == 0 && rename(tmp, mem) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}

int vm_dir_remove(const char *vm_dir)
{
        vm_ram_release(vm_dir);
        return rm_rf(vm_dir);
}

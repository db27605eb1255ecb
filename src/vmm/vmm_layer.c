/*
 * vmm_layer: snapshot layers. A layer is an immutable memory file, device
 * state and qcow2 disk in data_dir/layers/ID; VMs' disks and snapshots
 * sit on layers, and a layer's disk backs onto its parent's. Layers are
 * recorded in the store before any disk backs onto them and removed once
 * nothing needs them. Depends on qemu, store and util.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int layer_path(struct vmm *m, const char *layer, char out[PATH_MAX], const char *name)
{
        if (!layer)
                return path_fmt(out, PATH_MAX, "%s/%s", m->base_dir, name);
        return path_fmt(out, PATH_MAX, "%s/layers/%s/%s", m->data_dir, layer, name);
}

/* Records the new layer id (on the VM's current one) and moves the VM's
 * record onto it, under the layer lock so that the GC sees both or
 * neither. *ret_recorded says whether the layer record was made. */
static int record_layer(struct vmm *m, struct vm *vm, const char *id, int *ret_recorded)
{
        int r;

        pthread_mutex_lock(&m->layer_lock);
        r = store_layer_insert(m->store, id, vm->layer);
        *ret_recorded = r == 0;
        if (r == 0)
                r = store_vm_set_layer(m->store, vm->id, id);
        pthread_mutex_unlock(&m->layer_lock);
        return r;
}

/* A running VM is paused for it and resumed after; a suspended one is
 * captured from its files. */
int vm_make_layer(struct vmm *m, struct vm *vm, char ret_layer[24])
{
        char id[24], dir[PATH_MAX], lstate[PATH_MAX], lmem[PATH_MAX], ldisk[PATH_MAX];
        char disk[PATH_MAX], next[PATH_MAX], mem[PATH_MAX], state[PATH_MAX], log[PATH_MAX];
        char next_name[64], current[PATH_MAX];
        int running = vm->qemu != NULL, recorded = 0, r;
        uint64_t bytes = 0;
        char *layer = NULL;

        memcpy(id, "l-", 2);
        r = random_id(id + 2, 20);
        if (r < 0)
                return r;
        if (path_fmt(dir, sizeof(dir), "%s/layers/%s", m->data_dir, id) < 0 ||
            layer_path(m, id, lstate, "state") < 0 || layer_path(m, id, lmem, "mem") < 0 ||
            layer_path(m, id, ldisk, "disk.qcow2") < 0 || vm_path(vm, disk, vm->disk) < 0 ||
            path_fmt(next_name, sizeof(next_name), "disk-%s.qcow2", id) < 0 || vm_path(vm, next, next_name) < 0 ||
            vm_path(vm, current, "disk.current") < 0 || vm_path(vm, mem, "mem") < 0 ||
            vm_path(vm, state, "state") < 0 || vm_path(vm, log, "qemu-img.log") < 0)
                return -ENAMETOOLONG;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        if (running)
                r = qemu_save(vm->qemu, lstate, 60000);
        else
                r = copy_sparse(state, lstate);
        /* With the guest paused, the memory file is a consistent image. */
        if (r == 0)
                r = copy_sparse(mem, lmem);
        /* The disk: the VM's overlay becomes the layer's (a second name for
         * the same file), and the VM goes on in a new overlay on top. The
         * old name stays: QEMU may reopen the file by it. */
        if (r == 0 && link(disk, ldisk) < 0)
                r = -errno;
        if (r == 0)
                r = qemu_img_size(disk, &bytes);
        if (r == 0)
                r = qemu_img_create(next, ldisk, "qcow2", bytes, log);
        /* The VM's QEMU opens its new overlay as the VM's own uid. */
        if (r == 0 && vm->uid && chown(next, vm->uid, vm->uid) < 0)
                r = -errno;
        /* Crash-safe order: the layer is recorded before any disk in use
         * backs onto it (so a directory without a record can go at the
         * next start), and disk.current names the new overlay before QEMU
         * moves onto it (until then the overlay is empty and backs onto the
         * old one, so booting from it loses nothing). */
        if (r == 0 && !(layer = strdup(id)))
                r = -ENOMEM;
        if (r == 0)
                r = record_layer(m, vm, id, &recorded);
        if (r == 0)
                r = write_file_atomic(current, next_name, strlen(next_name), 0644);
        if (r == 0 && running)
                r = qemu_snapshot_disk(vm->qemu, next, 10000);
        /* Frozen now: every VM that restores from the layer reads it (and
         * vm_jail_prepare seals it again should this fail). */
        if (r == 0 && layer_seal(ldisk) < 0)
                log_warn("layer %s: could not make its disk readable: %s", id, strerror(errno));
        if (r < 0 && recorded) {
                /* Back onto the old overlay, in the reverse order. */
                int k = write_file_atomic(current, vm->disk, strlen(vm->disk), 0644);

                if (k == 0)
                        k = store_vm_set_layer(m->store, vm->id, vm->layer);
                if (k < 0)
                        log_err("vm %s: could not undo its move onto layer %s: %s", vm->id, id, strerror(-k));
        }
        if (r == 0) {
                snprintf(vm->disk, sizeof(vm->disk), "%s", next_name);
                free(vm->layer);
                vm->layer = layer;
                layer = NULL;
        }
        free(layer);
        if (running) {
                int k = qemu_cont(vm->qemu, 10000);

                /* The guest's clock stood still while it was paused: the
                 * ping sets it from the host's again. */
                if (k == 0 && vm->agent)
                        agentc_ping(vm->agent, 5000);
                if (r == 0 && k < 0)
                        return k; /* on the new layer all the same: nothing to undo */
        }
        if (r < 0) {
                unlink(next);
                if (recorded)
                        layers_gc(m); /* the record, then the directory */
                else
                        rm_rf(dir);
                return r;
        }
        memcpy(ret_layer, id, sizeof(id));
        return 0;
}

static void gc_layer(const char *id, void *ud)
{
        struct vmm *m = ud;
        char dir[PATH_MAX];

        if (id[0] == 'l' && !strchr(id, '/') && path_fmt(dir, sizeof(dir), "%s/layers/%s", m->data_dir, id) == 0) {
                rm_rf(dir);
                log_info("layer %s: no longer used, removed", id);
        }
}

/* Forgets the layers no VM, live snapshot or live layer needs and removes
 * their directories. */
void layers_gc(struct vmm *m)
{
        int r;

        pthread_mutex_lock(&m->layer_lock);
        r = store_layer_gc(m->store, gc_layer, m);
        pthread_mutex_unlock(&m->layer_lock);
        if (r < 0)
                log_err("layer GC failed: %s", strerror(-r));
}

/* Before anything can make a layer. vm_make_layer records a layer before
 * any disk in use backs onto it, and the GC forgets a layer before it
 * removes its files, so a directory without a record is what a daemon
 * killed in between left behind, and nothing needs it. */
void layers_recover(struct vmm *m)
{
        char path[PATH_MAX];
        struct dirent *de;
        DIR *d;

        if (path_fmt(path, sizeof(path), "%s/layers", m->data_dir) == 0 && (d = opendir(path))) {
                while ((de = readdir(d))) {
                        if (strncmp(de->d_name, "l-", 2) || store_layer_exists(m->store, de->d_name) != 0 ||
                            path_fmt(path, sizeof(path), "%s/layers/%s", m->data_dir, de->d_name) < 0)
                                continue;
                        log_warn("layer %s: left by a snapshot or fork cut short; removed", de->d_name);
                        rm_rf(path);
                }
                closedir(d);
        }
        layers_gc(m);
}

int64_t vmm_layer_usage(struct vmm *m, const char *layer)
{
        char dir[PATH_MAX];

        if (!layer || strchr(layer, '/') || path_fmt(dir, sizeof(dir), "%s/layers/%s", m->data_dir, layer) < 0)
                return 0;
        return dir_usage(dir, 0);
}

int vmm_snapshot_delete(struct vmm *m, const char *account, const char *id)
{
        int r = store_snapshot_delete(m->store, account, id);

        if (r == -ENOENT)
                return -ENOMEDIUM;
        if (r == 0) {
                log_info("snapshot %s: deleted", id);
                layers_gc(m);
        }
        return r;
}

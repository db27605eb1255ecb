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

struct layer_move {
        const char *vm, *layer, *parent;
};

static int move_txn(struct store *t, void *ud)
{
        const struct layer_move *mv = ud;
        int r = store_layer_insert(t, mv->layer, mv->parent);

        return r < 0 ? r : store_vm_set_layer(t, mv->vm, mv->layer);
}

/* Records the new layer id (on the VM's current one) and moves the VM's
 * record onto it in one transaction, under the layer lock so that the GC
 * sees both or neither. */
static int record_layer(struct vmm *m, struct vm *vm, const char *id)
{
        struct layer_move mv = {vm->id, id, vm->layer};
        int r;

        pthread_mutex_lock(&m->layer_lock);
        r = store_txn(m->store, move_txn, &mv);
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

        if (vm_hung(vm))
                return -EHOSTDOWN;
        memcpy(id, "l-", 2);
        r = random_id(id + 2, 20);
        if (r < 0)
                return r;
        if (path_fmt(dir, sizeof(dir), "%s/layers/%s", m->data_dir, id) < 0 ||
            layer_path(m, id, lstate, "state") < 0 || layer_path(m, id, lmem, "mem") < 0 ||
            layer_path(m, id, ldisk, "disk.qcow2") < 0 || vm_path(vm, disk, vm->disk) < 0 ||
            path_fmt(next_name, sizeof(next_name), "disk-%s.qcow2", id) < 0 || vm_path(vm, next, next_name) < 0 ||
            vm_path(vm, current, "disk.current") < 0 || vm_ram_path(vm, mem) < 0 ||
            vm_path(vm, state, "state") < 0 || vm_path(vm, log, "qemu-img.log") < 0)
                return -ENAMETOOLONG;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        crash_point("layer.dir");
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
        /* Every file of the layer on disk before anything names it. */
        if (r == 0)
                r = fsync_path(lmem);
        if (r == 0)
                r = fsync_path(ldisk);
        if (r == 0)
                r = fsync_path(dir);
        if (r == 0)
                r = fsync_parent(dir);
        if (r == 0)
                crash_point("layer.files");
        if (r == 0)
                r = qemu_img_create(next, ldisk, "qcow2", bytes, log);
        if (r == 0)
                r = fsync_parent(next);
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
        if (r == 0) {
                r = record_layer(m, vm, id);
                recorded = r == 0;
        }
        if (r == 0)
                crash_point("layer.recorded");
        if (r == 0)
                r = write_file_atomic(current, next_name, strlen(next_name), 0644);
        if (r == 0)
                crash_point("layer.current");
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

        crash_point("gc.forgotten");
        if (id[0] == 'l' && !strchr(id, '/') && path_fmt(dir, sizeof(dir), "%s/layers/%s", m->data_dir, id) == 0) {
                rm_rf(dir);
                log_info("layer %s: no longer used, removed", id);
        }
}

int layer_pin_locked(struct vmm *m, const char *layer)
{
        struct pin *p;

        if (!layer)
                return 0;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        snprintf(p->id, sizeof(p->id), "%s", layer);
        p->next = m->pins;
        m->pins = p;
        return 0;
}

int layer_pin(struct vmm *m, const char *layer)
{
        int r;

        pthread_mutex_lock(&m->layer_lock);
        r = layer_pin_locked(m, layer);
        pthread_mutex_unlock(&m->layer_lock);
        return r;
}

void layer_unpin(struct vmm *m, const char *layer)
{
        if (!layer)
                return;
        pthread_mutex_lock(&m->layer_lock);
        for (struct pin **pp = &m->pins; *pp; pp = &(*pp)->next) {
                if (!strcmp((*pp)->id, layer)) {
                        struct pin *p = *pp;

                        *pp = p->next;
                        free(p);
                        break;
                }
        }
        pthread_mutex_unlock(&m->layer_lock);
}

/* Forgets the layers no VM, live snapshot, live layer or operation in
 * progress needs and removes their directories. */
void layers_gc(struct vmm *m)
{
        const char **ids = NULL;
        size_t n = 0;
        int r = 0;

        pthread_mutex_lock(&m->layer_lock);
        for (struct pin *p = m->pins; p; p = p->next)
                n++;
        if (n && !(ids = calloc(n, sizeof(*ids))))
                r = -ENOMEM;
        n = 0;
        for (struct pin *p = m->pins; ids && p; p = p->next)
                ids[n++] = p->id;
        if (r == 0) {
                crash_point("gc.start");
                r = store_layer_gc(m->store, ids, n, gc_layer, m);
        }
        pthread_mutex_unlock(&m->layer_lock);
        free(ids);
        if (r < 0)
                log_err("layer GC failed: %s", strerror(-r));
}

/* The layer a disk file backs onto, when it is one: its id in out. */
static int backing_layer(const char *disk, char out[64])
{
        char backing[PATH_MAX], *p, *end;

        if (qemu_img_backing(disk, backing, sizeof(backing)) < 0 || !(p = strstr(backing, "/layers/l-")))
                return 0;
        p += strlen("/layers/");
        end = strchr(p, '/');
        if (!end || end - p >= 64)
                return 0;
        memcpy(out, p, (size_t)(end - p));
        out[end - p] = 0;
        return 1;
}

/* Whether a layer directory holds what every layer keeps (a fork's keeps
 * only its disk once its children run). */
static int layer_whole(struct vmm *m, const char *id)
{
        char path[PATH_MAX];

        return layer_path(m, id, path, "disk.qcow2") == 0 && access(path, R_OK) == 0;
}

/* Records again a layer directory that a disk backs onto although the
 * store has no record of it (a store that lost its last commits): with
 * the parent its own disk names. */
static int layer_readopt(struct vmm *m, const char *id)
{
        char disk[PATH_MAX], parent[64];
        int has_parent;

        if (layer_path(m, id, disk, "disk.qcow2") < 0)
                return -ENAMETOOLONG;
        has_parent = backing_layer(disk, parent);
        if (has_parent && store_layer_exists(m->store, parent) != 1 && layer_readopt(m, parent) < 0)
                return -ENOENT;
        return store_layer_insert(m->store, id, has_parent ? parent : NULL);
}

/* Marks in names (ids of n layer directories) those a disk backs onto:
 * a VM's disk files and other layers' disks. */
static void mark_backed(struct vmm *m, char (*names)[64], int *used, size_t n)
{
        char path[PATH_MAX], id[64];
        struct dirent *de, *fe;
        DIR *d, *f;

        if (path_fmt(path, sizeof(path), "%s/vms", m->data_dir) == 0 && (d = opendir(path))) {
                while ((de = readdir(d))) {
                        if (de->d_name[0] == '.' ||
                            path_fmt(path, sizeof(path), "%s/vms/%s", m->data_dir, de->d_name) < 0 ||
                            !(f = opendir(path)))
                                continue;
                        while ((fe = readdir(f))) {
                                char disk[PATH_MAX];

                                if (strncmp(fe->d_name, "disk", 4) || !strstr(fe->d_name, ".qcow2") ||
                                    path_fmt(disk, sizeof(disk), "%s/%s", path, fe->d_name) < 0 ||
                                    !backing_layer(disk, id))
                                        continue;
                                for (size_t i = 0; i < n; i++)
                                        if (!strcmp(names[i], id))
                                                used[i] = 1;
                        }
                        closedir(f);
                }
                closedir(d);
        }
        for (size_t j = 0; j < n; j++) {
                if (layer_path(m, names[j], path, "disk.qcow2") < 0 || !backing_layer(path, id))
                        continue;
                for (size_t i = 0; i < n; i++)
                        if (!strcmp(names[i], id))
                                used[i] = 1;
        }
}

/* A VM's record names the layer its active disk backs onto: when a
 * daemon died between the two (moving onto a new layer, or flattening),
 * the disk is right and the record follows it. Start-up only. */
static void vms_follow_disks(struct vmm *m)
{
        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                char disk[PATH_MAX], backing[PATH_MAX], id[64] = "";
                int on_layer, r;

                if (vm_path(vm, disk, vm->disk) < 0 || qemu_img_backing(disk, backing, sizeof(backing)) < 0)
                        continue;
                on_layer = backing_layer(disk, id);
                /* The default snapshot, another layer, or the same one. */
                if ((!on_layer && !vm->layer) || (on_layer && vm->layer && !strcmp(id, vm->layer)))
                        continue;
                if (on_layer && store_layer_exists(m->store, id) != 1)
                        continue;
                r = store_vm_set_layer(m->store, vm->id, on_layer ? id : NULL);
                if (r < 0) {
                        log_err("vm %s: could not follow its disk onto %s: %s", vm->id, on_layer ? id : "the default snapshot",
                                strerror(-r));
                        continue;
                }
                log_warn("vm %s: its disk backs onto %s, its record said %s; record follows the disk", vm->id,
                         on_layer ? id : "the default snapshot", vm->layer ? vm->layer : "the default snapshot");
                free(vm->layer);
                vm->layer = on_layer ? strdup(id) : NULL;
        }
}

/* Before anything can make a layer. vm_make_layer records a layer before
 * any disk in use backs onto it, and the GC forgets a layer before it
 * removes its files, so a directory without a record is what a daemon
 * killed in between left behind. What is on disk is trusted over the
 * store all the same: a directory that some disk backs onto is recorded
 * again, never removed. */
void layers_recover(struct vmm *m)
{
        char path[PATH_MAX], (*names)[64] = NULL;
        int *used = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        DIR *d;

        if (path_fmt(path, sizeof(path), "%s/layers", m->data_dir) == 0 && (d = opendir(path))) {
                while ((de = readdir(d))) {
                        if (strncmp(de->d_name, "l-", 2) || strlen(de->d_name) >= 64 ||
                            store_layer_exists(m->store, de->d_name) != 0)
                                continue;
                        if (n == cap) {
                                size_t c = cap ? cap * 2 : 16;
                                void *grown = realloc(names, c * sizeof(*names));

                                if (!grown)
                                        break;
                                names = grown;
                                cap = c;
                        }
                        snprintf(names[n++], 64, "%s", de->d_name);
                }
                closedir(d);
        }
        used = n ? calloc(n, sizeof(*used)) : NULL;
        if (n && !used)
                n = 0;
        mark_backed(m, names, used, n);
        for (size_t i = 0; i < n; i++) {
                if (used[i] && layer_whole(m, names[i]) && layer_readopt(m, names[i]) == 0) {
                        log_warn("layer %s: a disk backs onto it but the store had no record; recorded again",
                                 names[i]);
                        continue;
                }
                if (used[i])
                        log_err("layer %s: a disk backs onto it but it is not whole; kept for inspection", names[i]);
                else if (path_fmt(path, sizeof(path), "%s/layers/%s", m->data_dir, names[i]) == 0) {
                        log_warn("layer %s: left by a snapshot or fork cut short; removed", names[i]);
                        rm_rf(path);
                }
        }
        free(names);
        free(used);
        vms_follow_disks(m);
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

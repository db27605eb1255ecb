/*
 * build: templates and specs made into snapshots. A chain of layers (a
 * VmTemplate nested through "template", or a SnapshotSpec nested through
 * "snapshot"), innermost first, each on the one inside it, on a snapshotId,
 * or on the default image. Each layer is keyed by a hash of its content
 * and its base's key (so a chain's keys are known before anything is
 * built), looked up per account among ready snapshots (the layer cache),
 * and otherwise built: a temporary VM from its base, the layer's setup
 * through the create-time setup engine (each step a phase; runCommands
 * oneshots waited for), a snapshot with memory, and the VM deleted.
 * Identical layers wanted at once are built once. Every build has a
 * record with its planned phases and an append-only phase timeline, which
 * survives a restart (one cut short is marked failed, its temporary VM and
 * partial snapshot removed). Uses the VM manager, the setup engine and the
 * store; speaks JSON (the chain) but no HTTP.
 */
#ifndef SPROUT_BUILD_H
#define SPROUT_BUILD_H

#include "store/store.h"
#include "vmm/vmm.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct builder;
struct build;

/* A builder, keeping the base images it fetches under data_dir and finding
 * them through registries_conf (NULL: the host's); once the
 * VM manager is ready, it marks the builds a restart
 * cut short failed and removes their temporary VMs and unfinished
 * snapshots. */
int builder_new(struct vmm *m, struct store *s, const char *data_dir, const char *registries_conf,
                struct builder **ret);
/* How many builds (and the start-up recovery) run now. */
int builder_busy(struct builder *b);
/* Waits for the builds in progress to end and frees b; NULL is a no-op.
 * A daemon that stops during a build exits without it instead: its next
 * start marks the build failed. */
void builder_free(struct builder *b);

struct build_opts {
        const char *name;                  /* the outermost snapshot's name; may be NULL */
        struct vm_persistence persistence; /* the outermost snapshot's */
        const char *request_id;            /* may be NULL */
        /* Caps on a layer's memSizeGb, vcpuCount and rootfsSizeGb. */
        int64_t max_mem_gb, max_vcpus, max_disk_gb;
};

/* Checks and plans a chain (the outermost layer; a reference is taken)
 * and starts its build. -EINVAL: a bad chain, *ret_code the API error
 * code to answer with (bad_code, or a systemd spec's own) and msg says
 * why; -ENOMEDIUM: a snapshotId that is not a ready snapshot of account
 * (msg names it); -EFBIG: a Dockerfile over DOCKERFILE_MAX; -EBUSY: the
 * account has BUILDS_PER_ACCOUNT builds in progress (msg says so);
 * -EAGAIN: the VM manager is not ready; other -errno. */
int build_start(struct builder *b, const char *account, json_t *chain, const struct build_opts *o,
                const char *bad_code, struct build **ret, const char **ret_code, char *msg, size_t size);
/* 1 when a chain asks for nothing to be built: one layer, on the guest
 * image, without content or discriminator (what a VM gets from it is
 * what a create without it gets). */
int build_chain_trivial(json_t *chain);
/* Waits up to timeout_ms (< 0: no bound) for x to end: 0, or -ETIMEDOUT. */
int build_wait(struct build *x, int64_t timeout_ms);
const char *build_id(const struct build *x);
/* Once x ended: 0, or the -errno it failed with: a VM manager limit
 * (-EUSERS, -EMLINK, -EOVERFLOW, -ETOOMANYREFS, -EDQUOT, -ENOSPC) when
 * the account or the server had no room for its VM or snapshot, -EIO
 * for a failing step. What it made, or why it failed, is in its record. */
int build_outcome(const struct build *x);
/* Drops a reference from build_start; the build goes on without it. */
void build_put(struct build *x);

#endif

/*
 * dfrun: a baseImage's Dockerfile made real in a build VM (one booted from
 * the guest image). The plan, fixed before anything runs, is a list of
 * actions, each a phase of the build: fetch and unpack every image a stage
 * starts from other than the guest image itself (baseimg does the host's
 * part; the tarballs are unpacked inside the VM, never on the host); make
 * the stages that are copied from, each a tree in the VM that its RUN
 * steps see as / (chroot); and, when the last stage is another image, make
 * its tree bootable (systemd, through the image's apt when it has none; the
 * agent, its unit, the network and this kernel's modules) and boot the VM
 * into it. The last stage's steps then run in the VM itself, whose disk
 * the build snapshots. Uses the VM manager and baseimg.
 */
#ifndef SPROUT_DFRUN_H
#define SPROUT_DFRUN_H

#include "build/baseimg.h"
#include "build/dockerfile.h"
#include "vmm/vmm.h"

#include <stdint.h>

struct df_plan;

/* Resolves each image the used stages start from (baseimg_resolve) and
 * plans the actions. -EINVAL: an image that does not resolve (msg names
 * it); -ENOMEM. d and w must outlive the plan. */
int df_plan_new(const struct dockerfile *d, const struct baseimg_where *w, struct df_plan **ret, char *msg,
                size_t size);
void df_plan_free(struct df_plan *p);
/* The identity of the images it starts from: part of the layer's key. */
const char *df_plan_images(const struct df_plan *p);
/* Calls fn with each action's phase name, in order. */
void df_plan_phases(const struct df_plan *p, void (*fn)(void *ud, const char *name), void *ud);

struct df_run {
        struct vmm *m;
        const char *account, *vm;
        int64_t deadline_ms; /* a now_ms() value */
        void (*phase)(void *ud, const char *name);
        void *ud;
};

/* Runs the plan in the build VM. 0; or -EIO for a failing step, and <0
 * for a VM that failed, with *ret_report a JSON object (message and
 * diagnostics.stderr: the step's output) saying which and why. */
int df_plan_run(struct df_plan *p, const struct df_run *run, char **ret_report);

#endif

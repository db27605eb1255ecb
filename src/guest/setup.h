/*
 * setup: the create-time setup engine. What a create request asks a new
 * VM to have before it counts as running (additionalFiles, groups, users,
 * git config and repos, aptDeps, systemd.patchedServices and
 * systemd.services) is checked up front and then applied through the VM
 * manager's guest handle that the create hands to it (vmm_setup), within
 * readySignalTimeoutSeconds. Uses the VM manager's public interface only.
 */
#ifndef SPROUT_SETUP_H
#define SPROUT_SETUP_H

#include "vmm/vmm.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Checks every setup field of a create request body, so that a create
 * never starts a VM for a request it then refuses. 0, or -EINVAL with the
 * API error code in *ret_code (CREATE_VM_BAD_REQUEST, or a systemd spec's
 * own code) and a message in msg. */
int setup_check(json_t *body, const char **ret_code, char *msg, size_t size);

struct setup;

/* A setup for a checked body (a reference is taken), bounded by timeout_s
 * seconds once it runs (0: unbounded). NULL when out of memory. */
struct setup *setup_new(json_t *body, int64_t timeout_s);
/* NULL is a no-op. */
void setup_free(struct setup *x);

/* Makes x a build layer's setup: fn(ud, name) is called as each step
 * begins ("setup: aptDeps"...), and oneshot services (runCommands) are
 * waited for, a failed one failing the setup with its logs. */
void setup_for_build(struct setup *x, void (*fn)(void *ud, const char *name), void *ud);
/* Calls fn with the name of each step a build's setup of body takes, in
 * order, as setup_for_build reports them. */
void setup_steps(json_t *body, void (*fn)(void *ud, const char *name), void *ud);
/* Fills a vmm_setup that runs x. With background set the manager owns x
 * from then on and frees it (release); otherwise the caller frees it once
 * the create returned. When the setup fails, its report is a JSON object
 * text: {"message": "...", "diagnostics": {...}}. */
void setup_bind(struct setup *x, int background, struct vmm_setup *ret);

#endif

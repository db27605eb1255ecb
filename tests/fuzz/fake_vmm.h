/*
 * fake_vmm: an in-process stand-in for the VM manager (vmm.h) and the
 * store (store.h) for fuzz_api. It starts nothing and touches no file:
 * each call answers from a control stream of fuzz bytes (success, one of
 * the errors the real module documents, and what a guest said), and once
 * those run out every call succeeds with plausible canned data. The guest
 * modules (services, setup, stats, systemd) run for real on top of it.
 */
#ifndef SPROUT_FAKE_VMM_H
#define SPROUT_FAKE_VMM_H

#include <stddef.h>
#include <stdint.h>

/* API keys the fake store knows: an admin's and a plain account's. */
#define FAKE_ADMIN_KEY "sk-admin"
#define FAKE_USER_KEY "sk-user"

/* Starts a request: the fake answers from ctl (borrowed until the next
 * reset). */
void fake_vmm_reset(const uint8_t *ctl, size_t n);

/* Guest handles and watches open now: 0 once a request is answered and
 * its stream (if any) is done. */
int fake_vmm_open(void);

#endif

/*
 * vmm_names: the names of VM states and persistence kinds, as the API and
 * the store spell them. Depends on nothing else of the manager, so what
 * speaks only names (the fuzzing harness's fake manager) links this alone.
 */
#include "vmm/vmm.h"

#include <string.h>

static const char *const state_names[VM_STATE_COUNT] = {
        "building", "starting", "running", "suspending", "suspended", "stopped", "lost",
};

const char *vm_state_name(enum vm_state s)
{
        return s < VM_STATE_COUNT ? state_names[s] : "lost";
}

int vm_state_parse(const char *name)
{
        for (int i = 0; i < VM_STATE_COUNT; i++)
                if (!strcmp(name, state_names[i]))
                        return i;
        return -1;
}

static const char *const persist_names[] = {"sticky", "ephemeral", "persistent"};

const char *vm_persist_name(enum vm_persist p)
{
        return p <= VM_PERSIST_PERSISTENT ? persist_names[p] : "sticky";
}

int vm_persist_parse(const char *name)
{
        for (int i = 0; i <= VM_PERSIST_PERSISTENT; i++)
                if (name && !strcmp(name, persist_names[i]))
                        return i;
        return -1;
}

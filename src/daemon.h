/*
 * daemon: the one struct that holds sproutd's global state. Created by
 * main and set up before the HTTP server starts; only main includes it.
 */
#ifndef SPROUT_DAEMON_H
#define SPROUT_DAEMON_H

#include "api/api.h"
#include "ingress/proxy.h"

struct sprout {
        struct store *store; /* durable state */
        struct vmm *vmm;     /* VM manager */
        struct builder *builder; /* templates and specs into snapshots */
        struct api api;      /* the handlers' view of the two above */
        struct http *http;   /* HTTP server */
        struct proxy *proxy; /* ingress to VMs' ports; NULL: none */
};

#endif

/*
 * daemon: the one struct that holds sproutd's global state. Created by
 * main, handed to the HTTP layer and the API handlers; every field is set
 * before the HTTP server starts and not changed after.
 */
#ifndef SPROUT_DAEMON_H
#define SPROUT_DAEMON_H

#include <stddef.h>

struct sprout {
        struct store *store;      /* durable state */
        struct vmm *vmm;          /* VM manager */
        struct MHD_Daemon *mhd;   /* HTTP server */
        size_t max_body;          /* cap on a request body, bytes */
        unsigned max_connections; /* cap on concurrent HTTP connections */
};

#endif

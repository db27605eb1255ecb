/*
 * api: the HTTP API (Freestyle's /v1/vms paths, the admin key endpoint,
 * /healthz) behind the HTTP server: a route table, authentication, and
 * one handler file per resource family. Handlers parse and validate
 * requests, call the VM manager (and the guest modules above it) and
 * render JSON; they never talk to QEMU or the agent directly.
 */
#ifndef SPROUT_API_H
#define SPROUT_API_H

#include "http/http.h"

#include <stddef.h>

struct api_slots;
struct builder;

/* What the handlers work with; set before the server starts (api_init
 * sets up the rest). */
struct api {
        struct store *store;
        struct vmm *vmm;
        struct builder *builder; /* templates and specs into snapshots */
        /* Caps on one VM's size that a request may ask for. */
        int max_vm_mem_mb;
        int max_vm_vcpus;
        int max_vm_disk_gb;
        /* Requests that may last long (exec, await, watch, stats): how
         * many one account may have open at once, so that one tenant
         * cannot take every connection; and how long await and the
         * streams run at most. */
        int max_long_requests;
        int64_t max_request_ms;
        struct api_slots *slots; /* long requests open, per account */
        struct api_metrics *metrics; /* requests by operation (api_metrics.c) */
        const char *domain;      /* VMs' host names end in it (the ingress proxy's --domain) */
        const char *web_dir;     /* the web console's files (resolved), or NULL: none */
        int proxy_port;          /* the ingress proxy's port, or 0: none */
        int proxy_tls;           /* it also speaks HTTPS */
};

/* Sets up the handlers' own state; 0 or -ENOMEM. */
int api_init(struct api *a);
void api_free(struct api *a);

/* The HTTP server's handler (http_handler); ud is a struct api. Always
 * sets resp->status. */
void api_handle(void *ud, const struct http_req *req, struct http_resp *resp);

/* One row of the route table, as documentation and tests see it: the
 * method, the path pattern ("/v1/vms/{vm_id}/files/{filepath*}": {name}
 * matches one segment, {name*} the rest of the path) and the spec's
 * operationId. */
struct api_route_info {
        const char *method;
        const char *pattern;
        const char *operation;
};

/* The route table: row i (NULL past the end) and the number of rows. */
const struct api_route_info *api_route(size_t i);
size_t api_route_count(void);

/* Checks a VM id from a URL: 20 lowercase alphanumerics, or a shorter
 * legacy id that is right-padded with '0'. Writes the canonical id to out
 * and returns 0, or -EINVAL. */
int api_parse_vm_id(const char *s, char out[21]);

/* 0 if s is a snapshot id ("sc-" and 20 lowercase alphanumerics), or
 * a build id ("bd-" and as many); else -EINVAL. */
int api_parse_snapshot_id(const char *s);
int api_parse_build_id(const char *s);

#endif

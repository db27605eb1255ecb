/*
 * api: the HTTP API's routes and handlers (Freestyle's /v1/vms paths, the
 * admin key endpoint, /healthz). Parses and validates requests, checks the
 * API key, calls the VM manager and renders JSON. Handlers never talk to
 * QEMU or the agent directly. Called from HTTP connection threads.
 */
#ifndef SPROUT_API_H
#define SPROUT_API_H

#include "http.h"

/* Answers one complete request; always sets resp->status. */
void api_handle(struct sprout *d, const struct http_req *req, struct http_resp *resp);

/* Checks a VM id from a URL: 20 lowercase alphanumerics, or a shorter
 * legacy id that is right-padded with '0'. Writes the canonical id to out
 * and returns 0, or -EINVAL. */
int api_parse_vm_id(const char *s, char out[21]);

/* 0 if s is a snapshot id ("sc-" and 20 lowercase alphanumerics), else
 * -EINVAL. */
int api_parse_snapshot_id(const char *s);

#endif

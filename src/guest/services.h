/*
 * services: the systemd services the API manages inside a VM, through a
 * guest handle of the VM manager: unit files written by the agent,
 * systemctl and journalctl run as root. Unit text comes from systemd.h.
 * Used by the services endpoints and by create-time setup; speaks neither
 * HTTP nor JSON answers. Each function returns 0 or -errno: what the guest
 * handle failed with (-ETIMEDOUT, -ECONNRESET...), -EIO when a command
 * could not be run in the guest, or the meaning the function gives.
 */
#ifndef SPROUT_SERVICES_H
#define SPROUT_SERVICES_H

#include "vmm/vmm.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Runs a root shell command in the guest for at most timeout_ms (<= 0:
 * no limit). 0 with its stdout then stderr (malloc'd) and its exit code;
 * -EIO when it timed out or the agent could not run it. */
int svc_sh(struct vmm_guest *g, const char *cmd, int64_t timeout_ms, char **ret_out, int *ret_code);

/* A service spec, checked and rendered. */
struct svc_unit {
        char *name; /* bare: "web", not "web.service" */
        char *text; /* the unit file, or with patch the drop-in */
        int enable; /* the spec asks to be enabled */
        int oneshot;
};

/* Checks spec (a SystemdUnitSpec; with patch set, a drop-in over an
 * existing unit) and renders it, with user as User= when the spec names
 * none (may be NULL). -EINVAL for a bad spec, with the API error code in
 * *ret_code (SERVICE_NAME_*, EXEC_EMPTY, INVALID_PARAMETERS...) and a
 * message in msg; -ENOMEM. */
int svc_unit(json_t *spec, const char *user, int patch, struct svc_unit *ret, const char **ret_code, char *msg,
             size_t size);
void svc_unit_clear(struct svc_unit *u);

/* Checks a service name as it comes in a URL or a batch request and
 * returns its bare name (malloc'd); NULL with the error code and message
 * as svc_unit gives them. */
char *svc_name(const char *raw, const char **ret_code, char *msg, size_t size);

/* Writes the unit file; -EEXIST if the service exists. */
int svc_install(struct vmm_guest *g, const struct svc_unit *u);

/* Installs, enables (as the spec asked) and starts one service. *ret_ok
 * says whether it came up (a service that dies at once did not), with
 * *ret_message (malloc'd) saying why not. -EEXIST if it exists. */
int svc_create(struct vmm_guest *g, const struct svc_unit *u, int *ret_ok, char **ret_message);

/* The names of the services the API manages (their units carry the
 * marker), malloc'd; free with svc_names_free. */
int svc_list(struct vmm_guest *g, char ***ret_names, size_t *ret_n);
void svc_names_free(char **names, size_t n);

struct svc_status {
        char *load, *active, *sub, *description; /* may be NULL */
};

/* -ENOENT for a service systemd does not know. */
int svc_status(struct vmm_guest *g, const char *name, struct svc_status *ret);
void svc_status_clear(struct svc_status *s);

struct svc_log {
        char *message;
        int64_t time_ms; /* wall clock */
        char *priority;  /* may be NULL */
        char *unit;      /* may be NULL */
};

/* The service's last journal entries, at most lines (capped at 10000),
 * since a journalctl --since time when not NULL. -ENOENT for an unknown
 * service. */
int svc_logs(struct vmm_guest *g, const char *name, int64_t lines, const char *since, struct svc_log **ret,
             size_t *ret_n);
void svc_logs_free(struct svc_log *logs, size_t n);

/* Stops, disables and removes a service the API manages; -ENOENT for any
 * other. */
int svc_delete(struct vmm_guest *g, const char *name);

/* systemctl op ("start", "stop" or "restart") on one service; *ret_ok and
 * its output in *ret_message (malloc'd). */
int svc_control(struct vmm_guest *g, const char *op, const char *name, int *ret_ok, char **ret_message);

#endif

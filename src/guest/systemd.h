/*
 * systemd: turns the API's SystemdUnitSpec into a unit file for the guest,
 * and checks service names the way the SDK expects. Pure functions over
 * JSON and strings: no I/O, no VM access (the API layer writes the file and
 * runs systemctl through the VM manager). Units it writes carry a marker
 * line, so the guest itself records which services the API manages.
 */
#ifndef SPROUT_SYSTEMD_H
#define SPROUT_SYSTEMD_H

#include <jansson.h>

#define SYSD_MARKER "# managed-by: sprout"
#define SYSD_UNIT_DIR "/etc/systemd/system"

/* Checks a service name. Returns NULL when valid, else the API error code
 * (SERVICE_NAME_EMPTY, SERVICE_NAME_TOO_LONG, SERVICE_NAME_INVALID_CHARS,
 * SERVICE_NAME_INVALID_PREFIX) and a message in msg. A trailing ".service"
 * is accepted and ignored. */
const char *sysd_check_name(const char *name, char *msg, size_t size);

/* The bare name: "web.service" -> "web". Returns a malloc'd string. */
char *sysd_base_name(const char *name);

/* Renders spec as a unit file (malloc'd text). default_user, when not NULL,
 * is used as User= if the spec names none. On a bad spec returns NULL with
 * the error code (EXEC_EMPTY, INVALID_PARAMETERS...) in *ret_code and a
 * message in msg. With patch set, only the fields present are rendered (a
 * drop-in that overrides an existing unit). */
char *sysd_render(json_t *spec, const char *default_user, int patch, const char **ret_code, char *msg, size_t size);

/* 1 if spec asks to be enabled (the default), else 0. */
int sysd_wants_enable(json_t *spec);

/* Quotes s for a POSIX shell (single quotes). malloc'd. */
char *sysd_shell_quote(const char *s);

#endif

/*
 * qmp: a small client for QEMU's machine protocol (JSON lines over a Unix
 * socket). Connects, negotiates capabilities and runs one command at a time,
 * matching replies by id and skipping asynchronous events. Every reply line
 * is size-checked before it is parsed. Thread-safe: calls on one connection
 * are serialised by its own lock. Never logs; errors are returned.
 */
#ifndef SPROUT_QMP_H
#define SPROUT_QMP_H

#include <jansson.h>
#include <stdint.h>

struct qmp;

/* Connects to the QMP socket at path, retrying until it accepts or
 * timeout_ms passes, then reads the greeting and enters command mode.
 * 0 or -errno (-ETIMEDOUT). */
int qmp_connect(const char *path, int timeout_ms, struct qmp **ret);

/* Runs cmd with args (borrowed; may be NULL). On success returns 0 and, if
 * ret_return is not NULL, a new reference to the "return" value. A QMP error
 * reply returns -EPROTO and, if ret_error is not NULL, its description
 * (malloc'd). Transport failures return -errno (-ETIMEDOUT, -ECONNRESET). */
int qmp_call(struct qmp *q, const char *cmd, json_t *args, int timeout_ms, json_t **ret_return, char **ret_error);

/* Hands fd (which stays the caller's) to QEMU under name, for a later
 * command that names it ("fd:NAME" migration URIs). */
int qmp_pass_fd(struct qmp *q, const char *name, int fd, int timeout_ms);

/* The description of the last QMP error reply on q ("" if none). Valid
 * until the next call on q. */
const char *qmp_last_error(struct qmp *q);

/* Reads one line from QEMU as the answer to the command sent with id
 * want_id: 1 and a new reference in *ret_return (if not NULL) for its
 * "return"; -EPROTO and the malloc'd description in *ret_desc (if not
 * NULL) for its "error"; 0 for a line that is not that answer (an event, a
 * late reply to an earlier command); -EBADMSG for anything else. */
int qmp_parse_reply(const char *line, uint64_t want_id, json_t **ret_return, char **ret_desc);

/* Closes the connection and frees q; NULL is a no-op. */
void qmp_close(struct qmp *q);

#endif

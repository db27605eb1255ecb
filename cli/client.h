/*
 * client: the CLI's HTTP client for sproutd (and any Freestyle-compatible API).
 * One blocking request at a time over libcurl; bodies are JSON (jansson).
 * This module never prints: it returns the HTTP status, the raw body and the
 * parsed JSON, and the caller decides what to show the user.
 */
#ifndef SPROUT_CLI_CLIENT_H
#define SPROUT_CLI_CLIENT_H

#include <jansson.h>
#include <stddef.h>

/* The most the CLI accepts in one response body; larger answers fail. */
#define CLIENT_MAX_RESPONSE (512u * 1024 * 1024)

struct client {
        char *base_url;   /* without trailing slash, owned */
        char *key;        /* bearer token, owned; may be NULL */
        void *curl;       /* CURL handle, reused across requests */
        char errbuf[256]; /* libcurl's message for the last transport failure */
        const char *extra_header; /* "Name: value" sent with every request; may be NULL */
        /* Called about once a second while a request is in flight, from the
         * thread that made it; NULL: never. */
        void (*progress)(void *ctx);
        void *progress_ctx;
};

struct client_response {
        long status;  /* HTTP status code, 0 when no answer arrived */
        char *body;   /* raw body, NUL-terminated, owned */
        size_t len;   /* body length without the terminator */
        json_t *json; /* parsed body, or NULL when it is not JSON; owned */
};

/*
 * Prepares a client for base_url (trailing slashes are dropped) and key
 * (NULL sends no Authorization header). Returns 0 or -ENOMEM.
 */
int client_init(struct client *c, const char *base_url, const char *key);

/* Releases what client_init allocated; safe on a zeroed struct. */
void client_done(struct client *c);

/*
 * Sends METHOD base_url+path with body (a JSON value serialised as the
 * request body, or NULL for none) and fills *ret_resp. Returns 0 when an HTTP
 * answer arrived, whatever its status; -EIO when the transfer failed (the
 * reason is in c->errbuf), -EFBIG when the answer exceeded CLIENT_MAX_RESPONSE,
 * -ENOMEM. On failure *ret_resp is left zeroed. The caller releases the
 * response with client_response_done.
 */
int client_request(struct client *c, const char *method, const char *path, json_t *body,
                   struct client_response *ret_resp);

/*
 * Like client_request, for an answer that is a stream of lines (NDJSON).
 * While the status is 2xx, each line, without its newline and
 * NUL-terminated, goes to on_line as it arrives (the pointer is valid only
 * during the call); a nonzero return from on_line ends the transfer, and the
 * call then succeeds. *ret_resp gets the status, and for a non-2xx status
 * the whole body, as client_request fills it.
 */
int client_stream(struct client *c, const char *method, const char *path, json_t *body,
                  int (*on_line)(void *ctx, const char *line, size_t len), void *ctx,
                  struct client_response *ret_resp);

/* Releases a response; safe on a zeroed struct. */
void client_response_done(struct client_response *r);

/*
 * Returns a newly allocated copy of s with every byte outside the RFC 3986
 * unreserved set percent-encoded, so the result is one URL path segment
 * (a '/' becomes %2F). NULL when out of memory. The caller frees it.
 */
char *client_escape_segment(const char *s);

/*
 * Points *ret_code and *ret_message at the error code and human message of
 * an error response (from the "code"/"error" and "message" fields), or at
 * NULL when absent. The strings belong to r.
 */
void client_error_fields(const struct client_response *r, const char **ret_code, const char **ret_message);

#endif

/*
 * json: JSON helpers that more than one layer needs, over jansson. Holds
 * no state; safe from any thread.
 */
#ifndef SPROUT_JSON_H
#define SPROUT_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The bytes of a file as the API carries it, {content, encoding?}:
 * content decoded from base64 with encoding "base64", taken as it is with
 * none, "utf8" or "utf-8". 0 and a malloc'd buffer in *ret (owned by the
 * caller), or -EINVAL with *ret_why saying what is wrong, or -ENOMEM. */
int json_content(json_t *obj, uint8_t **ret, size_t *ret_len, const char **ret_why);

/* A string for a JSON value: the text, or null for NULL. */
json_t *json_str_or_null(const char *s);

/* Bytes from a guest as a JSON string, invalid UTF-8 replaced. NULL when
 * out of memory. */
json_t *json_text(const void *data, size_t len);

#endif

/*
 * json: shared JSON helpers. Depends on jansson and util.
 */
#include "lib/json.h"
#include "lib/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int json_content(json_t *obj, uint8_t **ret, size_t *ret_len, const char **ret_why)
{
        json_t *cv = json_object_get(obj, "content"), *ev = json_object_get(obj, "encoding");
        const char *enc = json_string_value(ev);

        if (!json_is_string(cv)) {
                *ret_why = "'content' must be a string";
                return -EINVAL;
        }
        if (ev && !json_is_null(ev) && (!enc || (strcmp(enc, "base64") && strcmp(enc, "utf8") && strcmp(enc, "utf-8")))) {
                *ret_why = "'encoding' must be 'utf8' or 'base64'";
                return -EINVAL;
        }
        if (enc && !strcmp(enc, "base64")) {
                if (base64_decode(json_string_value(cv), json_string_length(cv), ret, ret_len) < 0) {
                        *ret_why = "'content' is not valid base64";
                        return -EINVAL;
                }
                return 0;
        }
        *ret_len = json_string_length(cv);
        *ret = malloc(*ret_len + 1);
        if (!*ret) {
                *ret_why = "out of memory";
                return -ENOMEM;
        }
        memcpy(*ret, json_string_value(cv), *ret_len);
        return 0;
}

json_t *json_str_or_null(const char *s)
{
        return s ? json_string(s) : json_null();
}

json_t *json_text(const void *data, size_t len)
{
        size_t n;
        char *s = utf8_sanitize(data ? data : "", len, &n);
        json_t *j = s ? json_stringn_nocheck(s, n) : NULL;

        free(s);
        return j;
}

/*
 * fuzz_qmp: qmp_parse_reply (src/hv/qmp.c), which classifies one line
 * read from QEMU. The first 8 bytes are the id of the command waited for
 * (big-endian), the rest the line (made NUL-terminated). Besides "no crash,
 * no leak", the outcome must match the line: a reply is recognised only
 * for a JSON object whose integer "id" is the one waited for, and the
 * outputs are set exactly when the outcome says so.
 */
#include "fuzz.h"
#include "hv/qmp.h"

#include <errno.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct fz f = {data, size};
        uint64_t hi = fz_u32(&f), want = hi << 32 | fz_u32(&f);
        int want_outputs = size > 8 && (data[8] & 1);
        json_t *ret = (json_t *)&want, *msg, *id;
        char *desc = (char *)&want, *line;
        int r;

        line = malloc(f.n + 1);
        if (!line)
                return 0;
        memcpy(line, f.p, f.n);
        line[f.n] = 0;
        r = qmp_parse_reply(line, want, want_outputs ? &ret : NULL, want_outputs ? &desc : NULL);
        FUZZ_CHECK(r == 1 || r == 0 || r == -EPROTO || r == -EBADMSG);

        /* The same classification, independently. */
        msg = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
        id = json_object_get(msg, "id");
        if (!json_is_object(msg))
                FUZZ_CHECK(r == -EBADMSG);
        else if (!json_is_integer(id) || (uint64_t)json_integer_value(id) != want)
                FUZZ_CHECK(r == 0);
        else if (json_object_get(msg, "return"))
                FUZZ_CHECK(r == 1);
        else if (json_object_get(msg, "error"))
                FUZZ_CHECK(r == -EPROTO);
        else
                FUZZ_CHECK(r == -EBADMSG);
        json_decref(msg);

        if (want_outputs) {
                FUZZ_CHECK((r == 1) == (ret != (json_t *)&want));
                FUZZ_CHECK((r == -EPROTO) == (desc != (char *)&want));
                if (r == 1) {
                        FUZZ_CHECK(ret != NULL);
                        json_decref(ret);
                }
                if (r == -EPROTO) {
                        FUZZ_CHECK(desc != NULL);
                        free(desc);
                }
        }
        free(line);
        return 0;
}

/* Unit tests for QMP reply matching in src/hv/qmp.c. */
#include "hv/qmp.h"
#include "unit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Only the reply with the command's id answers it: events and a late
 * reply to an earlier command that timed out are skipped. */
TEST(qmp_reply_matched_by_id)
{
        json_t *ret = NULL;
        char *desc = NULL;

        CHECK(qmp_parse_reply("{\"return\": {\"status\": \"running\"}, \"id\": 7}", 7, &ret, &desc) == 1);
        CHECK(json_is_object(ret) && !strcmp(json_string_value(json_object_get(ret, "status")), "running"));
        json_decref(ret);
        ret = NULL;
        CHECK(qmp_parse_reply("{\"return\": {}, \"id\": 6}", 7, &ret, &desc) == 0 && !ret);
        CHECK(qmp_parse_reply("{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1}}", 7, &ret, &desc) == 0);
        CHECK(qmp_parse_reply("{\"return\": {}}", 7, &ret, &desc) == 0 && !ret);
        CHECK(qmp_parse_reply("{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": 7}", 7, &ret,
                              &desc) == -EPROTO);
        CHECK(desc && !strcmp(desc, "no"));
        free(desc);
        CHECK(qmp_parse_reply("[1, 2]", 7, &ret, NULL) == -EBADMSG);
        CHECK(qmp_parse_reply("{\"return\": 1", 7, &ret, NULL) == -EBADMSG);
        CHECK(qmp_parse_reply("{\"id\": 7}", 7, &ret, NULL) == -EBADMSG);
        CHECK(qmp_parse_reply("{\"id\": \"7\", \"return\": {}}", 7, &ret, NULL) == 0);
}

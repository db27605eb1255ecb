/* Unit tests for the frame header and TLV codec in proto/proto.c. */
#include "proto.h"
#include "unit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

TEST(proto_header_roundtrip)
{
        uint8_t h[PROTO_HDR_SIZE];
        struct proto_hdr d;

        proto_hdr_encode(h, 1234, 0xdeadbeef, PROTO_T_RESULT);
        CHECK(proto_hdr_decode(h, &d) == 0);
        CHECK(d.len == 1234 && d.stream == 0xdeadbeef && d.type == PROTO_T_RESULT && d.flags == 0);
}

TEST(proto_header_rejects_oversize_and_flags)
{
        uint8_t h[PROTO_HDR_SIZE];
        struct proto_hdr d;

        proto_hdr_encode(h, PROTO_MAX_PAYLOAD + 1, 1, PROTO_T_DATA);
        CHECK(proto_hdr_decode(h, &d) == -EBADMSG);
        proto_hdr_encode(h, 10, 1, PROTO_T_DATA);
        h[11] = 1;
        CHECK(proto_hdr_decode(h, &d) == -EBADMSG);
}

TEST(proto_tlv_roundtrip)
{
        struct proto_buf b = {0};
        uint32_t u32;
        uint64_t u64;
        char *s = NULL;

        proto_put_u32(&b, PROTO_TAG_OP, PROTO_OP_EXEC);
        proto_put_str(&b, PROTO_TAG_CMD, "echo hi");
        proto_put_u64(&b, PROTO_TAG_TIMEOUT_MS, 0x123456789abcULL);
        CHECK(!b.oom);
        CHECK(proto_get_u32(b.data, b.len, PROTO_TAG_OP, &u32) == 0 && u32 == PROTO_OP_EXEC);
        CHECK(proto_get_u64(b.data, b.len, PROTO_TAG_TIMEOUT_MS, &u64) == 0 && u64 == 0x123456789abcULL);
        CHECK(proto_get_str(b.data, b.len, PROTO_TAG_CMD, &s) == 0 && strcmp(s, "echo hi") == 0);
        free(s);
        CHECK(proto_get_u32(b.data, b.len, PROTO_TAG_USER, &u32) == -ENOENT);
        /* wrong width */
        CHECK(proto_get_u64(b.data, b.len, PROTO_TAG_OP, &u64) == -EBADMSG);
        proto_buf_free(&b);
}

TEST(proto_tlv_truncated_is_rejected)
{
        struct proto_buf b = {0};
        uint32_t u32;

        proto_put_str(&b, PROTO_TAG_CMD, "abcdef");
        proto_put_u32(&b, PROTO_TAG_OP, 7);
        for (size_t cut = 1; cut < b.len; cut++) {
                int r = proto_get_u32(b.data, b.len - cut, PROTO_TAG_OP, &u32);
                CHECK(r == -EBADMSG || r == -ENOENT);
        }
        proto_buf_free(&b);
}

TEST(proto_str_with_nul_is_rejected)
{
        struct proto_buf b = {0};
        char *s = NULL;

        proto_put_bytes(&b, PROTO_TAG_PATH, "a\0b", 3);
        CHECK(proto_get_str(b.data, b.len, PROTO_TAG_PATH, &s) == -EBADMSG);
        proto_buf_free(&b);
}

/*
 * fuzz_proto: the agent protocol's framing and TLV records (proto/) on
 * arbitrary bytes, read as a stream of frames the way both ends read the
 * port. Beyond "no crash", it holds the decoders to round trips: a header
 * that decodes encodes back to the same 12 bytes, a payload whose records
 * all iterate re-encodes to the same bytes, and the typed getters agree
 * with the iterator.
 */
#include "fuzz.h"
#include "proto.h"

#include <errno.h>

static uint32_t be32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The typed getters for tag against what the iterator found first. */
static void check_getters(const uint8_t *p, size_t n, const struct proto_tlv *first)
{
        uint32_t v32;
        uint64_t v64;
        char *s = NULL;
        int r;

        r = proto_get_u32(p, n, first->tag, &v32);
        FUZZ_CHECK(first->len == 4 ? r == 0 && v32 == be32(first->val) : r == -EBADMSG);
        r = proto_get_u64(p, n, first->tag, &v64);
        FUZZ_CHECK(first->len == 8 ? r == 0 && v64 == ((uint64_t)be32(first->val) << 32 | be32(first->val + 4))
                                   : r == -EBADMSG);
        r = proto_get_str(p, n, first->tag, &s);
        if (memchr(first->val, 0, first->len)) {
                FUZZ_CHECK(r == -EBADMSG);
        } else {
                FUZZ_CHECK(r == 0 && strlen(s) == first->len && !memcmp(s, first->val, first->len));
                free(s);
        }
}

/* Iterates a payload's records; when they all parse, re-encodes them. */
static void check_payload(const uint8_t *p, size_t n)
{
        struct proto_buf b = {0};
        struct proto_iter it;
        struct proto_tlv t, found;
        uint8_t seen[65536 / 8] = {0};
        size_t used = 0;
        int r;

        proto_iter_init(&it, p, n);
        while ((r = proto_iter_next(&it, &t)) > 0) {
                FUZZ_CHECK(t.val == p + used + 6 && t.len <= n - used - 6);
                used += 6 + (size_t)t.len;
                proto_put_bytes(&b, t.tag, t.val, t.len);
                /* The first record with each tag is what proto_find gives. */
                if (!(seen[t.tag / 8] & 1u << (t.tag % 8))) {
                        seen[t.tag / 8] |= (uint8_t)(1u << (t.tag % 8));
                        FUZZ_CHECK(proto_find(p, n, t.tag, &found) == 1 && found.val == t.val && found.len == t.len);
                        check_getters(p, n, &t);
                }
        }
        FUZZ_CHECK(r == 0 || r == -EBADMSG);
        if (r == 0) {
                FUZZ_CHECK(used == n && !b.oom && b.len == n);
                FUZZ_CHECK(n == 0 || !memcmp(b.data, p, n));
        } else {
                /* What was left could not hold the next record. */
                size_t left = n - used;

                FUZZ_CHECK(left > 0 && (left < 6 || be32(p + used + 2) > left - 6));
                FUZZ_CHECK(proto_find(p, n, 0xffff, &found) == -EBADMSG || seen[0xffff / 8] & 0x80);
        }
        proto_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        size_t off = 0;

        /* Frames one after another, as on the port. */
        while (size - off >= PROTO_HDR_SIZE) {
                struct proto_hdr h;
                uint8_t again[PROTO_HDR_SIZE];
                int r = proto_hdr_decode(data + off, &h);

                if (r < 0) {
                        FUZZ_CHECK(r == -EBADMSG);
                        FUZZ_CHECK(be32(data + off) > PROTO_MAX_PAYLOAD || data[off + 10] || data[off + 11]);
                        break;
                }
                FUZZ_CHECK(h.len <= PROTO_MAX_PAYLOAD && h.flags == 0);
                proto_hdr_encode(again, h.len, h.stream, h.type);
                FUZZ_CHECK(!memcmp(again, data + off, PROTO_HDR_SIZE));
                off += PROTO_HDR_SIZE;
                if (h.len > size - off)
                        break; /* a frame cut short: a reader waits for the rest */
                check_payload(data + off, h.len);
                off += h.len;
        }
        /* The whole input as one payload too, so records are reached
         * without a header in front. */
        check_payload(data, size);
        return 0;
}

/*
 * proto: frame headers and TLV records shared by sproutd and sprout-agent.
 * Depends on libc only. Every length read from the wire is checked against
 * what remains of the buffer before it is used.
 */
#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void put_be16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static uint16_t get_be16(const uint8_t *p)
{
        return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void proto_hdr_encode(uint8_t out[PROTO_HDR_SIZE], uint32_t len, uint32_t stream, uint16_t type)
{
        put_be32(out, len);
        put_be32(out + 4, stream);
        put_be16(out + 8, type);
        put_be16(out + 10, 0);
}

int proto_hdr_decode(const uint8_t in[PROTO_HDR_SIZE], struct proto_hdr *ret_hdr)
{
        struct proto_hdr h = {
                .len = get_be32(in),
                .stream = get_be32(in + 4),
                .type = get_be16(in + 8),
                .flags = get_be16(in + 10),
        };

        if (h.len > PROTO_MAX_PAYLOAD || h.flags != 0)
                return -EBADMSG;
        *ret_hdr = h;
        return 0;
}

void proto_buf_free(struct proto_buf *b)
{
        if (!b)
                return;
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
        b->oom = 0;
}

void proto_buf_append(struct proto_buf *b, const void *p, size_t n)
{
        if (b->oom || n == 0)
                return;
        if (b->len + n < b->len) {
                b->oom = 1;
                return;
        }
        if (b->len + n > b->cap) {
                size_t cap = b->cap ? b->cap : 256;
                uint8_t *d;

                while (cap < b->len + n)
                        cap *= 2;
                d = realloc(b->data, cap);
                if (!d) {
                        b->oom = 1;
                        return;
                }
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, p, n);
        b->len += n;
}

void proto_put_bytes(struct proto_buf *b, uint16_t tag, const void *p, size_t n)
{
        uint8_t h[6];

        if (n > UINT32_MAX) {
                b->oom = 1;
                return;
        }
        put_be16(h, tag);
        put_be32(h + 2, (uint32_t)n);
        proto_buf_append(b, h, sizeof(h));
        proto_buf_append(b, p, n);
}

void proto_put_str(struct proto_buf *b, uint16_t tag, const char *s)
{
        proto_put_bytes(b, tag, s, strlen(s));
}

void proto_put_u32(struct proto_buf *b, uint16_t tag, uint32_t v)
{
        uint8_t x[4];

        put_be32(x, v);
        proto_put_bytes(b, tag, x, sizeof(x));
}

void proto_put_u64(struct proto_buf *b, uint16_t tag, uint64_t v)
{
        uint8_t x[8];

        put_be32(x, (uint32_t)(v >> 32));
        put_be32(x + 4, (uint32_t)v);
        proto_put_bytes(b, tag, x, sizeof(x));
}

void proto_iter_init(struct proto_iter *it, const void *payload, size_t len)
{
        it->p = payload;
        it->left = payload ? len : 0;
}

int proto_iter_next(struct proto_iter *it, struct proto_tlv *ret_tlv)
{
        uint32_t n;

        if (it->left == 0)
                return 0;
        if (it->left < 6)
                return -EBADMSG;
        n = get_be32(it->p + 2);
        if (n > it->left - 6)
                return -EBADMSG;
        ret_tlv->tag = get_be16(it->p);
        ret_tlv->len = n;
        ret_tlv->val = it->p + 6;
        it->p += 6 + (size_t)n;
        it->left -= 6 + (size_t)n;
        return 1;
}

int proto_find(const void *payload, size_t len, uint16_t tag, struct proto_tlv *ret_tlv)
{
        struct proto_iter it;
        struct proto_tlv t;
        int r;

        proto_iter_init(&it, payload, len);
        while ((r = proto_iter_next(&it, &t)) > 0) {
                if (t.tag == tag) {
                        *ret_tlv = t;
                        return 1;
                }
        }
        return r;
}

int proto_get_u32(const void *payload, size_t len, uint16_t tag, uint32_t *ret)
{
        struct proto_tlv t;
        int r = proto_find(payload, len, tag, &t);

        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        if (t.len != 4)
                return -EBADMSG;
        *ret = get_be32(t.val);
        return 0;
}

int proto_get_u64(const void *payload, size_t len, uint16_t tag, uint64_t *ret)
{
        struct proto_tlv t;
        int r = proto_find(payload, len, tag, &t);

        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        if (t.len != 8)
                return -EBADMSG;
        *ret = ((uint64_t)get_be32(t.val) << 32) | get_be32(t.val + 4);
        return 0;
}

int proto_get_str(const void *payload, size_t len, uint16_t tag, char **ret)
{
        struct proto_tlv t;
        char *s;
        int r = proto_find(payload, len, tag, &t);

        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        if (memchr(t.val, 0, t.len))
                return -EBADMSG;
        s = malloc((size_t)t.len + 1);
        if (!s)
                return -ENOMEM;
        memcpy(s, t.val, t.len);
        s[t.len] = 0;
        *ret = s;
        return 0;
}

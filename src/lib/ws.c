/*
 * ws: the WebSocket frame header codec (see ws.h).
 */
#include "lib/ws.h"

#include <errno.h>

int ws_parse(const uint8_t *p, size_t n, struct ws_frame *f)
{
        size_t need = 2;
        uint64_t len;

        if (n < 2)
                return 0;
        f->fin = p[0] >> 7;
        f->opcode = p[0] & 0x0f;
        f->masked = p[1] >> 7;
        len = p[1] & 0x7f;
        if (p[0] & 0x70)
                return -EBADMSG; /* no extension was agreed */
        if (f->opcode != WS_CONT && f->opcode != WS_TEXT && f->opcode != WS_BINARY && f->opcode != WS_CLOSE &&
            f->opcode != WS_PING && f->opcode != WS_PONG)
                return -EBADMSG;
        if (f->opcode >= WS_CLOSE && (!f->fin || len > 125))
                return -EBADMSG;
        need += len == 126 ? 2 : len == 127 ? 8 : 0;
        need += f->masked ? 4 : 0;
        if (n < need)
                return 0;
        if (len == 126) {
                len = (uint64_t)p[2] << 8 | p[3];
        } else if (len == 127) {
                len = 0;
                for (int i = 0; i < 8; i++)
                        len = len << 8 | p[2 + i];
                if (len >> 63)
                        return -EBADMSG;
        }
        f->len = len;
        for (int i = 0; i < 4; i++)
                f->mask[i] = f->masked ? p[need - 4 + i] : 0;
        f->hdr_len = need;
        return (int)need;
}

size_t ws_header(uint8_t out[WS_HDR_MAX], int opcode, uint64_t len, const uint8_t *mask)
{
        size_t n = 2;

        out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
        if (len < 126) {
                out[1] = (uint8_t)len;
        } else if (len <= 0xffff) {
                out[1] = 126;
                out[n++] = (uint8_t)(len >> 8);
                out[n++] = (uint8_t)len;
        } else {
                out[1] = 127;
                for (int i = 7; i >= 0; i--)
                        out[n++] = (uint8_t)(len >> (8 * i));
        }
        if (mask) {
                out[1] |= 0x80;
                for (int i = 0; i < 4; i++)
                        out[n++] = mask[i];
        }
        return n;
}

void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
        for (size_t i = 0; i < n; i++)
                p[i] ^= mask[(offset + i) & 3];
}

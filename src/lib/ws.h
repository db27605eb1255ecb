/*
 * ws: WebSocket frames (RFC 6455), the header codec only: parsing a
 * frame's header from bytes received, writing one, and the masking that
 * clients apply. Used by the daemon's terminal endpoint and by the CLI's
 * `vm shell`. No I/O, no allocation.
 */
#ifndef SPROUT_WS_H
#define SPROUT_WS_H

#include <stddef.h>
#include <stdint.h>

enum ws_opcode {
        WS_CONT = 0x0,
        WS_TEXT = 0x1,
        WS_BINARY = 0x2,
        WS_CLOSE = 0x8,
        WS_PING = 0x9,
        WS_PONG = 0xA,
};

/* The largest header: 2 bytes, an 8-byte length, a 4-byte mask. */
#define WS_HDR_MAX 14

struct ws_frame {
        int fin;
        int opcode;
        int masked;
        uint8_t mask[4];
        uint64_t len;   /* payload bytes after the header */
        size_t hdr_len; /* bytes of the header */
};

/* Parses the frame header at the start of p (n bytes): its length (> 0)
 * with *f filled, 0 when more bytes are needed, or -EBADMSG for a header
 * no peer may send (reserved bits or opcode, a control frame that is
 * fragmented or over 125 bytes, a length with the top bit set). */
int ws_parse(const uint8_t *p, size_t n, struct ws_frame *f);

/* Writes into out the header of a frame (FIN set) of opcode carrying len
 * bytes, masked with mask (a client's frames) or not (NULL: a server's).
 * Returns its length. */
size_t ws_header(uint8_t out[WS_HDR_MAX], int opcode, uint64_t len, const uint8_t *mask);

/* XORs n payload bytes with mask; offset: where p starts in the payload. */
void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset);

#endif

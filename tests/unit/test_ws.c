/* The WebSocket frame header codec: lengths of each size round-trip, a
 * client's mask round-trips, and headers no peer may send are refused. */
#include "lib/ws.h"
#include "unit.h"

#include <errno.h>
#include <string.h>

TEST(ws_header_roundtrip)
{
        static const uint64_t lens[] = {0, 1, 125, 126, 65535, 65536, 1ull << 40};
        const uint8_t mask[4] = {1, 2, 3, 4};
        uint8_t hdr[WS_HDR_MAX];
        struct ws_frame f;

        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
                for (int m = 0; m < 2; m++) {
                        size_t n = ws_header(hdr, WS_BINARY, lens[i], m ? mask : NULL);

                        CHECK(ws_parse(hdr, n, &f) == (int)n);
                        CHECK(f.fin && f.opcode == WS_BINARY && f.len == lens[i] && f.masked == m);
                        CHECK(f.hdr_len == n && (!m || !memcmp(f.mask, mask, 4)));
                        /* every shorter prefix asks for more */
                        for (size_t k = 0; k < n; k++)
                                CHECK(ws_parse(hdr, k, &f) == 0);
                }
        }
        uint8_t data[6] = "hello";

        ws_mask(data, 5, mask, 0);
        CHECK(memcmp(data, "hello", 5) != 0);
        ws_mask(data, 2, mask, 0);
        ws_mask(data + 2, 3, mask, 2); /* in two pieces, by offset */
        CHECK(!memcmp(data, "hello", 5));
}

TEST(ws_parse_refuses_bad_headers)
{
        struct ws_frame f;
        const uint8_t rsv[] = {0x80 | 0x40 | WS_TEXT, 0};
        const uint8_t opcode[] = {0x80 | 0x3, 0};
        const uint8_t frag_ping[] = {WS_PING, 0};
        const uint8_t long_close[] = {0x80 | WS_CLOSE, 126, 0, 200};
        const uint8_t huge[] = {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1};

        CHECK(ws_parse(rsv, sizeof(rsv), &f) == -EBADMSG);
        CHECK(ws_parse(opcode, sizeof(opcode), &f) == -EBADMSG);
        CHECK(ws_parse(frag_ping, sizeof(frag_ping), &f) == -EBADMSG);
        CHECK(ws_parse(long_close, sizeof(long_close), &f) == -EBADMSG);
        CHECK(ws_parse(huge, sizeof(huge), &f) == -EBADMSG);
}

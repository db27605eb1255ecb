/*
 * fuzz: what the libFuzzer harnesses in tests/fuzz/ share: a check that
 * stops the run with a message (libFuzzer then saves the input), and a
 * reader that hands out the fuzz bytes a field at a time, answering zeros
 * once they run out so that a short input still takes a defined path.
 * Harnesses only; nothing in src/ includes this.
 */
#ifndef SPROUT_FUZZ_H
#define SPROUT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A broken invariant is a crash as far as libFuzzer is concerned. */
#define FUZZ_CHECK(cond)                                                                                     \
        do {                                                                                                 \
                if (!(cond)) {                                                                               \
                        fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #cond);        \
                        abort();                                                                             \
                }                                                                                            \
        } while (0)

/* The fuzz bytes not yet consumed. */
struct fz {
        const uint8_t *p;
        size_t n;
};

static inline uint8_t fz_u8(struct fz *f)
{
        uint8_t v;

        if (f->n == 0)
                return 0;
        v = *f->p++;
        f->n--;
        return v;
}

static inline uint16_t fz_u16(struct fz *f)
{
        uint16_t hi = fz_u8(f);

        return (uint16_t)(hi << 8 | fz_u8(f));
}

static inline uint32_t fz_u32(struct fz *f)
{
        uint32_t hi = fz_u16(f);

        return hi << 16 | fz_u16(f);
}

/* Up to n of the remaining bytes; *ret_len says how many there were. */
static inline const uint8_t *fz_bytes(struct fz *f, size_t n, size_t *ret_len)
{
        const uint8_t *p = f->p;

        if (n > f->n)
                n = f->n;
        f->p += n;
        f->n -= n;
        *ret_len = n;
        return p;
}

#endif

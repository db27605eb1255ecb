/*
 * fuzz_util: the small parsers and encoders that client and guest bytes
 * pass through on their way to an answer: percent-decoding of paths and
 * query values (http_decode), UTF-8 checks and repair, base64, file
 * content bodies (json_content), Linux user names, shell quoting and
 * timestamps. Each input goes through all of them, with round trips where
 * the function has an inverse.
 */
#include "fuzz.h"
#include "guest/systemd.h"
#include "http/http.h"
#include "lib/json.h"
#include "lib/util.h"

#include <ctype.h>
#include <errno.h>

/* Percent-decoding: NULL exactly for a bad escape or a NUL; otherwise
 * encoding every byte again decodes to the same. */
static void check_decode(const char *s, size_t n, int plus)
{
        char *out = http_decode(s, n, plus), *enc, *again;
        int bad = memchr(s, 0, n) != NULL;
        size_t m;

        for (size_t i = 0; i < n && !bad; i++)
                if (s[i] == '%') {
                        bad = i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) || !isxdigit((unsigned char)s[i + 2]) ||
                              (s[i + 1] == '0' && s[i + 2] == '0');
                        i += 2;
                }
        FUZZ_CHECK((out == NULL) == bad);
        if (!out)
                return;
        m = strlen(out);
        FUZZ_CHECK(m <= n);
        enc = malloc(m * 3 + 1);
        FUZZ_CHECK(enc != NULL);
        for (size_t i = 0; i < m; i++)
                snprintf(enc + i * 3, 4, "%%%02X", (unsigned char)out[i]);
        enc[m * 3] = 0;
        again = http_decode(enc, m * 3, plus);
        FUZZ_CHECK(again && !strcmp(again, out));
        free(again);
        free(enc);
        free(out);
}

static void check_utf8(const uint8_t *p, size_t n)
{
        size_t m;
        char *s = utf8_sanitize(p, n, &m);

        FUZZ_CHECK(s != NULL);
        if (!memchr(p, 0, n))
                FUZZ_CHECK(utf8_valid(s, m));
        if (utf8_valid(p, n))
                FUZZ_CHECK(m == n && !memcmp(s, p, n));
        free(s);
}

static void check_base64(const uint8_t *p, size_t n)
{
        char *enc = base64_encode(p, n);
        uint8_t *dec = NULL;
        size_t len = 0;

        FUZZ_CHECK(enc && strlen(enc) == (n + 2) / 3 * 4);
        FUZZ_CHECK(base64_decode(enc, strlen(enc), &dec, &len) == 0 && len == n && (n == 0 || !memcmp(dec, p, n)));
        free(dec);
        free(enc);
        /* Arbitrary text: refused, or decoded to what encodes back. */
        dec = NULL;
        if (base64_decode((const char *)p, n, &dec, &len) == 0) {
                enc = base64_encode(dec, len);
                FUZZ_CHECK(enc != NULL);
                free(enc);
                free(dec);
        }
}

/* useradd's rule, written out again. */
static int name_ok(const char *s)
{
        size_t n = strlen(s);

        if (n < 1 || n > 32 || !(islower((unsigned char)s[0]) || s[0] == '_'))
                return 0;
        for (size_t i = 1; i < n; i++)
                if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || strchr("_.-", s[i])))
                        return 0;
        return 1;
}

/* sysd_shell_quote: one single-quoted word that a shell reads back as s. */
static void check_quote(const char *s)
{
        char *q = sysd_shell_quote(s), *out, *o;
        const char *p;

        FUZZ_CHECK(q && q[0] == '\'');
        out = malloc(strlen(q) + 1);
        FUZZ_CHECK(out != NULL);
        for (p = q, o = out; *p;) {
                FUZZ_CHECK(*p == '\'');
                for (p++; *p && *p != '\''; p++)
                        *o++ = *p;
                FUZZ_CHECK(*p == '\'');
                p++;
                /* Between quoted runs only an escaped quote: \' */
                if (*p) {
                        FUZZ_CHECK(p[0] == '\\' && p[1] == '\'');
                        *o++ = '\'';
                        p += 2;
                }
        }
        *o = 0;
        FUZZ_CHECK(!strcmp(out, s));
        free(out);
        free(q);
}

/* RFC 3339 with milliseconds, whatever the time. */
static void check_time(int64_t t)
{
        char out[32];
        const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";

        memset(out, 'x', sizeof(out));
        format_time(t, out);
        FUZZ_CHECK(strlen(out) == strlen(shape));
        for (size_t i = 0; shape[i]; i++)
                FUZZ_CHECK(shape[i] == 'd' ? isdigit((unsigned char)out[i]) : out[i] == shape[i]);
}

static void check_content(const char *text, size_t n)
{
        json_t *j = json_loadb(text, n, 0, NULL);
        const char *why = NULL;
        uint8_t *data = NULL;
        size_t len = 0;
        int r;

        if (!j)
                return;
        r = json_content(j, &data, &len, &why);
        FUZZ_CHECK(r == 0 || (r == -EINVAL && why));
        if (r == 0)
                free(data);
        json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s = malloc(size + 1);
        struct fz f = {data, size};
        uint64_t hi;

        FUZZ_CHECK(s != NULL);
        memcpy(s, data, size);
        s[size] = 0;
        check_decode(s, size, 0);
        check_decode(s, size, 1);
        check_utf8(data, size);
        check_base64(data, size);
        FUZZ_CHECK(unix_name_valid(s) == name_ok(s));
        check_quote(s);
        check_content(s, size);
        hi = fz_u32(&f);
        check_time((int64_t)(hi << 32 | fz_u32(&f)));
        free(s);
        return 0;
}

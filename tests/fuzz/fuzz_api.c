/*
 * fuzz_api: the HTTP API (src/api/) in process: routing, authentication,
 * every endpoint's query, header and JSON body validation, the guest
 * modules behind them (services, setup, stats, systemd) and the JSON
 * answers, with the VM manager and the store replaced by fake_vmm.c.
 *
 * Input: an HTTP request as text, and after an optional "\0ctl\0" marker
 * the control bytes that choose what the fake manager and guest answer:
 *
 *   METHOD SP TARGET LF        TARGET is the path as sent, "?query" after
 *   Name: value LF ...         headers (Authorization, the Linux user...)
 *   LF
 *   BODY
 *
 * Every answer must have a status in 100..599 and a JSON body; an error
 * (>= 400) carries {"error", "code", "message"}; a 405 names the allowed
 * methods; a streamed answer yields JSON lines; every guest handle the
 * request opened is closed once the answer (and its stream) is done.
 */
#include "api/api.h"
#include "fake_vmm.h"
#include "fuzz.h"

#include <microhttpd.h>
#include <strings.h>

#define MAX_FIELDS 32

/* The request as the fake MHD connection holds it. */
struct fake_conn {
        const char *hdr_name[MAX_FIELDS], *hdr_value[MAX_FIELDS];
        size_t nhdr;
        const char *arg_name[MAX_FIELDS], *arg_value[MAX_FIELDS];
        size_t narg;
};

/* http.c asks libmicrohttpd for headers and query arguments; this
 * definition answers from the fake connection instead. */
const char *MHD_lookup_connection_value(struct MHD_Connection *connection, enum MHD_ValueKind kind, const char *key)
{
        const struct fake_conn *c = (const struct fake_conn *)connection;

        if (kind == MHD_HEADER_KIND) {
                for (size_t i = 0; i < c->nhdr; i++)
                        if (!strcasecmp(c->hdr_name[i], key))
                                return c->hdr_value[i];
        } else if (kind == MHD_GET_ARGUMENT_KIND) {
                for (size_t i = 0; i < c->narg; i++)
                        if (!strcmp(c->arg_name[i], key))
                                return c->arg_value[i];
        }
        return NULL;
}

/* Splits the request text (modified in place) into the fake connection,
 * method, path and body. */
static void parse_request(char *text, size_t len, struct fake_conn *c, const char **method, const char **path,
                          const char **body, size_t *body_len)
{
        char *end = text + len, *line = text, *nl, *q, *sp;

        memset(c, 0, sizeof(*c));
        nl = memchr(line, '\n', (size_t)(end - line));
        if (nl)
                *nl = 0;
        sp = strchr(line, ' ');
        if (sp)
                *sp = 0;
        *method = line;
        *path = sp ? sp + 1 : "";
        q = strchr(*path, '?');
        if (q) {
                char *save = NULL, *arg;

                *q = 0;
                for (arg = strtok_r(q + 1, "&", &save); arg && c->narg < MAX_FIELDS; arg = strtok_r(NULL, "&", &save)) {
                        char *eq = strchr(arg, '=');

                        if (eq)
                                *eq = 0;
                        c->arg_name[c->narg] = arg;
                        c->arg_value[c->narg++] = eq ? eq + 1 : NULL;
                }
        }
        line = nl ? nl + 1 : end;
        while (line < end && *line != '\n') {
                char *colon;

                nl = memchr(line, '\n', (size_t)(end - line));
                if (nl)
                        *nl = 0;
                colon = strchr(line, ':');
                if (colon && c->nhdr < MAX_FIELDS) {
                        *colon = 0;
                        c->hdr_name[c->nhdr] = line;
                        c->hdr_value[c->nhdr++] = colon[1] == ' ' ? colon + 2 : colon + 1;
                }
                line = nl ? nl + 1 : end;
        }
        if (line < end)
                line++; /* the empty line */
        *body = line;
        *body_len = (size_t)(end - line);
}

/* The project's error shape: {"error": CODE, "code": CODE, "message": ...}. */
static void check_error(json_t *body)
{
        const char *e = json_string_value(json_object_get(body, "error"));
        const char *code = json_string_value(json_object_get(body, "code"));

        FUZZ_CHECK(json_is_object(body) && e && code && !strcmp(e, code) && *code);
        FUZZ_CHECK(json_is_string(json_object_get(body, "message")));
}

/* Reads a streamed answer once (a stats stream sleeps before its second
 * sample) and ends it as the HTTP layer would. */
static void check_stream(struct http_resp *resp)
{
        static char buf[64 * 1024];
        long n = resp->stream(resp->stream_ctx, buf, sizeof(buf));

        FUZZ_CHECK(n >= -1 && n <= (long)sizeof(buf));
        /* A stats line is one JSON object; watch events pass through as
         * the guest wrote them. */
        if (n > 1 && buf[0] == '{' && memmem(buf, (size_t)n, "\"vmId\"", 6)) {
                json_t *j;

                FUZZ_CHECK(buf[n - 1] == '\n');
                j = json_loadb(buf, (size_t)n - 1, 0, NULL);
                FUZZ_CHECK(json_is_object(j));
                json_decref(j);
        }
        if (resp->stream_done)
                resp->stream_done(resp->stream_ctx);
}

static void check_answer(struct http_resp *resp)
{
        char *text;
        json_t *again;

        /* api_handle always sets a status; http.c would answer "no
         * answer" otherwise. */
        FUZZ_CHECK(resp->status >= 100 && resp->status <= 599);
        FUZZ_CHECK((resp->allow[0] != 0) == (resp->status == 405));
        /* A WebSocket: the HTTP layer would switch protocols, or, when it
         * could not, end it at once, as here. */
        if (resp->upgrade) {
                FUZZ_CHECK(resp->status == 101 && resp->upgrade_done && !resp->stream);
                resp->upgrade_done(resp->upgrade_ctx);
                json_decref(resp->body);
                return;
        }
        if (resp->stream) {
                FUZZ_CHECK(resp->status == 200);
                check_stream(resp);
                json_decref(resp->body);
                return;
        }
        /* A NULL body goes out as {}: a JSON answer that lost its
         * fields (json_pack failed). */
        FUZZ_CHECK(resp->body != NULL);
        text = json_dumps(resp->body, JSON_COMPACT | JSON_ENCODE_ANY);
        FUZZ_CHECK(text != NULL);
        /* Command output may hold NUL bytes, sent as \u0000: valid JSON. */
        again = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        FUZZ_CHECK(again != NULL);
        json_decref(again);
        free(text);
        if (resp->status >= 400)
                check_error(resp->body);
        json_decref(resp->body);
}

/* The id checks on every segment of the path. */
static void check_ids(const char *path)
{
        char seg[64], out[21];
        const char *s = path;

        while (*s) {
                size_t n = strcspn(s, "/");

                if (n < sizeof(seg)) {
                        memcpy(seg, s, n);
                        seg[n] = 0;
                        if (api_parse_vm_id(seg, out) == 0) {
                                FUZZ_CHECK(strlen(out) == 20 && n >= 1 && n <= 20 && !strncmp(out, seg, n));
                                for (size_t i = 0; i < 20; i++)
                                        FUZZ_CHECK((out[i] >= 'a' && out[i] <= 'z') || (out[i] >= '0' && out[i] <= '9'));
                        }
                        if (api_parse_snapshot_id(seg) == 0)
                                FUZZ_CHECK(n == 23 && !strncmp(seg, "sc-", 3));
                }
                s += n;
                if (*s)
                        s++;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const char marker[] = "\0ctl\0";
        struct api a = {
                .store = (struct store *)&a,
                .vmm = (struct vmm *)&a,
                .max_vm_mem_mb = 16384,
                .domain = "vm.localhost",
                .max_vm_vcpus = 8,
                .max_vm_disk_gb = 64,
                .max_long_requests = 2,
                .max_request_ms = 60000,
        };
        const uint8_t *ctl = memmem(data, size, marker, sizeof(marker) - 1);
        size_t req_len = ctl ? (size_t)(ctl - data) : size;
        struct http_resp resp = {0};
        struct http_req req = {0};
        struct fake_conn conn;
        char *text = malloc(req_len + 1);

        FUZZ_CHECK(text != NULL);
        memcpy(text, data, req_len);
        text[req_len] = 0;
        if (ctl)
                fake_vmm_reset(ctl + sizeof(marker) - 1, size - req_len - (sizeof(marker) - 1));
        else
                fake_vmm_reset(NULL, 0);
        parse_request(text, req_len, &conn, &req.method, &req.path, &req.body, &req.body_len);
        req.conn = (struct MHD_Connection *)&conn;
        /* http.c hands over a NUL-terminated body: text has its NUL. */
        FUZZ_CHECK(api_init(&a) == 0);
        api_handle(&a, &req, &resp);
        check_answer(&resp);
        FUZZ_CHECK(fake_vmm_open() == 0);
        api_free(&a);
        check_ids(req.path);
        free(text);
        return 0;
}

/*
 * client: blocking JSON-over-HTTP requests to sproutd through libcurl.
 * Depends on libcurl and jansson. Never prints and never exits: errors go
 * back to the caller, which reports them once with context.
 */
#include "client.h"
#include "lib/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Client lifetime                                                          */
/* ------------------------------------------------------------------------ */

int client_init(struct client *c, const char *base_url, const char *key)
{
        size_t n;

        memset(c, 0, sizeof(*c));
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                return -ENOMEM;
        c->base_url = strdup(base_url);
        if (!c->base_url)
                goto fail;
        n = strlen(c->base_url);
        while (n > 0 && c->base_url[n - 1] == '/')
                c->base_url[--n] = '\0';
        if (key) {
                c->key = strdup(key);
                if (!c->key)
                        goto fail;
        }
        c->curl = curl_easy_init();
        if (!c->curl)
                goto fail;
        return 0;
fail:
        client_done(c);
        return -ENOMEM;
}

void client_done(struct client *c)
{
        if (c->curl)
                curl_easy_cleanup(c->curl);
        free(c->base_url);
        free(c->key);
        memset(c, 0, sizeof(*c));
}

void client_response_done(struct client_response *r)
{
        free(r->body);
        json_decref(r->json);
        memset(r, 0, sizeof(*r));
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */
/* ------------------------------------------------------------------------ */

/* Accumulates a response body, refusing to grow past CLIENT_MAX_RESPONSE. */
struct client_sink {
        struct strbuf body;
        int too_big;
};

static size_t client_sink_write(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct client_sink *s = userdata;
        size_t n = size * nmemb;

        if (n > CLIENT_MAX_RESPONSE - s->body.len) {
                s->too_big = 1;
                return 0; /* makes libcurl abort the transfer */
        }
        return strbuf_add(&s->body, data, n) < 0 ? 0 : n;
}

/* Where a transfer's body goes: libcurl's write callback and its state. */
struct client_writer {
        size_t (*fn)(char *data, size_t size, size_t nmemb, void *userdata);
        void *ctx;
};

static int client_xferinfo(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                           curl_off_t ulnow)
{
        struct client *c = userdata;

        (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
        c->progress(c->progress_ctx);
        return 0;
}

/*
 * Sends METHOD base_url+path with body and hands every byte of the answer's
 * body to w. Returns 0 when an HTTP answer arrived (its status in
 * *ret_status), -EIO when the transfer failed or w stopped it (the reason in
 * c->errbuf), -ENOMEM.
 */
static int client_perform(struct client *c, const char *method, const char *path, json_t *body,
                          const struct client_writer *w, long *ret_status)
{
        struct curl_slist *headers = NULL, *h;
        char *url = NULL, *auth = NULL, *payload = NULL;
        CURLcode cc;
        int r = -ENOMEM;

        *ret_status = 0;
        c->errbuf[0] = '\0';
        if (asprintf(&url, "%s%s", c->base_url, path) < 0) {
                url = NULL;
                goto out;
        }
        h = curl_slist_append(headers, "Accept: application/json");
        if (!h)
                goto out;
        headers = h;
        if (c->key) {
                if (asprintf(&auth, "Authorization: Bearer %s", c->key) < 0) {
                        auth = NULL;
                        goto out;
                }
                h = curl_slist_append(headers, auth);
                if (!h)
                        goto out;
                headers = h;
        }
        if (body) {
                payload = json_dumps(body, JSON_COMPACT);
                if (!payload)
                        goto out;
                h = curl_slist_append(headers, "Content-Type: application/json");
                if (!h)
                        goto out;
                headers = h;
        }
        if (c->extra_header) {
                h = curl_slist_append(headers, c->extra_header);
                if (!h)
                        goto out;
                headers = h;
        }
        /* An empty Expect header stops libcurl waiting for "100 Continue". */
        h = curl_slist_append(headers, "Expect:");
        if (!h)
                goto out;
        headers = h;

        curl_easy_reset(c->curl);
        curl_easy_setopt(c->curl, CURLOPT_URL, url);
        curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(c->curl, CURLOPT_USERAGENT, "sprout-cli/1");
        curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, c->errbuf);
        curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, w->fn);
        curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, w->ctx);
        curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, 15L);
        if (c->progress) {
                curl_easy_setopt(c->curl, CURLOPT_NOPROGRESS, 0L);
                curl_easy_setopt(c->curl, CURLOPT_XFERINFOFUNCTION, client_xferinfo);
                curl_easy_setopt(c->curl, CURLOPT_XFERINFODATA, c);
        }
        /* Creating a VM may cold-boot a guest; no total timeout on purpose. */
        if (payload) {
                curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, payload);
                curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(payload));
        } else if (strcmp(method, "GET") != 0 && strcmp(method, "DELETE") != 0) {
                curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, "");
                curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
        }

        cc = curl_easy_perform(c->curl);
        if (cc != CURLE_OK) {
                if (!c->errbuf[0])
                        snprintf(c->errbuf, sizeof(c->errbuf), "%s", curl_easy_strerror(cc));
                r = -EIO;
                goto out;
        }
        curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, ret_status);
        r = 0;
out:
        curl_slist_free_all(headers);
        free(url);
        free(auth);
        free(payload);
        return r;
}

/* Makes *ret_resp of a status and a body (taken over; NULL is ""). */
static int client_answer(long status, struct strbuf *body, struct client_response *ret_resp)
{
        if (!body->s && !(body->s = strdup("")))
                return -ENOMEM;
        ret_resp->status = status;
        ret_resp->body = body->s;
        ret_resp->len = body->len;
        ret_resp->json = json_loadb(body->s, body->len, JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
        body->s = NULL;
        return 0;
}

int client_request(struct client *c, const char *method, const char *path, json_t *body,
                   struct client_response *ret_resp)
{
        struct client_sink sink = {0};
        const struct client_writer w = {client_sink_write, &sink};
        long status;
        int r;

        memset(ret_resp, 0, sizeof(*ret_resp));
        r = client_perform(c, method, path, body, &w, &status);
        if (r == -EIO && sink.too_big)
                r = -EFBIG;
        if (r == 0)
                r = client_answer(status, &sink.body, ret_resp);
        free(sink.body.s);
        return r;
}

/* A streamed answer: complete lines go to on_line while the status is 2xx;
 * any other answer is kept whole, to be reported. */
struct client_lines {
        struct client *c;
        int (*on_line)(void *ctx, const char *line, size_t len);
        void *ctx;
        struct strbuf buf; /* the partial last line, or the error body */
        long status;       /* 0 until the first byte */
        int stopped;       /* on_line asked to stop */
        int too_big;
};

static size_t client_lines_write(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct client_lines *s = userdata;
        size_t n = size * nmemb, start = 0;
        char *nl;

        if (!s->status)
                curl_easy_getinfo(s->c->curl, CURLINFO_RESPONSE_CODE, &s->status);
        if (n > CLIENT_MAX_RESPONSE - s->buf.len) {
                s->too_big = 1;
                return 0;
        }
        if (strbuf_add(&s->buf, data, n) < 0)
                return 0;
        if (s->status < 200 || s->status > 299)
                return n;
        while ((nl = memchr(s->buf.s + start, '\n', s->buf.len - start))) {
                size_t len = (size_t)(nl - (s->buf.s + start));

                *nl = '\0';
                if (s->on_line(s->ctx, s->buf.s + start, len)) {
                        s->stopped = 1;
                        return 0; /* ends the transfer */
                }
                start += len + 1;
        }
        memmove(s->buf.s, s->buf.s + start, s->buf.len - start + 1);
        s->buf.len -= start;
        return n;
}

int client_stream(struct client *c, const char *method, const char *path, json_t *body,
                  int (*on_line)(void *ctx, const char *line, size_t len), void *ctx,
                  struct client_response *ret_resp)
{
        struct client_lines s = {.c = c, .on_line = on_line, .ctx = ctx};
        const struct client_writer w = {client_lines_write, &s};
        long status;
        int r;

        memset(ret_resp, 0, sizeof(*ret_resp));
        r = client_perform(c, method, path, body, &w, &status);
        if (r == -EIO && s.stopped)
                r = 0, status = s.status;
        else if (r == -EIO && s.too_big)
                r = -EFBIG;
        if (r == 0 && status >= 200 && status <= 299) {
                /* A last line without its newline still counts. */
                if (!s.stopped && s.buf.len > 0)
                        on_line(ctx, s.buf.s, s.buf.len);
                s.buf.len = 0;
                if (s.buf.s)
                        s.buf.s[0] = '\0';
        }
        if (r == 0)
                r = client_answer(status, &s.buf, ret_resp);
        free(s.buf.s);
        return r;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

char *client_escape_segment(const char *s)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(s);
        char *out = malloc(n * 3 + 1), *p = out;

        if (!out)
                return NULL;
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;

                if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                    ch == '-' || ch == '_' || ch == '.' || ch == '~') {
                        *p++ = (char)ch;
                } else {
                        *p++ = '%';
                        *p++ = hex[ch >> 4];
                        *p++ = hex[ch & 15];
                }
        }
        *p = '\0';
        return out;
}

void client_error_fields(const struct client_response *r, const char **ret_code, const char **ret_message)
{
        const char *code = NULL, *message = NULL;

        if (json_is_object(r->json)) {
                code = json_string_value(json_object_get(r->json, "code"));
                if (!code)
                        code = json_string_value(json_object_get(r->json, "error"));
                message = json_string_value(json_object_get(r->json, "message"));
                if (!message)
                        message = json_string_value(json_object_get(r->json, "description"));
        }
        *ret_code = code;
        *ret_message = message;
}

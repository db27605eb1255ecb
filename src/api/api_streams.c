/*
 * api_streams: the endpoints that answer with a stream of JSON lines:
 * /v1/vms/{vm_id}/stats/stream (a memory and CPU sample every interval)
 * and /v1/vms/{vm_id}/watch-files (file-change events). Depends on the VM
 * manager's guest operations and the stats module.
 */
#include "api/api_int.h"
#include "guest/stats.h"
#include "lib/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct stats_stream {
        struct api *a;
        char *account;
        char id[21];
        int interval_ms;
        int samples;
        int64_t end; /* now_ms() past which the stream ends */
        struct stats_prev prev;
};

/* One sample as a JSON line into buf; -1 ends the stream (the VM is gone
 * or stopped). Each sample opens the VM anew, so a VM that went away ends
 * the stream. */
static long stats_next(void *ctx, char *buf, size_t max)
{
        struct stats_stream *s = ctx;
        struct stats_sample st;
        struct vmm_guest *g = NULL;
        char when[32], *line;
        json_t *j;
        long n;
        int r;

        if (s->samples++ > 0)
                sleep_ms(s->interval_ms);
        if (now_ms() > s->end)
                return -1; /* the server's cap on a request's length */
        r = vmm_guest_open(s->a->vmm, s->account, s->id, &g);
        if (r == 0)
                r = stats_take(g, &s->prev, &st);
        vmm_guest_close(g);
        if (r < 0)
                return -1;
        format_time(wall_ms(), when);
        j = json_pack("{s:s,s:s,s:{s:I,s:I,s:I,s:f},s:{s:f,s:i},s:[f,f,f]}", "vmId", s->id, "timestamp", when,
                      "memory", "totalBytes", (json_int_t)st.mem_total, "availableBytes", (json_int_t)st.mem_available,
                      "usedBytes", (json_int_t)(st.mem_total - st.mem_available), "usedPercent",
                      st.mem_total ? 100.0 * (double)(st.mem_total - st.mem_available) / (double)st.mem_total : 0.0,
                      "cpu", "usagePercent", st.cpu_percent, "count", st.cpus, "loadAverage", st.load[0], st.load[1],
                      st.load[2]);
        line = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!line)
                return -1;
        n = (long)strlen(line);
        if ((size_t)n + 1 > max) {
                free(line);
                return -1;
        }
        memcpy(buf, line, (size_t)n);
        buf[n++] = '\n';
        free(line);
        return n;
}

static void stats_done(void *ctx)
{
        struct stats_stream *s = ctx;

        free(s->account);
        free(s);
}

void api_stats_stream(struct api_call *c)
{
        struct vmm_info info = {0};
        struct stats_stream *s;
        int64_t interval = 1000;
        int r;

        if (api_query_int(c, "interval_ms", &interval) < 0)
                return;
        r = vmm_get(c->a->vmm, c->account, c->vm_id, &info);
        vmm_info_clear(&info);
        if (r < 0) {
                api_fail(c, r, API_VM, c->vm_id, NULL);
                return;
        }
        s = calloc(1, sizeof(*s));
        if (!s || !(s->account = strdup(c->account))) {
                free(s);
                api_error(c, 500, "INTERNAL_ERROR", "out of memory");
                return;
        }
        s->a = c->a;
        memcpy(s->id, c->vm_id, 21);
        s->interval_ms = (int)(interval < 100 ? 100 : interval > 10000 ? 10000 : interval);
        s->end = now_ms() + c->a->max_request_ms;
        c->resp->status = 200;
        c->resp->stream = stats_next;
        c->resp->stream_ctx = s;
        c->resp->stream_done = stats_done;
}

struct watch_stream {
        struct vmm_watch *w;
        int64_t end; /* now_ms() past which the stream ends */
};

static long watch_next(void *ctx, char *buf, size_t max)
{
        struct watch_stream *s = ctx;
        long n;

        if (now_ms() > s->end)
                return -1; /* the server's cap on a request's length */
        n = vmm_watch_read(s->w, buf, max, 10000);
        if (n != 0)
                return n > 0 ? n : -1;
        /* Nothing for 10 s: an empty line (which NDJSON readers skip)
         * finds out whether the client is still there. */
        buf[0] = '\n';
        return 1;
}

static void watch_done(void *ctx)
{
        struct watch_stream *s = ctx;

        vmm_watch_close(s->w);
        free(s);
}

void api_watch_files(struct api_call *c)
{
        struct vmm_guest *g = NULL;
        struct watch_stream *s = calloc(1, sizeof(*s));
        char *user = NULL;
        int r = s ? 0 : -ENOMEM;

        if (r == 0 && api_linux_user(c, &user) < 0) {
                free(s);
                return;
        }
        if (r == 0)
                r = vmm_guest_open(c->a->vmm, c->account, c->vm_id, &g);
        if (r == 0)
                r = vmm_guest_watch(g, NULL, user, &s->w);
        vmm_guest_close(g);
        free(user);
        if (r < 0) {
                free(s);
                api_fail(c, r, API_VM, c->vm_id, NULL);
                return;
        }
        s->end = now_ms() + c->a->max_request_ms;
        c->resp->status = 200;
        c->resp->stream = watch_next;
        c->resp->stream_ctx = s;
        c->resp->stream_done = watch_done;
}

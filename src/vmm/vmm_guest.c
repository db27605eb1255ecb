/*
 * vmm_guest: operations inside a VM through its agent: exec, files,
 * terminals and file watches, on a handle that holds an agent reference
 * and no lock (see vmm.h). Applies the server's caps and the VM's working
 * directory. Depends on agentc and util.
 */
#include "lib/util.h"
#include "vmm/vmm_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vm_use(struct vmm *m, struct vm *vm)
{
        vm_touch(m, vm);
        if (vm->error_code && !vm->qemu)
                return -ENOTRECOVERABLE;
        if (vm_hung(vm))
                return -EHOSTDOWN;
        if (vm->qemu && __atomic_load_n(&vm->disk_full, __ATOMIC_RELAXED))
                return -ENOSPC;
        return ensure_running(m, vm);
}

int vmm_guest_open(struct vmm *m, const char *account, const char *id, struct vmm_guest **ret)
{
        struct vmm_guest *g = calloc(1, sizeof(*g));
        struct vm *vm;
        int r;

        if (!g)
                return -ENOMEM;
        vm = vm_lock(m, account, id);
        if (!vm) {
                free(g);
                return -ENOENT;
        }
        if ((r = vm_use(m, vm)) < 0)
                ;
        else if (vm->workdir && !(g->workdir = strdup(vm->workdir)))
                r = -ENOMEM;
        else if ((g->agent = vm_agent(m, vm, 0, &r)))
                r = 0;
        if (r == 0) {
                g->m = m;
                g->vm = vm;
                memcpy(g->id, vm->id, sizeof(g->id));
                pthread_mutex_lock(&m->lock);
                vm->refs++;
                vm->inflight++;
                pthread_mutex_unlock(&m->lock);
        }
        vm_unlock(m, vm);
        if (r < 0) {
                free(g->workdir);
                free(g);
                return r;
        }
        *ret = g;
        return 0;
}

void vmm_guest_close(struct vmm_guest *g)
{
        if (!g)
                return;
        agentc_unref(g->agent);
        if (g->vm) {
                pthread_mutex_lock(&g->m->lock);
                if (--g->vm->inflight == 0)
                        pthread_cond_broadcast(&g->m->cond);
                pthread_mutex_unlock(&g->m->lock);
                vm_put(g->m, g->vm);
        }
        free(g->workdir);
        free(g);
}

/* Relative paths are taken from the VM's working directory (/root when
 * it has none). malloc'd. */
static char *resolve_path(const struct vmm_guest *g, const char *path)
{
        char *out = NULL;

        if (path[0] == '/')
                return strdup(path);
        if (asprintf(&out, "%s/%s", g->workdir ? g->workdir : "/root", path) < 0)
                return NULL;
        return out;
}

/* Logs a guest that did not answer in time, once per failed request; a
 * request cut short by a full data dir is -ENOSPC. */
static int guest_result(struct vmm_guest *g, const char *what, int r)
{
        if (r == -ETIMEDOUT)
                log_warn("vm %s: the guest agent did not answer a %s in time", g->id, what);
        /* Its link was cut because QEMU paused it on a full data dir. */
        if (r == -ECONNRESET && g->vm && __atomic_load_n(&g->vm->disk_full, __ATOMIC_RELAXED))
                r = -ENOSPC;
        return r;
}

int vmm_guest_exec(struct vmm_guest *g, const struct vmm_exec *e, struct agentc_result *ret)
{
        int64_t cap = g->m->cfg.max_exec_ms;
        struct agentc_exec x = {
                .command = e->command,
                .cwd = g->workdir,
                .terminal = e->terminal,
                .user = e->user,
                .timeout_ms = cap > 0 && (e->timeout_ms <= 0 || e->timeout_ms > cap) ? cap : e->timeout_ms,
                .max_output = g->m->cfg.max_output,
        };

        return guest_result(g, "command", agentc_exec(g->agent, &x, ret));
}

/* How long a file of len bytes may take to move: 30 s, and a second per
 * MiB on top. A guest that does not answer in that time fails the
 * request; it holds nothing else. */
static int64_t file_deadline_ms(size_t len)
{
        return 30000 + (int64_t)(len >> 20) * 1000;
}

int vmm_guest_read(struct vmm_guest *g, const char *path, const char *user, struct agentc_result *ret)
{
        char *full = resolve_path(g, path);
        size_t max = g->m->cfg.max_file_size;
        int r = full ? agentc_read(g->agent, full, user, max, file_deadline_ms(max), ret) : -ENOMEM;

        free(full);
        return guest_result(g, "file read", r);
}

int vmm_guest_write(struct vmm_guest *g, const char *path, const char *user, const void *data, size_t len,
                    unsigned mode, struct agentc_result *ret)
{
        char *full = resolve_path(g, path);
        int r = full ? agentc_write(g->agent, full, user, data, len, mode, g->m->cfg.max_file_size,
                                    file_deadline_ms(len), ret)
                     : -ENOMEM;

        free(full);
        return guest_result(g, "file write", r);
}

int vmm_guest_term_list(struct vmm_guest *g, struct agentc_result *ret)
{
        return agentc_term_list(g->agent, AGENT_TIMEOUT_MS, ret);
}

int vmm_guest_term_log(struct vmm_guest *g, const char *terminal, struct agentc_result *ret)
{
        return agentc_term_log(g->agent, terminal, 1 << 20, AGENT_TIMEOUT_MS, ret);
}

struct vmm_watch {
        struct agentc *agent;
        uint32_t stream;
};

int vmm_guest_watch(struct vmm_guest *g, const char *path, const char *user, struct vmm_watch **ret)
{
        struct vmm_watch *w = calloc(1, sizeof(*w));
        char *full = resolve_path(g, path ? path : g->workdir ? g->workdir : "/root");
        int r = -ENOMEM;

        /* Events queue here while the client reads; 4 MiB is a deep queue. */
        if (w && full)
                r = agentc_watch_open(g->agent, full, user, 4 << 20, &w->stream);
        free(full);
        if (r < 0) {
                free(w);
                return r;
        }
        w->agent = agentc_ref(g->agent);
        *ret = w;
        return 0;
}

long vmm_watch_read(struct vmm_watch *w, void *buf, size_t max, int timeout_ms)
{
        return agentc_stream_read(w->agent, w->stream, buf, max, timeout_ms);
}

void vmm_watch_close(struct vmm_watch *w)
{
        if (!w)
                return;
        agentc_stream_close(w->agent, w->stream);
        agentc_unref(w->agent);
        free(w);
}

struct vmm_pty {
        struct agentc *agent;
        uint32_t stream;
        char terminal[65];
        char *user;
};

int vmm_guest_pty(struct vmm_guest *g, const struct agentc_pty *p, struct vmm_pty **ret)
{
        struct vmm_pty *t = calloc(1, sizeof(*t));
        int r = -ENOMEM;

        if (t && strlen(p->terminal) < sizeof(t->terminal) && (!p->user || (t->user = strdup(p->user))))
                r = agentc_pty_open(g->agent, p, 1 << 20, &t->stream); /* output a slow client has not taken */
        if (r < 0) {
                if (t)
                        free(t->user);
                free(t);
                return r;
        }
        snprintf(t->terminal, sizeof(t->terminal), "%s", p->terminal);
        t->agent = agentc_ref(g->agent);
        *ret = t;
        return 0;
}

long vmm_pty_read(struct vmm_pty *t, void *buf, size_t max, int timeout_ms)
{
        return agentc_stream_read(t->agent, t->stream, buf, max, timeout_ms);
}

int vmm_pty_write(struct vmm_pty *t, const void *data, size_t len)
{
        return agentc_stream_write(t->agent, t->stream, data, len);
}

int vmm_pty_resize(struct vmm_pty *t, int rows, int cols)
{
        struct agentc_pty p = {.terminal = t->terminal, .user = t->user, .rows = rows, .cols = cols};
        struct agentc_result res = {0};
        int r = agentc_pty_resize(t->agent, &p, 5000, &res);

        if (r == 0 && res.err)
                r = -res.err;
        agentc_result_free(&res);
        return r;
}

int vmm_pty_status(struct vmm_pty *t)
{
        struct agentc_result res = {0};
        int r = agentc_stream_result(t->agent, t->stream, &res);

        if (r == 0)
                r = res.err ? -res.err : res.exit_code;
        agentc_result_free(&res);
        return r;
}

void vmm_pty_close(struct vmm_pty *t)
{
        if (!t)
                return;
        agentc_stream_close(t->agent, t->stream);
        agentc_unref(t->agent);
        free(t->user);
        free(t);
}

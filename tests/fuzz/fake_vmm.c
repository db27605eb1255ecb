/*
 * fake_vmm: see fake_vmm.h. Every answer is what the real module could
 * give: errors from its documented list, strings that came in through the
 * API as valid UTF-8, and guest bytes (command output, files, error
 * messages, terminal names) as arbitrary as agentc lets them be: any
 * bytes, no NUL in a name or a message, errno values below 4096.
 */
#include "fake_vmm.h"
#include "fuzz.h"
#include "lib/util.h"
#include "build/build.h"
#include "store/store.h"
#include "vmm/vmm.h"

#include <errno.h>

static struct fz ctl;
static int open_handles;

struct vmm_guest {
        int magic;
};

struct vmm_watch {
        uint8_t *data;
        size_t len, off;
};

void fake_vmm_reset(const uint8_t *p, size_t n)
{
        ctl = (struct fz){p, n};
        open_handles = 0;
}

int fake_vmm_open(void)
{
        return open_handles;
}

/* ---- answers from the control stream ---- */

/* 0 (most bytes, and every byte once the stream ran out) or one of the
 * errors the VM manager documents. */
static int outcome(void)
{
        static const int errs[] = {ENOENT,    ENOTCONN,     EUSERS,     EAGAIN,      ETIMEDOUT, ECONNRESET,
                                   EPIPE,     ENOTRECOVERABLE, EALREADY, EINVAL,     EMLINK,    EOVERFLOW,
                                   ETOOMANYREFS, EDQUOT,     ENOSPC,     ENOMEDIUM,   EIO,       ENOMEM,
                                   EHOSTDOWN, EHOSTUNREACH, EEXIST,     EBUSY,       ECANCELED, EPERM};
        uint8_t b = fz_u8(&ctl);

        return b < 0xc0 ? 0 : -errs[b % (sizeof(errs) / sizeof(errs[0]))];
}

/* Up to 2^16 bytes of guest data from the stream, or a copy of canned.
 * malloc'd (NULL when empty). */
static uint8_t *guest_bytes(const char *canned, size_t *ret_len)
{
        const uint8_t *p;
        uint8_t *out;
        size_t n;

        if (fz_u8(&ctl) & 1) {
                p = fz_bytes(&ctl, fz_u16(&ctl), &n);
        } else {
                p = (const uint8_t *)canned;
                n = strlen(canned);
        }
        *ret_len = n;
        if (n == 0)
                return NULL;
        out = malloc(n);
        FUZZ_CHECK(out != NULL);
        memcpy(out, p, n);
        return out;
}

/* Guest bytes as a C string: what agentc makes of a name or a message
 * (cut at the first NUL). */
static char *guest_text(const char *canned)
{
        size_t n;
        uint8_t *b = guest_bytes(canned, &n);
        char *s = strndup(b ? (const char *)b : "", n);

        FUZZ_CHECK(s != NULL);
        free(b);
        return s;
}

/* A string that reached the manager through the API: valid UTF-8. */
static char *api_text(const char *canned)
{
        size_t n, m;
        uint8_t *b = guest_bytes(canned, &n);
        char *s = utf8_sanitize(b ? b : (const uint8_t *)"", n, &m);

        FUZZ_CHECK(s != NULL);
        free(b);
        return s;
}

/* A failure inside the guest (err, errmsg), or success. */
static int guest_failed(struct agentc_result *res)
{
        uint8_t b = fz_u8(&ctl);

        if (b < 0xe0)
                return 0;
        res->err = b & 1 ? (int)(fz_u16(&ctl) % 4095) + 1 : (int[]){ENOENT, EACCES, EISDIR, ENOTDIR, EFBIG,
                                                                     E2BIG, EBUSY, ESRCH, EINVAL, ENOSPC}[b % 10];
        res->errmsg = b & 2 ? guest_text("") : NULL;
        return 1;
}

/* Directory or terminal entries from the guest. */
static void guest_entries(struct agentc_result *res, const char *const *canned, size_t ncanned)
{
        size_t n = ctl.n ? fz_u8(&ctl) % 6 : ncanned;

        res->entries = n ? calloc(n, sizeof(*res->entries)) : NULL;
        FUZZ_CHECK(n == 0 || res->entries);
        for (size_t i = 0; i < n; i++) {
                res->entries[i].name = guest_text(i < ncanned ? canned[i] : "x");
                res->entries[i].is_dir = fz_u8(&ctl) & 1;
        }
        res->nentries = n;
}

/* ---- vmm.h: VMs ---- */

void vmm_stats(struct vmm *m, struct vmm_stats *ret)
{
        (void)m;
        *ret = (struct vmm_stats){.pool_vms = fz_u8(&ctl) & 3, .pool_hits = fz_u8(&ctl)};
}

void vmm_metrics(struct vmm *m, struct strbuf *b)
{
        (void)m;
        strbuf_printf(b, "sprout_vms{state=\"running\"} %d\n", fz_u8(&ctl));
}

int vmm_ready(struct vmm *m, char *buf, size_t size)
{
        (void)m;
        if (fz_u8(&ctl) < 0xe0)
                return 1;
        if (buf)
                snprintf(buf, size, "making the default snapshot");
        return 0;
}

static void fill_info(const char *id, struct vmm_info *ret)
{
        uint8_t b = fz_u8(&ctl);

        memset(ret, 0, sizeof(*ret));
        snprintf(ret->id, sizeof(ret->id), "%s", id);
        ret->name = b & 1 ? api_text("web") : NULL;
        ret->workdir = b & 2 ? api_text("/srv") : NULL;
        ret->snapshot_id = b & 4 ? strdup("sc-00000000000000000001") : NULL;
        ret->state = (enum vm_state)(fz_u8(&ctl) % VM_STATE_COUNT);
        ret->created_at = (int64_t)fz_u32(&ctl) * 1000;
        ret->mem_mb = 1024;
        ret->vcpus = 2;
        if (b & 8)
                snprintf(ret->instance, sizeof(ret->instance), "inst0000000000000001");
        ret->pending_mem_mb = b & 16 ? 2048 : 0;
        ret->idle_timeout_s = 300;
        ret->disk_bytes = (int64_t)fz_u32(&ctl);
        if (b & 32) {
                /* A create that failed: the setup's report, which carries
                 * what the guest said. */
                ret->error_code = (int[]){-ECANCELED, -EINPROGRESS, -EIO, -ENOSPC}[fz_u8(&ctl) % 4];
                ret->error = guest_text("{\"message\":\"apt-get failed\",\"diagnostics\":{\"exitCode\":100}}");
        }
}

int vmm_create(struct vmm *m, const char *account, const struct vmm_create *opts, char ret_id[21],
               char **ret_report)
{
        const struct vmm_setup *s = opts->setup;
        int r = outcome();

        (void)m, (void)account;
        if (r == 0)
                snprintf(ret_id, 21, "fakevm00000000000001");
        if (r == 0 && s) {
                struct vmm_guest g = {0x5eed};
                char *report = NULL;

                open_handles++;
                r = s->run(s->ud, &g, &report);
                open_handles--;
                /* A background create keeps the VM and the failure. */
                if (r < 0 && !opts->background && ret_report) {
                        *ret_report = report;
                        report = NULL;
                }
                free(report);
                r = r < 0 && !opts->background ? -ECANCELED : 0;
        }
        /* The manager owns a background create's setup on every path. */
        if (s && opts->background && s->release)
                s->release(s->ud);
        return r;
}

int vmm_get(struct vmm *m, const char *account, const char *id, struct vmm_info *ret)
{
        int r = outcome();

        (void)m, (void)account;
        if (r == 0)
                fill_info(id, ret);
        return r;
}

int vmm_list(struct vmm *m, const char *account, int (*fn)(const struct vmm_info *vm, void *ud), void *ud)
{
        size_t n = ctl.n ? fz_u8(&ctl) % 4 : 2;
        int r = outcome();

        (void)m, (void)account;
        for (size_t i = 0; r == 0 && i < n; i++) {
                struct vmm_info info;
                char id[21];

                snprintf(id, sizeof(id), "fakevm%014zu", i);
                fill_info(id, &info);
                r = fn(&info, ud);
                vmm_info_clear(&info);
        }
        return r;
}

void vmm_info_clear(struct vmm_info *i)
{
        free(i->name);
        free(i->workdir);
        free(i->snapshot_id);
        free(i->error);
        memset(i, 0, sizeof(*i));
}

/* The operations that only succeed or fail. */
#define FAKE_VM_OP(fn)                                                                                       \
        int fn(struct vmm *m, const char *account, const char *id)                                           \
        {                                                                                                    \
                (void)m, (void)account, (void)id;                                                            \
                return outcome();                                                                            \
        }

FAKE_VM_OP(vmm_delete)
FAKE_VM_OP(vmm_suspend)
FAKE_VM_OP(vmm_start)
FAKE_VM_OP(vmm_stop)
FAKE_VM_OP(vmm_kill)
FAKE_VM_OP(vmm_optimize)
FAKE_VM_OP(vmm_snapshot_delete)

int vmm_await(struct vmm *m, const char *account, const char *id, int64_t timeout_ms, char ret_status[16])
{
        int r = outcome();

        (void)m, (void)account, (void)id, (void)timeout_ms;
        if (r == 0)
                snprintf(ret_status, 16, "%s", (const char *[]){"stopped", "lost", "deleted"}[fz_u8(&ctl) % 3]);
        return r;
}

int vmm_snapshot(struct vmm *m, const char *account, const char *id, const struct vmm_snapshot_opts *o,
                 char ret_snapshot[24])
{
        int r = outcome();

        (void)m, (void)account, (void)id;
        FUZZ_CHECK(o->persistence.kind == VM_PERSIST_STICKY || o->persistence.kind == VM_PERSIST_PERSISTENT);
        FUZZ_CHECK(o->persistence.priority >= 0 && o->persistence.priority <= 10);
        if (r == 0)
                snprintf(ret_snapshot, 24, "sc-00000000000000000002");
        return r;
}

int vmm_resize(struct vmm *m, const char *account, const char *id, int64_t disk_gb, int64_t mem_gb, int64_t vcpus)
{
        (void)m, (void)account, (void)id;
        FUZZ_CHECK(disk_gb >= 0 && mem_gb >= 0 && vcpus >= 0);
        return outcome();
}

int vmm_fork(struct vmm *m, const char *account, const char *id, int count, char (*ret_ids)[21])
{
        int r = outcome();

        (void)m, (void)account, (void)id;
        FUZZ_CHECK(count >= 1 && count <= VMM_MAX_FORKS);
        for (int i = 0; r == 0 && i < count; i++)
                snprintf(ret_ids[i], 21, "forkvm%014d", i);
        return r;
}

int64_t vmm_layer_usage(struct vmm *m, const char *layer)
{
        (void)m, (void)layer;
        return (int64_t)fz_u32(&ctl);
}

/* ---- vmm.h: guest operations ---- */

int vmm_guest_open(struct vmm *m, const char *account, const char *id, struct vmm_guest **ret)
{
        int r = outcome();

        (void)m, (void)account;
        FUZZ_CHECK(strlen(id) == 20);
        if (r < 0)
                return r;
        *ret = calloc(1, sizeof(**ret));
        FUZZ_CHECK(*ret != NULL);
        (*ret)->magic = 0x5eed;
        open_handles++;
        return 0;
}

void vmm_guest_close(struct vmm_guest *g)
{
        if (!g)
                return;
        FUZZ_CHECK(g->magic == 0x5eed);
        g->magic = 0;
        open_handles--;
        free(g);
}

/* What a command printed: canned output for the commands the services
 * module parses, so that its parsers run on sound input too. */
static const char *canned_output(const char *cmd)
{
        if (strstr(cmd, "systemctl show"))
                return "LoadState=loaded\nActiveState=active\nSubState=running\nDescription=web server\n";
        if (strstr(cmd, "journalctl"))
                return "{\"MESSAGE\":\"listening on :3000\",\"__REALTIME_TIMESTAMP\":\"1700000000000000\","
                       "\"PRIORITY\":\"6\",\"_SYSTEMD_UNIT\":\"web.service\"}\n";
        if (strstr(cmd, "grep -l"))
                return "/etc/systemd/system/web.service\n/etc/systemd/system/worker.service\n";
        return "";
}

int vmm_guest_exec(struct vmm_guest *g, const struct vmm_exec *e, struct agentc_result *ret)
{
        int r = outcome();
        uint8_t b;

        FUZZ_CHECK(g && g->magic == 0x5eed && e->command);
        if (r < 0)
                return r;
        memset(ret, 0, sizeof(*ret));
        if (guest_failed(ret))
                return 0;
        b = fz_u8(&ctl);
        ret->out.data = guest_bytes(canned_output(e->command), &ret->out.len);
        ret->errout.data = b & 1 ? guest_bytes("warning\n", &ret->errout.len) : NULL;
        ret->exit_code = b & 2 ? (int)(int8_t)fz_u8(&ctl) : 0;
        ret->timed_out = (b & 0x0c) == 0x0c;
        ret->overflow = (b & 0x30) == 0x30;
        return 0;
}

/* The guest's /proc files that the stats module reads. */
static const char *canned_file(const char *path)
{
        if (!strcmp(path, "/proc/meminfo"))
                return "MemTotal:        2035104 kB\nMemFree:         1522304 kB\nMemAvailable:    1754924 kB\n";
        if (!strcmp(path, "/proc/stat"))
                return "cpu  4705 356 584 3699 23 23 0 0 0 0\ncpu0 1393 280 184 1825 11 8 0 0 0 0\n"
                       "cpu1 3312 76 400 1874 12 15 0 0 0 0\nintr 0\n";
        if (!strcmp(path, "/proc/loadavg"))
                return "0.08 0.03 0.01 1/123 4567\n";
        return "hello\n";
}

int vmm_guest_read(struct vmm_guest *g, const char *path, const char *user, struct agentc_result *ret)
{
        static const char *const names[] = {"src", "README.md", "caf\xc3\xa9"};
        int r = outcome();

        (void)user;
        FUZZ_CHECK(g && g->magic == 0x5eed && path && *path);
        if (r < 0)
                return r;
        memset(ret, 0, sizeof(*ret));
        if (guest_failed(ret))
                return 0;
        if (fz_u8(&ctl) & 1) {
                ret->is_dir = 1;
                guest_entries(ret, names, 3);
        } else {
                ret->data.data = guest_bytes(canned_file(path), &ret->data.len);
                ret->overflow = (fz_u8(&ctl) & 3) == 3;
        }
        return 0;
}

int vmm_guest_write(struct vmm_guest *g, const char *path, const char *user, const void *data, size_t len,
                    unsigned mode, struct agentc_result *ret)
{
        int r = outcome();

        (void)user, (void)mode;
        FUZZ_CHECK(g && g->magic == 0x5eed && path && (data || len == 0));
        if (r < 0)
                return r;
        memset(ret, 0, sizeof(*ret));
        guest_failed(ret);
        return 0;
}

int vmm_guest_term_list(struct vmm_guest *g, struct agentc_result *ret)
{
        static const char *const names[] = {"build", "t1"};
        int r = outcome();

        FUZZ_CHECK(g && g->magic == 0x5eed);
        if (r < 0)
                return r;
        memset(ret, 0, sizeof(*ret));
        if (!guest_failed(ret))
                guest_entries(ret, names, 2);
        return 0;
}

int vmm_guest_term_log(struct vmm_guest *g, const char *terminal, struct agentc_result *ret)
{
        int r = outcome();

        FUZZ_CHECK(g && g->magic == 0x5eed && terminal);
        if (r < 0)
                return r;
        memset(ret, 0, sizeof(*ret));
        if (!guest_failed(ret))
                ret->data.data = guest_bytes("$ ls\r\n\033[1;34msrc\033[0m  README.md\r\n\033]0;title\007$ ",
                                             &ret->data.len);
        return 0;
}

int vmm_guest_watch(struct vmm_guest *g, const char *path, const char *user, struct vmm_watch **ret)
{
        int r = outcome();
        struct vmm_watch *w;

        (void)path, (void)user;
        FUZZ_CHECK(g && g->magic == 0x5eed);
        if (r < 0)
                return r;
        w = calloc(1, sizeof(*w));
        FUZZ_CHECK(w != NULL);
        w->data = guest_bytes("{\"kind\":\"created\",\"path\":\"/srv/a\"}\n", &w->len);
        open_handles++;
        *ret = w;
        return 0;
}

long vmm_watch_read(struct vmm_watch *w, void *buf, size_t max, int timeout_ms)
{
        size_t n = w->len - w->off;

        (void)timeout_ms;
        if (n == 0)
                return fz_u8(&ctl) & 1 ? 0 : -EPIPE;
        if (n > max)
                n = max;
        memcpy(buf, w->data + w->off, n);
        w->off += n;
        return (long)n;
}

void vmm_watch_close(struct vmm_watch *w)
{
        if (!w)
                return;
        open_handles--;
        free(w->data);
        free(w);
}

struct vmm_pty {
        int unused;
};

int vmm_guest_pty(struct vmm_guest *g, const struct agentc_pty *p, struct vmm_pty **ret)
{
        int r = outcome();

        FUZZ_CHECK(g && g->magic == 0x5eed && p->terminal && strlen(p->terminal) <= 64);
        FUZZ_CHECK(p->rows >= 0 && p->rows <= 1000 && p->cols >= 0 && p->cols <= 1000);
        if (r < 0)
                return r;
        *ret = calloc(1, sizeof(**ret));
        FUZZ_CHECK(*ret != NULL);
        open_handles++;
        return 0;
}

long vmm_pty_read(struct vmm_pty *t, void *buf, size_t max, int timeout_ms)
{
        (void)t, (void)buf, (void)max, (void)timeout_ms;
        return -EPIPE;
}

int vmm_pty_write(struct vmm_pty *t, const void *data, size_t len)
{
        (void)t, (void)data, (void)len;
        return 0;
}

int vmm_pty_resize(struct vmm_pty *t, int rows, int cols)
{
        (void)t, (void)rows, (void)cols;
        return 0;
}

int vmm_pty_status(struct vmm_pty *t)
{
        (void)t;
        return 0;
}

void vmm_ingress_touch(struct vmm *m, const char *id)
{
        (void)m, (void)id;
}

void vmm_pty_close(struct vmm_pty *t)
{
        if (!t)
                return;
        open_handles--;
        free(t);
}

/* ---- store.h ---- */

int store_auth(struct store *s, const char *key, char **ret_account_id, int *ret_admin)
{
        int admin = !strcmp(key, FAKE_ADMIN_KEY);

        (void)s;
        if (!admin && strcmp(key, FAKE_USER_KEY))
                return -ENOENT;
        if (fz_u8(&ctl) >= 0xf8)
                return -EIO;
        *ret_account_id = strdup(admin ? "acct-admin" : "acct-user");
        *ret_admin = admin;
        return *ret_account_id ? 0 : -ENOMEM;
}

int store_create_key(struct store *s, const char *account, int admin, char **ret_key, char **ret_account_id,
                     char **ret_account_name, char **ret_id)
{
        int r = fz_u8(&ctl) >= 0xf0 ? -EIO : 0;

        (void)s, (void)admin;
        if (r < 0)
                return r;
        *ret_key = strdup("sk-new-key-0123456789");
        *ret_account_id = strdup("acct-new");
        *ret_account_name = strdup(account ? account : "account-4f2a");
        if (ret_id)
                *ret_id = strdup("key-3");
        return 0;
}

int store_account_limits(struct store *s, const char *account_id, struct store_limits *ret)
{
        (void)s, (void)account_id;
        *ret = STORE_LIMITS_DEFAULT;
        ret->vms = fz_u8(&ctl) & 1 ? 10 : -1;
        return fz_u8(&ctl) >= 0xf0 ? -EIO : 0;
}

int store_account_set_limits(struct store *s, const char *account, const struct store_limits *l)
{
        (void)s, (void)account;
        FUZZ_CHECK(l->vms >= -1 && l->running >= -1 && l->snapshots >= -1 && l->mem_mb >= -1 && l->storage >= -1);
        return fz_u8(&ctl) >= 0xf0 ? -ENOENT : 0;
}

/* The keys of the fake store, as listed. */
static const struct store_key fake_keys[] = {
        {"key-1", "acct-admin", "admin", "sk-adm", 1, 1, 1700000000000},
        {"key-2", "acct-user", "user", NULL, 0, 0, 1700000001000},
};

int store_key_foreach(struct store *s, const char *account_id, int (*fn)(const struct store_key *k, void *ud),
                      void *ud)
{
        int r = fz_u8(&ctl) >= 0xf0 ? -EIO : 0;

        (void)s;
        for (size_t i = 0; r == 0 && i < 2; i++)
                if (!account_id || !strcmp(account_id, fake_keys[i].account_id))
                        r = fn(&fake_keys[i], ud);
        return r;
}

int store_key_delete(struct store *s, const char *account_id, const char *id)
{
        (void)s;
        for (size_t i = 0; i < 2; i++)
                if (!strcmp(id, fake_keys[i].id) && (!account_id || !strcmp(account_id, fake_keys[i].account_id)))
                        return fz_u8(&ctl) >= 0xf0 ? -EIO : 0;
        return -ENOENT;
}

/* A snapshot record whose strings all live in one allocation, which
 * starts at id: store_snapshot_clear frees that one block, and a caller
 * that freed a field on its own would fail under ASan. */
static void fill_snapshot(const char *account, const char *id, struct store_snapshot *ret)
{
        uint8_t b = fz_u8(&ctl);
        char *name = b & 1 ? api_text("nightly") : NULL;
        const char *kind = b & 4 ? "persistent" : "sticky", *src = b & 2 ? "fakevm00000000000001" : NULL;
        const char *state = (const char *[]){"ready", "ready", "building", "failed"}[(b >> 5) & 3];
        size_t len = strlen(id) + strlen(account) + (name ? strlen(name) : 0) + 128;
        char *p;

        memset(ret, 0, sizeof(*ret));
        p = malloc(len);
        FUZZ_CHECK(p != NULL);
        ret->id = p;
        p += sprintf(p, "%s", id) + 1;
        ret->account_id = p;
        p += sprintf(p, "%s", account) + 1;
        ret->layer = p;
        p += sprintf(p, "layer-1") + 1;
        ret->persist_kind = p;
        p += sprintf(p, "%s", kind) + 1;
        ret->state = p;
        p += sprintf(p, "%s", state) + 1;
        if (!strcmp(state, "failed")) {
                ret->failure_reason = p;
                p += sprintf(p, "setup: it failed") + 1;
        }
        if (src) {
                ret->source_vm_id = p;
                p += sprintf(p, "%s", src) + 1;
        }
        if (name) {
                ret->name = p;
                sprintf(p, "%s", name);
        }
        free(name);
        ret->persist_priority = fz_u8(&ctl) % 11;
        ret->created_at = (int64_t)fz_u32(&ctl) * 1000;
        ret->deleted = (b & 24) == 24;
        ret->mem_mb = 1024;
        ret->vcpus = 2;
}

int store_snapshot_get(struct store *s, const char *account, const char *id, struct store_snapshot *ret)
{
        (void)s;
        if (fz_u8(&ctl) >= 0xe0)
                return -ENOENT;
        fill_snapshot(account, id, ret);
        return 0;
}

int store_snapshot_foreach(struct store *s, const char *account,
                           int (*fn)(const struct store_snapshot *snap, void *ud), void *ud)
{
        size_t n = ctl.n ? fz_u8(&ctl) % 4 : 2;
        int r = 0;

        (void)s;
        for (size_t i = 0; r == 0 && i < n; i++) {
                struct store_snapshot snap;
                char id[24];

                snprintf(id, sizeof(id), "sc-%020zu", i);
                fill_snapshot(account, id, &snap);
                r = fn(&snap, ud);
                store_snapshot_clear(&snap);
        }
        return r;
}

int store_snapshot_set_name(struct store *s, const char *account, const char *id, const char *name)
{
        (void)s, (void)account, (void)id, (void)name;
        return fz_u8(&ctl) >= 0xe0 ? -ENOENT : 0;
}

void store_snapshot_clear(struct store_snapshot *snap)
{
        free(snap->id);
        memset(snap, 0, sizeof(*snap));
}

/* ---- build.h, and the store's build records ---- */

struct build {
        char id[24];
        int r;
};

static struct build the_build;

int build_start(struct builder *b, const char *account, json_t *chain, const struct build_opts *o,
                const char *bad_code, struct build **ret, const char **ret_code, char *msg, size_t size)
{
        int r = outcome();

        (void)b, (void)account, (void)o;
        FUZZ_CHECK(json_is_object(chain));
        *ret_code = bad_code;
        snprintf(msg, size, "a fake refusal");
        if (r < 0)
                return r == -ENOMEDIUM || r == -EAGAIN || r == -ENOMEM || r == -EBUSY ? r : -EINVAL;
        snprintf(the_build.id, sizeof(the_build.id), "bd-00000000000000000001");
        the_build.r = outcome();
        *ret = &the_build;
        return 0;
}

int build_wait(struct build *x, int64_t timeout_ms)
{
        (void)x, (void)timeout_ms;
        return fz_u8(&ctl) >= 0xf0 ? -ETIMEDOUT : 0;
}

const char *build_id(const struct build *x)
{
        return x->id;
}

void build_put(struct build *x)
{
        (void)x;
}

int store_build_get(struct store *s, const char *account, const char *id, struct store_build *ret)
{
        uint8_t b = fz_u8(&ctl);
        static const char *const states[] = {"pending", "running", "succeeded", "failed"};

        (void)s;
        if (b >= 0xe0)
                return -ENOENT;
        memset(ret, 0, sizeof(*ret));
        ret->id = strdup(id);
        ret->account_id = strdup(account ? account : "acct");
        ret->state = strdup(states[b & 3]);
        ret->planned_phases = strdup(b & 4 ? "[\"boot\",\"snapshot\"]" : "not json");
        ret->failure_reason = (b & 3) == 3 ? api_text("step: boom") : NULL;
        ret->snapshot_id = (b & 3) == 2 ? strdup("sc-00000000000000000009") : NULL;
        ret->started_at = 1000;
        ret->updated_at = 2000;
        ret->finished_at = (b & 2) ? 3000 : 0;
        FUZZ_CHECK(ret->id && ret->account_id && ret->state && ret->planned_phases);
        return 0;
}

int store_build_list(struct store *s, const char *account, int limit,
                     int (*fn)(const struct store_build *b, void *ud), void *ud)
{
        size_t n = ctl.n ? fz_u8(&ctl) % 4 : 2;
        int r = 0;

        FUZZ_CHECK(limit >= 1 && limit <= 1000);
        for (size_t i = 0; r == 0 && i < n && (int)i < limit; i++) {
                struct store_build b;
                char id[32];

                snprintf(id, sizeof(id), "bd-%020zu", i);
                if (store_build_get(s, account, id, &b) < 0)
                        continue;
                r = fn(&b, ud);
                store_build_clear(&b);
        }
        return r;
}

int store_build_phase_foreach(struct store *s, const char *build_id,
                              int (*fn)(const struct store_build_phase *p, void *ud), void *ud)
{
        size_t n = ctl.n ? fz_u8(&ctl) % 4 : 2;
        int r = 0;

        (void)s, (void)build_id;
        for (size_t i = 0; r == 0 && i < n; i++) {
                char *name = api_text("boot");
                struct store_build_phase p = {.seq = (int)i + 1, .name = name, .started_at = 1000 + (int64_t)i,
                                              .snapshot_id = i & 1 ? "sc-00000000000000000009" : NULL};

                r = fn(&p, ud);
                free(name);
        }
        return r;
}

void store_build_clear(struct store_build *b)
{
        free(b->id);
        free(b->account_id);
        free(b->request_id);
        free(b->state);
        free(b->template_hash);
        free(b->failure_reason);
        free(b->planned_phases);
        free(b->snapshot_id);
        free(b->vm_id);
        memset(b, 0, sizeof(*b));
}

int build_chain_trivial(json_t *chain)
{
        return json_object_size(chain) == 0;
}

int build_outcome(const struct build *x)
{
        return x->r;
}

/* ---- store.h: the ingress routes; ingress/proxy.h: host names ---- */

int store_ports_set(struct store *s, const char *vm_id, const struct store_port *p, size_t n)
{
        (void)s, (void)vm_id;
        for (size_t i = 0; i < n; i++)
                FUZZ_CHECK((p[i].port == 443 || p[i].port == 8081) && p[i].target >= 1 && p[i].target <= 65535);
        return fz_u8(&ctl) >= 0xf8 ? -EIO : 0;
}

int store_ports_get(struct store *s, const char *vm_id, struct store_port *ret, size_t max, size_t *ret_n)
{
        (void)s, (void)vm_id;
        *ret_n = 0;
        if (max > 0 && fz_u8(&ctl) & 1)
                ret[(*ret_n)++] = (struct store_port){443, 3000};
        return 0;
}

int store_domain_add(struct store *s, const char *domain, const char *account, const char *vm_id, int vm_port)
{
        (void)s, (void)account, (void)vm_id;
        FUZZ_CHECK(domain[0] && strlen(domain) <= 253 && vm_port >= 1 && vm_port <= 65535);
        return fz_u8(&ctl) >= 0xf0 ? -EEXIST : 0;
}

int store_domains_of(struct store *s, const char *vm_id, char ***ret)
{
        (void)s, (void)vm_id;
        *ret = calloc(2, sizeof(**ret));
        if (!*ret)
                return -ENOMEM;
        if (fz_u8(&ctl) & 1)
                (*ret)[0] = strdup("app.example.com");
        return 0;
}

int proxy_host_name(char *buf, size_t size, const char *id, int port, const char *domain)
{
        if (port == 443)
                snprintf(buf, size, "%s.%s", id, domain);
        else
                snprintf(buf, size, "%d-%s.%s", port, id, domain);
        return 0;
}

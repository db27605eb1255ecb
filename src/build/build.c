/*
 * build: templates and specs made into snapshots (see build.h). Depends on
 * the VM manager, the setup engine, the store, jansson and util.
 */
#include "build/build.h"
#include "build/dfrun.h"
#include "build/dockerfile.h"
#include "guest/setup.h"
#include "lib/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 16
/* Builds one account may have in progress (each holds a thread, and those
 * that are not waiting for another's layer a VM). */
#define BUILDS_PER_ACCOUNT 4
/* A layer's setup, unless its readySignalTimeoutSeconds says otherwise. */
#define LAYER_TIMEOUT_S 1800
/* How much of a failing step's output a failure reason keeps. */
#define REASON_TAIL 2000

/* The fields of a layer that make what it builds; every other field
 * (name, persistence, timeouts, ports...) is about the VMs made from it. */
static const char *const content_fields[] = {"additionalFiles", "users",     "groups",   "git",
                                             "gitRepos",        "aptDeps",   "systemd",  "rootfsSizeGb",
                                             "memSizeGb",       "vcpuCount", "baseImage"};

struct layer {
        json_t *spec;      /* the layer as asked (a reference) */
        json_t *content;   /* its content fields, normalised; the setup's body */
        char hash[65];     /* its cache key */
        char key[320];     /* what a layer on it names as its base */
        char base_sid[24]; /* on a snapshotId: that snapshot; else "" */
        int empty;         /* nothing to build: it is its base */
        int skip_cache;
        char label[32]; /* "layer 2/3: " or "" */
        int64_t timeout_s;
        char sid[24];         /* what it made or reused, once done */
        struct dockerfile df; /* its baseImage's steps; df.from NULL: none */
        struct df_plan *plan; /* what making df takes; NULL: none */
};

/* A layer being built, which another build wanting the same one waits for
 * rather than building it again. Under b->lock. */
struct layer_job {
        char *account;
        char hash[65];
        int done, r;
        char sid[24];
        char *report;
        int refs;
        struct layer_job *next;
};

struct build {
        struct builder *b;
        char id[24];
        char *account;
        char *name;
        struct vm_persistence persistence;
        struct layer layers[MAX_LAYERS]; /* innermost first */
        int n;
        int refs; /* under b->lock */
        int done; /* under b->lock */
        int r;
        char sid[24];
        char prefix[32];    /* the label of the layer in progress */
        struct build *next; /* in b->builds, while it runs */
};

struct builder {
        struct vmm *m;
        struct store *s;
        char cache_dir[PATH_MAX], log_path[PATH_MAX], *registries_conf;
        struct baseimg_where where; /* base images: the fetched ones there */
        pthread_mutex_t lock;
        pthread_cond_t cond; /* a build or layer job ended */
        struct layer_job *jobs;
        struct build *builds; /* in progress */
        int running;          /* build threads, and the recovery */
        int stopping;         /* builder_free was called */
};

/* ------------------------------------------------------------------ */
/* Planning                                                            */
/* ------------------------------------------------------------------ */

/* A copy of v without nulls, empty arrays and empty objects, at any depth
 * (the SDK sends git: {config: {}} for nothing); NULL when nothing is left. */
static json_t *normalised(json_t *v)
{
        json_t *r, *x;
        const char *k;
        size_t i;

        if (!v || json_is_null(v))
                return NULL;
        if (json_is_object(v)) {
                r = json_object();
                json_object_foreach(v, k, x)
                {
                        json_t *c = normalised(x);

                        if (c)
                                json_object_set_new(r, k, c);
                }
        } else if (json_is_array(v)) {
                r = json_array();
                json_array_foreach(v, i, x)
                {
                        json_t *c = normalised(x);

                        /* An array keeps its length: positions matter. */
                        json_array_append_new(r, c ? c : json_null());
                }
        } else {
                return json_incref(v);
        }
        if (json_is_object(r) ? json_object_size(r) == 0 : json_array_size(r) == 0) {
                json_decref(r);
                return NULL;
        }
        return r;
}

static json_t *inner_of(json_t *layer)
{
        json_t *t = json_object_get(layer, "template"), *s = json_object_get(layer, "snapshot");

        return json_is_object(t) ? t : json_is_object(s) ? s : NULL;
}

static int bad(char *msg, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *msg, size_t size, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, size, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* Splits the chain into layers, innermost first, and checks each. */
static int plan_layers(struct build *x, json_t *chain, const struct build_opts *o, const char **ret_code,
                       char *msg, size_t size)
{
        json_t *stack[MAX_LAYERS], *l = chain;
        int n = 0;

        for (; l; l = inner_of(l)) {
                json_t *t = json_object_get(l, "template"), *s = json_object_get(l, "snapshot");

                if (!json_is_object(l))
                        return bad(msg, size, "a layer must be an object");
                if (n == MAX_LAYERS)
                        return bad(msg, size, "a chain has at most %d layers", MAX_LAYERS);
                if (t && !json_is_null(t) && s && !json_is_null(s))
                        return bad(msg, size,
                                   "a layer has either 'template' or 'snapshot' inside it, not both");
                if ((t && !json_is_null(t) && !json_is_object(t)) ||
                    (s && !json_is_null(s) && !json_is_object(s)))
                        return bad(msg, size, "'template' and 'snapshot' must be objects");
                stack[n++] = l;
        }
        for (int i = 0; i < n; i++) {
                json_t *spec = stack[n - 1 - i], *sid = json_object_get(spec, "snapshotId");
                json_t *img = json_object_get(spec, "baseImage"),
                       *t = json_object_get(spec, "readySignalTimeoutSeconds");
                struct layer *y = &x->layers[i];
                const char *code = NULL;

                if (sid && !json_is_null(sid) && !json_is_string(sid))
                        return bad(msg, size, "'snapshotId' must be a string");
                if (json_is_string(sid) && img && !json_is_null(img))
                        return bad(msg, size, "'snapshotId' and 'baseImage' are mutually exclusive");
                if (json_is_string(sid) && inner_of(spec))
                        return bad(
                            msg, size, "%s",
                            "'snapshotId' and an inner 'snapshot' or 'template' are mutually exclusive");
                if (img && !json_is_null(img) && inner_of(spec))
                        return bad(
                            msg, size, "%s",
                            "'baseImage' and an inner 'snapshot' or 'template' are mutually exclusive");
                if (img && !json_is_null(img)) {
                        json_t *text = json_object_get(img, "dockerfileContent");
                        int k;

                        if (!json_is_string(text))
                                return bad(msg, size, "'baseImage.dockerfileContent' must be a string");
                        k = dockerfile_parse(json_string_value(text), &x->layers[i].df, msg, size);
                        if (k == 0)
                                k = df_plan_new(&x->layers[i].df, &x->b->where, &x->layers[i].plan, msg,
                                                size);
                        if (k < 0)
                                return k;
                }
                if (t && !json_is_null(t) && (!json_is_integer(t) || json_integer_value(t) < 0))
                        return bad(msg, size, "'readySignalTimeoutSeconds' must be a non-negative integer");
                if (setup_check(spec, &code, msg, size) < 0) {
                        if (code && strcmp(code, "CREATE_VM_BAD_REQUEST"))
                                *ret_code = code;
                        return -EINVAL;
                }
                y->spec = json_incref(spec);
                y->content = json_object();
                for (size_t k = 0; k < sizeof(content_fields) / sizeof(content_fields[0]); k++) {
                        json_t *c = normalised(json_object_get(spec, content_fields[k]));

                        if (c)
                                json_object_set_new(y->content, content_fields[k], c);
                }
                {
                        static const char *const sized[] = {"memSizeGb", "vcpuCount", "rootfsSizeGb"};
                        const int64_t caps[] = {o->max_mem_gb, o->max_vcpus, o->max_disk_gb};

                        for (int k = 0; k < 3; k++) {
                                json_t *v = json_object_get(spec, sized[k]);

                                if (v && !json_is_null(v) &&
                                    (!json_is_integer(v) || json_integer_value(v) < 0 ||
                                     json_integer_value(v) > caps[k])) {
                                        snprintf(msg, size, "'%s' must be an integer from 0 to %lld",
                                                 sized[k], (long long)caps[k]);
                                        return -EINVAL;
                                }
                        }
                }
                if (json_is_string(sid)) {
                        if (strlen(json_string_value(sid)) >= sizeof(y->base_sid))
                                return snprintf(msg, size, "snapshot %.40s not found",
                                                json_string_value(sid)),
                                       -ENOMEDIUM;
                        snprintf(y->base_sid, sizeof(y->base_sid), "%s", json_string_value(sid));
                }
                y->skip_cache = json_is_true(json_object_get(spec, "skipCache"));
                y->timeout_s =
                    json_is_integer(t) && json_integer_value(t) > 0 ? json_integer_value(t) : LAYER_TIMEOUT_S;
                /* The discriminator tells apart layers that are otherwise
                 * the same; it makes nothing on its own. */
                y->empty = json_object_size(y->content) == 0 && (i > 0 || y->base_sid[0]);
                if (json_is_string(json_object_get(spec, "discriminator")))
                        json_object_set(y->content, "discriminator", json_object_get(spec, "discriminator"));
        }
        x->n = n;
        return 0;
}

int build_chain_trivial(json_t *chain)
{
        json_t *sid = json_object_get(chain, "snapshotId"), *d = json_object_get(chain, "discriminator");

        if (inner_of(chain) || (sid && !json_is_null(sid)) || (d && !json_is_null(d)))
                return 0;
        for (size_t k = 0; k < sizeof(content_fields) / sizeof(content_fields[0]); k++) {
                json_t *c = normalised(json_object_get(chain, content_fields[k]));
                int has = c != NULL;

                json_decref(c);
                if (has)
                        return 0;
        }
        return 1;
}

/* Keys every layer: its content and its base's key, so the chain's keys
 * are known before any of it is built, and checks the snapshots it names. */
static int plan_keys(struct build *x, char *msg, size_t size)
{
        char image[256], base[320];
        int r = vmm_image_id(x->b->m, image, sizeof(image));

        if (r < 0)
                return r;
        for (int i = 0; i < x->n; i++) {
                struct layer *y = &x->layers[i];
                char *text;

                if (y->base_sid[0]) {
                        struct store_snapshot snap = {0};

                        r = store_snapshot_get(x->b->s, x->account, y->base_sid, &snap);
                        if (r == 0 && (snap.deleted || strcmp(snap.state, "ready")))
                                r = -ENOENT;
                        store_snapshot_clear(&snap);
                        if (r == -ENOENT) {
                                snprintf(msg, size, "snapshot %s not found", y->base_sid);
                                return -ENOMEDIUM;
                        }
                        if (r < 0)
                                return r;
                        snprintf(base, sizeof(base), "snapshot %s", y->base_sid);
                } else if (i > 0) {
                        snprintf(base, sizeof(base), "%s", x->layers[i - 1].key);
                } else {
                        snprintf(base, sizeof(base), "image %s", image);
                }
                if (y->empty) {
                        /* It is its base: a layer on it has the same key
                         * as one on its base. */
                        snprintf(y->key, sizeof(y->key), "%s", base);
                        snprintf(y->hash, sizeof(y->hash), "%s", i > 0 ? x->layers[i - 1].hash : "");
                        continue;
                }
                text = json_dumps(y->content, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
                if (!text)
                        return -ENOMEM;
                {
                        size_t n = strlen(base) + strlen(text) + 32 +
                                   (y->plan ? strlen(df_plan_images(y->plan)) : 0);
                        char *all = malloc(n);

                        if (!all) {
                                free(text);
                                return -ENOMEM;
                        }
                        snprintf(all, n, "sprout-layer-1\n%s\n%s%s", base, text,
                                 y->plan ? df_plan_images(y->plan) : "");
                        sha256_hex(all, strlen(all), y->hash);
                        free(all);
                }
                snprintf(y->key, sizeof(y->key), "layer %s", y->hash);
                free(text);
        }
        return 0;
}

struct planned {
        json_t *names;
        const char *label;
};

static void add_step(void *ud, const char *name)
{
        struct planned *p = ud;
        char full[192];

        snprintf(full, sizeof(full), "%s%s", p->label, name);
        json_array_append_new(p->names, json_string(full));
}

/* The phases the build will pass through, fixed at its start. */
static json_t *plan_phases(struct build *x)
{
        json_t *names = json_array();
        int total = 0, k = 0;

        for (int i = 0; i < x->n; i++)
                total += !x->layers[i].empty;
        for (int i = 0; i < x->n && names; i++) {
                struct layer *y = &x->layers[i];
                struct store_snapshot snap = {0};
                struct planned p = {names, y->label};

                if (y->empty)
                        continue;
                if (total > 1)
                        snprintf(y->label, sizeof(y->label), "layer %d/%d: ", ++k, total);
                if (!y->skip_cache && store_snapshot_cached(x->b->s, x->account, y->hash, &snap) == 0) {
                        add_step(&p, "(cached)");
                        store_snapshot_clear(&snap);
                        continue;
                }
                add_step(&p, "boot");
                if (y->plan)
                        df_plan_phases(y->plan, add_step, &p);
                setup_steps(y->content, add_step, &p);
                add_step(&p, "snapshot");
        }
        return names;
}

/* ------------------------------------------------------------------ */
/* Running                                                             */
/* ------------------------------------------------------------------ */

static void phase_at(struct build *x, const char *name, const char *sid)
{
        char full[192];
        int r;

        snprintf(full, sizeof(full), "%s%s", x->prefix, name);
        r = store_build_phase_add(x->b->s, x->id, full, sid, wall_ms());
        if (r < 0)
                log_warn("build %s: could not record phase '%s': %s", x->id, full, strerror(-r));
        else
                log_info("build %s: %s%s%s", x->id, full, sid ? " " : "", sid ? sid : "");
}

static void setup_phase(void *ud, const char *name)
{
        phase_at(ud, name, NULL);
}

/* A report for a failure of the build itself (not of a guest step):
 * "what: why". */
static char *report_of(const char *what, int r)
{
        char text[512];
        json_t *j;
        char *s;

        snprintf(text, sizeof(text), "%s: %s", what, strerror(-r));
        j = json_pack("{s:s}", "message", text);
        s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        return s;
}

/* The failure reason of a setup report: its message, then the tail of the
 * failing step's output. */
static char *reason_of(const char *label, const char *report)
{
        json_t *j = report ? json_loads(report, 0, NULL) : NULL;
        json_t *d = json_object_get(j, "diagnostics");
        const char *m = json_string_value(json_object_get(j, "message"));
        const char *out = json_string_value(json_object_get(d, "stderr"));
        char *reason = NULL;
        size_t n;

        if (!out)
                out = json_string_value(
                    json_object_get(json_array_get(json_object_get(d, "failedUnits"), 0), "logs"));
        n = out ? strlen(out) : 0;
        if (asprintf(&reason, "%s%s%s%s", label, m ? m : "the build failed",
                     out && !strstr(m ? m : "", out) ? "\n" : "",
                     out && !strstr(m ? m : "", out) ? out + (n > REASON_TAIL ? n - REASON_TAIL : 0) : "") <
            0)
                reason = NULL;
        json_decref(j);
        return reason;
}

/* Boots a VM from the layer's base, applies its setup, snapshots it with
 * memory into the snapshot record sid (made here, "building"), and
 * deletes the VM. */
static int build_layer(struct build *x, struct layer *y, const char *base, int outermost, char **ret_report)
{
        struct builder *b = x->b;
        struct store_snapshot rec = {0};
        struct vmm_create c = {.idle_timeout_s = 0,
                               .persistence = {VM_PERSIST_PERSISTENT, 5, VM_SUSPENDED},
                               .snapshot_id = base[0] ? base : NULL,
                               .build_id = x->id,
                               .internal = 1};
        struct vmm_snapshot_opts so = {.name = outermost ? x->name : NULL,
                                       .persistence = outermost ? x->persistence : VM_PERSISTENCE_DEFAULT,
                                       .building_id = y->sid,
                                       .build_id = x->id,
                                       .template_hash = y->hash};
        struct vmm_guest *g = NULL;
        struct vmm_info info = {0};
        struct setup *setup = NULL;
        char vm[21] = "", name[64];
        int r;

        memcpy(y->sid, "sc-", 3);
        r = random_id(y->sid + 3, 20);
        rec.id = y->sid;
        rec.account_id = x->account;
        rec.name = (char *)so.name;
        rec.layer = (char *)"";
        rec.persist_kind = (char *)vm_persist_name(so.persistence.kind);
        rec.persist_priority = so.persistence.priority;
        rec.created_at = wall_ms();
        rec.state = (char *)"building";
        rec.build_id = x->id;
        rec.template_hash = y->hash;
        if (r == 0)
                r = store_snapshot_insert(b->s, &rec);
        if (r < 0) {
                *ret_report = report_of("could not record the snapshot", r);
                return r;
        }
        phase_at(x, "boot", NULL);
        snprintf(name, sizeof(name), "build %s", x->id);
        c.name = name;
        r = vmm_create(b->m, x->account, &c, vm, NULL);
        if (r == 0)
                r = store_build_set_vm(b->s, x->id, vm);
        if (r == 0)
                r = vmm_get(b->m, x->account, vm, &info);
        if (r == 0) {
                json_t *mem = json_object_get(y->content, "memSizeGb"),
                       *cpu = json_object_get(y->content, "vcpuCount");
                json_t *disk = json_object_get(y->content, "rootfsSizeGb");
                int64_t want_mem = json_integer_value(mem) * 1024, want_cpu = json_integer_value(cpu);
                int cold =
                    (want_mem > 0 && want_mem != info.mem_mb) || (want_cpu > 0 && want_cpu != info.vcpus);

                if (json_integer_value(disk) > 0) {
                        r = vmm_resize(b->m, x->account, vm, json_integer_value(disk), 0, 0);
                        if (r == -EINVAL)
                                r = 0; /* the base's disk is that big already */
                }
                /* Memory and vCPUs other than the base's need a cold boot. */
                if (r == 0 && cold)
                        r = vmm_resize(b->m, x->account, vm, 0, want_mem > 0 ? json_integer_value(mem) : 0,
                                       want_cpu);
                if (r == 0 && cold)
                        r = vmm_stop(b->m, x->account, vm);
                if (r == 0 && cold)
                        r = vmm_start(b->m, x->account, vm);
        }
        vmm_info_clear(&info);
        if (r < 0) {
                *ret_report = report_of("could not boot the build VM", r);
                goto out;
        }
        if (y->plan) {
                struct df_run run = {.m = b->m,
                                     .account = x->account,
                                     .vm = vm,
                                     .deadline_ms = now_ms() + y->timeout_s * 1000,
                                     .phase = setup_phase,
                                     .ud = x};

                r = df_plan_run(y->plan, &run, ret_report);
                if (r < 0)
                        goto out;
        }
        setup = setup_new(y->content, y->timeout_s);
        r = setup ? vmm_guest_open(b->m, x->account, vm, &g) : -ENOMEM;
        if (r == 0) {
                struct vmm_setup vs;

                setup_for_build(setup, setup_phase, x);
                setup_bind(setup, 0, &vs);
                r = vs.run(vs.ud, g, ret_report);
                vmm_guest_close(g);
                if (r < 0 && !*ret_report)
                        *ret_report = report_of("the setup failed", r);
        } else {
                *ret_report = report_of("could not reach the build VM", r);
        }
        setup_free(setup);
        if (r < 0)
                goto out;
        crash_point("build.setup");
        phase_at(x, "snapshot", NULL);
        r = vmm_snapshot(b->m, x->account, vm, &so, y->sid);
        if (r < 0)
                *ret_report = report_of("could not take the snapshot", r);
        else
                crash_point("build.snapshot");
out:
        if (vm[0]) {
                int k = vmm_delete(b->m, x->account, vm);

                if (k < 0 && k != -ENOENT)
                        log_warn("build %s: could not delete its VM %s: %s", x->id, vm, strerror(-k));
                store_build_set_vm(b->s, x->id, NULL);
        }
        if (r < 0) {
                char *reason = reason_of("", *ret_report);
                int k = store_snapshot_fail(b->s, y->sid, reason ? reason : "the build failed");

                if (k < 0)
                        log_warn("build %s: could not mark snapshot %s failed: %s", x->id, y->sid,
                                 strerror(-k));
                free(reason);
        }
        return r;
}

static void job_put(struct builder *b, struct layer_job *j)
{
        if (--j->refs > 0)
                return;
        for (struct layer_job **p = &b->jobs; *p; p = &(*p)->next) {
                if (*p == j) {
                        *p = j->next;
                        break;
                }
        }
        free(j->account);
        free(j->report);
        free(j);
}

/* Makes or reuses one layer: the cache, or a build of the same layer in
 * progress, or a build of its own. */
static int run_layer(struct build *x, struct layer *y, const char *base, int outermost, char **ret_report)
{
        struct builder *b = x->b;
        struct store_snapshot snap = {0};
        struct layer_job *j;
        int r;

        pthread_mutex_lock(&b->lock);
        if (!y->skip_cache && store_snapshot_cached(b->s, x->account, y->hash, &snap) == 0) {
                pthread_mutex_unlock(&b->lock);
                snprintf(y->sid, sizeof(y->sid), "%s", snap.id);
                store_snapshot_clear(&snap);
                phase_at(x, "(cached)", y->sid);
                return 0;
        }
        for (j = b->jobs; j && !y->skip_cache; j = j->next)
                if (!strcmp(j->hash, y->hash) && !strcmp(j->account, x->account))
                        break;
        if (j && !y->skip_cache) {
                /* Someone builds it now: wait for theirs. */
                j->refs++;
                while (!j->done)
                        pthread_cond_wait(&b->cond, &b->lock);
                r = j->r;
                snprintf(y->sid, sizeof(y->sid), "%s", j->sid);
                if (r < 0 && j->report)
                        *ret_report = strdup(j->report);
                job_put(b, j);
                pthread_mutex_unlock(&b->lock);
                if (r == 0)
                        phase_at(x, "(cached)", y->sid);
                return r;
        }
        j = calloc(1, sizeof(*j));
        if (j) {
                j->account = strdup(x->account);
                snprintf(j->hash, sizeof(j->hash), "%s", y->hash);
                j->refs = 1;
                j->next = b->jobs;
                b->jobs = j;
        }
        pthread_mutex_unlock(&b->lock);
        if (!j || !j->account) {
                pthread_mutex_lock(&b->lock);
                if (j)
                        job_put(b, j);
                pthread_mutex_unlock(&b->lock);
                return -ENOMEM;
        }
        r = build_layer(x, y, base, outermost, ret_report);
        pthread_mutex_lock(&b->lock);
        j->done = 1;
        j->r = r;
        snprintf(j->sid, sizeof(j->sid), "%s", y->sid);
        j->report = *ret_report ? strdup(*ret_report) : NULL;
        job_put(b, j);
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
        return r;
}

static void put_locked(struct build *x)
{
        if (--x->refs > 0)
                return;
        for (int i = 0; i < x->n; i++) {
                json_decref(x->layers[i].spec);
                json_decref(x->layers[i].content);
                df_plan_free(x->layers[i].plan);
                dockerfile_clear(&x->layers[i].df);
        }
        free(x->account);
        free(x->name);
        free(x);
}

static void unlink_locked(struct build *x)
{
        for (struct build **p = &x->b->builds; *p; p = &(*p)->next) {
                if (*p == x) {
                        *p = x->next;
                        break;
                }
        }
}

static void *build_main(void *arg)
{
        struct build *x = arg;
        struct builder *b = x->b;
        char *report = NULL, *reason = NULL;
        int r = store_build_set_state(b->s, x->id, "running", NULL, NULL, wall_ms());

        for (int i = 0; r == 0 && i < x->n; i++) {
                struct layer *y = &x->layers[i];
                const char *base = y->base_sid[0] ? y->base_sid : i > 0 ? x->layers[i - 1].sid : "";

                if (y->empty) {
                        snprintf(y->sid, sizeof(y->sid), "%s", base);
                        continue;
                }
                snprintf(x->prefix, sizeof(x->prefix), "%s", y->label);
                r = run_layer(x, y, base, i == x->n - 1, &report);
                if (r < 0)
                        reason = reason_of(y->label, report);
        }
        x->prefix[0] = 0;
        if (r == 0) {
                snprintf(x->sid, sizeof(x->sid), "%s", x->layers[x->n - 1].sid);
                r = store_build_set_state(b->s, x->id, "succeeded", NULL, x->sid, wall_ms());
                log_info("build %s: succeeded: snapshot %s", x->id, x->sid);
        } else {
                if (!report)
                        report = report_of("the build failed", r);
                if (!reason)
                        reason = reason_of("", report);
                int k = store_build_set_state(b->s, x->id, "failed", reason ? reason : "the build failed",
                                              NULL, wall_ms());

                if (k < 0)
                        log_warn("build %s: could not record its failure: %s", x->id, strerror(-k));
                log_warn("build %s: failed: %s", x->id, reason ? reason : strerror(-r));
        }
        free(reason);
        free(report);
        pthread_mutex_lock(&b->lock);
        x->r = r;
        x->done = 1;
        b->running--;
        unlink_locked(x);
        put_locked(x);
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
        return NULL;
}

int build_start(struct builder *b, const char *account, json_t *chain, const struct build_opts *o,
                const char *bad_code, struct build **ret, const char **ret_code, char *msg, size_t size)
{
        struct build *x = calloc(1, sizeof(*x));
        struct store_build rec = {0};
        json_t *planned = NULL;
        pthread_attr_t attr;
        pthread_t t;
        int r;

        *ret_code = bad_code;
        msg[0] = 0;
        if (!x)
                return -ENOMEM;
        x->b = b;
        x->refs = 1;
        x->account = strdup(account);
        x->name = o->name ? strdup(o->name) : NULL;
        x->persistence = o->persistence;
        memcpy(x->id, "bd-", 3);
        r = x->account && (!o->name || x->name) ? random_id(x->id + 3, 20) : -ENOMEM;
        /* A client that asks for builds faster than they end (the
         * background form answers at once) is held to a few at a time. */
        pthread_mutex_lock(&b->lock);
        if (r == 0) {
                int mine = 0;

                for (struct build *y = b->builds; y; y = y->next)
                        mine += !strcmp(y->account, account);
                if (mine >= BUILDS_PER_ACCOUNT) {
                        snprintf(msg, size, "this account has %d builds in progress; wait for one to end",
                                 mine);
                        r = -EBUSY;
                } else {
                        x->next = b->builds;
                        b->builds = x;
                }
        }
        pthread_mutex_unlock(&b->lock);
        if (r == 0)
                r = plan_layers(x, chain, o, ret_code, msg, size);
        if (r == 0)
                r = plan_keys(x, msg, size);
        if (r == 0 && !(planned = plan_phases(x)))
                r = -ENOMEM;
        if (r == 0) {
                rec.id = x->id;
                rec.account_id = x->account;
                rec.request_id = (char *)o->request_id;
                rec.state = (char *)"pending";
                rec.template_hash = x->layers[x->n - 1].hash[0] ? x->layers[x->n - 1].hash : NULL;
                rec.planned_phases = json_dumps(planned, JSON_COMPACT);
                rec.started_at = wall_ms();
                r = rec.planned_phases ? store_build_insert(b->s, &rec) : -ENOMEM;
                free(rec.planned_phases);
        }
        json_decref(planned);
        if (r < 0) {
                pthread_mutex_lock(&b->lock);
                unlink_locked(x);
                put_locked(x);
                pthread_mutex_unlock(&b->lock);
                return r;
        }
        x->refs = 2; /* the caller's and the thread's */
        pthread_mutex_lock(&b->lock);
        b->running++;
        pthread_mutex_unlock(&b->lock);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = -pthread_create(&t, &attr, build_main, x);
        pthread_attr_destroy(&attr);
        if (r < 0) {
                store_build_set_state(b->s, x->id, "failed", "could not start the build", NULL, wall_ms());
                pthread_mutex_lock(&b->lock);
                b->running--;
                x->refs = 1;
                unlink_locked(x);
                put_locked(x);
                pthread_mutex_unlock(&b->lock);
                return r;
        }
        log_info("build %s: started (%d layer%s)", x->id, x->n, x->n == 1 ? "" : "s");
        *ret = x;
        return 0;
}

int build_wait(struct build *x, int64_t timeout_ms)
{
        struct builder *b = x->b;
        struct timespec until;
        int r = 0;

        if (timeout_ms >= 0)
                realtime_in(timeout_ms, &until);
        pthread_mutex_lock(&b->lock);
        while (!x->done && r == 0)
                r = timeout_ms < 0 ? pthread_cond_wait(&b->cond, &b->lock)
                                   : pthread_cond_timedwait(&b->cond, &b->lock, &until);
        r = x->done ? 0 : -ETIMEDOUT;
        pthread_mutex_unlock(&b->lock);
        return r;
}

const char *build_id(const struct build *x)
{
        return x->id;
}

int build_outcome(const struct build *x)
{
        return x->r;
}

void build_put(struct build *x)
{
        struct builder *b;

        if (!x)
                return;
        b = x->b;
        pthread_mutex_lock(&b->lock);
        put_locked(x);
        pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------------ */
/* The builder                                                         */
/* ------------------------------------------------------------------ */

static int cut_short(const struct store_build *rec, void *ud)
{
        struct builder *b = ud;
        int r;

        if (rec->vm_id) {
                r = vmm_delete(b->m, rec->account_id, rec->vm_id);
                if (r < 0 && r != -ENOENT)
                        log_warn("build %s: could not delete its VM %s: %s", rec->id, rec->vm_id,
                                 strerror(-r));
        }
        r = store_build_set_state(b->s, rec->id, "failed", "sproutd stopped during the build", NULL,
                                  wall_ms());
        if (r < 0)
                log_warn("build %s: could not mark it failed: %s", rec->id, strerror(-r));
        else
                log_warn("build %s: sproutd stopped during it; marked failed", rec->id);
        return 0;
}

static int fail_building(const struct store_snapshot *snap, void *ud)
{
        struct builder *b = ud;

        if (!strcmp(snap->state, "building"))
                store_snapshot_fail(b->s, snap->id, "sproutd stopped during its build");
        return 0;
}

static int each_account(const struct store_build *rec, void *ud)
{
        return store_snapshot_foreach(((struct builder *)ud)->s, rec->account_id, fail_building, ud);
}

/* Once the VM manager is ready (it takes the VMs back first). */
static void *recover_main(void *arg)
{
        struct builder *b = arg;
        int r;

        while (!vmm_ready(b->m, NULL, 0) && !b->stopping)
                sleep_ms(200);
        /* Snapshots first: their builds' records say whose they are. */
        r = b->stopping ? 0 : store_build_unfinished(b->s, each_account, b);
        if (r == 0 && !b->stopping)
                r = store_build_unfinished(b->s, cut_short, b);
        if (r < 0)
                log_err("could not recover the builds cut short: %s", strerror(-r));
        pthread_mutex_lock(&b->lock);
        b->running--;
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
        return NULL;
}

int builder_new(struct vmm *m, struct store *s, const char *data_dir, const char *registries_conf,
                struct builder **ret)
{
        struct builder *b = calloc(1, sizeof(*b));
        pthread_attr_t attr;
        pthread_t t;
        int r;

        if (!b)
                return -ENOMEM;
        if (path_fmt(b->cache_dir, sizeof(b->cache_dir), "%s/base-images", data_dir) < 0 ||
            path_fmt(b->log_path, sizeof(b->log_path), "%s/base-images.log", data_dir) < 0) {
                free(b);
                return -ENAMETOOLONG;
        }
        b->registries_conf = registries_conf ? strdup(registries_conf) : NULL;
        if (registries_conf && !b->registries_conf) {
                free(b);
                return -ENOMEM;
        }
        b->where = (struct baseimg_where){b->cache_dir, b->registries_conf, b->log_path};
        b->m = m;
        b->s = s;
        pthread_mutex_init(&b->lock, NULL);
        pthread_cond_init(&b->cond, NULL);
        b->running = 1; /* the recovery */
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = -pthread_create(&t, &attr, recover_main, b);
        pthread_attr_destroy(&attr);
        if (r < 0) {
                pthread_mutex_destroy(&b->lock);
                pthread_cond_destroy(&b->cond);
                free(b);
                return r;
        }
        *ret = b;
        return 0;
}

int builder_busy(struct builder *b)
{
        int n;

        pthread_mutex_lock(&b->lock);
        n = b->running;
        pthread_mutex_unlock(&b->lock);
        return n;
}

void builder_free(struct builder *b)
{
        if (!b)
                return;
        pthread_mutex_lock(&b->lock);
        b->stopping = 1;
        while (b->running > 0)
                pthread_cond_wait(&b->cond, &b->lock);
        pthread_mutex_unlock(&b->lock);
        pthread_mutex_destroy(&b->lock);
        pthread_cond_destroy(&b->cond);
        free(b->registries_conf);
        free(b);
}

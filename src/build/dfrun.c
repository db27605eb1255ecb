/*
 * dfrun: see dfrun.h. The guest's side is shell scripts run through the
 * agent; each folder and file named in them is shell-quoted.
 */
#include "build/dfrun.h"
#include "build/baseimg.h"
#include "guest/systemd.h"
#include "lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Where, in the build VM, the last stage's tree is made when it is not the
 * guest image; the other stages' trees (stage i at STAGES/i) under the last
 * stage's root; and the image layers on their way in. */
#define NEWROOT "/newroot"
#define STAGES "/var/lib/sprout-stages"
#define UPLOAD "/var/tmp/sprout-base"
/* A layer goes in as files of at most this size. */
#define CHUNK (8u << 20)
/* How much of a failing step's output a report keeps. */
#define OUTPUT_TAIL 2000

enum act_kind { ACT_FETCH, ACT_UNPACK, ACT_COPYROOT, ACT_STEP, ACT_BOOTABLE, ACT_REBOOT, ACT_CLEAN };

struct act {
        enum act_kind kind;
        int stage; /* FETCH, UNPACK, COPYROOT; STEP: the step's index */
        char name[160];
};

struct df_plan {
        const struct dockerfile *d;
        const struct baseimg_where *w;
        char digest[DOCKERFILE_MAX_STAGES][80]; /* "" for the guest image */
        char **layers[DOCKERFILE_MAX_STAGES];   /* once fetched */
        struct act acts[DOCKERFILE_MAX_STAGES * 4 + 4];
        int nacts;
        struct strbuf images;
};

static int guest_stage(const struct df_plan *p, int i)
{
        return !p->digest[i][0];
}

static const char *stage_label(const struct dockerfile *d, int i, char *buf, size_t size)
{
        if (d->stages[i].name)
                snprintf(buf, size, "%s", d->stages[i].name);
        else
                snprintf(buf, size, "%d", i);
        return buf;
}

static struct act *add_act(struct df_plan *p, enum act_kind k, int stage)
{
        struct act *a = &p->acts[p->nacts++];

        a->kind = k;
        a->stage = stage;
        return a;
}

int df_plan_new(const struct dockerfile *d, const struct baseimg_where *w, struct df_plan **ret, char *msg,
                size_t size)
{
        struct df_plan *p = calloc(1, sizeof(*p));
        int fin = d->final, others = 0, r;
        char label[64];

        if (!p)
                return -ENOMEM;
        p->d = d;
        p->w = w;
        for (size_t i = 0; i < d->nstages; i++) {
                if (!d->stages[i].used || baseimg_is_guest(d->stages[i].from))
                        continue;
                r = baseimg_resolve(w, d->stages[i].from, p->digest[i], sizeof(p->digest[i]), msg, size);
                if (r < 0) {
                        df_plan_free(p);
                        return r == -ENOENT ? -EINVAL : r;
                }
                strbuf_add(&p->images, d->stages[i].from, strlen(d->stages[i].from));
                strbuf_add(&p->images, " ", 1);
                strbuf_add(&p->images, p->digest[i], strlen(p->digest[i]));
                strbuf_add(&p->images, "\n", 1);
        }
        strbuf_add(&p->images, "", 1);
        if (p->images.oom) {
                df_plan_free(p);
                return -ENOMEM;
        }
        /* The last stage's tree first: the others are made inside it. */
        if (!guest_stage(p, fin)) {
                snprintf(add_act(p, ACT_FETCH, fin)->name, sizeof(p->acts[0].name),
                         "base image: fetch %.120s", d->stages[fin].from);
                snprintf(add_act(p, ACT_UNPACK, fin)->name, sizeof(p->acts[0].name),
                         "base image: unpack %.120s", d->stages[fin].from);
        }
        for (size_t i = 0; i < d->nstages; i++) {
                if ((int)i == fin || !d->stages[i].used)
                        continue;
                others++;
                stage_label(d, (int)i, label, sizeof(label));
                if (guest_stage(p, (int)i)) {
                        snprintf(add_act(p, ACT_COPYROOT, (int)i)->name, sizeof(p->acts[0].name),
                                 "base image: stage %s from the guest image", label);
                        continue;
                }
                snprintf(add_act(p, ACT_FETCH, (int)i)->name, sizeof(p->acts[0].name),
                         "base image: fetch %.120s", d->stages[i].from);
                snprintf(add_act(p, ACT_UNPACK, (int)i)->name, sizeof(p->acts[0].name),
                         "base image: unpack %.80s for stage %.40s", d->stages[i].from, label);
        }
        /* The steps of the stages copied from, in the order written; a
         * stage only copies from stages before it. */
        for (int pass = 0; pass < 2; pass++) {
                if (pass == 1 && !guest_stage(p, fin)) {
                        snprintf(add_act(p, ACT_BOOTABLE, fin)->name, sizeof(p->acts[0].name),
                                 "base image: make %.120s bootable", d->stages[fin].from);
                        snprintf(add_act(p, ACT_REBOOT, fin)->name, sizeof(p->acts[0].name),
                                 "base image: boot %.120s", d->stages[fin].from);
                }
                for (size_t k = 0; k < d->n; k++) {
                        int st = d->steps[k].stage;

                        if (!d->stages[st].used || (pass == 0) != (st != fin))
                                continue;
                        if (p->nacts == (int)(sizeof(p->acts) / sizeof(p->acts[0])) - 1) {
                                snprintf(msg, size, "a Dockerfile has at most %zu steps here",
                                         sizeof(p->acts) / sizeof(p->acts[0]) - 12);
                                df_plan_free(p);
                                return -EINVAL;
                        }
                        if (st == fin)
                                snprintf(add_act(p, ACT_STEP, (int)k)->name, sizeof(p->acts[0].name),
                                         "base image: %s", d->steps[k].what);
                        else
                                snprintf(add_act(p, ACT_STEP, (int)k)->name, sizeof(p->acts[0].name),
                                         "base image: [%s] %s", stage_label(d, st, label, sizeof(label)),
                                         d->steps[k].what);
                }
        }
        if (others)
                snprintf(add_act(p, ACT_CLEAN, fin)->name, sizeof(p->acts[0].name),
                         "base image: remove the other stages");
        *ret = p;
        return 0;
}

void df_plan_free(struct df_plan *p)
{
        if (!p)
                return;
        for (int i = 0; i < DOCKERFILE_MAX_STAGES; i++)
                baseimg_free(p->layers[i]);
        free(p->images.s);
        free(p);
}

const char *df_plan_images(const struct df_plan *p)
{
        return p->images.s;
}

void df_plan_phases(const struct df_plan *p, void (*fn)(void *ud, const char *name), void *ud)
{
        for (int i = 0; i < p->nacts; i++)
                fn(ud, p->acts[i].name);
}

/* ------------------------------------------------------------------ */
/* Running                                                             */
/* ------------------------------------------------------------------ */

struct runner {
        struct df_plan *p;
        const struct df_run *run;
        struct vmm_guest *g;
        char **report;
};

static char *quote(const char *s)
{
        return sysd_shell_quote(s);
}

/* The report of a failure: what failed, and the output that says why. */
static void report(struct runner *x, const char *what, int r, const struct agentc_result *res)
{
        struct strbuf both = {0};
        char *msg = NULL, *out = NULL;
        size_t n = 0;
        json_t *j;

        if (r == 0 && res && res->out.len + res->errout.len > 0) {
                size_t off;

                strbuf_add(&both, res->out.data, res->out.len);
                strbuf_add(&both, res->errout.data, res->errout.len);
                off = both.len > OUTPUT_TAIL ? both.len - OUTPUT_TAIL : 0;
                out = both.oom ? NULL : utf8_sanitize(both.s + off, both.len - off, &n);
        }
        free(both.s);
        if (r < 0)
                r = asprintf(&msg, "%s failed: %s", what, strerror(-r));
        else if (res && res->timed_out)
                r = asprintf(&msg, "%s failed: timed out", what);
        else if (res && res->err)
                r = asprintf(&msg, "%s failed: %s", what, strerror(res->err));
        else
                r = asprintf(&msg, "%s failed with exit code %d", what, res ? res->exit_code : -1);
        if (r < 0)
                msg = NULL;
        j = json_pack("{s:s,s:{s:s?}}", "message", msg ? msg : "a Dockerfile step failed", "diagnostics",
                      "stderr", out);
        free(*x->report);
        *x->report = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        free(msg);
        free(out);
}

/* Runs script in the build VM as root; a failure is reported as what. */
static int exec_in(struct runner *x, const char *what, const char *script)
{
        int64_t left = x->run->deadline_ms - now_ms();
        struct vmm_exec e = {.command = script, .timeout_ms = left};
        struct agentc_result res = {0};
        int r = left > 0 ? vmm_guest_exec(x->g, &e, &res) : -ETIMEDOUT;

        if (r == 0 && !res.err && !res.timed_out && res.exit_code == 0) {
                agentc_result_free(&res);
                return 0;
        }
        report(x, what, r, &res);
        agentc_result_free(&res);
        return r < 0 ? r : -EIO;
}

/* The stage's tree in the build VM ("" for the VM's own root). */
static void stage_dir(struct df_plan *p, int i, int booted, char *buf, size_t size)
{
        int fin = p->d->final;

        if (i == fin)
                snprintf(buf, size, "%s", guest_stage(p, fin) || booted ? "" : NEWROOT);
        else
                snprintf(buf, size, "%s" STAGES "/%d", guest_stage(p, fin) || booted ? "" : NEWROOT, i);
}

/* Sends a layer file into the VM as dst, in pieces dst.00000, ... */
static int upload(struct runner *x, const char *src, const char *dst, const char *what)
{
        int fd = open(src, O_RDONLY | O_CLOEXEC), r = 0;
        char *buf = malloc(CHUNK);

        if (fd < 0 || !buf) {
                r = fd < 0 ? -errno : -ENOMEM;
                report(x, what, r, NULL);
                free(buf);
                if (fd >= 0)
                        close(fd);
                return r;
        }
        for (int k = 0; r == 0; k++) {
                struct agentc_result res = {0};
                char path[PATH_MAX + 16];
                ssize_t n = 0, got;

                while ((size_t)n < CHUNK && (got = read(fd, buf + n, CHUNK - (size_t)n)) != 0) {
                        if (got < 0) {
                                if (errno == EINTR)
                                        continue;
                                r = -errno;
                                break;
                        }
                        n += got;
                }
                if (r < 0 || (n == 0 && k > 0))
                        break;
                r = path_fmt(path, sizeof(path), "%s.%05d", dst, k);
                if (r == 0)
                        r = vmm_guest_write(x->g, path, NULL, buf, (size_t)n, 0600, &res);
                if (r == 0 && res.err)
                        r = -res.err;
                agentc_result_free(&res);
                if ((size_t)n < CHUNK)
                        break;
        }
        if (r < 0)
                report(x, what, r, NULL);
        free(buf);
        close(fd);
        return r;
}

/* Unpacks stage i's image layers into its tree, whiteouts applied. */
static int unpack(struct runner *x, int i, const char *what)
{
        char dir[PATH_MAX], up[PATH_MAX], *qd = NULL, *qu = NULL;
        struct strbuf s = {0};
        char **layers = x->p->layers[i];
        int r;

        stage_dir(x->p, i, 0, dir, sizeof(dir));
        snprintf(up, sizeof(up), UPLOAD "/%d", i);
        qd = quote(dir);
        qu = quote(up);
        if (!qd || !qu) {
                free(qd);
                free(qu);
                return -ENOMEM;
        }
        strbuf_printf(&s, "set -e\nrm -rf %s && mkdir -p %s\n", qu, qu);
        r = s.oom ? -ENOMEM : exec_in(x, what, s.s);
        for (size_t k = 0; r == 0 && layers[k]; k++) {
                char dst[PATH_MAX + 32];

                snprintf(dst, sizeof(dst), "%s/%zu", up, k);
                r = upload(x, layers[k], dst, what);
        }
        s.len = 0;
        strbuf_printf(&s,
                      "set -e\nD=%s\nU=%s\nmkdir -p \"$D\"\n"
                      "for n in $(ls \"$U\" | sed 's/\\..*//' | sort -un); do\n"
                      "  L=\"$U/$n\"\n  cat \"$L\".* > \"$L\" && rm -f \"$L\".*\n"
                      /* A whiteout .wh.NAME deletes NAME of the layers below;
                       * .wh..wh..opq empties its folder of them. */
                      "  tar -tf \"$L\" | grep -E '(^|/)\\.wh\\.' | while IFS= read -r p; do\n"
                      "    p=${p#./}; b=${p##*/}\n"
                      "    case $p in */*) d=${p%%/*} ;; *) d=. ;; esac\n"
                      "    case $b in\n"
                      "      .wh..wh..opq) [ ! -d \"$D/$d\" ] || find \"$D/$d\" -mindepth 1 -maxdepth 1 "
                      "-exec rm -rf {} + ;;\n"
                      "      .wh.*) rm -rf \"$D/$d/${b#.wh.}\" ;;\n"
                      "    esac\n"
                      "  done\n"
                      "  tar -xpf \"$L\" -C \"$D\" --numeric-owner --exclude='.wh.*'\n"
                      "  rm -f \"$L\"\n"
                      "done\nrm -rf \"$U\"\n",
                      qd, qu);
        if (r == 0)
                r = s.oom ? -ENOMEM : exec_in(x, what, s.s);
        free(s.s);
        free(qd);
        free(qu);
        return r;
}

/* A stage on the guest image: a copy of the build VM's own tree. */
static int copy_root(struct runner *x, int i, const char *what)
{
        char dir[PATH_MAX], *q;
        struct strbuf s = {0};
        int r;

        stage_dir(x->p, i, 0, dir, sizeof(dir));
        q = quote(dir);
        if (!q)
                return -ENOMEM;
        strbuf_printf(&s,
                      "set -e\nmkdir -p %s\n"
                      "tar -C / --one-file-system --exclude=./newroot --exclude=./var/lib/sprout-stages"
                      " --exclude=./var/tmp/sprout-base --exclude=./boot --exclude=./usr/lib/modules"
                      " --exclude=./var/cache/apt/archives -cf - . | tar -C %s -xpf -\n",
                      q, q);
        r = s.oom ? -ENOMEM : exec_in(x, what, s.s);
        free(s.s);
        free(q);
        return r;
}

/* A shell function that runs its arguments chrooted in tree $1, with
 * /proc, /sys, /dev and the VM's resolv.conf, its mounts gone after. */
#define INROOT                                                                                               \
        "inroot() { unshare -m sh -c 'N=$1; shift; mkdir -p \"$N/proc\" \"$N/sys\" \"$N/dev\" \"$N/tmp\" "   \
        "\"$N/etc\"; mount -t proc proc \"$N/proc\"; mount -t sysfs sys \"$N/sys\"; mount --bind /dev "      \
        "\"$N/dev\"; rm -f \"$N/etc/resolv.conf\"; cp /etc/resolv.conf \"$N/etc/resolv.conf\"; "             \
        "exec chroot \"$N\" \"$@\"' sh \"$@\"; }\n"

static int step(struct runner *x, int k, int booted, const char *what)
{
        const struct df_step *st = &x->p->d->steps[k];
        char dir[PATH_MAX], stages[PATH_MAX], *qd, *qs, *qscript;
        struct strbuf s = {0};
        int r;

        stage_dir(x->p, st->stage, booted, dir, sizeof(dir));
        snprintf(stages, sizeof(stages), "%s" STAGES,
                 booted || guest_stage(x->p, x->p->d->final) ? "" : NEWROOT);
        qd = quote(dir);
        qs = quote(stages);
        qscript = quote(st->script);
        if (!qd || !qs || !qscript)
                r = -ENOMEM;
        else if (st->outside)
                r = strbuf_printf(&s, "SPROUT_ROOT=%s SPROUT_STAGES=%s\nexport SPROUT_ROOT SPROUT_STAGES\n%s",
                                  qd, qs, st->script);
        else if (dir[0])
                r = strbuf_printf(&s, INROOT "inroot %s /bin/sh -c %s\n", qd, qscript);
        else
                r = strbuf_printf(&s, "%s", st->script);
        if (r >= 0)
                r = s.oom ? -ENOMEM : exec_in(x, what, s.s);
        free(s.s);
        free(qd);
        free(qs);
        free(qscript);
        return r;
}

/* The last stage's tree, made bootable, and the VM told to boot into it
 * (its /sbin/init moves /newroot onto / and starts the tree's init). */
static const char bootable[] =
    "set -e\nN=" NEWROOT "\n" INROOT "fail() { echo \"$*\" >&2; exit 3; }\n"
    "[ -e \"$N/bin/sh\" ] || [ -L \"$N/bin/sh\" ] || fail 'the image has no /bin/sh: Sprout runs its steps "
    "with a shell and boots it with systemd'\n"
    "has() { inroot \"$N\" /bin/sh -c \"$1\" >/dev/null 2>&1; }\n"
    "apt() { inroot \"$N\" /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -q && "
    "apt-get install -y -q --no-install-recommends '\"$*\"; }\n"
    "if ! has 'test -x /lib/systemd/systemd || test -x /usr/lib/systemd/systemd'; then\n"
    "  has 'command -v apt-get' || fail 'the image has neither systemd nor apt-get: Sprout boots every VM "
    "with "
    "systemd and can only install it through apt'\n"
    "  echo \"installing systemd through the image's apt\"\n"
    "  apt systemd systemd-sysv udev kmod || fail \"installing systemd through the image's apt failed\"\n"
    "fi\n"
    "if ! has 'test -x /lib/systemd/systemd-networkd || test -x /usr/lib/systemd/systemd-networkd'; then\n"
    "  has 'command -v apt-get' && apt systemd-networkd || echo 'no systemd-networkd: the VM will have no "
    "network' >&2\n"
    "fi\n"
    "init=$(inroot \"$N\" /bin/sh -c 'for i in /sbin/init /lib/systemd/systemd /usr/lib/systemd/systemd; do "
    "[ -x \"$i\" ] && echo \"$i\" && break; done')\n"
    "[ -n \"$init\" ] || fail 'the image has no init to start'\n"
    "mkdir -p \"$N/usr/local/bin\" \"$N/etc/systemd/system\" \"$N/etc/systemd/network\" "
    "\"$N/etc/modprobe.d\"\n"
    "cp -a /usr/local/bin/sprout-agent \"$N/usr/local/bin/\"\n"
    "cp -a /etc/systemd/system/. \"$N/etc/systemd/system/\"\n"
    "cp -a /etc/systemd/network/. \"$N/etc/systemd/network/\"\n"
    "[ ! -d /etc/systemd/journald.conf.d ] || cp -a /etc/systemd/journald.conf.d \"$N/etc/systemd/\"\n"
    "cp -a /etc/modprobe.d/. \"$N/etc/modprobe.d/\"\n"
    "if [ -L \"$N/lib\" ]; then M=\"$N/usr/lib/modules\"; else M=\"$N/lib/modules\"; fi\n"
    "mkdir -p \"$M\" && rm -rf \"$M/$(uname -r)\" && cp -a \"/lib/modules/$(uname -r)\" \"$M/\"\n"
    "echo sprout > \"$N/etc/hostname\"\ncp /etc/hosts \"$N/etc/hosts\"\n"
    "rm -f \"$N/etc/resolv.conf\" && cp /etc/resolv.conf \"$N/etc/resolv.conf\"\n"
    ": > \"$N/etc/fstab\"\nrm -f \"$N/etc/machine-id\" && : > \"$N/etc/machine-id\"\n"
    "cat > /sbin/sprout-switch-root <<EOF\n#!/bin/sh\n"
    "mount --bind $N $N\ncd $N\nmount --move . /\nexec chroot . $init\nEOF\n"
    "chmod 755 /sbin/sprout-switch-root\nln -sfn sprout-switch-root /sbin/init.new && mv -T /sbin/init.new "
    "/sbin/init\n"
    "sync\n";

static int reboot_vm(struct runner *x, const char *what)
{
        const struct df_run *run = x->run;
        int r;

        vmm_guest_close(x->g);
        x->g = NULL;
        r = vmm_stop(run->m, run->account, run->vm);
        if (r == 0)
                r = vmm_start(run->m, run->account, run->vm);
        if (r == 0)
                r = vmm_guest_open(run->m, run->account, run->vm, &x->g);
        if (r < 0)
                report(x, what, r, NULL);
        return r;
}

int df_plan_run(struct df_plan *p, const struct df_run *run, char **ret_report)
{
        struct runner x = {.p = p, .run = run, .report = ret_report};
        int r = vmm_guest_open(run->m, run->account, run->vm, &x.g), booted = 0;
        char msg[512];

        if (r < 0) {
                report(&x, "reaching the build VM", r, NULL);
                return r;
        }
        for (int i = 0; r == 0 && i < p->nacts; i++) {
                struct act *a = &p->acts[i];
                const char *what = a->name + strlen("base image: ");

                run->phase(run->ud, a->name);
                switch (a->kind) {
                case ACT_FETCH:
                        msg[0] = 0;
                        r = p->layers[a->stage]
                                ? 0
                                : baseimg_fetch(p->w, p->d->stages[a->stage].from, p->digest[a->stage],
                                                &p->layers[a->stage], msg, sizeof(msg));
                        if (r < 0) {
                                json_t *j = json_pack("{s:s}", "message", msg[0] ? msg : strerror(-r));

                                free(*ret_report);
                                *ret_report = j ? json_dumps(j, JSON_COMPACT) : NULL;
                                json_decref(j);
                                r = -EIO;
                        }
                        break;
                case ACT_UNPACK:
                        r = unpack(&x, a->stage, what);
                        break;
                case ACT_COPYROOT:
                        r = copy_root(&x, a->stage, what);
                        break;
                case ACT_STEP: {
                        char label[200];

                        snprintf(label, sizeof(label), "Dockerfile step %d (%s)", a->stage + 1, what);
                        r = step(&x, a->stage, booted, label);
                        break;
                }
                case ACT_BOOTABLE:
                        r = exec_in(&x, what, bootable);
                        break;
                case ACT_REBOOT:
                        r = reboot_vm(&x, what);
                        booted = r == 0;
                        break;
                case ACT_CLEAN:
                        r = exec_in(&x, what, "rm -rf --one-file-system " STAGES);
                        break;
                }
        }
        vmm_guest_close(x.g);
        return r;
}

/*
 * dockerfile: a baseImage's Dockerfile (no build context, as the API says)
 * turned into shell steps a build VM runs as root. Each FROM starts a
 * stage on an image (or on an earlier stage, whose base and steps it
 * takes over); the last stage is the VM's disk, earlier ones are trees
 * the build VM makes only to COPY --from (a stage by name or number, or
 * an image, which becomes a stage of its own). RUN (shell form, exec
 * form, and heredocs: RUN <<'EOF' ... EOF, as the SDK writes runCommands)
 * becomes one step each, under the ENV, ARG, WORKDIR and USER of its
 * stage; the last stage's ENV also lands in /etc/environment; LABEL,
 * EXPOSE, CMD, ENTRYPOINT and the like say nothing to a VM and are
 * skipped. COPY and ADD without --from are refused: there is no context.
 * Pure text; no I/O.
 */
#ifndef SPROUT_DOCKERFILE_H
#define SPROUT_DOCKERFILE_H

#include <stddef.h>

/* The largest Dockerfile taken. */
#define DOCKERFILE_MAX (64 * 1024)

/* At most this many stages, implicit ones (COPY --from=IMAGE) included. */
#define DOCKERFILE_MAX_STAGES 8

struct df_step {
        char *what;   /* the instruction, cut short, for the build's phases */
        char *script; /* a shell script for /bin/sh, run as root */
        int stage;    /* the stage it belongs to */
        /* 0: run inside the stage's root. 1 (COPY): run in the build VM
         * outside it, with $SPROUT_ROOT the stage's root ("" for /) and
         * $SPROUT_STAGES the folder holding stage i's root at i/. */
        int outside;
};

struct df_stage {
        char *from; /* the image it starts from, as written */
        char *name; /* AS name, or NULL */
        int used;   /* a later stage copies from it (the last: always) */
};

struct dockerfile {
        char *from; /* the VM's image: stages[final].from */
        struct df_stage *stages;
        size_t nstages;
        int final;             /* the stage of the last FROM: the VM's disk */
        struct df_step *steps; /* every stage's, in the order they run */
        size_t n;
};

/* 0, -EFBIG over DOCKERFILE_MAX, -EINVAL for what cannot be built (msg
 * says why, naming the line), -ENOMEM. */
int dockerfile_parse(const char *text, struct dockerfile *ret, char *msg, size_t size);
void dockerfile_clear(struct dockerfile *d);

#endif

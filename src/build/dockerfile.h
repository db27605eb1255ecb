/*
 * dockerfile: a baseImage's Dockerfile (no build context, as the API says)
 * turned into shell steps a build VM runs as root. FROM names the base;
 * RUN (shell form, exec form, and heredocs: RUN <<'EOF' ... EOF, as the
 * SDK writes runCommands) becomes one step each, under the ENV, ARG,
 * WORKDIR and USER in effect; ENV also lands in /etc/environment; LABEL,
 * EXPOSE, CMD, ENTRYPOINT and the like say nothing to a VM and are
 * skipped. A second FROM (multi-stage) and COPY/ADD are refused: there is
 * no context to copy from. Pure text; no I/O.
 */
#ifndef SPROUT_DOCKERFILE_H
#define SPROUT_DOCKERFILE_H

#include <stddef.h>

/* The largest Dockerfile taken. */
#define DOCKERFILE_MAX (64 * 1024)

struct df_step {
        char *what;   /* the instruction, cut short, for the build's phases */
        char *script; /* a shell script for /bin/sh, run as root */
};

struct dockerfile {
        char *from; /* the base image as written */
        struct df_step *steps;
        size_t n;
};

/* 0, -EFBIG over DOCKERFILE_MAX, -EINVAL for what cannot be built (msg
 * says why, naming the line), -ENOMEM. */
int dockerfile_parse(const char *text, struct dockerfile *ret, char *msg, size_t size);
void dockerfile_clear(struct dockerfile *d);

#endif

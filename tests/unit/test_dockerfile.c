/* The Dockerfile of a baseImage into shell steps. */
#include "build/dockerfile.h"
#include "unit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int parse(const char *text, struct dockerfile *d, char *msg)
{
        return dockerfile_parse(text, d, msg, 256);
}

TEST(dockerfile_run_forms_heredocs_and_env)
{
        struct dockerfile d;
        char msg[256];

        CHECK(parse("# a comment\nFROM debian:bookworm-slim AS base\n\n"
                    "ENV A=1 B=\"two words\"\nARG V=3\nWORKDIR /srv\nWORKDIR app\n"
                    "RUN apt-get update && \\\n    echo joined\n"
                    "RUN [\"echo\", \"exec form\"]\n"
                    "RUN <<'FREESTYLE_EOF'\necho from heredoc\necho $A\nFREESTYLE_EOF\n"
                    "RUN cat <<EOF > /tmp/x\nline\nEOF\n"
                    "USER nobody\nRUN id -u\nEXPOSE 80\nCMD [\"x\"]\n",
                    &d, msg) == 0);
        CHECK(!strcmp(d.from, "debian:bookworm-slim"));
        CHECK(d.n == 6); /* five RUNs and the ENV step */
        CHECK(!strncmp(d.steps[0].what, "RUN apt-get update && ", 22) &&
              strstr(d.steps[0].what, "echo joined"));
        CHECK(strstr(d.steps[0].script, "export A='1'") &&
              strstr(d.steps[0].script, "export B='two words'") && strstr(d.steps[0].script, "export V='3'"));
        CHECK(strstr(d.steps[0].script, "cd '/srv/app'"));
        CHECK(strstr(d.steps[1].script, "exec form") && !strstr(d.steps[1].script, "["));
        CHECK(!strcmp(d.steps[2].what, "RUN echo from heredoc"));
        CHECK(strstr(d.steps[2].script, "echo from heredoc") && !strstr(d.steps[2].script, "FREESTYLE_EOF"));
        CHECK(strstr(d.steps[3].script, "<<EOF > /tmp/x") && strstr(d.steps[3].script, "line") &&
              !strstr(d.steps[3].script, "RUN cat"));
        CHECK(strstr(d.steps[4].script, "runuser -u 'nobody'") && !strstr(d.steps[3].script, "runuser"));
        CHECK(!strcmp(d.steps[5].what, "ENV into /etc/environment") &&
              strstr(d.steps[5].script, "/etc/environment") && !strstr(d.steps[5].script, "runuser"));
        dockerfile_clear(&d);
}

TEST(dockerfile_refusals_name_the_line)
{
        struct dockerfile d;
        char msg[256], *big;

        CHECK(parse("FROM -x\nRUN true\n", &d, msg) == -EINVAL && strstr(msg, "line 1") && strstr(msg, "-x"));
        CHECK(parse("FROM a b\n", &d, msg) == -EINVAL && strstr(msg, "FROM wants"));
        CHECK(parse("RUN true\n", &d, msg) == -EINVAL && strstr(msg, "before FROM"));
        CHECK(parse("", &d, msg) == -EINVAL && strstr(msg, "no FROM"));
        CHECK(parse("FROM debian:bookworm AS a\nFROM debian:bookworm AS a\n", &d, msg) == -EINVAL &&
              strstr(msg, "line 2") && strstr(msg, "taken"));
        CHECK(parse("FROM debian:bookworm\nCOPY /x /y\n", &d, msg) == -EINVAL && strstr(msg, "context"));
        CHECK(parse("FROM debian:bookworm\nADD --from=a /x /y\n", &d, msg) == -EINVAL && strstr(msg, "ADD"));
        CHECK(parse("FROM debian:bookworm\nCOPY --from=a /x\n", &d, msg) == -EINVAL &&
              strstr(msg, "destination"));
        CHECK(parse("FROM debian:bookworm\nCOPY --from=a --chmod=99 /x /y\n", &d, msg) == -EINVAL &&
              strstr(msg, "octal"));
        CHECK(parse("FROM debian:bookworm\nCOPY --from=$(x) /x /y\n", &d, msg) == -EINVAL &&
              strstr(msg, "neither"));
        CHECK(parse("FROM debian:bookworm\nRUN <<EOF\necho never closed\n", &d, msg) == -EINVAL &&
              strstr(msg, "never closed"));
        CHECK(parse("FROM debian:bookworm\nRUN [1, 2]\n", &d, msg) == -EINVAL);
        CHECK(parse("FROM debian:bookworm\nENV 1x=2\n", &d, msg) == -EINVAL && strstr(msg, "variable"));
        CHECK(parse("FROM debian:bookworm\nFROBNICATE x\n", &d, msg) == -EINVAL && strstr(msg, "FROBNICATE"));
        big = malloc(DOCKERFILE_MAX + 2);
        CHECK(big != NULL);
        memset(big, '#', DOCKERFILE_MAX + 1);
        big[DOCKERFILE_MAX + 1] = 0;
        CHECK(parse(big, &d, msg) == -EFBIG);
        free(big);
        CHECK(parse("FROM docker.io/library/debian:12\nRUN true\n", &d, msg) == 0 && d.n == 1);
        dockerfile_clear(&d);
}

TEST(dockerfile_stages_and_copy_from)
{
        struct dockerfile d;
        char msg[256];

        CHECK(parse("ARG V=1\nFROM debian:trixie-slim AS builder\nENV B=built\nWORKDIR /src\nRUN make\n"
                    "FROM builder AS tested\nRUN make check\n"
                    "FROM registry.example:5000/x/y:1 AS unused\nRUN never\n"
                    "FROM debian:bookworm\nCOPY --from=tested --chown=app:app /src/out /opt/\n"
                    "COPY --from=busybox:1 /bin/busybox bin/bb\nRUN echo $V\n",
                    &d, msg) == 0);
        CHECK(d.nstages == 5 && d.final == 3 && !strcmp(d.from, "debian:bookworm"));
        CHECK(!strcmp(d.stages[1].from, "debian:trixie-slim") && !strcmp(d.stages[1].name, "tested"));
        CHECK(!d.stages[0].used && d.stages[1].used && !d.stages[2].used && d.stages[3].used &&
              d.stages[4].used);
        CHECK(!strcmp(d.stages[4].from, "busybox:1") && !d.stages[4].name);
        /* builder's RUN, tested's copy of it and its own, unused's, then the
         * last stage's two COPYs and RUN. */
        CHECK(d.n == 7);
        CHECK(d.steps[0].stage == 0 && d.steps[1].stage == 1 && !strcmp(d.steps[1].what, "RUN make") &&
              d.steps[2].stage == 1 && strstr(d.steps[2].script, "export B='built'") &&
              strstr(d.steps[2].script, "cd '/src'"));
        CHECK(d.steps[3].stage == 2);
        CHECK(d.steps[4].stage == 3 && d.steps[4].outside &&
              strstr(d.steps[4].script, "\"$SPROUT_STAGES\"/1/'/src/out' \"$SPROUT_ROOT\"'/opt/'") &&
              strstr(d.steps[4].script, "chown -R 'app:app' '/opt/'"));
        CHECK(d.steps[5].outside &&
              strstr(d.steps[5].script, "\"$SPROUT_STAGES\"/4/'/bin/busybox' \"$SPROUT_ROOT\"'/bin/bb'"));
        CHECK(!d.steps[6].outside && strstr(d.steps[6].script, "export V='1'") &&
              !strstr(d.steps[6].script, "B="));
        dockerfile_clear(&d);
}

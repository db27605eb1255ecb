/*
 * fuzz_dockerfile: the Dockerfile parser (src/build/dockerfile.c), which
 * reads what any API client sends as baseImage.dockerfileContent. Beyond
 * not crashing or leaking: a parse either fails with a message or gives a
 * plan whose every step names a stage that exists, whose last stage is
 * used, and whose scripts are text.
 */
#include "fuzz.h"
#include "build/dockerfile.h"

#include <errno.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct dockerfile d;
        char msg[256], *text = malloc(size + 1);
        int r;

        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;
        r = dockerfile_parse(text, &d, msg, sizeof(msg));
        if (r < 0) {
                FUZZ_CHECK(r == -EINVAL || r == -EFBIG || r == -ENOMEM);
                FUZZ_CHECK(r == -ENOMEM || msg[0]);
        } else {
                FUZZ_CHECK(d.nstages >= 1 && d.nstages <= DOCKERFILE_MAX_STAGES);
                FUZZ_CHECK(d.final >= 0 && (size_t)d.final < d.nstages && d.stages[d.final].used);
                FUZZ_CHECK(d.from == d.stages[d.final].from && d.from[0]);
                for (size_t i = 0; i < d.n; i++) {
                        FUZZ_CHECK(d.steps[i].stage >= 0 && (size_t)d.steps[i].stage < d.nstages);
                        FUZZ_CHECK(d.steps[i].what && d.steps[i].script && strlen(d.steps[i].what) <= 72);
                }
                dockerfile_clear(&d);
        }
        free(text);
        return 0;
}

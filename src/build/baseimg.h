/*
 * baseimg: where a Dockerfile's FROM comes from. The guest image itself
 * (Debian bookworm) needs nothing; any other image is resolved to a digest
 * through skopeo and the host's container registries configuration (or
 * another registries.conf), and fetched once into a cache folder keyed by
 * that digest. debian:<suite> and debian:<suite>-slim
 * fall back to debootstrap from the host's Debian mirror when no registry
 * answers. Nothing here runs an image's code: the layers stay tarballs,
 * unpacked inside a build VM. Depends on util only.
 */
#ifndef SPROUT_BASEIMG_H
#define SPROUT_BASEIMG_H

#include <stddef.h>

struct baseimg_where {
        const char *cache_dir;       /* fetched images, one folder each */
        const char *registries_conf; /* NULL: the host's */
        const char *log_path;        /* what the tools print */
};

/* 1 when ref is the guest image: debian:bookworm, debian:bookworm-slim,
 * debian:12, debian:12-slim, with or without docker.io/library/. */
int baseimg_is_guest(const char *ref);

/* ref's identity into digest: "sha256:<hex>" from a registry, or
 * "debootstrap:<suite>" for a Debian suite no registry answered for.
 * -ENOENT: neither (msg says why, naming ref); -ENOMEM. Asks the registry
 * (up to about 30 s). */
int baseimg_resolve(const struct baseimg_where *w, const char *ref, char *digest, size_t dsize, char *msg,
                    size_t size);

/* The image's layers (tarballs, innermost first; *ret NULL-terminated, free
 * with baseimg_free) from the cache, fetched there first when missing.
 * -EIO: the fetch failed (msg says
 * why); -ENOMEM, or what creating the cache failed with. */
int baseimg_fetch(const struct baseimg_where *w, const char *ref, const char *digest, char ***ret, char *msg,
                  size_t size);
void baseimg_free(char **layers);

#endif

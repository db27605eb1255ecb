/*
 * fuzz_proxy: the ingress proxy's request parsing (src/ingress/proxy.c),
 * which reads what anyone who reaches the proxy sends. The harness
 * includes proxy.c to reach its state machine, hands it the fuzz bytes in
 * pieces of fuzz-chosen sizes, and takes what it queues for the VM as a VM
 * would; every host routes to a fake VM (those starting "nx" to nothing).
 * Beyond not crashing: the buffers stay in bounds, the proxy makes
 * progress, and every head it queues starts with a request line, carries
 * exactly the proxy's own three X-Forwarded-* lines (what the client sent
 * of them is gone) and ends there, and all its lines end in CRLF with no
 * other control character in them.
 */
#include "fuzz.h"

#include "../../src/ingress/proxy.c"

#include <fcntl.h>

#define PEER "192.0.2.1"

int store_port_target(struct store *s, const char *vm_id, int port, int *ret_target)
{
        (void)s, (void)vm_id;
        if (port != 443 && port != 8081)
                return -ENOENT;
        *ret_target = 3000;
        return 0;
}

int store_domain_route(struct store *s, const char *domain, char vm_id[32], int *ret_port)
{
        (void)s;
        if (!strncmp(domain, "nx", 2))
                return -ENOENT;
        snprintf(vm_id, 32, "%s", "aaaaaaaaaaaaaaaaaaaa");
        *ret_port = 3000;
        return 0;
}

/* The VM end: a file that takes anything. */
int vmm_ingress_connect(struct vmm *m, const char *id, int port, int timeout_ms, int *ret_fd,
                        char instance[21])
{
        (void)m, (void)id, (void)port, (void)timeout_ms;
        snprintf(instance, 21, "i");
        *ret_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        return *ret_fd < 0 ? -errno : 0;
}

int vmm_ingress_wake(struct vmm *m, const char *id, const char instance[21])
{
        (void)m, (void)id, (void)instance;
        return 0;
}

void vmm_ingress_touch(struct vmm *m, const char *id)
{
        (void)m, (void)id;
}

/* No TLS here: the client is plain. */
ssize_t tls_recv(struct tls *t, void *buf, size_t n)
{
        (void)t, (void)buf, (void)n;
        errno = ENOSYS;
        return -1;
}

ssize_t tls_send(struct tls *t, const void *buf, size_t n)
{
        (void)t, (void)buf, (void)n;
        errno = ENOSYS;
        return -1;
}

size_t tls_pending(struct tls *t)
{
        (void)t;
        return 0;
}

void tls_free(struct tls *t)
{
        (void)t;
}

int tls_accept(struct tls_ctx *c, int fd, int timeout_ms, struct tls **ret)
{
        (void)c, (void)fd, (void)timeout_ms, (void)ret;
        return -ENOSYS;
}

int tls_ctx_new(const char *cert_file, const char *key_file, struct tls_ctx **ret, char *msg, size_t size)
{
        (void)cert_file, (void)key_file, (void)ret, (void)msg, (void)size;
        return -ENOSYS;
}

void tls_ctx_free(struct tls_ctx *c)
{
        (void)c;
}

static size_t count_ci(const char *h, size_t n, const char *needle)
{
        size_t k = strlen(needle), c = 0;

        for (size_t i = 0; i + k <= n; i++)
                c += !strncasecmp(h + i, needle, k);
        return c;
}

/* A head the proxy queued at out[0..n). */
static void check_head(const char *o, size_t n)
{
        static const char ours[] =
            "\r\nX-Forwarded-For: " PEER "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: ";
        const char *blk = memmem(o, n, ours, sizeof(ours) - 1), *end;

        FUZZ_CHECK(n > 0 && o[0] != ' ' && memchr(o, ' ', n));
        FUZZ_CHECK(blk);
        end = memmem(blk, (size_t)(o + n - blk), "\r\n\r\n", 4);
        FUZZ_CHECK(end);
        FUZZ_CHECK(count_ci(o, (size_t)(end - o), "\nx-forwarded-") == 3);
        FUZZ_CHECK(count_ci(o, (size_t)(end - o), "\nforwarded:") == 0);
        /* Every line ends in CRLF, and no other control character but a
         * tab is left to be read another way by the server. */
        for (const char *c = o; c < end + 4; c++) {
                FUZZ_CHECK(*c != '\n' || (c > o && c[-1] == '\r'));
                FUZZ_CHECK(*c != '\r' || c[1] == '\n');
                FUZZ_CHECK((unsigned char)*c >= 0x20 || *c == '\t' || *c == '\r' || *c == '\n');
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct proxy p = {.domain = "vm.localhost", .cfg = {.timeout_s = 1}};
        struct conn *x = calloc(1, sizeof(*x));
        struct fz f = {data, size};

        if (!x)
                return 0;
        x->p = &p;
        x->u = -1;
        x->c = open("/dev/null", O_WRONLY | O_CLOEXEC);
        snprintf(x->peer, sizeof(x->peer), PEER);
        while (f.n > 0 && !x->c_eof) {
                size_t want = 1 + (size_t)fz_u8(&f) * 97, n = sizeof(x->in) - x->in_len, before;
                int r;

                if (n > want)
                        n = want;
                if (n > f.n)
                        n = f.n;
                memcpy(x->in + x->in_len, f.p, n);
                x->in_len += n;
                f.p += n, f.n -= n;
                before = x->in_len;
                r = pump_in(x);
                FUZZ_CHECK(x->in_len <= sizeof(x->in));
                FUZZ_CHECK(x->out_off + x->out_len <= sizeof(x->out));
                if (r < 0) {
                        FUZZ_CHECK(x->c_eof);
                        break;
                }
                if (x->awaiting) /* a head went into the empty out buffer */
                        check_head(x->out + x->out_off, x->out_len);
                /* The VM takes it all. */
                x->awaiting = 0;
                x->out_off = x->out_len = 0;
                if (x->in_len == sizeof(x->in))
                        FUZZ_CHECK(x->in_len < before || x->st == RAW || pump_in(x) < 0 ||
                                   x->in_len < before);
        }
        if (x->u >= 0)
                close(x->u);
        close(x->c);
        free(x);
        return 0;
}

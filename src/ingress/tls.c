/*
 * tls: see tls.h.
 */
#include "ingress/tls.h"
#include "lib/util.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

struct tls_ctx {
        gnutls_certificate_credentials_t cred;
        gnutls_priority_t prio;
};

struct tls {
        gnutls_session_t s;
};

int tls_ctx_new(const char *cert_file, const char *key_file, struct tls_ctx **ret, char *msg, size_t size)
{
        struct tls_ctx *c = calloc(1, sizeof(*c));
        int r;

        if (!c)
                return -ENOMEM;
        r = gnutls_certificate_allocate_credentials(&c->cred);
        if (r < 0) {
                free(c);
                snprintf(msg, size, "TLS: %s", gnutls_strerror(r));
                return -ENOMEM;
        }
        r = gnutls_certificate_set_x509_key_file(c->cred, cert_file, key_file, GNUTLS_X509_FMT_PEM);
        if (r < 0) {
                snprintf(msg, size, "cannot load the TLS certificate %s with key %s: %s", cert_file, key_file,
                         gnutls_strerror(r));
                gnutls_certificate_free_credentials(c->cred);
                free(c);
                return -EINVAL;
        }
        r = gnutls_priority_init(&c->prio, NULL, NULL); /* the system's default */
        if (r < 0) {
                snprintf(msg, size, "TLS: %s", gnutls_strerror(r));
                gnutls_certificate_free_credentials(c->cred);
                free(c);
                return -EINVAL;
        }
        *ret = c;
        return 0;
}

void tls_ctx_free(struct tls_ctx *c)
{
        if (!c)
                return;
        gnutls_priority_deinit(c->prio);
        gnutls_certificate_free_credentials(c->cred);
        free(c);
}

int tls_accept(struct tls_ctx *c, int fd, int timeout_ms, struct tls **ret)
{
        static const gnutls_datum_t h1 = {(unsigned char *)"http/1.1", 8};
        int64_t deadline = now_ms() + timeout_ms;
        struct tls *t = calloc(1, sizeof(*t));
        int r;

        if (!t)
                return -ENOMEM;
        if (gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) < 0) {
                free(t);
                return -ENOMEM;
        }
        if (gnutls_priority_set(t->s, c->prio) < 0 ||
            gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->cred) < 0 ||
            gnutls_alpn_set_protocols(t->s, &h1, 1, 0) < 0) {
                tls_free(t);
                return -ENOMEM;
        }
        gnutls_transport_set_int(t->s, fd);
        for (;;) {
                struct pollfd f = {.fd = fd};
                int64_t left;

                r = gnutls_handshake(t->s);
                if (r == 0)
                        break;
                if (gnutls_error_is_fatal(r)) {
                        tls_free(t);
                        return -EPROTO;
                }
                left = deadline - now_ms();
                f.events = gnutls_record_get_direction(t->s) ? POLLOUT : POLLIN;
                if (left <= 0 || poll(&f, 1, (int)left) == 0) {
                        tls_free(t);
                        return -ETIMEDOUT;
                }
        }
        *ret = t;
        return 0;
}

/* A gnutls result as recv(2)/send(2) say theirs. */
static ssize_t as_errno(ssize_t r)
{
        if (r >= 0)
                return r;
        if (r == GNUTLS_E_PREMATURE_TERMINATION)
                return 0; /* a peer that just closes: as good as an end */
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal((int)r))
                errno = EAGAIN;
        else
                errno = EPROTO;
        return -1;
}

ssize_t tls_recv(struct tls *t, void *buf, size_t n)
{
        return as_errno(gnutls_record_recv(t->s, buf, n));
}

ssize_t tls_send(struct tls *t, const void *buf, size_t n)
{
        return as_errno(gnutls_record_send(t->s, buf, n));
}

size_t tls_pending(struct tls *t)
{
        return gnutls_record_check_pending(t->s);
}

void tls_free(struct tls *t)
{
        if (!t)
                return;
        gnutls_bye(t->s, GNUTLS_SHUT_WR);
        gnutls_deinit(t->s);
        free(t);
}

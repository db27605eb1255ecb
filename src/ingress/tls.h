/*
 * tls: the ingress proxy's TLS, done by GnuTLS. One certificate and key
 * (PEM files) for every host the proxy serves; sessions over non-blocking
 * sockets that their owner polls. ALPN offers only http/1.1, so browsers
 * do not try HTTP/2 on it.
 */
#ifndef SPROUT_TLS_H
#define SPROUT_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct tls_ctx;
struct tls;

/* Loads the certificate chain and its key. -errno, msg saying why. */
int tls_ctx_new(const char *cert_file, const char *key_file, struct tls_ctx **ret, char *msg, size_t size);
void tls_ctx_free(struct tls_ctx *c);

/* Runs a server handshake on the non-blocking socket fd, waiting for the
 * client at most timeout_ms. 0, or -errno (-ETIMEDOUT, -EPROTO). */
int tls_accept(struct tls_ctx *c, int fd, int timeout_ms, struct tls **ret);
/* As recv(2) with MSG_DONTWAIT: >0 bytes, 0 at the peer's end, -1 with
 * errno EAGAIN when nothing is there, or another errno on failure. */
ssize_t tls_recv(struct tls *t, void *buf, size_t n);
/* As send(2) with MSG_DONTWAIT. After -1 with EAGAIN the caller must send
 * the same bytes again, which the proxy's buffers do anyway. */
ssize_t tls_send(struct tls *t, const void *buf, size_t n);
/* Bytes already decrypted and waiting: poll(2) will not report them. */
size_t tls_pending(struct tls *t);
/* Says goodbye if the socket takes it at once, and frees the session (not
 * the socket). NULL is a no-op. */
void tls_free(struct tls *t);

#endif

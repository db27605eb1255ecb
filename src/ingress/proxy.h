/*
 * proxy: the ingress proxy. HTTP/1.x from anyone (hosts are public) to a
 * server inside a VM, routed by the Host header (a port after it is
 * ignored): "<vmId>.<domain>" reaches the VM port its external port 443
 * maps to, "<port>-<vmId>.<domain>" that of external port <port>, and a
 * custom domain the VM port it names. Every request head is parsed (and
 * gets X-Forwarded-For, -Proto and -Host); bodies (Content-Length or
 * chunked) and responses stream through bounded buffers; an Upgrade
 * request (WebSocket) turns the connection into a byte pipe both ways. A
 * suspended VM is resumed by a request to it; traffic counts as use of
 * the VM. With a certificate and key, a connection that opens with a TLS
 * handshake is served over TLS (X-Forwarded-Proto: https) and any other as
 * plain HTTP, on the one port. One thread per connection; a connection
 * idle past the timeout is closed. Uses the VM manager and the store.
 */
#ifndef SPROUT_PROXY_H
#define SPROUT_PROXY_H

#include "store/store.h"
#include "vmm/vmm.h"

#include <stddef.h>

struct proxy_config {
        const char *listen; /* HOST:PORT */
        const char *domain; /* the suffix of VM host names, e.g. vm.localhost */
        int timeout_s;      /* idle connections, and a guest that does not answer */
        int max_conns;      /* connections at once; past it a new one gets 503 */
        const char *tls_cert, *tls_key; /* PEM files; NULL: no TLS */
};

struct proxy;

/* Listens and serves in threads of its own. -errno, msg saying why. */
int proxy_start(const struct proxy_config *c, struct vmm *m, struct store *s, struct proxy **ret, char *msg,
                size_t size);
/* Stops listening, ends the connections and waits for their threads;
 * NULL is a no-op. */
void proxy_stop(struct proxy *p);

/* A VM's host name for external port: "<id>.<domain>" for 443, else
 * "<port>-<id>.<domain>". 0 or -ENAMETOOLONG. */
int proxy_host_name(char *buf, size_t size, const char *id, int port, const char *domain);

#endif

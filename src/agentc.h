/*
 * agentc: the daemon's side of the agent protocol (proto/proto.h). One
 * connection per VM over the Unix socket that QEMU exposes for the guest's
 * virtio-serial port. A reader thread demultiplexes frames onto streams, so
 * any number of threads can run requests at once; each request waits for
 * its own RESULT. Connections are reference-counted: whoever uses one holds
 * a reference, and agentc_shutdown wakes every waiter with -ECONNRESET.
 * Never logs; errors are returned as -errno.
 */
#ifndef SPROUT_AGENTC_H
#define SPROUT_AGENTC_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

struct agentc;

/* What came back for one request. result is the RESULT frame's TLV payload;
 * data, out and err collect DATA, STDOUT and STDERR frames. Each collection
 * stops growing at the cap given to agentc_request and sets overflow. */
struct agentc_reply {
        uint8_t *result;
        size_t result_len;
        struct proto_buf data, out, err;
        int overflow;
};

/* Connects to the socket at path (retrying while it does not exist yet,
 * up to timeout_ms) and starts the reader thread. The returned connection
 * holds one reference. */
int agentc_connect(const char *path, int timeout_ms, struct agentc **ret);

struct agentc *agentc_ref(struct agentc *a);
/* Drops a reference; the last one closes the socket and joins the reader. */
void agentc_unref(struct agentc *a);

/* Closes the transport: pending and future requests fail with -ECONNRESET. */
void agentc_shutdown(struct agentc *a);

/* 1 while the connection is up. */
int agentc_alive(struct agentc *a);

/* Sends PING with the host clock and fresh entropy and waits for HELLO.
 * 0, -ETIMEDOUT or -ECONNRESET. */
int agentc_ping(struct agentc *a, int timeout_ms);

/* Opens a stream with the TLV request req. If upload is not NULL, sends its
 * bytes as DATA frames followed by EOF. Waits for the RESULT at most
 * timeout_ms (<0: no limit); on timeout sends CANCEL and returns -ETIMEDOUT
 * (whatever output arrived is still in *ret). cap bounds each collection in
 * the reply. On success or timeout the caller frees *ret with
 * agentc_reply_free. */
int agentc_request(struct agentc *a, const struct proto_buf *req, const void *upload, size_t upload_len,
                   size_t cap, int64_t timeout_ms, struct agentc_reply *ret);

void agentc_reply_free(struct agentc_reply *r);

/* Long-lived requests (a file watch): opens a stream whose DATA bytes queue
 * up (at most cap bytes; past it they are dropped and overflow is set) for
 * agentc_stream_read. */
int agentc_stream_open(struct agentc *a, const struct proto_buf *req, size_t cap, uint32_t *ret_id);

/* Takes up to max queued bytes, waiting at most timeout_ms. Returns the
 * count, 0 on timeout, -EPIPE once the agent ended the stream and the queue
 * is empty, -ECONNRESET when the transport died. */
long agentc_stream_read(struct agentc *a, uint32_t id, void *buf, size_t max, int timeout_ms);

/* Sends CANCEL (if the stream is still open) and forgets the stream. */
void agentc_stream_close(struct agentc *a, uint32_t id);

#endif

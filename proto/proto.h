/*
 * proto: the wire protocol between sproutd and sprout-agent.
 *
 * One byte stream (a virtio-serial port in the guest, a Unix socket that QEMU
 * exposes on the host) carries frames. Each frame belongs to a stream, so many
 * requests run at once over the one port. A frame is a fixed 12-byte header
 * followed by a payload of at most PROTO_MAX_PAYLOAD bytes. Structured
 * payloads are TLV records (tag, length, value), never text to be parsed.
 *
 * This module is compiled into both the daemon (glibc) and the static agent
 * (musl): it depends on libc only, never allocates behind the caller's back
 * except in proto_buf, and never trusts a length it has not checked.
 *
 * Frame header, all integers big-endian:
 *   u32 len     payload length, 0..PROTO_MAX_PAYLOAD
 *   u32 stream  stream id; requests are opened by the host with a new id
 *   u16 type    PROTO_T_*
 *   u16 flags   reserved, must be 0
 *
 * Exchanges:
 *   PING (host) -> HELLO (agent), same stream id. PING carries the host's
 *     wall clock and entropy so a VM restored from a snapshot gets a correct
 *     clock and a fresh random pool, and the VM's host name and machine id
 *     so that copies of one snapshot do not share them (the agent applies
 *     what differs before it answers). The first PING of a host connection
 *     carries PROTO_TAG_NEW_SESSION: the agent drops the streams of any
 *     earlier connection, which a VM restored from a snapshot (or resumed)
 *     taken mid-request still holds without having seen that host go.
 *   REQ (host, TLV with PROTO_TAG_OP) opens a stream. The host may follow with
 *     DATA frames and one EOF (file upload). The agent answers with any number
 *     of DATA/STDOUT/STDERR frames and exactly one RESULT, which closes the
 *     stream. CANCEL from the host asks the agent to abandon the stream (an
 *     exec's process group is killed); a RESULT still follows.
 */
#ifndef SPROUT_PROTO_H
#define SPROUT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_HDR_SIZE 12
#define PROTO_MAX_PAYLOAD (256 * 1024)

enum proto_type {
        PROTO_T_PING = 1,   /* host->agent: TLV TIME_NS, ENTROPY */
        PROTO_T_HELLO = 2,  /* agent->host: TLV VERSION, BOOT_ID */
        PROTO_T_REQ = 3,    /* host->agent: TLV request, opens stream */
        PROTO_T_DATA = 4,   /* raw bytes for the stream (file content) */
        PROTO_T_EOF = 5,    /* host->agent: no more DATA on this stream */
        PROTO_T_STDOUT = 6, /* agent->host: raw bytes of an exec's stdout */
        PROTO_T_STDERR = 7, /* agent->host: raw bytes of an exec's stderr */
        PROTO_T_RESULT = 8, /* agent->host: TLV result, closes the stream */
        PROTO_T_CANCEL = 9, /* host->agent: abandon the stream */
};

enum proto_op {
        PROTO_OP_EXEC = 1,       /* CMD, CWD?, ENV*, TIMEOUT_MS?, USER?, MAX_OUTPUT? */
        PROTO_OP_READ = 2,       /* PATH, MAX_SIZE?, USER?: file -> DATA*; dir -> ENTRY* */
        PROTO_OP_WRITE = 3,      /* PATH, MODE?, USER?, MAX_SIZE? then DATA* EOF */
        PROTO_OP_STAT = 4,       /* PATH, USER?: KIND, SIZE, MODE */
        PROTO_OP_WATCH = 5,      /* PATH (dir): DATA* (one JSON event + "\n" each) until CANCEL */
        PROTO_OP_TERMINAL = 6,   /* TERMINAL, CMD, TIMEOUT_MS?, USER?: STDOUT*, EXIT_CODE, TIMED_OUT */
        PROTO_OP_TERM_LIST = 7,  /* -: ENTRY* (PROTO_KIND_OTHER + name), sorted */
        PROTO_OP_TERM_LOG = 8,   /* TERMINAL: DATA* (raw scrollback), SIZE */
        /* TERMINAL, ROWS?, COLS?, USER?, EPHEMERAL?: an interactive terminal
         * (a login shell on a PTY, made if none has that name), attached:
         * its scrollback then its output as DATA*, host DATA is its input;
         * RESULT EXIT_CODE when its shell exits, or EBUSY when another
         * attach takes it over. CANCEL detaches (an EPHEMERAL one ends). */
        PROTO_OP_PTY = 9,
        PROTO_OP_PTY_RESIZE = 10, /* TERMINAL, ROWS, COLS, USER?: - */
};

enum proto_tag {
        /* request fields */
        PROTO_TAG_OP = 1,         /* u32 */
        PROTO_TAG_CMD = 2,        /* string */
        PROTO_TAG_CWD = 3,        /* string */
        PROTO_TAG_ENV = 4,        /* string "NAME=value", repeated */
        PROTO_TAG_TIMEOUT_MS = 5, /* u64, 0 = none */
        PROTO_TAG_USER = 6,       /* string, Linux user name */
        PROTO_TAG_PATH = 7,       /* string */
        PROTO_TAG_MODE = 8,       /* u32, permission bits */
        PROTO_TAG_MAX_OUTPUT = 9, /* u64, cap on stdout+stderr bytes */
        PROTO_TAG_MAX_SIZE = 10,  /* u64, cap on a file's size */
        /* result fields */
        PROTO_TAG_ERRNO = 20,     /* u32, a Linux errno value; absent = success */
        PROTO_TAG_ERRMSG = 21,    /* string, for humans */
        PROTO_TAG_EXIT_CODE = 22, /* u32 (int32 bits): exit status, 128+sig if killed */
        PROTO_TAG_TIMED_OUT = 23, /* u32 0/1 */
        PROTO_TAG_KIND = 24,      /* u32 PROTO_KIND_* */
        PROTO_TAG_SIZE = 25,      /* u64 */
        PROTO_TAG_ENTRY = 26,     /* u8 kind + name bytes, repeated */
        /* ping/hello */
        PROTO_TAG_TIME_NS = 30,   /* u64, CLOCK_REALTIME nanoseconds */
        PROTO_TAG_ENTROPY = 31,   /* bytes, mixed into the guest's pool */
        PROTO_TAG_VERSION = 32,   /* u32 */
        PROTO_TAG_BOOT_ID = 33,   /* string */
        PROTO_TAG_NEW_SESSION = 34, /* u32 1: the first PING of a host connection */
        PROTO_TAG_HOSTNAME = 35,    /* string: the VM's host name */
        PROTO_TAG_MACHINE_ID = 36,  /* string: the VM's /etc/machine-id, 32 hex digits */
        /* terminals */
        PROTO_TAG_TERMINAL = 40,  /* string, terminal name: 1..64 of [A-Za-z0-9._-] */
        PROTO_TAG_ROWS = 41,      /* u32, 1..1000 */
        PROTO_TAG_COLS = 42,      /* u32, 1..1000 */
        PROTO_TAG_EPHEMERAL = 43, /* u32 1: the terminal ends when its stream does */
};

enum proto_kind {
        PROTO_KIND_FILE = 1,
        PROTO_KIND_DIR = 2,
        PROTO_KIND_OTHER = 3,
};

/* A decoded frame header. */
struct proto_hdr {
        uint32_t len;
        uint32_t stream;
        uint16_t type;
        uint16_t flags;
};

/* Writes the 12-byte header for a frame into out. */
void proto_hdr_encode(uint8_t out[PROTO_HDR_SIZE], uint32_t len, uint32_t stream, uint16_t type);

/* Decodes a header. Returns 0, or -EBADMSG when the length exceeds
 * PROTO_MAX_PAYLOAD or flags are not zero (the stream is then unusable). */
int proto_hdr_decode(const uint8_t in[PROTO_HDR_SIZE], struct proto_hdr *ret_hdr);

/*
 * A growable byte buffer used to build TLV payloads. proto_buf_free releases
 * the memory; a buffer whose allocation failed records it in .oom and ignores
 * further appends, so builders check once at the end.
 */
struct proto_buf {
        uint8_t *data;
        size_t len;
        size_t cap;
        int oom;
};

void proto_buf_free(struct proto_buf *b);
void proto_buf_append(struct proto_buf *b, const void *p, size_t n);
void proto_put_bytes(struct proto_buf *b, uint16_t tag, const void *p, size_t n);
void proto_put_str(struct proto_buf *b, uint16_t tag, const char *s);
void proto_put_u32(struct proto_buf *b, uint16_t tag, uint32_t v);
void proto_put_u64(struct proto_buf *b, uint16_t tag, uint64_t v);

/* One TLV record inside a payload; .val points into the payload. */
struct proto_tlv {
        uint16_t tag;
        uint32_t len;
        const uint8_t *val;
};

/* Iterates TLV records. Initialise with proto_iter_init, then call
 * proto_iter_next until it returns 0 (end) or -EBADMSG (a record overruns
 * the payload). */
struct proto_iter {
        const uint8_t *p;
        size_t left;
};

void proto_iter_init(struct proto_iter *it, const void *payload, size_t len);
int proto_iter_next(struct proto_iter *it, struct proto_tlv *ret_tlv);

/* Finds the first record with tag. Returns 1 if found, 0 if not, -EBADMSG if
 * the payload is malformed. */
int proto_find(const void *payload, size_t len, uint16_t tag, struct proto_tlv *ret_tlv);

/* Typed accessors: return 0, -ENOENT when the tag is absent, -EBADMSG when
 * the record has the wrong size or the payload is malformed. proto_get_str
 * copies into a NUL-terminated malloc'd string owned by the caller and
 * refuses values containing NUL bytes. */
int proto_get_u32(const void *payload, size_t len, uint16_t tag, uint32_t *ret);
int proto_get_u64(const void *payload, size_t len, uint16_t tag, uint64_t *ret);
int proto_get_str(const void *payload, size_t len, uint16_t tag, char **ret);

#endif

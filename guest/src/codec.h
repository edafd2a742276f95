/* Frame and TLV codec of the host<->guest protocol (docs/protocol.md). Shared with the tests. */
#ifndef EMBERD_CODEC_H
#define EMBERD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define MAGIC0 0x45 /* 'E' */
#define MAGIC1 0x4d /* 'M' */
#define HEADER_SIZE 12
#define MAX_PAYLOAD (1u << 20)
#define INITIAL_WINDOW 262144u
#define MAX_DATA_FRAME 65536u /* largest STDOUT/STDERR payload the guest sends */
#define MAX_PING 4096u

enum msg_type {
    MSG_HELLO = 0x01,
    MSG_HELLO_ACK = 0x02,
    MSG_PING = 0x03,
    MSG_PONG = 0x04,
    MSG_EXEC = 0x10,
    MSG_STDOUT = 0x11,
    MSG_STDERR = 0x12,
    MSG_STDIN = 0x13,
    MSG_EXIT = 0x14,
    MSG_SIGNAL = 0x15,
    MSG_WINDOW = 0x16,
    MSG_RESIZE = 0x17,
    MSG_CONNECT = 0x18,
    MSG_CONNECTED = 0x19,
    MSG_CLOSE = 0x1a,
    MSG_SHUTDOWN = 0x20,
    MSG_ERROR = 0x7f,
};

/* ERROR codes (stable strings, see the table in docs/protocol.md). */
#define E_BAD_MAGIC "BAD_MAGIC"
#define E_FRAME_TOO_LARGE "FRAME_TOO_LARGE"
#define E_UNKNOWN_TYPE "UNKNOWN_TYPE"
#define E_BAD_PAYLOAD "BAD_PAYLOAD"
#define E_BAD_CHANNEL "BAD_CHANNEL"
#define E_CHANNEL_IN_USE "CHANNEL_IN_USE"
#define E_NO_SUCH_CHANNEL "NO_SUCH_CHANNEL"
#define E_TOO_MANY_EXECS "TOO_MANY_EXECS"
#define E_SPAWN_FAILED "SPAWN_FAILED"
/* CLOSE codes of a proxied connection (portfwd.h). */
#define C_CONNECT_REFUSED "CONNECT_REFUSED"
#define C_CONNECT_FAILED "CONNECT_FAILED"
#define C_TOO_MANY_CONNECTIONS "TOO_MANY_CONNECTIONS"
#define C_FLOW_CONTROL "FLOW_CONTROL"
#define C_RESET "RESET"
/* HELLO_ACK limits_error codes (a HELLO's disk_bytes/pids_max were not applied). */
#define E_LIMIT_INVALID "LIMIT_INVALID"         /* the value cannot be had: below usage, above the ceiling, 0 */
#define E_LIMIT_UNSUPPORTED "LIMIT_UNSUPPORTED" /* this guest has no way to enforce it */

struct frame {
    uint8_t type, flags;
    uint32_t channel;
    const uint8_t *payload; /* points into the decoder buffer: valid until the next dec_* call */
    uint32_t len;
};

/* ---- incremental decoder: bytes in, whole frames out, resync on the magic ---- */

struct decoder {
    uint8_t *buf;
    size_t cap, start, end; /* unconsumed bytes are buf[start, end) */
    int in_garbage;         /* inside a garbage run: BAD_MAGIC already reported */
};

enum { DEC_MORE, DEC_FRAME, DEC_ERROR };

int dec_init(struct decoder *d); /* buffer of HEADER_SIZE + MAX_PAYLOAD; -1 on ENOMEM */
void dec_reset(struct decoder *d);
/* Where to put new bytes (compacts first); *n is the room left. */
uint8_t *dec_space(struct decoder *d, size_t *n);
void dec_commit(struct decoder *d, size_t n);
/* DEC_FRAME fills *f; DEC_ERROR sets *code and *msg (BAD_MAGIC, FRAME_TOO_LARGE) and has already
 * skipped ahead; DEC_MORE needs more bytes. */
int dec_next(struct decoder *d, struct frame *f, const char **code, const char **msg);

/* ---- message schema and TLV ---- */

enum kind { K_U8, K_U32, K_U64, K_BYTES };
enum { F_REQUIRED = 1, F_REPEATED = 2 };

struct field_spec {
    uint8_t tag, kind, flags;
    const char *name;
};

const char *msg_name(uint8_t type);  /* NULL for an unknown type */
int msg_is_tlv(uint8_t type);        /* 1: TLV payload, 0: raw bytes */
const struct field_spec *field_spec(uint8_t type, uint8_t tag); /* NULL: unknown tag */

struct tlv {
    uint8_t tag;
    const struct field_spec *spec; /* NULL for an unknown tag */
    const uint8_t *val;
    uint32_t len;
    uint64_t num; /* decoded value of u8/u32/u64 fields */
};

/* Validates a TLV payload against the schema of `type`: 0 if fine, else -1 and a reason in why. */
int tlv_check(uint8_t type, const uint8_t *p, size_t n, char *why, size_t whylen);

/* Iterates the fields of a payload that passed tlv_check. */
struct tlv_iter {
    uint8_t type;
    const uint8_t *p, *end;
};
void tlv_iter_init(struct tlv_iter *it, const struct frame *f);
int tlv_next(struct tlv_iter *it, struct tlv *out); /* 1: a field, 0: the end */

/* ---- encoder: appends frames to a growable byte queue ---- */

struct buf {
    uint8_t *data;
    size_t off, len, cap; /* pending bytes are data[off, len) */
    int err;              /* allocation failed while building the current frame */
};

static inline size_t buf_pending(const struct buf *b) { return b->len - b->off; }
int buf_put(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_clear(struct buf *b);
void buf_free(struct buf *b);

/* Zero-copy data frames: read up to n payload bytes into buf_tail(b, HEADER_SIZE + n) +
 * HEADER_SIZE, then enc_data_commit() the bytes to keep (NULL: out of memory). */
uint8_t *buf_tail(struct buf *b, size_t n);
void enc_data_commit(struct buf *b, uint8_t type, uint32_t channel, size_t n);

size_t enc_begin(struct buf *b, uint8_t type, uint32_t channel);
void enc_u8(struct buf *b, uint8_t tag, uint8_t v);
void enc_u32(struct buf *b, uint8_t tag, uint32_t v);
void enc_u64(struct buf *b, uint8_t tag, uint64_t v);
void enc_bytes(struct buf *b, uint8_t tag, const void *p, size_t n);
void enc_str(struct buf *b, uint8_t tag, const char *s);
int enc_end(struct buf *b, size_t start); /* patches the length; drops the frame on ENOMEM (-1) */
int enc_raw(struct buf *b, uint8_t type, uint32_t channel, const void *p, size_t n);

uint32_t get_be32(const uint8_t *p);
uint64_t get_be64(const uint8_t *p);

#endif

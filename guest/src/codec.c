/* Frame and TLV codec. Everything here treats input as hostile: every length is checked against
 * what is actually there before it is used, and nothing is allocated in proportion to input
 * except the one fixed-size receive buffer. */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t get_be64(const uint8_t *p) { return (uint64_t)get_be32(p) << 32 | get_be32(p + 4); }

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

/* ---- schema (mirrors src/agent/codec.ts) ---- */

#define REQ F_REQUIRED
#define REP F_REPEATED
static const struct field_spec hello[] = {
    { 1, K_U32, REQ, "proto_version" }, { 2, K_U64, 0, "realtime_ns" }, { 3, K_BYTES, 0, "entropy" }, { 4, K_BYTES, 0, "hostname" },
    { 5, K_U64, 0, "disk_bytes" }, { 6, K_U32, 0, "pids_max" }, { 0 } };
static const struct field_spec hello_ack[] = {
    { 1, K_U32, REQ, "proto_version" }, { 2, K_BYTES, REQ, "agent_version" },
    { 3, K_BYTES, REP, "capability" }, { 4, K_BYTES, 0, "transport" }, { 5, K_U64, 0, "uptime_ms" },
    { 6, K_U64, 0, "disk_bytes" }, { 7, K_U32, 0, "pids_max" }, { 8, K_U64, 0, "memory_max" },
    { 9, K_BYTES, 0, "limits_error" }, { 10, K_BYTES, 0, "limits_message" }, { 0 } };
static const struct field_spec exec[] = {
    { 1, K_BYTES, REP, "argv" }, { 2, K_BYTES, 0, "code" }, { 3, K_BYTES, REP, "env" },
    { 4, K_BYTES, 0, "cwd" }, { 5, K_BYTES, 0, "stdin" }, { 6, K_U8, 0, "stdin_open" },
    { 7, K_U64, 0, "timeout_ms" }, { 8, K_U64, 0, "output_cap" }, { 9, K_U8, 0, "fresh_process" },
    { 10, K_U8, 0, "tty" }, { 11, K_U32, 0, "rows" }, { 12, K_U32, 0, "cols" }, { 0 } };
static const struct field_spec exit_[] = {
    { 1, K_U32, REQ, "exit_code" }, { 2, K_U32, 0, "signal" }, { 3, K_U8, 0, "timed_out" },
    { 4, K_U8, 0, "truncated" }, { 5, K_U64, 0, "duration_us" }, { 6, K_U8, 0, "fast_path" }, { 0 } };
static const struct field_spec signal_[] = { { 1, K_U32, REQ, "signo" }, { 0 } };
static const struct field_spec window[] = { { 1, K_U32, REQ, "increment" }, { 0 } };
static const struct field_spec resize[] = { { 1, K_U32, REQ, "rows" }, { 2, K_U32, REQ, "cols" }, { 0 } };
static const struct field_spec connect_[] = { { 1, K_U32, REQ, "port" }, { 0 } };
static const struct field_spec close_[] = { { 1, K_BYTES, 0, "code" }, { 2, K_BYTES, 0, "message" }, { 0 } };
static const struct field_spec none[] = { { 0 } };
static const struct field_spec error[] = {
    { 1, K_BYTES, REQ, "code" }, { 2, K_BYTES, REQ, "message" }, { 0 } };

static const struct msg_spec {
    uint8_t type;
    const char *name;
    const struct field_spec *fields; /* NULL: raw payload */
} msgs[] = {
    { MSG_HELLO, "HELLO", hello },     { MSG_HELLO_ACK, "HELLO_ACK", hello_ack },
    { MSG_PING, "PING", NULL },        { MSG_PONG, "PONG", NULL },
    { MSG_EXEC, "EXEC", exec },        { MSG_STDOUT, "STDOUT", NULL },
    { MSG_STDERR, "STDERR", NULL },    { MSG_STDIN, "STDIN", NULL },
    { MSG_EXIT, "EXIT", exit_ },       { MSG_SIGNAL, "SIGNAL", signal_ },
    { MSG_WINDOW, "WINDOW", window },  { MSG_SHUTDOWN, "SHUTDOWN", none },
    { MSG_RESIZE, "RESIZE", resize }, { MSG_ERROR, "ERROR", error },
    { MSG_CONNECT, "CONNECT", connect_ }, { MSG_CONNECTED, "CONNECTED", none },
    { MSG_CLOSE, "CLOSE", close_ },
};

static const struct msg_spec *msg_spec(uint8_t type)
{
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++)
        if (msgs[i].type == type)
            return &msgs[i];
    return NULL;
}

const char *msg_name(uint8_t type)
{
    const struct msg_spec *m = msg_spec(type);
    return m ? m->name : NULL;
}

int msg_is_tlv(uint8_t type)
{
    const struct msg_spec *m = msg_spec(type);
    return m && m->fields;
}

const struct field_spec *field_spec(uint8_t type, uint8_t tag)
{
    const struct msg_spec *m = msg_spec(type);
    if (!m || !m->fields)
        return NULL;
    for (const struct field_spec *f = m->fields; f->name; f++)
        if (f->tag == tag)
            return f;
    return NULL;
}

static int kind_len(uint8_t kind)
{
    return kind == K_U8 ? 1 : kind == K_U32 ? 4 : kind == K_U64 ? 8 : -1;
}

/* ---- TLV ---- */

int tlv_check(uint8_t type, const uint8_t *p, size_t n, char *why, size_t whylen)
{
    const struct msg_spec *m = msg_spec(type);
    if (!m || !m->fields) {
        snprintf(why, whylen, "type 0x%02x has no TLV payload", type);
        return -1;
    }
    uint32_t seen = 0; /* bit per known tag (tags < 32) */
    size_t off = 0;
    while (off < n) {
        if (n - off < 5) {
            snprintf(why, whylen, "truncated field header at offset %zu", off);
            return -1;
        }
        uint8_t tag = p[off];
        uint32_t len = get_be32(p + off + 1);
        off += 5;
        if (len > n - off) {
            snprintf(why, whylen, "field %u runs past the payload", tag);
            return -1;
        }
        off += len;
        const struct field_spec *f = field_spec(type, tag);
        if (!f)
            continue; /* unknown tags are skipped: newer peers may add fields */
        int want = kind_len(f->kind);
        if (want >= 0 && len != (uint32_t)want) {
            snprintf(why, whylen, "field %s has length %u, expected %d", f->name, len, want);
            return -1;
        }
        if (tag < 32)
            seen |= 1u << tag;
    }
    for (const struct field_spec *f = m->fields; f->name; f++) {
        if ((f->flags & F_REQUIRED) && !(f->tag < 32 && (seen & (1u << f->tag)))) {
            snprintf(why, whylen, "%s lacks required field %s", m->name, f->name);
            return -1;
        }
    }
    return 0;
}

void tlv_iter_init(struct tlv_iter *it, const struct frame *f)
{
    it->type = f->type;
    it->p = f->payload;
    it->end = f->payload + f->len;
}

int tlv_next(struct tlv_iter *it, struct tlv *out)
{
    /* Re-checks bounds so that misuse (iterating an unchecked payload) cannot read out of range. */
    if (it->end - it->p < 5)
        return 0;
    uint32_t len = get_be32(it->p + 1);
    if (len > (size_t)(it->end - it->p - 5))
        return 0;
    out->tag = it->p[0];
    out->val = it->p + 5;
    out->len = len;
    out->spec = field_spec(it->type, out->tag);
    out->num = 0;
    if (out->spec && (int)len == kind_len(out->spec->kind))
        out->num = len == 1 ? out->val[0] : len == 4 ? get_be32(out->val) : get_be64(out->val);
    it->p += 5 + len;
    return 1;
}

/* ---- decoder ---- */

int dec_init(struct decoder *d)
{
    memset(d, 0, sizeof *d);
    d->cap = HEADER_SIZE + MAX_PAYLOAD;
    d->buf = malloc(d->cap);
    return d->buf ? 0 : -1;
}

void dec_reset(struct decoder *d)
{
    d->start = d->end = 0;
    d->in_garbage = 0;
}

uint8_t *dec_space(struct decoder *d, size_t *n)
{
    if (d->start > 0) {
        memmove(d->buf, d->buf + d->start, d->end - d->start);
        d->end -= d->start;
        d->start = 0;
    }
    *n = d->cap - d->end;
    return d->buf + d->end;
}

void dec_commit(struct decoder *d, size_t n)
{
    d->end += n <= d->cap - d->end ? n : d->cap - d->end;
}

/* Offset of the next "EM" at or after `from`, or where a trailing 'E' might start one. */
static size_t find_magic(const struct decoder *d, size_t from)
{
    size_t i = from;
    for (; i + 1 < d->end; i++)
        if (d->buf[i] == MAGIC0 && d->buf[i + 1] == MAGIC1)
            return i;
    return i < d->end && d->buf[i] == MAGIC0 ? i : d->end;
}

int dec_next(struct decoder *d, struct frame *f, const char **code, const char **msg)
{
    for (;;) {
        size_t avail = d->end - d->start;
        const uint8_t *h = d->buf + d->start;
        if (avail == 0)
            return DEC_MORE;
        if (h[0] != MAGIC0 || (avail >= 2 && h[1] != MAGIC1)) {
            d->start = find_magic(d, d->start + 1);
            if (!d->in_garbage) {
                d->in_garbage = 1;
                *code = E_BAD_MAGIC;
                *msg = "bytes without the frame magic; skipping to the next frame";
                return DEC_ERROR;
            }
            continue;
        }
        if (avail < HEADER_SIZE)
            return DEC_MORE;
        uint32_t len = get_be32(h + 8);
        if (len > MAX_PAYLOAD) {
            /* The length cannot be trusted, so neither can the frame boundary: resync. */
            d->start = find_magic(d, d->start + 2);
            d->in_garbage = 1;
            *code = E_FRAME_TOO_LARGE;
            *msg = "frame length exceeds 1048576; skipping to the next frame";
            return DEC_ERROR;
        }
        if (avail < HEADER_SIZE + (size_t)len)
            return DEC_MORE;
        f->type = h[2];
        f->flags = h[3];
        f->channel = get_be32(h + 4);
        f->len = len;
        f->payload = h + HEADER_SIZE;
        d->start += HEADER_SIZE + len;
        d->in_garbage = 0;
        return DEC_FRAME;
    }
}

/* ---- encoder ---- */

static int buf_reserve(struct buf *b, size_t n)
{
    if (b->err)
        return -1;
    if (b->cap - b->len >= n)
        return 0;
    if (b->off > 0) { /* reclaim what was already written out */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= n)
            return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) {
            b->err = 1;
            return -1;
        }
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->err = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_put(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return b->err ? -1 : 0;
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

uint8_t *buf_tail(struct buf *b, size_t n)
{
    b->err = 0;
    return buf_reserve(b, n) < 0 ? (b->err = 0, NULL) : b->data + b->len;
}

void enc_data_commit(struct buf *b, uint8_t type, uint32_t channel, size_t n)
{
    uint8_t *h = b->data + b->len;
    h[0] = MAGIC0;
    h[1] = MAGIC1;
    h[2] = type;
    h[3] = 0;
    put_be32(h + 4, channel);
    put_be32(h + 8, (uint32_t)n);
    b->len += HEADER_SIZE + n;
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n < buf_pending(b) ? n : buf_pending(b);
    if (b->off == b->len)
        b->off = b->len = 0;
}

void buf_clear(struct buf *b)
{
    b->off = b->len = 0;
    b->err = 0;
}

void buf_free(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Frames are built in place; `start` is an offset from data[off] because buf_reserve may
 * compact the buffer (moving data) while the frame is being built. */
size_t enc_begin(struct buf *b, uint8_t type, uint32_t channel)
{
    uint8_t h[HEADER_SIZE] = { MAGIC0, MAGIC1, type, 0 };
    put_be32(h + 4, channel);
    b->err = 0;
    size_t start = buf_pending(b);
    buf_put(b, h, sizeof h);
    return start;
}

static void enc_field(struct buf *b, uint8_t tag, const void *p, size_t n)
{
    uint8_t h[5] = { tag };
    put_be32(h + 1, (uint32_t)n);
    if (n > MAX_PAYLOAD) {
        b->err = 1;
        return;
    }
    buf_put(b, h, sizeof h);
    buf_put(b, p, n);
}

void enc_u8(struct buf *b, uint8_t tag, uint8_t v) { enc_field(b, tag, &v, 1); }

void enc_u32(struct buf *b, uint8_t tag, uint32_t v)
{
    uint8_t p[4];
    put_be32(p, v);
    enc_field(b, tag, p, 4);
}

void enc_u64(struct buf *b, uint8_t tag, uint64_t v)
{
    uint8_t p[8];
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
    enc_field(b, tag, p, 8);
}

void enc_bytes(struct buf *b, uint8_t tag, const void *p, size_t n) { enc_field(b, tag, p, n); }
void enc_str(struct buf *b, uint8_t tag, const char *s) { enc_field(b, tag, s, strlen(s)); }

int enc_end(struct buf *b, size_t start)
{
    size_t at = b->off + start;
    if (b->err || b->len - at - HEADER_SIZE > MAX_PAYLOAD) { /* drop the half-built frame */
        b->len = at;
        b->err = 0;
        return -1;
    }
    put_be32(b->data + at + 8, (uint32_t)(b->len - at - HEADER_SIZE));
    return 0;
}

int enc_raw(struct buf *b, uint8_t type, uint32_t channel, const void *p, size_t n)
{
    size_t start = enc_begin(b, type, channel);
    if (n > MAX_PAYLOAD)
        b->err = 1;
    else
        buf_put(b, p, n);
    return enc_end(b, start);
}

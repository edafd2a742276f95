/* libFuzzer harness of the guest codec (src/codec.c), built with clang -fsanitize=fuzzer,address,
 * undefined on the host (guest/fuzz/run.sh). An input is one control byte and then a byte stream
 * from a hostile host. The stream goes through the incremental decoder twice, once in a single
 * piece and once in chunks whose sizes the control byte seeds; every frame's TLV payload is checked
 * and iterated (also when the check fails: tlv_next must stay in range on an unchecked payload),
 * and every frame the guest would accept is re-encoded with the guest's own encoder. Beyond what
 * the sanitizers catch, these abort (a crash for libFuzzer):
 *   - the two decodings differ (frames or errors depend on where the stream was split);
 *   - a frame that passed tlv_check does not re-encode to its own bytes (the decoder and the
 *     encoder disagree, or the iterator lost or invented a field);
 *   - the decoder reports an error other than BAD_MAGIC / FRAME_TOO_LARGE, a frame longer than
 *     MAX_PAYLOAD, or runs out of room for bytes it has not consumed;
 *   - the outbound queue (what the guest sends: enc_raw, the zero-copy buf_tail/enc_data_commit,
 *     TLV frames built in place, buf_consume as the socket takes bytes, with the compaction these
 *     trigger) holds anything but what a flat model of it holds. The decoded frames drive it.
 * Decoders are allocated once (HEADER_SIZE + MAX_PAYLOAD each) and reset per input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define MAX_EVENTS 4096

struct event {
    int kind; /* DEC_FRAME or DEC_ERROR */
    uint8_t type, flags;
    uint32_t channel, len;
    uint64_t hash;      /* FNV-1a of the payload */
    const char *code;   /* DEC_ERROR */
};

struct events {
    struct event ev[MAX_EVENTS];
    size_t n;
};

static void fail(const char *what)
{
    fprintf(stderr, "codec_fuzz: %s\n", what);
    abort();
}

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* What the guest does with one frame, minus acting on it: check, iterate, re-encode. */
static void exercise_frame(const struct frame *f)
{
    if (f->len > MAX_PAYLOAD)
        fail("frame longer than MAX_PAYLOAD");
    if (!msg_is_tlv(f->type))
        return;
    char why[160];
    int ok = tlv_check(f->type, f->payload, f->len, why, sizeof why) == 0;
    if (!ok && why[0] == 0)
        fail("tlv_check refused without a reason");

    static struct buf b;
    buf_clear(&b);
    size_t at = enc_begin(&b, f->type, f->channel);
    struct tlv_iter it;
    struct tlv v;
    tlv_iter_init(&it, f);
    size_t consumed = 0;
    while (tlv_next(&it, &v)) {
        if (v.val < f->payload || v.val + v.len > f->payload + f->len)
            fail("tlv_next returned a field outside the payload");
        consumed += 5 + (size_t)v.len;
        int kind = v.spec ? v.spec->kind : K_BYTES;
        if (ok && v.spec && kind != K_BYTES) {
            size_t want = kind == K_U8 ? 1 : kind == K_U32 ? 4 : 8;
            if (v.len != want)
                fail("a checked numeric field has the wrong length");
        }
        if (kind == K_U8)
            enc_u8(&b, v.tag, (uint8_t)v.num);
        else if (kind == K_U32)
            enc_u32(&b, v.tag, (uint32_t)v.num);
        else if (kind == K_U64)
            enc_u64(&b, v.tag, v.num);
        else
            enc_bytes(&b, v.tag, v.val, v.len);
    }
    if (consumed > f->len)
        fail("tlv_next consumed more than the payload");
    if (enc_end(&b, at) < 0)
        fail("re-encoding a received frame failed");
    if (!ok)
        return;
    if (consumed != f->len)
        fail("a checked payload was not iterated to its end");
    const uint8_t *e = b.data + b.off;
    if (buf_pending(&b) != HEADER_SIZE + (size_t)f->len || e[0] != MAGIC0 || e[1] != MAGIC1 || e[2] != f->type ||
        get_be32(e + 4) != f->channel || get_be32(e + 8) != f->len ||
        memcmp(e + HEADER_SIZE, f->payload, f->len) != 0)
        fail("a checked frame does not re-encode to its own bytes");
}

/* ---- the outbound queue against a flat model ---- */

static struct buf q;
static uint8_t *model;
static size_t model_len, model_off, model_cap;

static void model_add(const uint8_t *p, size_t n)
{
    if (model_len + n > model_cap) {
        model_cap = (model_len + n) * 2;
        model = realloc(model, model_cap);
        if (!model)
            fail("out of memory");
    }
    memcpy(model + model_len, p, n);
    model_len += n;
}

static void model_frame(const struct frame *f)
{
    uint8_t h[HEADER_SIZE] = { MAGIC0, MAGIC1, f->type, 0,
                               (uint8_t)(f->channel >> 24), (uint8_t)(f->channel >> 16), (uint8_t)(f->channel >> 8), (uint8_t)f->channel,
                               (uint8_t)(f->len >> 24), (uint8_t)(f->len >> 16), (uint8_t)(f->len >> 8), (uint8_t)f->len };
    model_add(h, sizeof h);
    model_add(f->payload, f->len);
}

/* Queues `f` one of three ways (or not at all), then lets the "socket" take some bytes. */
static void queue_frame(const struct frame *f, uint64_t hash)
{
    char why[160];
    switch (hash & 3) {
    case 0:
        if (enc_raw(&q, f->type, f->channel, f->payload, f->len) < 0)
            fail("enc_raw refused a frame within MAX_PAYLOAD");
        model_frame(f);
        break;
    case 1: {
        uint8_t *p = buf_tail(&q, HEADER_SIZE + (size_t)f->len);
        if (!p)
            fail("buf_tail out of memory");
        memcpy(p + HEADER_SIZE, f->payload, f->len);
        enc_data_commit(&q, f->type, f->channel, f->len);
        model_frame(f);
        break;
    }
    case 2:
        if (msg_is_tlv(f->type) && tlv_check(f->type, f->payload, f->len, why, sizeof why) == 0) {
            size_t at = enc_begin(&q, f->type, f->channel);
            struct tlv_iter it;
            struct tlv v;
            tlv_iter_init(&it, f);
            while (tlv_next(&it, &v))
                enc_bytes(&q, v.tag, v.val, v.len); /* the field's bytes as they came: same wire */
            if (enc_end(&q, at) < 0)
                fail("enc_end refused a frame within MAX_PAYLOAD");
            model_frame(f);
        }
        break;
    default:
        break;
    }
    size_t pending = buf_pending(&q);
    if (pending != model_len - model_off)
        fail("outbound queue length differs from the model");
    size_t k = (size_t)(hash >> 8) % (pending + 2); /* sometimes more than is there */
    buf_consume(&q, k);
    model_off += k < pending ? k : pending;
    if (model_off == model_len)
        model_off = model_len = 0;
    if (buf_pending(&q) != model_len - model_off ||
        (buf_pending(&q) && memcmp(q.data + q.off, model + model_off, buf_pending(&q)) != 0))
        fail("outbound queue bytes differ from the model");
}

/* Feeds `data` to `d` in chunks (sizes from `seed`; 0: all at once) and records every result. */
static void decode(struct decoder *d, const uint8_t *data, size_t n, uint32_t seed, struct events *out, int outbound)
{
    dec_reset(d);
    out->n = 0;
    size_t fed = 0;
    for (;;) {
        struct frame f;
        const char *code = NULL, *msg = NULL;
        int r = dec_next(d, &f, &code, &msg);
        if (r == DEC_MORE) {
            if (fed == n)
                return;
            size_t room;
            uint8_t *p = dec_space(d, &room);
            if (room == 0)
                fail("decoder has no room left for more bytes");
            size_t k = n - fed;
            if (seed) {
                seed = seed * 1103515245u + 12345u;
                /* Mostly tiny chunks (split headers and magics), sometimes large ones. */
                size_t c = (seed >> 16) % 8 == 0 ? 1 + (seed >> 8) % 4096 : 1 + (seed >> 8) % 13;
                if (k > c)
                    k = c;
            }
            if (k > room)
                k = room;
            memcpy(p, data + fed, k);
            dec_commit(d, k);
            fed += k;
            continue;
        }
        if (out->n == MAX_EVENTS)
            return; /* enough for one input; both decodings stop at the same event */
        struct event *e = &out->ev[out->n++];
        memset(e, 0, sizeof *e);
        e->kind = r;
        if (r == DEC_ERROR) {
            if (strcmp(code, E_BAD_MAGIC) != 0 && strcmp(code, E_FRAME_TOO_LARGE) != 0)
                fail("decoder reported an unexpected error code");
            if (!msg || !msg[0])
                fail("decoder error without a message");
            e->code = code;
        } else {
            e->type = f.type;
            e->flags = f.flags;
            e->channel = f.channel;
            e->len = f.len;
            e->hash = fnv(f.payload, f.len);
            exercise_frame(&f);
            if (outbound)
                queue_frame(&f, e->hash);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct decoder whole, split;
    static struct events a, b;
    if (!whole.buf && (dec_init(&whole) < 0 || dec_init(&split) < 0))
        fail("out of memory");
    if (size == 0)
        return 0;
    uint32_t seed = data[0] | 0x100u; /* never 0: always really split */
    buf_free(&q); /* from capacity 0 each time, so that compaction and growth happen */
    model_len = model_off = 0;
    decode(&whole, data + 1, size - 1, 0, &a, 1);
    decode(&split, data + 1, size - 1, seed, &b, 0);
    if (a.n != b.n)
        fail("the split changed the number of frames and errors");
    for (size_t i = 0; i < a.n; i++) {
        const struct event *x = &a.ev[i], *y = &b.ev[i];
        if (x->kind != y->kind || x->type != y->type || x->flags != y->flags || x->channel != y->channel ||
            x->len != y->len || x->hash != y->hash || (x->code && strcmp(x->code, y->code) != 0))
            fail("the split changed a frame or an error");
    }
    return 0;
}

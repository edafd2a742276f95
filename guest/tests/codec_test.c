/* Golden-vector tests of the guest codec (src/codec.c): every protocol/vectors/NAME.hex is
 * decoded, dumped in the canonical format of docs/protocol.md and compared with NAME.txt;
 * valid frames are re-encoded and compared byte for byte. Then the decoder's resync rules and
 * a mutation fuzz (run under ASan/UBSan by the Makefile). Prints "N passed, M failed". */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

static int passed, failed;

static void check(int ok, const char *name, const char *fmt, const char *detail)
{
    if (ok) {
        passed++;
        printf("ok   %s\n", name);
    } else {
        failed++;
        printf("FAIL %s\n", name);
        if (fmt)
            printf(fmt, detail);
    }
}

/* ---- helpers ---- */

struct text {
    char *s;
    size_t len, cap;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->s = realloc(t->s, t->cap);
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = 0;
}

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void text_printf(struct text *t, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    text_add(t, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void text_quote(struct text *t, const uint8_t *p, size_t n)
{
    text_add(t, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            text_add(t, (const char *)&p[i], 1);
        else
            text_printf(t, "\\x%02x", p[i]);
    }
    text_add(t, "\"", 1);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct text t = { 0 };
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        text_add(&t, tmp, n);
    fclose(f);
    if (!t.s)
        text_add(&t, "", 0);
    *len = t.len;
    return t.s;
}

/* Hex with whitespace and '#' comments (to the end of the line). -1 on a stray character. */
static long parse_hex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int nib = -1;
    for (; *s; s++) {
        if (*s == '#') {
            while (*s && *s != '\n')
                s++;
            if (!*s)
                break;
            continue;
        }
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
            continue;
        int v = *s >= '0' && *s <= '9' ? *s - '0' : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
              : *s >= 'A' && *s <= 'F' ? *s - 'A' + 10 : -1;
        if (v < 0 || n >= cap)
            return -1;
        if (nib < 0) {
            nib = v;
        } else {
            out[n++] = (uint8_t)(nib << 4 | v);
            nib = -1;
        }
    }
    return nib < 0 ? (long)n : -1;
}

/* The canonical dump, or "error CODE" for a frame a receiver must reject. */
static void dump(const struct frame *f, struct text *t)
{
    const char *name = msg_name(f->type);
    char why[160];
    if (!name) {
        text_printf(t, "error %s", E_UNKNOWN_TYPE);
        return;
    }
    if (msg_is_tlv(f->type) && tlv_check(f->type, f->payload, f->len, why, sizeof why) < 0) {
        text_printf(t, "error %s", E_BAD_PAYLOAD);
        return;
    }
    text_printf(t, "%s channel=%u flags=%u", name, f->channel, f->flags);
    if (!msg_is_tlv(f->type)) {
        text_add(t, "\ndata ", 6);
        text_quote(t, f->payload, f->len);
        return;
    }
    struct tlv_iter it;
    struct tlv v;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &v)) {
        if (!v.spec) {
            text_printf(t, "\ntag%u=", v.tag);
            text_quote(t, v.val, v.len);
        } else if (v.spec->kind == K_BYTES) {
            text_printf(t, "\n%s=", v.spec->name);
            text_quote(t, v.val, v.len);
        } else {
            text_printf(t, "\n%s=%llu", v.spec->name, (unsigned long long)v.num);
        }
    }
}

static void reencode(const struct frame *f, struct buf *b)
{
    if (!msg_is_tlv(f->type)) {
        enc_raw(b, f->type, f->channel, f->payload, f->len);
    } else {
        size_t at = enc_begin(b, f->type, f->channel);
        struct tlv_iter it;
        struct tlv v;
        tlv_iter_init(&it, f);
        while (tlv_next(&it, &v)) {
            int kind = v.spec ? v.spec->kind : K_BYTES;
            if (kind == K_U8)
                enc_u8(b, v.tag, (uint8_t)v.num);
            else if (kind == K_U32)
                enc_u32(b, v.tag, (uint32_t)v.num);
            else if (kind == K_U64)
                enc_u64(b, v.tag, v.num);
            else
                enc_bytes(b, v.tag, v.val, v.len);
        }
        enc_end(b, at);
    }
    b->data[b->off + 3] = f->flags; /* the guest only ever sends 0; vectors might not */
}

/* Hands the decoder the next at most `chunk` of the n bytes at data (as much as it has room
 * for); returns how many it took. */
static size_t feed(struct decoder *d, const uint8_t *data, size_t n, size_t chunk)
{
    size_t room;
    uint8_t *p = dec_space(d, &room);
    size_t k = n < chunk ? n : chunk;
    if (k > room)
        k = room;
    memcpy(p, data, k);
    dec_commit(d, k);
    return k;
}

/* Feeds `data` in chunks of `chunk` bytes; returns the dump of the first result (frame or
 * error), "incomplete" if there is none, and flags bytes left after a frame. */
static void decode_all(const uint8_t *data, size_t n, size_t chunk, struct text *out, struct buf *enc)
{
    struct decoder d;
    dec_init(&d);
    size_t fed = 0;
    struct frame f;
    const char *code = NULL, *msg = NULL;
    int r = DEC_MORE;
    while (r == DEC_MORE && fed < n) {
        fed += feed(&d, data + fed, n - fed, chunk);
        r = dec_next(&d, &f, &code, &msg);
    }
    if (r == DEC_ERROR) {
        text_printf(out, "error %s", code);
    } else if (r == DEC_FRAME) {
        dump(&f, out);
        if (enc && strncmp(out->s, "error ", 6) != 0)
            reencode(&f, enc);
        if (fed < n || d.end != d.start)
            text_add(out, "\n(trailing bytes)", 17);
    } else {
        text_add(out, "incomplete", 10);
    }
    free(d.buf);
}

/* ---- golden vectors ---- */

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void vector_tests(const char *dir)
{
    DIR *dd = opendir(dir);
    if (!dd) {
        check(0, "vectors directory", "  cannot open %s\n", dir);
        return;
    }
    char *names[256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dd)) && n < 256) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".hex") == 0)
            names[n++] = strndup(de->d_name, l - 4);
    }
    closedir(dd);
    qsort(names, n, sizeof names[0], cmp_names);
    check(n >= 20, "at least 20 vectors present", NULL, NULL);

    static uint8_t bytes[HEADER_SIZE + MAX_PAYLOAD + 64];
    for (int i = 0; i < n; i++) {
        char path[1024], label[300];
        size_t hlen, tlen;
        snprintf(path, sizeof path, "%s/%s.hex", dir, names[i]);
        char *hex = slurp(path, &hlen);
        snprintf(path, sizeof path, "%s/%s.txt", dir, names[i]);
        char *want = slurp(path, &tlen);
        snprintf(label, sizeof label, "%s: dump matches .txt", names[i]);
        long nb = hex ? parse_hex(hex, bytes, sizeof bytes) : -1;
        if (nb < 0 || !want) {
            check(0, label, "  unreadable .hex or missing .txt%s\n", "");
            continue;
        }
        while (tlen > 0 && (want[tlen - 1] == '\n' || want[tlen - 1] == '\r'))
            want[--tlen] = 0;

        struct text got = { 0 };
        struct buf enc = { 0 };
        decode_all(bytes, (size_t)nb, (size_t)nb + 1, &got, &enc);
        int ok = strcmp(got.s, want) == 0;
        check(ok, label, "%s", "");
        if (!ok)
            printf("  want:\n%s\n  got:\n%s\n", want, got.s);

        /* Same result when the bytes trickle in one at a time. */
        struct text slow = { 0 };
        decode_all(bytes, (size_t)nb, 1, &slow, NULL);
        snprintf(label, sizeof label, "%s: byte-at-a-time decode agrees", names[i]);
        check(strcmp(slow.s, got.s) == 0, label, "  got %s\n", slow.s);

        if (strncmp(want, "error ", 6) != 0) {
            snprintf(label, sizeof label, "%s: re-encodes to the same bytes", names[i]);
            check(buf_pending(&enc) == (size_t)nb && memcmp(enc.data + enc.off, bytes, (size_t)nb) == 0, label,
                  "  %s\n", "encoded bytes differ");
        }
        free(got.s);
        free(slow.s);
        buf_free(&enc);
        free(hex);
        free(want);
        free(names[i]);
    }
}

/* ---- stream behaviour beyond single frames ---- */

/* All decoder results for a byte stream, one per line: frame type names or "error CODE". */
static void stream_results(const uint8_t *data, size_t n, size_t chunk, struct text *out)
{
    struct decoder d;
    dec_init(&d);
    size_t fed = 0;
    for (;;) {
        struct frame f;
        const char *code, *msg;
        int r = dec_next(&d, &f, &code, &msg);
        if (r == DEC_ERROR) {
            text_printf(out, "%s;", code);
        } else if (r == DEC_FRAME) {
            text_printf(out, "%s;", msg_name(f.type) ? msg_name(f.type) : "?");
        } else if (fed < n) {
            fed += feed(&d, data + fed, n - fed, chunk);
        } else {
            break;
        }
    }
    if (!out->s)
        text_add(out, "", 0);
    free(d.buf);
}

static const uint8_t PING[] = { 0x45, 0x4d, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 2, 'h', 'i' };

static void stream_case(const char *name, const uint8_t *data, size_t n, const char *want)
{
    size_t chunks[] = { 1, 2, 3, 7, 4096 };
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        struct text got = { 0 };
        stream_results(data, n, chunks[i], &got);
        if (strcmp(got.s, want) != 0) {
            char detail[600];
            snprintf(detail, sizeof detail, "  chunk %zu: want %s got %s\n", chunks[i], want, got.s);
            check(0, name, "%s", detail);
            free(got.s);
            return;
        }
        free(got.s);
    }
    check(1, name, NULL, NULL);
}

static void stream_tests(void)
{
    uint8_t s[256];
    size_t n = 0;
#define ADD(p, len) (memcpy(s + n, (p), (len)), n += (len))
    ADD("GET / HTTP/1.1\r\n", 16);
    ADD(PING, sizeof PING);
    ADD("xxEEE", 5); /* another garbage run: 'E's that are not followed by 'M' */
    ADD(PING, sizeof PING);
    stream_case("garbage runs: one BAD_MAGIC each, frames after them survive", s, n,
                "BAD_MAGIC;PING;BAD_MAGIC;PING;");

    n = 0;
    const uint8_t big[] = { 0x45, 0x4d, 0x03, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3 };
    ADD(big, sizeof big);
    ADD(PING, sizeof PING);
    stream_case("FRAME_TOO_LARGE then resync on the next magic", s, n, "FRAME_TOO_LARGE;PING;");

    n = 0;
    ADD(big, 12);
    ADD("zz", 2);
    ADD(PING, sizeof PING);
    stream_case("garbage after FRAME_TOO_LARGE is the same run", s, n, "FRAME_TOO_LARGE;PING;");

    n = 0;
    const uint8_t empty_type[] = { 0x45, 0x4d, 0x55, 0, 0, 0, 0, 9, 0, 0, 0, 0 };
    ADD(empty_type, sizeof empty_type);
    ADD(PING, sizeof PING);
    stream_case("unknown type is still framed (payload skipped)", s, n, "?;PING;");
#undef ADD
}

static void encoder_tests(void)
{
    struct buf b = { 0 };
    enc_raw(&b, MSG_PONG, 0, "x", 1);
    size_t before = buf_pending(&b);
    static uint8_t huge[MAX_PAYLOAD + 1];
    int r = enc_raw(&b, MSG_STDOUT, 1, huge, sizeof huge);
    check(r < 0 && buf_pending(&b) == before, "encoder refuses payloads over MAX_PAYLOAD, queue intact", NULL, NULL);
    r = enc_raw(&b, MSG_STDOUT, 1, huge, MAX_PAYLOAD);
    check(r == 0 && buf_pending(&b) == before + HEADER_SIZE + MAX_PAYLOAD, "encoder takes exactly MAX_PAYLOAD", NULL, NULL);
    buf_consume(&b, before);
    check(b.data[b.off] == MAGIC0 && get_be32(b.data + b.off + 8) == MAX_PAYLOAD, "queue consumes from the front", NULL, NULL);
    buf_free(&b);

    char why[160];
    const uint8_t dup_len[] = { 1, 0xff, 0xff, 0xff, 0xff, 0 };
    check(tlv_check(MSG_WINDOW, dup_len, sizeof dup_len, why, sizeof why) < 0, "TLV length 0xffffffff rejected", NULL, NULL);
    const uint8_t short_hdr[] = { 1, 0, 0, 0, 4, 0, 0, 0, 1, 9, 0 };
    check(tlv_check(MSG_WINDOW, short_hdr, sizeof short_hdr, why, sizeof why) < 0, "truncated TLV header rejected", NULL, NULL);
}

/* Mutated vectors and random bytes through the whole decode path; ASan/UBSan judge. */
static void fuzz_tests(void)
{
    static uint8_t data[8192];
    unsigned seed = 12345;
    unsigned frames = 0, errors = 0;
    for (int round = 0; round < 3000; round++) {
        size_t n = 0;
        while (n + 64 < sizeof data && (seed = seed * 1103515245 + 12345) % 7 != 0) {
            /* A plausible frame header with a small TLV payload, then random mutations. */
            uint8_t types[] = { 1, 2, 3, 4, 0x10, 0x11, 0x13, 0x14, 0x15, 0x16, 0x18, 0x1a, 0x20, 0x7f, 0x42 };
            size_t plen = (seed >> 8) % 48;
            uint8_t h[12] = { 0x45, 0x4d, types[(seed >> 4) % sizeof types], 0, 0, 0, 0, 1, 0, 0, 0, (uint8_t)plen };
            memcpy(data + n, h, 12);
            n += 12;
            for (size_t i = 0; i < plen; i++) {
                seed = seed * 1103515245 + 12345;
                data[n++] = (seed >> 16) % 4 == 0 ? (uint8_t)(seed >> 20) : (uint8_t)((seed >> 24) % 9);
            }
            seed = seed * 1103515245 + 12345;
            if (seed % 5 == 0)
                data[n - 1 - (seed >> 10) % (plen + 12)] ^= (uint8_t)(1u << ((seed >> 4) % 8));
        }
        struct decoder d;
        dec_init(&d);
        size_t fed = 0;
        for (;;) {
            struct frame f;
            const char *code, *msg;
            int r = dec_next(&d, &f, &code, &msg);
            if (r == DEC_FRAME) {
                frames++;
                struct text t = { 0 };
                dump(&f, &t); /* tlv_check + iteration over whatever arrived */
                free(t.s);
            } else if (r == DEC_ERROR) {
                errors++;
            } else if (fed < n) {
                seed = seed * 1103515245 + 12345;
                fed += feed(&d, data + fed, n - fed, 1 + (seed >> 8) % 97);
            } else {
                break;
            }
        }
        free(d.buf);
    }
    char detail[100];
    snprintf(detail, sizeof detail, "%u frames, %u errors", frames, errors);
    check(frames > 1000 && errors > 10, "fuzz: mutated streams decode without faults", "  %s\n", detail);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "../protocol/vectors";
    vector_tests(dir);
    stream_tests();
    encoder_tests();
    fuzz_tests();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

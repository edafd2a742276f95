/* Proxied TCP connections (see portfwd.h). A connection ends with CLOSE, the last frame of its
 * channel: when both directions are done (the socket read EOF and the host's EOF was applied
 * with shutdown), when the socket fails, or when the host closes it; then the slot is free. */
#include "portfwd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pipes.h" /* OUTQ_HIGH */
#include "util.h"

#define GRANT_BATCH 32768 /* grant STDIN credit back in batches, not per write */
#define MAX_CREDIT (1ull << 40)

struct conn {
    bool used;
    uint32_t channel;
    int fd;
    bool connecting;     /* connect() in progress: STDIN waits in `in` */
    int pi;              /* pollfd index in this loop iteration, -1 if not polled */
    struct buf in;       /* STDIN bytes not yet written to the socket */
    uint64_t in_credit;  /* STDIN bytes the host may still send */
    uint64_t in_grant;   /* STDIN bytes written but not yet granted back */
    bool in_eof;         /* the host is done writing: shut the write side once `in` is written */
    bool wr_shut;        /* ... and that was done */
    uint64_t out_credit; /* STDOUT bytes we may still send */
    bool rd_eof;         /* the socket read EOF and the empty STDOUT went out */
};

static struct conn conns[MAX_CONNS];
static uint32_t closed[MAX_CONNS]; /* ring of recently closed channels (0 = empty slot) */
static unsigned closed_next;

struct conn *conn_find(uint32_t channel)
{
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].used && conns[i].channel == channel)
            return &conns[i];
    return NULL;
}

bool conn_recently_closed(uint32_t channel)
{
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (closed[i] == channel && channel != 0)
            return true;
    return false;
}

void conn_forget(uint32_t channel)
{
    for (size_t i = 0; i < MAX_CONNS; i++)
        if (closed[i] == channel)
            closed[i] = 0;
}

/* CLOSE (code NULL: an orderly end) as the channel's last frame; the slot is free again. */
static void send_close(struct buf *out, uint32_t channel, const char *code, const char *msg)
{
    size_t at = enc_begin(out, MSG_CLOSE, channel);
    if (code) {
        enc_str(out, 1, code);
        enc_str(out, 2, msg);
    }
    if (enc_end(out, at) < 0)
        say("channel %u: no memory for its CLOSE", channel);
    closed[closed_next++ % MAX_CONNS] = channel;
}

static void release(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    buf_free(&c->in);
    memset(c, 0, sizeof *c);
}

static void end(struct conn *c, struct buf *out, const char *code, const char *msg)
{
    uint32_t channel = c->channel;
    release(c);
    send_close(out, channel, code, msg);
}

/* ---- CONNECT ---- */

static void connected(struct conn *c, struct buf *out);

const char *conn_open(const struct frame *f, struct buf *out, char *msg, size_t msglen)
{
    if (conn_find(f->channel)) {
        snprintf(msg, msglen, "channel %u already has an open connection", f->channel);
        return E_CHANNEL_IN_USE;
    }
    uint32_t port = 0;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t))
        if (t.tag == 1)
            port = (uint32_t)t.num;
    if (port < 1 || port > 65535) {
        snprintf(msg, msglen, "CONNECT port must be 1-65535, not %u", port);
        return E_BAD_PAYLOAD;
    }
    conn_forget(f->channel);
    struct conn *c = NULL;
    for (int i = 0; i < MAX_CONNS && !c; i++)
        if (!conns[i].used)
            c = &conns[i];
    if (!c) {
        snprintf(msg, msglen, "at most %d connections are open at once", MAX_CONNS);
        send_close(out, f->channel, C_TOO_MANY_CONNECTIONS, msg);
        return NULL;
    }

    /* The guest's own loopback only: a sandbox without a network has nothing else, and one with a
     * network must not become a way past its egress rules. */
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        send_close(out, f->channel, C_CONNECT_FAILED, strerror(errno));
        return NULL;
    }
    /* The host coalesces; a proxy that delays small writes would add latency to every exchange. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    if (r < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        send_close(out, f->channel, err == ECONNREFUSED ? C_CONNECT_REFUSED : C_CONNECT_FAILED, strerror(err));
        return NULL;
    }
    memset(c, 0, sizeof *c);
    c->used = true;
    c->channel = f->channel;
    c->fd = fd;
    c->pi = -1;
    c->in_credit = INITIAL_WINDOW;
    c->out_credit = INITIAL_WINDOW;
    c->connecting = r < 0;
    if (!c->connecting)
        connected(c, out);
    return NULL;
}

/* ---- host -> socket ---- */

static void grant_stdin(struct conn *c, struct buf *out, bool force)
{
    if (c->in_grant == 0 || (!force && c->in_grant < GRANT_BATCH))
        return;
    size_t at = enc_begin(out, MSG_WINDOW, c->channel);
    enc_u32(out, 1, (uint32_t)c->in_grant);
    if (enc_end(out, at) == 0) {
        c->in_credit += c->in_grant;
        c->in_grant = 0;
    }
}

/* Writes what the socket takes now; false if the connection ended (the slot is free). */
static bool flush_stdin(struct conn *c, struct buf *out)
{
    if (c->connecting)
        return true;
    while (buf_pending(&c->in) > 0) {
        ssize_t n = send(c->fd, c->in.data + c->in.off, buf_pending(&c->in), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) { /* EPIPE, ECONNRESET: the server is gone */
            end(c, out, C_RESET, strerror(n < 0 ? errno : EPIPE));
            return false;
        }
        buf_consume(&c->in, (size_t)n);
        c->in_grant += (uint64_t)n;
    }
    grant_stdin(c, out, buf_pending(&c->in) == 0);
    if (c->in_eof && !c->wr_shut && buf_pending(&c->in) == 0) {
        shutdown(c->fd, SHUT_WR);
        c->wr_shut = true;
        if (c->rd_eof) {
            end(c, out, NULL, NULL);
            return false;
        }
    }
    return true;
}

void conn_stdin(struct conn *c, const uint8_t *p, size_t n, struct buf *out)
{
    if (n == 0) {
        c->in_eof = true;
    } else if (n > c->in_credit) {
        end(c, out, C_FLOW_CONTROL, "STDIN beyond the granted window");
        return;
    } else {
        c->in_credit -= n;
        if (c->in_eof || buf_put(&c->in, p, n) < 0) {
            c->in.err = 0;
            c->in_grant += n; /* nowhere to write them: drop the bytes but keep the credit flowing */
        }
    }
    flush_stdin(c, out);
}

/* ---- socket -> host ---- */

static void connected(struct conn *c, struct buf *out)
{
    c->connecting = false;
    size_t at = enc_begin(out, MSG_CONNECTED, c->channel);
    if (enc_end(out, at) < 0)
        say("channel %u: no memory for its CONNECTED", c->channel);
    flush_stdin(c, out); /* what the host sent meanwhile */
}

/* Reads the socket while the host has credit; false if the connection ended. */
static bool pump_output(struct conn *c, struct buf *out)
{
    while (!c->rd_eof && c->out_credit > 0 && buf_pending(out) < OUTQ_HIGH) {
        size_t want = c->out_credit < MAX_DATA_FRAME ? (size_t)c->out_credit : MAX_DATA_FRAME;
        uint8_t *frame = buf_tail(out, HEADER_SIZE + want);
        if (!frame)
            break;
        ssize_t n = recv(c->fd, frame + HEADER_SIZE, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0) {
            end(c, out, C_RESET, strerror(errno));
            return false;
        }
        /* ACK at once: a server that writes an answer in two pieces (head, body) with Nagle on
         * would otherwise wait for the delayed ACK of the first, 40 ms a request on a kept-alive
         * connection (bench/ports.ts). Linux clears the flag as it goes, so it is set per read. */
        if (n > 0)
            setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &(int){1}, sizeof(int));
        enc_data_commit(out, MSG_STDOUT, c->channel, (size_t)n); /* n == 0: EOF, the empty STDOUT */
        c->out_credit -= (uint64_t)n;
        if (n == 0) {
            c->rd_eof = true;
            if (c->wr_shut) {
                end(c, out, NULL, NULL);
                return false;
            }
        }
    }
    return true;
}

void conn_window(struct conn *c, uint32_t increment)
{
    c->out_credit += increment;
    if (c->out_credit > MAX_CREDIT)
        c->out_credit = MAX_CREDIT;
}

void conn_close(struct conn *c, struct buf *out)
{
    end(c, out, NULL, NULL);
}

/* ---- the serve loop's view ---- */

int conns_poll_prepare(struct pollfd *p, bool out_room)
{
    int n = 0;
    for (int i = 0; i < MAX_CONNS; i++) {
        struct conn *c = &conns[i];
        c->pi = -1;
        if (!c->used)
            continue;
        short ev = 0;
        if (c->connecting || buf_pending(&c->in) > 0)
            ev |= POLLOUT;
        if (!c->connecting && out_room && !c->rd_eof && c->out_credit > 0)
            ev |= POLLIN;
        if (ev == 0) /* a socket we will neither read nor write would spin on POLLHUP */
            continue;
        c->pi = n;
        p[n++] = (struct pollfd){ .fd = c->fd, .events = ev };
    }
    return n;
}

void conns_poll_handle(const struct pollfd *p, struct buf *out)
{
    for (int i = 0; i < MAX_CONNS; i++) {
        struct conn *c = &conns[i];
        if (!c->used || c->pi < 0 || !p[c->pi].revents)
            continue;
        if (c->connecting) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
            if (err)
                end(c, out, err == ECONNREFUSED ? C_CONNECT_REFUSED : C_CONNECT_FAILED, strerror(err));
            else
                connected(c, out);
            continue;
        }
        if (flush_stdin(c, out))
            pump_output(c, out);
    }
}

void conns_close_all(void)
{
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].used)
            release(&conns[i]);
    memset(closed, 0, sizeof closed);
}

/* Proxied TCP connections (docs/protocol.md, "CONNECT, CONNECTED, CLOSE"): the table of sockets
 * to 127.0.0.1:PORT the host opened with CONNECT, each a channel of its own, and their bytes both
 * ways under the same credit rules as an exec's pipes: the socket is read only while the host has
 * credit, STDIN waits in a queue the granted credit bounds, so memory stays bounded whatever the
 * server or the host does. */
#ifndef EMBERD_PORTFWD_H
#define EMBERD_PORTFWD_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec.h"

#define MAX_CONNS 256
#define PORTFWD_POLLFDS MAX_CONNS

struct conn;

struct conn *conn_find(uint32_t channel);
/* True for a channel whose CLOSE was sent a moment ago: frames still in flight from the host
 * (STDIN sent right after CONNECT, WINDOW, a crossing CLOSE) are dropped silently. */
bool conn_recently_closed(uint32_t channel);
/* The channel now belongs to an exec: it is no longer a recently closed connection. */
void conn_forget(uint32_t channel);

/* CONNECT: NULL when the attempt is under way or already answered (CONNECTED or CLOSE went to
 * `out`), else an ERROR code (msg filled in) and nothing was started. */
const char *conn_open(const struct frame *f, struct buf *out, char *msg, size_t msglen);
/* STDIN for the socket (empty: shut its write side once the queue is written). */
void conn_stdin(struct conn *c, const uint8_t *p, size_t n, struct buf *out);
void conn_window(struct conn *c, uint32_t increment);
/* CLOSE from the host: the socket closes at once and the guest answers CLOSE. */
void conn_close(struct conn *c, struct buf *out);

/* The serve loop: fill pollfds (socket reads only while `out_room`), then act on them. */
int conns_poll_prepare(struct pollfd *p, bool out_room);
void conns_poll_handle(const struct pollfd *p, struct buf *out);
/* Host went away: close every socket (no CLOSE frames). */
void conns_close_all(void);

#endif

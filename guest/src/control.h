/* The control channel: one reliable byte stream to the host, over vsock, a virtio-serial port
 * (guest) or a Unix socket (host mode, for tests). */
#ifndef EMBERD_CONTROL_H
#define EMBERD_CONTROL_H

#include <poll.h>
#include <stdbool.h>
#include <sys/types.h>

enum transport { T_VSOCK, T_SERIAL, T_UNIX };

struct control {
    enum transport kind;
    const char *name; /* transport as reported in HELLO_ACK */
    int listen_fd;    /* vsock and unix: the listener; -1 for serial */
    int fd;           /* the host connection (serial: the port, always open); -1 if none */
    bool present;     /* serial: a host has the port open (read gave data or EAGAIN, not 0) */
    bool active;      /* bytes arrived on this connection: a later EOF means the host left */
    int pi_listen, pi_conn; /* pollfd indexes in this loop iteration, -1 if not polled */
};

#define VSOCK_PORT 1024
#define CTL_POLLFDS 2

/* Guest: vsock if it has a usable transport, else the `emberd.control` virtio-serial port.
 * Waits (polling) until one of them appears. */
void control_open_guest(struct control *c);
int control_open_unix(struct control *c, const char *path);

int ctl_prepare(struct control *c, struct pollfd *p, bool want_in, bool want_out, int *timeout_ms);
/* Accepts a waiting host; true if it replaced a previous one (whose connection must end). */
bool ctl_accept(struct control *c, const struct pollfd *p);
bool ctl_readable(const struct control *c, const struct pollfd *p);
bool ctl_hangup(const struct control *c, const struct pollfd *p); /* the host hung up */
bool ctl_writable(const struct control *c);
/* >0: bytes; 0: nothing now; -1: the host went away (the connection is already dropped). */
ssize_t ctl_read(struct control *c, void *buf, size_t n);
ssize_t ctl_write(struct control *c, const void *buf, size_t n);
void ctl_drop(struct control *c); /* forget the current host */

#endif

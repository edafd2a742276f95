/* An exec's three pipes as the agent holds them: stdin bytes from the host, written as the pipe
 * takes them and paid back with credit; output read straight into the host queue only while the
 * host has granted credit (without credit a pipe is simply not read, so a flooding process blocks
 * in write() and guest memory stays bounded), the output cap, small-write coalescing, and what
 * still belongs to the exec once its process has exited. Knows nothing of processes. */
#ifndef EMBERD_PIPES_H
#define EMBERD_PIPES_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/* Output queue to the host: above OUTQ_HIGH no exec output is read, above OUTQ_MAX no host
 * input is read either. Together with the credit windows this bounds the agent's memory. */
#define OUTQ_HIGH (256u * 1024)
#define OUTQ_MAX (1024u * 1024)
#define PIPES_POLLFDS 3

/* What EXEC asks of the pipes. */
struct pipes_setup {
    const uint8_t *input; /* EXEC's stdin field: written first, costs the host no credit */
    size_t input_len;
    bool stdin_open;      /* more STDIN frames follow; else stdin closes after the field */
    uint64_t cap;         /* output_cap, 0: none */
};

struct pipes {
    uint32_t channel;        /* the exec's channel: output frames go out on it */
    int fd[3];               /* our ends of the child's stdin, stdout, stderr; -1 when closed */
    int pi[3];               /* pollfd index of each fd in this loop iteration, -1 if not polled */
    struct buf in;           /* stdin bytes not yet written to the pipe */
    size_t in_free;          /* leading bytes of `in` that came from EXEC's stdin field (no credit) */
    uint64_t in_credit;      /* STDIN bytes the host may still send */
    uint64_t in_grant;       /* STDIN bytes consumed but not yet granted back */
    bool in_close;           /* close stdin once `in` is written */
    uint64_t out_credit;     /* STDOUT+STDERR bytes we may still send */
    uint64_t cap, out_total; /* output_cap (0: none) and bytes forwarded so far */
    bool truncated;          /* output beyond the cap was discarded */
    bool writer_gone;        /* the process exited: only `drain` is still the exec's */
    uint64_t drain[2];       /* bytes left in stdout/stderr when the process exited */
    uint64_t hold[2];        /* stdout/stderr are left unread until then (see COALESCE_NS) */
};

/* Makes the three pipes. The child's ends go to cfd (stdin's read end, stdout's and stderr's
 * write ends), to be handed to the process. 0, or -1 with the reason in msg. */
int pipes_open(struct pipes *io, uint32_t channel, const struct pipes_setup *s, int cfd[3], char *msg, size_t msglen);
void pipes_close(struct pipes *io);

/* A STDIN payload (empty: close stdin once written). NULL, or an ERROR code when the host sent
 * more than its credit. WINDOW grants for stdin go to `out`. */
const char *pipes_stdin(struct pipes *io, const uint8_t *p, size_t n, struct buf *out);
/* WINDOW from the host: more output credit. */
void pipes_window(struct pipes *io, uint32_t increment);

/* The serve loop: adds the fds to poll now to p[n...] (output only while `out_room`) and returns
 * the new count; then acts on what poll() said about them. */
int pipes_poll_prepare(struct pipes *io, struct pollfd *p, int n, bool out_room, uint64_t now, int *timeout_ms);
void pipes_poll_handle(struct pipes *io, const struct pollfd *p, struct buf *out, uint64_t now);

/* The process exited: what it wrote is in the pipes now, and that much is still forwarded.
 * Later output (from processes it left behind) is not the exec's. */
void pipes_writer_exited(struct pipes *io);
/* Everything the process wrote before it exited has been forwarded (or discarded by the cap). */
bool pipes_drained(const struct pipes *io);

#endif

/* The exec side of the forkserver hand-off (docs/protocol.md, "Fast path"). An exec handed to the
 * forkserver has no process until the server reports one; meanwhile its hand-off holds what a
 * fallback needs and the signals the process must get:
 *
 *   (not handed off) --handoff_begin--> WAITING
 *   WAITING --report: a worker pid-------------------> running, fast
 *   WAITING --report -errno, or the server lost------> a fresh process on the same pipes: running,
 *                                                      or ended 126 if none can start (ended by
 *                                                      SIGKILL if one was held)
 *   WAITING --SIGKILL: handoff_cancel, then the reports already sent: one there -> running (and
 *             killed as usual); none -> handoff_killed: ended, and a late worker finds no code
 *
 * This is safe because a worker runs code only after its report was sent: no report, no code
 * ran. Every transition returns what became of the exec (struct start) for the exec table to
 * apply; nothing here calls back into it. */
#ifndef EMBERD_FASTPATH_H
#define EMBERD_FASTPATH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"

struct handoff {
    uint32_t seq;  /* the forkserver request; 0 when not waiting */
    int memfd;     /* the EXEC payload, for a fallback; -1 if none */
    int cfd[3];    /* the child's ends of its pipes, kept for a fallback */
    uint64_t sigs; /* signals for the group (bit signo-1), held until its pid is known */
};

/* What became of a waiting exec. */
struct start {
    pid_t pid;     /* > 0: its process (the group leader) runs; 0: it ended without one */
    bool fast;     /* the process is a forkserver worker, not a fresh process */
    uint64_t sigs; /* running: the held signals, to send to its group now */
    int status;    /* ended: as if its process had ended with this wait status */
};

void handoff_init(struct handoff *h);
/* Hands a checked EXEC to the forkserver when it serves such execs; true: now WAITING, and cfd
 * is the hand-off's. False: take the normal path (cfd untouched). */
bool handoff_begin(struct handoff *h, const struct frame *f, int cfd[3]);
bool handoff_waiting(const struct handoff *h);
void handoff_hold_signal(struct handoff *h, int signo);
/* SIGKILL while WAITING: empties the memfd so that no worker can run the code from now on.
 * True: the caller takes the reports already sent, and calls handoff_killed() if none was
 * this exec's. False (it could not be emptied): the SIGKILL waits for the pid like any signal. */
bool handoff_cancel(struct handoff *h);
/* The forkserver's report on this exec: a worker pid (> 0), or -errno (fall back). */
struct start handoff_reported(struct handoff *h, int32_t value);
/* The server is gone and never answered: a fresh process runs it. */
struct start handoff_fall_back(struct handoff *h);
struct start handoff_killed(struct handoff *h);
/* A report for an exec that is gone: nobody wants that worker. */
void handoff_unwanted(int32_t value);
/* The exec is released: a worker that comes late finds no code and exits unrun. */
void handoff_release(struct handoff *h);

#endif

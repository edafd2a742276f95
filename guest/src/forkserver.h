/* The fast path for python `code` execs: one pre-started interpreter that forks a clean worker per
 * exec (docs/protocol.md, "Fast path"; the server's source is forkserver.py). This file is the
 * server process and its socket; the exec side of the hand-off is fastpath.h. Everything here is
 * best effort: whenever the forkserver cannot serve an exec, the exec takes the normal
 * fork+execve path instead, so it never fails an exec that path would have served.
 *
 * The forkserver never calls into exec code. What it learns (a report, the loss of the server)
 * waits here until the exec side takes it with forkserver_take(), from its own loop. Call-backs
 * would re-enter the exec side while it is in the middle of a change: cancelling an exec reads
 * the reports at once, and a report handled then can start a fallback process for another exec,
 * or end the very exec being cancelled. Pulling keeps every change to an exec in one place, in
 * an order the exec side chooses. */
#ifndef EMBERD_FORKSERVER_H
#define EMBERD_FORKSERVER_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"

/* Would the forkserver serve this (checked) EXEC? `code`, no fresh_process, no env entry that
 * changes how the interpreter starts, and a pack interpreter that is python with `-c`. */
bool forkserver_eligible(const struct frame *f);

/* Hands the exec to the forkserver (started on first use): the child's stdin/stdout/stderr and a
 * memfd with the EXEC payload go over with SCM_RIGHTS. 0 and the request's sequence number
 * (never 0) and memfd (kept by the caller, for a fallback) on success; -1: take the normal path. */
int forkserver_submit(const struct frame *f, const int child_fds[3], uint32_t *seq, int *memfd);

/* REPORT answers one request. LOST: the server is gone, and every request still unanswered
 * never ran (and never will). No request goes to a new server while a LOST waits to be taken, so
 * every unanswered request then is one the lost server had. EXITED: process `pid` says it is
 * done and exits with status `value` (0-255): its output is written, only _exit is left. Only a
 * worker sends it (a fast exec's leader), but any guest process could: the exec side acts on it
 * only for the leader of a fast exec, and then SIGKILLs it, so that a lie cannot keep running
 * outside its exec. Every REPORT already sent is taken before an EXITED. */
struct forkserver_event {
    enum { FORKSERVER_REPORT, FORKSERVER_LOST, FORKSERVER_EXITED } kind;
    uint32_t seq;  /* REPORT: the request it answers */
    int32_t value; /* REPORT: the worker's pid (> 0), or -errno: the server will not run it;
                    * EXITED: the exit status */
    pid_t pid;     /* EXITED: who sent it (from the kernel) */
};

/* The next event, reading the server's socket (never blocking) when none is waiting. Every
 * report already sent is taken before the LOST that ends its server. False: nothing now. */
bool forkserver_take(struct forkserver_event *ev);

/* The serve loop: the forkserver socket and the exit socket (0 to 2 pollfds); either readable
 * means forkserver_take(). */
int forkserver_poll_prepare(struct pollfd *p);
/* A child that no exec owns was reaped: true if it was the forkserver. */
bool forkserver_reaped(pid_t pid);
/* Stall watchdog: ms until it next needs to look, -1 for never. May lose the server (an event). */
int forkserver_timeouts(void);

#endif

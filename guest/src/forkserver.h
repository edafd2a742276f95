/* The fast path for python `code` execs: one pre-started interpreter that forks a clean worker per
 * exec (docs/protocol.md, "Fast path"; the server's source is forkserver.py). Everything here is
 * best effort: whenever the forkserver cannot serve an exec, the exec takes the normal
 * fork+execve path instead, so it never fails an exec that path would have served. */
#ifndef EMBERD_FORKSERVER_H
#define EMBERD_FORKSERVER_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"

/* Would the forkserver serve this (validated) EXEC? `code`, no fresh_process, no env entry that
 * changes how the interpreter starts, and a pack interpreter that is python with `-c`. */
bool fs_eligible(const struct frame *f);

/* Hands the exec to the forkserver (started on first use): the child's stdin/stdout/stderr and a
 * memfd with the EXEC payload go over with SCM_RIGHTS. 0 and the request's sequence number and
 * memfd (kept for a fallback) on success; -1: take the normal path. */
int fs_submit(const struct frame *f, const int child_fds[3], uint32_t *seq, int *memfd);

/* The serve loop: the forkserver socket (0 or 1 pollfd) and its reports. */
int fs_poll_prepare(struct pollfd *p);
void fs_poll_handle(const struct pollfd *p);
/* Reads every report already sent, now (a worker can be reaped only after its report was sent). */
void fs_drain(void);
/* A child that no exec owns was reaped: true if it was the forkserver. */
bool fs_reaped(pid_t pid);
/* Stall watchdog: ms until it next needs to look, -1 for never. */
int fs_timeouts(void);
pid_t fs_pid(void);

/* Implemented by exec.c: a report for request `seq` (a worker pid > 0, or -errno), and the loss
 * of the forkserver connection (every request still unanswered never ran). */
void execs_fs_report(uint32_t seq, int32_t value);
void execs_fs_lost(void);

#endif

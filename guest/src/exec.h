/* Exec channels: the table of running execs and their lifecycle, from EXEC to EXIT. Each exec is a
 * process group with three pipes (pipes.h); its process is a fresh one (spawn.h) or a forkserver
 * worker (fastpath.h). */
#ifndef EMBERD_EXEC_H
#define EMBERD_EXEC_H

#include <poll.h>
#include <stdbool.h>
#include <sys/types.h>

#include "codec.h"
#include "pipes.h"

#define MAX_EXECS 64
#define EXEC_POLLFDS (MAX_EXECS * PIPES_POLLFDS + 2) /* + the forkserver and exit sockets */

struct exec;

/* EXEC frame -> running process (python `code` through the forkserver when it can). NULL on
 * success, else an ERROR code (msg filled in). */
const char *exec_start(const struct frame *f, char *msg, size_t msglen);
struct exec *exec_find(uint32_t channel);
/* True for a channel whose EXIT was sent a moment ago: frames still in flight from the host
 * (WINDOW grants for the last output, a late STDIN or SIGNAL) are dropped silently. */
bool exec_recently_ended(uint32_t channel);

/* STDIN payload (empty = close). NULL or an ERROR code when the host overran its credit. */
const char *exec_stdin(struct exec *e, const uint8_t *p, size_t n, struct buf *out);
void exec_signal(struct exec *e, int signo);
void exec_window(struct exec *e, uint32_t increment);
/* RESIZE: the window size of an exec on a tty (pty.h); -1 for an exec without one. */
int exec_resize(struct exec *e, uint16_t rows, uint16_t cols);

/* The serve loop: fill pollfds (output pipes only while `out_room`), then act on them. */
int execs_poll_prepare(struct pollfd *p, bool out_room, int *timeout_ms);
void execs_poll_handle(const struct pollfd *p, struct buf *out);
/* A child was reaped (any child: orphans are reaped too, only exec leaders matter). */
void execs_reaped(pid_t pid, int status);
/* Kills the groups whose timeout passed; returns ms until the next deadline, -1 for none. */
int execs_timeouts(void);
/* Host went away: SIGKILL every exec's process group and forget them (no EXIT frames). */
void execs_kill_all(void);

#endif

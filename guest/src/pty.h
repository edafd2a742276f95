/* An exec on a pseudo-terminal (EXEC field `tty`, docs/protocol.md "PTY"): the child gets a new
 * session whose controlling terminal is the slave (stdin, stdout and stderr), the agent holds the
 * master. The master stands in for the exec's pipes (pipes.h): STDIN frames are written to it,
 * what it yields goes out as STDOUT under the same credit, nothing as STDERR. RESIZE sets its
 * window size (the kernel sends SIGWINCH to the foreground process group). */
#ifndef EMBERD_PTY_H
#define EMBERD_PTY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"
#include "pipes.h"

#define PTY_DEFAULT_ROWS 24
#define PTY_DEFAULT_COLS 80
#define PTY_TERM "TERM=xterm-256color" /* unless EXEC's env sets TERM */

struct pty {
    bool on;
    int master;           /* our own fd of the master, for RESIZE; valid while `on` */
    uint64_t quiet_until; /* after the leader exited: EXIT once no output came until then */
    uint64_t seen_total;  /* output forwarded when quiet_until was last moved */
};

/* How long the master must stay quiet after the leader exited before EXIT, when something else
 * (a background job) still holds the terminal open. What the leader wrote reaches the master
 * through the tty layer's flip buffers asynchronously, so at reap time FIONREAD may not count it
 * yet (the pipes' drain rule would lose it): the master is read until EIO (every slave fd
 * closed, after the kernel has flushed what they wrote) or this long without output. */
#define PTY_LINGER_NS (100u * 1000000u)

/* Does this EXEC ask for a tty? Its size (defaults 24x80) in *rows, *cols when not NULL. */
bool pty_wanted(const struct frame *f, uint16_t *rows, uint16_t *cols);
/* EXEC's size fields are in range (1-65535). NULL or BAD_PAYLOAD with the reason in msg. */
const char *pty_check(const struct frame *f, char *msg, size_t msglen);

/* Replaces the pipes pipes_open() made with a pty of rows x cols: io's stdin and stdout ends
 * become the master (stderr none), cfd[0..2] the slave for the child. 0, or -1 with the reason
 * in msg (io untouched then, its pipes still open). */
int pty_open(struct pty *t, struct pipes *io, int cfd[3], uint16_t rows, uint16_t cols, char *msg, size_t msglen);
void pty_close(struct pty *t);
/* TIOCSWINSZ on the master. */
int pty_resize(struct pty *t, uint16_t rows, uint16_t cols);

/* The leader was reaped (after pipes_writer_exited): read on until EIO or quiet. */
void pty_writer_exited(struct pty *t, struct pipes *io, uint64_t now);
/* Everything the leader wrote has been forwarded: EXIT may go. */
bool pty_drained(struct pty *t, const struct pipes *io, uint64_t now);
/* ms until pty_drained may turn true on its own (the poll timeout), -1: not waiting. */
int pty_timeout_ms(const struct pty *t, uint64_t now);

/* In the forked child, with the slave on fds 0-2 and after setsid(): make it the controlling
 * terminal. */
void pty_child_setup(void);
/* SIGKILL every process of session `sid`: an interactive shell runs each job in its own process
 * group, so killing the exec's group alone would leave them running. */
void pty_kill_session(pid_t sid);

#endif

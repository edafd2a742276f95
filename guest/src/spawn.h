/* An exec's process on the normal path: forked by the agent, set up as docs/protocol.md "EXEC"
 * says (own session and process group, the pipes on fds 0-2, the base environment plus EXEC's
 * env, cwd), then execvp. The bottom layer of the exec code: it knows no exec table, no pipes
 * beyond three fds, no forkserver. */
#ifndef EMBERD_SPAWN_H
#define EMBERD_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

#include "codec.h"

/* The environment every exec (and the forkserver) starts from, NULL-terminated; EXEC's env
 * entries are added on top of it. */
char **spawn_base_env(void);

/* Checks what a child (and a forkserver worker) relies on: exactly one of argv and code, no NUL in
 * a field that becomes a C string, env entries KEY=VALUE. NULL if fine, else an ERROR code with
 * the reason in msg. */
const char *spawn_check(const struct frame *f, char *msg, size_t msglen);

/* Forks the process of a checked EXEC payload on the child's ends of its pipes (stdin, stdout,
 * stderr), which the parent then closes. The pid, or -1 (errno set, cfd untouched). */
pid_t spawn_child(const struct frame *f, int cfd[3]);

#endif

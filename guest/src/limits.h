/* Resource limits of a sandbox's execs, enforced in the guest (docs/protocol.md, HELLO):
 *   - every exec's processes live in one cgroup v2 (EXEC_CGROUP) whose pids.max and memory.max
 *     bound them all together; the agent (PID 1) and the forkserver stay outside, in the root
 *     cgroup, so a fork bomb or a memory bomb cannot take the agent or the next exec down;
 *   - the agent is never the OOM killer's pick (oom_score_adj -1000); what it starts goes back to 0;
 *   - HELLO's disk_bytes (the writable layer's size) and pids_max are applied here, all or nothing.
 * They come in HELLO, not on the kernel command line, so that a clone restored from a snapshot
 * and a pooled VM handed to a sandbox get their own. */
#ifndef EMBERD_LIMITS_H
#define EMBERD_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#define EXEC_CGROUP "/sys/fs/cgroup/execs"

/* PID 1, once the root filesystem is up: protects the agent from the OOM killer, mounts cgroup2,
 * makes the exec cgroup (memory.max below the guest's memory, pids.max at the ceiling). What the
 * kernel lacks is said on the console; execs then run without that limit. */
void limits_init(void);

/* In a freshly forked child of the agent that will run an exec: joins the exec cgroup and drops
 * the agent's OOM protection. -1 with errno if it could not. */
int limits_enter_exec(void);

/* In the forkserver's child before its execve: drops the agent's OOM protection (the server is
 * cheap to restart, so it may be killed like any process). */
void limits_leave_oom_protection(void);

/* The exec cgroup's cgroup.procs, open for writing (CLOEXEC, fd >= 10), or -1 without one. A
 * process that writes "0" to it moves itself in (forkserver workers do, before they report). */
int limits_exec_cgroup_fd(void);

struct limits_req {
    bool has_disk, has_pids;
    uint64_t disk_bytes; /* the writable layer's size */
    uint32_t pids_max;   /* 0: the ceiling (no limit of its own) */
};

/* Applies what a HELLO asked, all or nothing: NULL if done, else a limits_error code
 * (E_LIMIT_INVALID, E_LIMIT_UNSUPPORTED) with the reason in msg, and nothing changed. */
const char *limits_apply(const struct limits_req *r, char *msg, size_t msglen);

/* HELLO_ACK's disk_bytes, pids_max and memory_max: the limits in effect, each only where the
 * guest has it. */
void limits_report(struct buf *b);

#endif

/* Resource limits of the sandbox's execs (see limits.h). */
#include "limits.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rootfs.h"
#include "util.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
#define PAGE_BYTES 4096u
/* memory.max of the exec cgroup: the memory still free when the agent starts, less a reserve
 * (a sixth of it, within these bounds) for the agent and its buffers (~3 MiB), the forkserver
 * (~10 MiB), the kernel's own growth and the page cache they run from. Measured: with memory.max
 * at MemTotal less 32 MiB, a memory bomb pushed the whole guest into reclaim (page cache thrashing
 * for minutes, then the global OOM killer) before the cgroup's limit was reached; what the kernel
 * holds at boot (~30 MiB) must come off too. */
#define MEMORY_RESERVE_MIN (16ull << 20)
#define MEMORY_RESERVE_MAX (64ull << 20)
#define MEMORY_RESERVE_DIV 6
/* Tasks kept out of the execs' reach below kernel.threads-max (a limit of every fork, PID 1's
 * included): ~50 kernel threads, the agent, the forkserver, and what the next exec needs; a
 * quarter of threads-max in small guests. */
#define PIDS_RESERVE 256u

static struct {
    bool oom_protected;  /* PID 1 set its oom_score_adj to -1000: children must reset theirs */
    bool pids, memory;   /* the controllers enabled for the exec cgroup */
    int procs_fd;        /* EXEC_CGROUP/cgroup.procs */
    uint64_t threads_max;
    uint32_t pids_reserve, pids_ceiling;
} lim = { .procs_fd = -1 };

static int write_str(const char *path, const char *s) { return write_file(path, s, strlen(s)); }

/* A cgroup or /proc number: "max" reads as 0 (no limit). */
static bool read_number(const char *path, uint64_t *v)
{
    char *s = read_file(path, 64, NULL);
    if (!s)
        return false;
    bool ok = true;
    if (strncmp(s, "max", 3) == 0) {
        *v = 0;
    } else {
        char *end;
        errno = 0;
        *v = strtoull(s, &end, 10);
        ok = errno == 0 && end != s;
    }
    free(s);
    return ok;
}

/* A /proc/meminfo line ("MemTotal:") in bytes, 0 if unreadable. */
static uint64_t meminfo(const char *key)
{
    char *s = read_file("/proc/meminfo", 4096, NULL);
    const char *p = s ? strstr(s, key) : NULL;
    uint64_t kib = p ? strtoull(p + strlen(key), NULL, 10) : 0;
    free(s);
    return kib * 1024u;
}

static bool mount_cgroup2(void)
{
    /* favordynmods (6.0+): a task migration (every exec start) no longer waits for an RCU grace
     * period, at a small cost to fork and exit. Older kernels refuse the option. */
    unsigned long fl = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    if (mount("cgroup2", CGROUP_ROOT, "cgroup2", fl, "favordynmods") == 0 ||
        mount("cgroup2", CGROUP_ROOT, "cgroup2", fl, NULL) == 0 || errno == EBUSY)
        return true;
    say("no cgroup2 (%s): execs run without pids and memory limits", strerror(errno));
    return false;
}

static void init_memory(void)
{
    uint64_t free_now = meminfo("MemFree:");
    uint64_t reserve = free_now / MEMORY_RESERVE_DIV;
    reserve = reserve < MEMORY_RESERVE_MIN ? MEMORY_RESERVE_MIN : reserve > MEMORY_RESERVE_MAX ? MEMORY_RESERVE_MAX : reserve;
    if (free_now < 2 * reserve) {
        say("exec cgroup: %llu bytes of free memory is too little to keep %llu for the agent; no memory.max",
            (unsigned long long)free_now, (unsigned long long)reserve);
        return;
    }
    char v[32];
    snprintf(v, sizeof v, "%llu", (unsigned long long)((free_now - reserve) / PAGE_BYTES * PAGE_BYTES));
    if (write_str(EXEC_CGROUP "/memory.max", v) < 0)
        say("exec cgroup: memory.max: %s", strerror(errno));
    else
        lim.memory = true;
}

static void init_pids(void)
{
    if (!read_number("/proc/sys/kernel/threads-max", &lim.threads_max) || lim.threads_max < 64) {
        say("exec cgroup: kernel.threads-max unreadable or too small; no pids.max");
        return;
    }
    lim.pids_reserve = lim.threads_max / 4 < PIDS_RESERVE ? (uint32_t)(lim.threads_max / 4) : PIDS_RESERVE;
    lim.pids_ceiling = (uint32_t)(lim.threads_max - lim.pids_reserve);
    char v[16];
    snprintf(v, sizeof v, "%u", lim.pids_ceiling);
    if (write_str(EXEC_CGROUP "/pids.max", v) < 0)
        say("exec cgroup: pids.max: %s", strerror(errno));
    else
        lim.pids = true;
}

void limits_init(void)
{
    /* The kernel never picks PID 1 anyway; this also says so to anyone reading /proc. */
    if (write_str("/proc/self/oom_score_adj", "-1000") == 0)
        lim.oom_protected = true;
    else
        say("oom_score_adj: %s", strerror(errno));

    mkdir(CGROUP_ROOT, 0755);
    if (!mount_cgroup2())
        return;
    bool pids = write_str(CGROUP_ROOT "/cgroup.subtree_control", "+pids") == 0;
    bool memory = write_str(CGROUP_ROOT "/cgroup.subtree_control", "+memory") == 0;
    if (!pids || !memory)
        say("cgroup2 lacks the %s controller: execs run without that limit", !pids ? "pids" : "memory");
    /* With the cpu controller the exec cgroup weighs as much as one task of the root cgroup: the
     * agent gets about half the CPU whenever it wants it, however many busy loops the execs run. */
    if (write_str(CGROUP_ROOT "/cgroup.subtree_control", "+cpu") < 0)
        say("cgroup2 lacks the cpu controller: busy execs compete with the agent task for task");
    if (mkdir(EXEC_CGROUP, 0755) < 0 && errno != EEXIST) {
        say("mkdir %s: %s", EXEC_CGROUP, strerror(errno));
        return;
    }
    if (memory)
        init_memory();
    if (pids)
        init_pids();
    /* Above the fds a child rearranges (0-4), so no dup2 of theirs can clobber it. */
    int fd = open(EXEC_CGROUP "/cgroup.procs", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        lim.procs_fd = fcntl(fd, F_DUPFD_CLOEXEC, 10);
        close(fd);
    }
    if (lim.procs_fd < 0)
        say("%s/cgroup.procs: %s; execs run outside the exec cgroup", EXEC_CGROUP, strerror(errno));
}

int limits_enter_exec(void)
{
    /* Moving in ignores pids.max (only forks are refused), so an exec starts even while a fork
     * bomb holds every pid the cgroup allows. */
    if (lim.procs_fd >= 0 && write(lim.procs_fd, "0", 1) != 1)
        return -1;
    if (lim.oom_protected && write_str("/proc/self/oom_score_adj", "0") < 0)
        return -1;
    return 0;
}

void limits_leave_oom_protection(void)
{
    if (lim.oom_protected)
        write_str("/proc/self/oom_score_adj", "0");
}

int limits_exec_cgroup_fd(void) { return lim.procs_fd; }

static const char *check_disk(uint64_t bytes, uint64_t *pages_bytes, char *msg, size_t msglen)
{
    uint64_t size, used;
    if (upper_usage(&size, &used) < 0) {
        snprintf(msg, msglen, "disk_bytes: this agent has no writable layer of its own (host mode, or no root filesystem)");
        return E_LIMIT_UNSUPPORTED;
    }
    if (bytes == 0 || bytes > UINT64_MAX - PAGE_BYTES) {
        snprintf(msg, msglen, "disk_bytes %llu is not a size (0 would mean no limit at all)", (unsigned long long)bytes);
        return E_LIMIT_INVALID;
    }
    *pages_bytes = (bytes + PAGE_BYTES - 1) / PAGE_BYTES * PAGE_BYTES;
    if (*pages_bytes < used) {
        snprintf(msg, msglen, "disk_bytes %llu is below the %llu bytes the writable layer already holds",
                 (unsigned long long)bytes, (unsigned long long)used);
        return E_LIMIT_INVALID;
    }
    return NULL;
}

static const char *check_pids(uint32_t asked, uint32_t *pids, char *msg, size_t msglen)
{
    if (!lim.pids || lim.procs_fd < 0) {
        snprintf(msg, msglen, "pids_max: the guest has no exec cgroup with the pids controller (see its console)");
        return E_LIMIT_UNSUPPORTED;
    }
    *pids = asked ? asked : lim.pids_ceiling;
    if (*pids > lim.pids_ceiling) {
        snprintf(msg, msglen, "pids_max %u is above this guest's ceiling of %u (kernel.threads-max %llu less %u kept for the agent)",
                 asked, lim.pids_ceiling, (unsigned long long)lim.threads_max, lim.pids_reserve);
        return E_LIMIT_INVALID;
    }
    return NULL;
}

const char *limits_apply(const struct limits_req *r, char *msg, size_t msglen)
{
    uint64_t disk = 0;
    uint32_t pids = 0;
    const char *err = NULL;
    if (r->has_disk && (err = check_disk(r->disk_bytes, &disk, msg, msglen)))
        return err;
    if (r->has_pids && (err = check_pids(r->pids_max, &pids, msg, msglen)))
        return err;

    char old[32] = "", v[16];
    if (r->has_pids) {
        char *cur = read_file(EXEC_CGROUP "/pids.max", sizeof old - 1, NULL);
        if (cur)
            strcpy(old, cur);
        free(cur);
        snprintf(v, sizeof v, "%u", pids);
        if (write_str(EXEC_CGROUP "/pids.max", v) < 0) {
            snprintf(msg, msglen, "pids_max: writing %s/pids.max: %s", EXEC_CGROUP, strerror(errno));
            return E_LIMIT_UNSUPPORTED;
        }
    }
    if (r->has_disk && upper_resize(disk) < 0) {
        int e = errno;
        if (r->has_pids && *old)
            write_str(EXEC_CGROUP "/pids.max", old);
        uint64_t size, used;
        if (e == EINVAL && upper_usage(&size, &used) == 0 && disk < used) { /* an exec wrote meanwhile */
            snprintf(msg, msglen, "disk_bytes %llu is below the %llu bytes the writable layer already holds",
                     (unsigned long long)r->disk_bytes, (unsigned long long)used);
            return E_LIMIT_INVALID;
        }
        snprintf(msg, msglen, "disk_bytes: remounting the writable layer: %s", strerror(e));
        return E_LIMIT_UNSUPPORTED;
    }
    return NULL;
}

void limits_report(struct buf *b)
{
    uint64_t size, used, v;
    if (upper_usage(&size, &used) == 0)
        enc_u64(b, 6, size);
    if (lim.pids && read_number(EXEC_CGROUP "/pids.max", &v))
        enc_u32(b, 7, (uint32_t)v);
    if (lim.memory && read_number(EXEC_CGROUP "/memory.max", &v))
        enc_u64(b, 8, v);
}

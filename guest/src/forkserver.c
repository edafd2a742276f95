/* The python forkserver process (see forkserver.h and forkserver.py). States:
 *   IDLE      no server; the next eligible exec starts one
 *   RUNNING   requests go to the server
 *   DRAINING  the server is gone or misbehaved (and was killed): no new requests; reports still
 *             arrive until every holder of the socket (intermediates, workers before their
 *             report) is gone; then EOF, and the exec side, once it has taken every report,
 *             takes a LOST event: every request left unanswered falls back.
 * A request never answered by a report never ran (the worker reports before it runs any code),
 * which is what makes the fallback safe.
 *
 * Early exits: a worker that has run its code, its atexit functions and flushed its stdio sends
 * its exit status as one datagram to the agent's exit socket (abstract AF_UNIX "emberd-exit-<agent
 * pid>", SO_PASSCRED: the kernel says which pid sent it) before it calls _exit. The exec side
 * then ends the exec at once and SIGKILLs the worker (whatever it does after that cannot change
 * what the exec was), instead of waiting for the kernel to tear the process down and for the
 * reap. The reap still comes, as for any orphan. */
#include "forkserver.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "limits.h"
#include "spawn.h"
#include "util.h"

/* The server's source, embedded at build time. */
__asm__(".pushsection .rodata.emberd_forkserver,\"a\"\n"
        ".global emberd_forkserver_source\n"
        "emberd_forkserver_source:\n"
        ".incbin \"src/forkserver.py\"\n"
        ".global emberd_forkserver_source_end\n"
        "emberd_forkserver_source_end:\n"
        ".popsection\n");
extern const char emberd_forkserver_source[], emberd_forkserver_source_end[];

#define BOOTSTRAP "exec(compile(open(0,\"rb\",closefd=False).read(),\"<emberd-forkserver>\",\"exec\"))"
#define STALL_NS (10ull * 1000000000u) /* requests unanswered this long: the server is stuck */
#define MAX_FAILED_STARTS 3            /* servers that died before serving anything, in a row */
#define MAX_INTERP_ARGS 62

enum { FORKSERVER_IDLE, FORKSERVER_RUNNING, FORKSERVER_DRAINING };

static struct {
    int state;
    int mode;             /* -1: not yet known, 0: never (not python, or disabled), 1: python */
    char *interp;         /* storage of argv */
    char *argv[MAX_INTERP_ARGS + 2];
    pid_t pid;            /* the current server, 0 once gone */
    int sock;
    uint8_t rbuf[512];    /* reports read and not yet taken: rbuf[roff, rlen) */
    size_t roff, rlen;
    bool lost;            /* the server is gone: a LOST event waits to be taken */
    uint32_t next_seq;
    unsigned pending;     /* requests sent and not yet answered */
    uint64_t progress_ns; /* last report, or the send that made `pending` non-zero */
    unsigned served, failed_starts;
    int exits;            /* the exit socket (datagrams from workers), -1 until the first start */
} server = { .mode = -1, .sock = -1, .exits = -1 };

/* The pack's interpreter, once: python with `-c` as its last argument, or no fast path. */
static void load_interpreter(void)
{
    server.mode = 0;
    server.interp = read_file(opt.interp_file, 4096, NULL);
    if (!server.interp)
        return;
    int argc = 0;
    for (char *line = strtok(server.interp, "\n"); line && argc < MAX_INTERP_ARGS; line = strtok(NULL, "\n"))
        server.argv[argc++] = line;
    if (argc < 2 || strcmp(server.argv[argc - 1], "-c") != 0)
        return;
    const char *base = strrchr(server.argv[0], '/');
    base = base ? base + 1 : server.argv[0];
    if (strncmp(base, "python", 6) != 0)
        return;
    server.argv[argc++] = BOOTSTRAP;
    server.argv[argc] = NULL;
    server.mode = 1;
}

/* Environment entries that change how python starts (and so what a fresh process would be). */
static bool startup_env(const uint8_t *kv, size_t n)
{
    static const char *const exact[] = { "LANG=", "HOME=", "PATH=" };
    if ((n >= 6 && memcmp(kv, "PYTHON", 6) == 0) || (n >= 3 && memcmp(kv, "LC_", 3) == 0))
        return true;
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (n >= strlen(exact[i]) && memcmp(kv, exact[i], strlen(exact[i])) == 0)
            return true;
    return false;
}

bool forkserver_eligible(const struct frame *f)
{
    if (server.mode == 0)
        return false;
    bool code = false;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        if (t.tag == 2)
            code = true;
        else if ((t.tag == 9 && t.num != 0) || (t.tag == 3 && startup_env(t.val, t.len)))
            return false;
    }
    if (!code)
        return false;
    if (server.mode < 0)
        load_interpreter();
    return server.mode == 1;
}

/* The connection is over: every request still unanswered never ran, which the exec side learns
 * from the LOST event once it has taken the reports read before. */
static void lost(const char *why)
{
    say("forkserver: %s; python execs take the normal path until it is restarted", why);
    if (server.sock >= 0)
        close(server.sock);
    server.sock = -1;
    server.lost = true;
    if (server.pid > 0)
        kill(server.pid, SIGKILL); /* reaped by the serve loop like any orphan */
    server.pid = 0;
    server.state = FORKSERVER_IDLE;
    server.pending = 0;
    if (server.served == 0 && ++server.failed_starts >= MAX_FAILED_STARTS) {
        say("forkserver: failed %d times in a row before serving; fast path disabled", MAX_FAILED_STARTS);
        server.mode = 0;
    }
}

/* Stop sending; wait for EOF so that no report sent meanwhile is missed. */
static void broken(const char *why)
{
    if (server.state != FORKSERVER_RUNNING)
        return;
    say("forkserver: %s; killing it", why);
    if (server.pid > 0)
        kill(server.pid, SIGKILL);
    server.state = FORKSERVER_DRAINING;
    server.progress_ns = mono_ns();
}

/* The exit socket, bound once (before the first server starts) and kept: workers outlive their
 * server. Without it workers' exits are seen only by the reap, as before. */
static void open_exits(void)
{
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int len = snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "emberd-exit-%d", (int)getpid());
    int on = 1;
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) < 0 ||
        bind(s, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len)) < 0) {
        say("forkserver: no exit socket (%s): fast execs end when their worker is reaped", strerror(errno));
        if (s >= 0)
            close(s);
        return;
    }
    server.exits = s;
}

static int start(void)
{
    if (server.exits < 0)
        open_exits();
    size_t srclen = (size_t)(emberd_forkserver_source_end - emberd_forkserver_source);
    int sv[2] = { -1, -1 }, src[2] = { -1, -1 };
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(src, O_CLOEXEC) < 0)
        goto fail;
    /* The source fits in the pipe (64 KiB), so this write completes before the server reads. */
    if (srclen > 65536 || write(src[1], emberd_forkserver_source, srclen) != (ssize_t)srclen)
        goto fail;
    close(src[1]);
    src[1] = -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        goto fail;
    if (pid == 0) {
        setsid(); /* its own group: signals meant for an exec's group never reach it */
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* host mode: it dies with the agent */
        if (getppid() != parent)
            _exit(0);
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (dup2(src[0], 0) < 0 || null < 0 || dup2(null, 1) < 0 || dup2(sv[1], 3) < 0)
            _exit(126);
        if (sv[1] == 3)
            fcntl(3, F_SETFD, 0);
        /* fd 2 stays the agent's (the console): the server's own errors show there. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (chdir("/") < 0)
            _exit(126);
        /* The server stays outside the exec cgroup (a bomb in it cannot starve the server); its
         * workers move themselves in through fd 4 before they report (forkserver.py). */
        limits_leave_oom_protection();
        char *env[8] = { 0 };
        size_t n = 0;
        for (char **e = spawn_base_env(); *e && n < 6; e++)
            env[n++] = *e;
        int cg = limits_exec_cgroup_fd();
        if (cg >= 0 && dup2(cg, 4) == 4)
            env[n++] = "EMBERD_EXEC_CGROUP_FD=4";
        environ = env;
        execvp(server.argv[0], server.argv);
        say("forkserver: %s: %s", server.argv[0], strerror(errno));
        _exit(127);
    }
    close(src[0]);
    close(sv[1]);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    server.sock = sv[0];
    server.pid = pid;
    server.state = FORKSERVER_RUNNING;
    server.pending = 0;
    server.served = 0;
    server.roff = server.rlen = 0;
    return 0;

fail:
    say("forkserver: cannot start: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        if (sv[i] >= 0)
            close(sv[i]);
        if (src[i] >= 0)
            close(src[i]);
    }
    return -1;
}

int forkserver_submit(const struct frame *f, const int child_fds[3], uint32_t *seq, int *memfd)
{
    /* No new server before the exec side has taken the end of the last one: its LOST then
     * speaks only of requests that server had. */
    if (server.lost || server.state == FORKSERVER_DRAINING || (server.state == FORKSERVER_IDLE && start() < 0))
        return -1;
    int m = memfd_create("emberd-exec", MFD_CLOEXEC);
    if (m < 0)
        return -1;
    for (size_t off = 0; off < f->len;) { /* pwrite: the shared file offset stays at 0 */
        ssize_t n = pwrite(m, f->payload + off, f->len - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(m);
            return -1;
        }
        off += (size_t)n;
    }
    uint32_t s = ++server.next_seq;
    if (s == 0)
        s = ++server.next_seq;
    uint8_t hdr[4] = { s >> 24, s >> 16, s >> 8, s };
    int fds[4] = { child_fds[0], child_fds[1], child_fds[2], m };
    union {
        char buf[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct iovec iov = { .iov_base = hdr, .iov_len = sizeof hdr };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t n;
    do
        n = sendmsg(server.sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof hdr) {
        close(m);
        if (n >= 0 || errno != EAGAIN)
            broken(n < 0 ? strerror(errno) : "short send");
        return -1;
    }
    if (server.pending++ == 0)
        server.progress_ns = mono_ns();
    *seq = s;
    *memfd = m;
    return 0;
}

/* One report from rbuf, if a whole one is there. A report of 0 is garbage: the server is broken
 * (its later reports still count, as it may have forked workers that will report). */
static bool next_report(struct forkserver_event *ev)
{
    while (server.rlen - server.roff >= 8) {
        uint32_t s = get_be32(server.rbuf + server.roff);
        int32_t v = (int32_t)get_be32(server.rbuf + server.roff + 4);
        server.roff += 8;
        if (v == 0) {
            broken("bad report");
            continue;
        }
        if (server.pending > 0)
            server.pending--;
        server.progress_ns = mono_ns();
        if (v > 0) {
            server.served++;
            server.failed_starts = 0;
        }
        *ev = (struct forkserver_event){ .kind = FORKSERVER_REPORT, .seq = s, .value = v };
        return true;
    }
    return false;
}

/* One worker's early exit from the exit socket: 4 bytes (its exit status), sent by the pid the
 * kernel attached. Anything else is dropped. */
static bool next_exit(struct forkserver_event *ev)
{
    while (server.exits >= 0) {
        uint8_t b[8];
        union {
            char buf[CMSG_SPACE(sizeof(struct ucred))];
            struct cmsghdr align;
        } u;
        struct iovec iov = { .iov_base = b, .iov_len = sizeof b };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
        ssize_t n = recvmsg(server.exits, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return false;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        if (n != 4 || (mh.msg_flags & MSG_CTRUNC) || !c || c->cmsg_level != SOL_SOCKET ||
            c->cmsg_type != SCM_CREDENTIALS || c->cmsg_len != CMSG_LEN(sizeof(struct ucred)))
            continue;
        struct ucred cred;
        memcpy(&cred, CMSG_DATA(c), sizeof cred);
        uint32_t status = get_be32(b);
        if (cred.pid <= 0 || status > 255)
            continue;
        *ev = (struct forkserver_event){ .kind = FORKSERVER_EXITED, .pid = cred.pid, .value = (int32_t)status };
        return true;
    }
    return false;
}

bool forkserver_take(struct forkserver_event *ev)
{
    while (!next_report(ev)) {
        if (server.sock < 0) {
            if (!server.lost)
                return next_exit(ev);
            server.lost = false;
            server.roff = server.rlen = 0; /* a partial report of a dead server is nothing */
            *ev = (struct forkserver_event){ .kind = FORKSERVER_LOST };
            return true;
        }
        memmove(server.rbuf, server.rbuf + server.roff, server.rlen - server.roff);
        server.rlen -= server.roff;
        server.roff = 0;
        ssize_t n = read(server.sock, server.rbuf + server.rlen, sizeof server.rbuf - server.rlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) /* reports first: a worker reports before it can exit */
            return next_exit(ev);
        if (n <= 0)
            lost(n == 0 ? "connection closed" : strerror(errno));
        else
            server.rlen += (size_t)n;
    }
    return true;
}

int forkserver_poll_prepare(struct pollfd *p)
{
    int n = 0;
    if (server.sock >= 0)
        p[n++] = (struct pollfd){ .fd = server.sock, .events = POLLIN };
    if (server.exits >= 0)
        p[n++] = (struct pollfd){ .fd = server.exits, .events = POLLIN };
    return n;
}

bool forkserver_reaped(pid_t pid)
{
    if (pid <= 0 || pid != server.pid)
        return false;
    server.pid = 0;
    broken("the server exited");
    return true;
}

int forkserver_timeouts(void)
{
    if (server.state == FORKSERVER_IDLE || (server.pending == 0 && server.state == FORKSERVER_RUNNING))
        return -1;
    uint64_t now = mono_ns();
    if (now - server.progress_ns >= STALL_NS) {
        if (server.state == FORKSERVER_RUNNING)
            broken("requests unanswered for 10 s");
        else
            lost("no end of the connection 10 s after the server was killed");
        return server.state == FORKSERVER_IDLE ? -1 : (int)(STALL_NS / 1000000u);
    }
    return (int)((STALL_NS - (now - server.progress_ns) + 999999u) / 1000000u);
}

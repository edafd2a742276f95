/* The python forkserver (see forkserver.h and forkserver.py). States:
 *   IDLE      no server; the next eligible exec starts one
 *   RUNNING   requests go to the server
 *   DRAINING  the server is gone or misbehaved (and was killed): no new requests; reports still
 *             arrive until every holder of the socket (intermediates, workers before their
 *             report) is gone; then EOF and every request left unanswered falls back.
 * A request never answered by a report never ran (the worker reports before it runs any code),
 * which is what makes the fallback safe. */
#include "forkserver.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exec.h"
#include "util.h"

/* The server's source, embedded at build time. */
__asm__(".pushsection .rodata.emberd_forkserver,\"a\"\n"
        ".global emberd_fs_source\n"
        "emberd_fs_source:\n"
        ".incbin \"src/forkserver.py\"\n"
        ".global emberd_fs_source_end\n"
        "emberd_fs_source_end:\n"
        ".popsection\n");
extern const char emberd_fs_source[], emberd_fs_source_end[];

#define BOOTSTRAP "exec(compile(open(0,\"rb\",closefd=False).read(),\"<emberd-forkserver>\",\"exec\"))"
#define STALL_NS (10ull * 1000000000u) /* requests unanswered this long: the server is stuck */
#define MAX_FAILED_STARTS 3            /* servers that died before serving anything, in a row */
#define MAX_INTERP_ARGS 62

enum { FS_IDLE, FS_RUNNING, FS_DRAINING };

static struct {
    int state;
    int mode;             /* -1: not yet known, 0: never (not python, or disabled), 1: python */
    char *interp;         /* storage of argv */
    char *argv[MAX_INTERP_ARGS + 2];
    pid_t pid;            /* the current server, 0 once gone */
    int sock;
    uint8_t rbuf[512];
    size_t rlen;
    uint32_t next_seq;
    unsigned pending;     /* requests sent and not yet answered */
    uint64_t progress_ns; /* last report, or the send that made `pending` non-zero */
    unsigned served, failed_starts;
} fs = { .mode = -1, .sock = -1 };

pid_t fs_pid(void) { return fs.pid; }

/* The pack's interpreter, once: python with `-c` as its last argument, or no fast path. */
static void load_interpreter(void)
{
    fs.mode = 0;
    fs.interp = read_file(opt.interp_file, 4096, NULL);
    if (!fs.interp)
        return;
    int argc = 0;
    for (char *line = strtok(fs.interp, "\n"); line && argc < MAX_INTERP_ARGS; line = strtok(NULL, "\n"))
        fs.argv[argc++] = line;
    if (argc < 2 || strcmp(fs.argv[argc - 1], "-c") != 0)
        return;
    const char *base = strrchr(fs.argv[0], '/');
    base = base ? base + 1 : fs.argv[0];
    if (strncmp(base, "python", 6) != 0)
        return;
    fs.argv[argc++] = BOOTSTRAP;
    fs.argv[argc] = NULL;
    fs.mode = 1;
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

bool fs_eligible(const struct frame *f)
{
    if (fs.mode == 0)
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
    if (fs.mode < 0)
        load_interpreter();
    return fs.mode == 1;
}

static void close_sock(void)
{
    if (fs.sock >= 0)
        close(fs.sock);
    fs.sock = -1;
    fs.rlen = 0;
}

/* The connection is over: every request still unanswered never ran and falls back. */
static void lost(const char *why)
{
    say("forkserver: %s; python execs take the normal path until it is restarted", why);
    close_sock();
    if (fs.pid > 0)
        kill(fs.pid, SIGKILL); /* reaped by the serve loop like any orphan */
    fs.pid = 0;
    fs.state = FS_IDLE;
    fs.pending = 0;
    if (fs.served == 0 && ++fs.failed_starts >= MAX_FAILED_STARTS) {
        say("forkserver: failed %d times in a row before serving; fast path disabled", MAX_FAILED_STARTS);
        fs.mode = 0;
    }
    execs_fs_lost();
}

/* Stop sending; wait for EOF so that no report sent meanwhile is missed. */
static void broken(const char *why)
{
    if (fs.state != FS_RUNNING)
        return;
    say("forkserver: %s; killing it", why);
    if (fs.pid > 0)
        kill(fs.pid, SIGKILL);
    fs.state = FS_DRAINING;
    fs.progress_ns = mono_ns();
}

static int start(void)
{
    size_t srclen = (size_t)(emberd_fs_source_end - emberd_fs_source);
    int sv[2] = { -1, -1 }, src[2] = { -1, -1 };
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(src, O_CLOEXEC) < 0)
        goto fail;
    /* The source fits in the pipe (64 KiB), so this write completes before the server reads. */
    if (srclen > 65536 || write(src[1], emberd_fs_source, srclen) != (ssize_t)srclen)
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
        environ = exec_base_env();
        execvp(fs.argv[0], fs.argv);
        say("forkserver: %s: %s", fs.argv[0], strerror(errno));
        _exit(127);
    }
    close(src[0]);
    close(sv[1]);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fs.sock = sv[0];
    fs.pid = pid;
    fs.state = FS_RUNNING;
    fs.pending = 0;
    fs.served = 0;
    fs.rlen = 0;
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

int fs_submit(const struct frame *f, const int child_fds[3], uint32_t *seq, int *memfd)
{
    if (fs.state == FS_DRAINING || (fs.state == FS_IDLE && start() < 0))
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
    uint32_t s = ++fs.next_seq;
    if (s == 0)
        s = ++fs.next_seq;
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
        n = sendmsg(fs.sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof hdr) {
        close(m);
        if (n >= 0 || errno != EAGAIN)
            broken(n < 0 ? strerror(errno) : "short send");
        return -1;
    }
    if (fs.pending++ == 0)
        fs.progress_ns = mono_ns();
    *seq = s;
    *memfd = m;
    return 0;
}

static void read_reports(void)
{
    while (fs.sock >= 0) {
        ssize_t n = read(fs.sock, fs.rbuf + fs.rlen, sizeof fs.rbuf - fs.rlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            lost(n == 0 ? "connection closed" : strerror(errno));
            return;
        }
        fs.rlen += (size_t)n;
        size_t off = 0;
        for (; fs.rlen - off >= 8; off += 8) {
            uint32_t s = get_be32(fs.rbuf + off);
            int32_t v = (int32_t)get_be32(fs.rbuf + off + 4);
            if (v == 0) {
                broken("bad report");
                continue;
            }
            if (fs.pending > 0)
                fs.pending--;
            fs.progress_ns = mono_ns();
            if (v > 0) {
                fs.served++;
                fs.failed_starts = 0;
            }
            execs_fs_report(s, v);
        }
        memmove(fs.rbuf, fs.rbuf + off, fs.rlen - off);
        fs.rlen -= off;
    }
}

int fs_poll_prepare(struct pollfd *p)
{
    if (fs.sock < 0)
        return 0;
    p[0] = (struct pollfd){ .fd = fs.sock, .events = POLLIN };
    return 1;
}

void fs_poll_handle(const struct pollfd *p)
{
    if (p->fd == fs.sock && p->revents)
        read_reports();
}

void fs_drain(void) { read_reports(); }

bool fs_reaped(pid_t pid)
{
    if (pid <= 0 || pid != fs.pid)
        return false;
    fs.pid = 0;
    broken("the server exited");
    return true;
}

int fs_timeouts(void)
{
    if (fs.state == FS_IDLE || (fs.pending == 0 && fs.state == FS_RUNNING))
        return -1;
    uint64_t now = mono_ns();
    if (now - fs.progress_ns >= STALL_NS) {
        if (fs.state == FS_RUNNING)
            broken("requests unanswered for 10 s");
        else
            lost("no end of the connection 10 s after the server was killed");
        return fs.state == FS_IDLE ? -1 : (int)(STALL_NS / 1000000u);
    }
    return (int)((STALL_NS - (now - fs.progress_ns) + 999999u) / 1000000u);
}

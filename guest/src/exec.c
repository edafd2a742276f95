/* Exec channels. Each exec is a process group (setsid in the child) with three pipes. Output is
 * forwarded only while the host has granted credit; without credit the pipe is simply not read,
 * so a flooding process blocks in write() and guest memory stays bounded. */
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkserver.h"
#include "util.h"

#define GRANT_BATCH 32768 /* grant STDIN credit back in batches, not per write */
#define MAX_CREDIT (1ull << 40)
/* A writer making small writes would otherwise cost a frame, a virtio kick and two context
 * switches per write (expensive under TCG). A pipe with less than a full frame waiting is read
 * this long after it became readable instead; the leader exiting ends the wait. */
#define COALESCE_NS 1000000u
#define PIPE_SIZE (256 * 1024)

struct exec {
    bool used;
    uint32_t channel;
    pid_t pid;               /* also the process group id; 0 while the forkserver has not answered */
    uint32_t fs_seq;         /* forkserver request, while pid is 0 */
    int fs_mem;              /* its memfd (the EXEC payload, for a fallback); -1 if none */
    int cfd[3];              /* the child's ends of the pipes, kept until the forkserver answers */
    uint64_t pend_sigs;      /* signals for the group, held until its pid is known */
    bool fast;               /* the forkserver runs it */
    int fd[3];               /* our ends of the child's stdin, stdout, stderr; -1 when closed */
    int pi[3];               /* pollfd index of each fd in this loop iteration, -1 if not polled */
    struct buf in;           /* stdin bytes not yet written to the pipe */
    size_t in_free;          /* leading bytes of `in` that came from EXEC's stdin field (no credit) */
    uint64_t in_credit;      /* STDIN bytes the host may still send */
    uint64_t in_grant;       /* STDIN bytes consumed but not yet granted back */
    bool in_close;           /* close stdin once `in` is written */
    uint64_t out_credit;     /* STDOUT+STDERR bytes we may still send */
    uint64_t cap, out_total; /* output_cap (0: none) and bytes forwarded so far */
    bool truncated, timed_out, exited;
    int status;
    uint64_t start_ns, end_ns, deadline_ns;
    uint64_t drain[2];       /* bytes left in stdout/stderr when the leader was reaped */
    uint64_t hold[2];        /* stdout/stderr are left unread until then (see COALESCE_NS) */
};

static struct exec execs[MAX_EXECS];
static bool wake_now; /* an exec ended outside the poll loop's view: do not sleep before handling it */
static uint32_t ended[64]; /* ring of recently finished channels (0 = empty slot) */
static unsigned ended_next;

static const char *const base_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
};

char **exec_base_env(void)
{
    static char *env[4];
    for (size_t i = 0; i < 3; i++)
        env[i] = (char *)base_env[i];
    return env;
}

struct exec *exec_find(uint32_t channel)
{
    for (int i = 0; i < MAX_EXECS; i++)
        if (execs[i].used && execs[i].channel == channel)
            return &execs[i];
    return NULL;
}

bool exec_recently_ended(uint32_t channel)
{
    for (size_t i = 0; i < sizeof ended / sizeof ended[0]; i++)
        if (ended[i] == channel && channel != 0)
            return true;
    return false;
}

static void forget_ended(uint32_t channel)
{
    for (size_t i = 0; i < sizeof ended / sizeof ended[0]; i++)
        if (ended[i] == channel)
            ended[i] = 0;
}

/* Signals the exec's group. Right after fork the child may not have called setsid() yet, so
 * the group does not exist: then the leader is the only process and gets the signal itself. */
static void kill_group(struct exec *e, int signo)
{
    if (e->pid <= 0) { /* the forkserver has not said which pid yet: never kill(0) or kill(-0) */
        e->pend_sigs |= 1ull << (signo - 1);
        return;
    }
    if (kill(-e->pid, signo) < 0 && errno == ESRCH && !e->exited)
        kill(e->pid, signo);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void release(struct exec *e)
{
    if (e->pid == 0 && e->fs_mem >= 0 && ftruncate(e->fs_mem, 0) < 0) {
        /* not started by the forkserver yet: an empty memfd makes its worker exit unrun */
    }
    for (int i = 0; i < 3; i++) {
        close_fd(&e->fd[i]);
        close_fd(&e->cfd[i]);
    }
    close_fd(&e->fs_mem);
    buf_free(&e->in);
    memset(e, 0, sizeof *e);
}

/* ---- the child ---- */

static char *dup_field(const struct tlv *t)
{
    char *s = malloc(t->len + 1);
    if (!s)
        _exit(126);
    memcpy(s, t->val, t->len);
    s[t->len] = 0;
    return s;
}

/* Runs in the forked child: builds argv/env from the (already validated) EXEC payload, which
 * the child has its own copy of, and execs. Never returns. */
static void __attribute__((noreturn)) child(const struct frame *f, int in, int out, int err)
{
    setsid();
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        _exit(126);
    /* Every other fd of ours is O_CLOEXEC. Undo PID 1's signal setup: masks and ignored
     * dispositions survive execve. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);

    size_t nargs = 0, nenv = 0;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        nargs += t.tag == 1 || t.tag == 2;
        nenv += t.tag == 3;
    }
    const char *cwd = NULL;
    char *code = NULL, *interp = NULL;
    char **argv = calloc(nargs + 64, sizeof *argv);
    char **env = calloc(nenv + 4, sizeof *env);
    if (!argv || !env)
        _exit(126);
    for (size_t i = 0; i < 3; i++)
        env[i] = (char *)base_env[i];
    size_t argc = 0, envc = 3;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        if (t.tag == 1) {
            argv[argc++] = dup_field(&t);
        } else if (t.tag == 2) {
            code = dup_field(&t);
        } else if (t.tag == 4) {
            cwd = dup_field(&t);
        } else if (t.tag == 3) {
            char *kv = dup_field(&t);
            size_t klen = strchr(kv, '=') - kv + 1;
            size_t j = 0;
            while (j < envc && strncmp(env[j], kv, klen) != 0)
                j++;
            env[j] = kv; /* override a base entry or an earlier one, else append */
            envc += j == envc;
        }
    }
    if (code) {
        /* The pack's interpreter: one argument per line, then the code as the last argument. */
        interp = read_file(opt.interp_file, 4096, NULL);
        if (!interp) {
            dprintf(2, "emberd-init: %s: %s\n", opt.interp_file, strerror(errno));
            _exit(127);
        }
        for (char *line = strtok(interp, "\n"); line && argc < 62; line = strtok(NULL, "\n"))
            argv[argc++] = line;
        if (argc == 0) {
            dprintf(2, "emberd-init: %s: no interpreter in the file\n", opt.interp_file);
            _exit(127);
        }
        argv[argc++] = code;
    }
    if (cwd ? chdir(cwd) < 0 : chdir("/root") < 0 && chdir("/") < 0) {
        dprintf(2, "emberd-init: cd %s: %s\n", cwd ? cwd : "/root", strerror(errno));
        _exit(126);
    }
    environ = env; /* execvp searches the PATH of the new environment */
    execvp(argv[0], argv);
    int e = errno;
    dprintf(2, "emberd-init: %s: %s\n", argv[0], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
}

/* ---- starting an exec ---- */

/* Forks the normal path's child on the pipe ends in cfd, which the parent then closes. */
static pid_t fork_child(const struct frame *f, int cfd[3])
{
    pid_t pid = fork();
    if (pid == 0)
        child(f, cfd[0], cfd[1], cfd[2]);
    if (pid > 0)
        for (int i = 0; i < 3; i++)
            close_fd(&cfd[i]);
    return pid;
}

static bool has_nul(const struct tlv *t) { return memchr(t->val, 0, t->len) != NULL; }

static const char *validate(const struct frame *f, char *msg, size_t msglen)
{
    size_t nargv = 0, ncode = 0;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        if (t.tag == 1 || t.tag == 2 || t.tag == 3 || t.tag == 4) {
            /* These become C strings for execve/chdir. */
            if (has_nul(&t)) {
                snprintf(msg, msglen, "EXEC field %s contains a NUL byte", t.spec->name);
                return E_BAD_PAYLOAD;
            }
        }
        nargv += t.tag == 1;
        ncode += t.tag == 2;
        if (t.tag == 3 && (t.len == 0 || t.val[0] == '=' || !memchr(t.val, '=', t.len))) {
            snprintf(msg, msglen, "EXEC env entries must be KEY=VALUE");
            return E_BAD_PAYLOAD;
        }
    }
    if ((nargv > 0) == (ncode > 0)) {
        snprintf(msg, msglen, "EXEC needs exactly one of argv and code");
        return E_BAD_PAYLOAD;
    }
    return NULL;
}

const char *exec_start(const struct frame *f, char *msg, size_t msglen)
{
    const char *code = validate(f, msg, msglen);
    if (code)
        return code;
    if (exec_find(f->channel)) {
        snprintf(msg, msglen, "channel %u already has a running exec", f->channel);
        return E_CHANNEL_IN_USE;
    }
    struct exec *e = NULL;
    for (int i = 0; i < MAX_EXECS && !e; i++)
        if (!execs[i].used)
            e = &execs[i];
    if (!e) {
        snprintf(msg, msglen, "at most %d execs run at once", MAX_EXECS);
        return E_TOO_MANY_EXECS;
    }

    memset(e, 0, sizeof *e);
    e->fs_mem = e->cfd[0] = e->cfd[1] = e->cfd[2] = -1;
    e->out_credit = INITIAL_WINDOW;
    e->in_credit = INITIAL_WINDOW;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    uint64_t timeout_ms = 0;
    bool stdin_open = false;
    while (tlv_next(&it, &t)) {
        if (t.tag == 5) {
            buf_clear(&e->in);
            if (buf_put(&e->in, t.val, t.len) < 0) {
                buf_free(&e->in);
                snprintf(msg, msglen, "out of memory for stdin");
                return E_SPAWN_FAILED;
            }
            e->in_free = t.len;
        } else if (t.tag == 6) {
            stdin_open = t.num != 0;
        } else if (t.tag == 7) {
            timeout_ms = t.num;
        } else if (t.tag == 8) {
            e->cap = t.num;
        }
    }
    e->in_close = !stdin_open; /* stdin_open absent or 0: close after the stdin field */

    int p[3][2] = { { -1, -1 }, { -1, -1 }, { -1, -1 } };
    for (int i = 0; i < 3; i++) {
        if (pipe2(p[i], O_CLOEXEC) < 0) {
            snprintf(msg, msglen, "pipe: %s", strerror(errno));
            goto fail;
        }
    }
    e->start_ns = mono_ns();
    int cfd[3] = { p[0][0], p[1][1], p[2][1] };
    pid_t pid = 0;
    if (fs_eligible(f) && fs_submit(f, cfd, &e->fs_seq, &e->fs_mem) == 0) {
        memcpy(e->cfd, cfd, sizeof cfd); /* until the forkserver answers (execs_fs_report) */
    } else if ((pid = fork_child(f, cfd)) < 0) {
        snprintf(msg, msglen, "fork: %s", strerror(errno));
        goto fail;
    }
    e->fd[0] = p[0][1];
    e->fd[1] = p[1][0];
    e->fd[2] = p[2][0];
    for (int i = 0; i < 3; i++) {
        fcntl(e->fd[i], F_SETFL, O_NONBLOCK);
        e->pi[i] = -1;
    }
    /* Room for a burst of output to wait while the host has no credit or we coalesce. */
    fcntl(e->fd[1], F_SETPIPE_SZ, PIPE_SIZE);
    fcntl(e->fd[2], F_SETPIPE_SZ, PIPE_SIZE);
    e->used = true;
    e->channel = f->channel;
    e->pid = pid;
    if (timeout_ms > 0) {
        /* Saturate instead of overflowing on absurd timeouts. */
        uint64_t ns = timeout_ms > UINT64_MAX / 2000000u ? UINT64_MAX / 2 : timeout_ms * 1000000u;
        e->deadline_ns = e->start_ns + ns;
    }
    if (e->in_close && buf_pending(&e->in) == 0)
        close_fd(&e->fd[0]); /* no stdin at all: the process sees EOF right away */
    forget_ended(f->channel);
    return NULL;

fail:
    for (int i = 0; i < 3; i++) {
        if (p[i][0] >= 0)
            close(p[i][0]);
        if (p[i][1] >= 0)
            close(p[i][1]);
    }
    buf_free(&e->in);
    memset(e, 0, sizeof *e);
    return E_SPAWN_FAILED;
}

/* ---- stdin ---- */

static void grant_stdin(struct exec *e, struct buf *out, bool force)
{
    if (e->in_grant == 0 || (!force && e->in_grant < GRANT_BATCH))
        return;
    size_t at = enc_begin(out, MSG_WINDOW, e->channel);
    enc_u32(out, 1, (uint32_t)e->in_grant);
    if (enc_end(out, at) == 0) {
        e->in_credit += e->in_grant;
        e->in_grant = 0;
    }
}

/* Bytes leave `in` (written or discarded): the part the host paid credit for is owed back. */
static void consumed_stdin(struct exec *e, size_t n)
{
    size_t free_part = n < e->in_free ? n : e->in_free;
    e->in_free -= free_part;
    e->in_grant += n - free_part;
    buf_consume(&e->in, n);
}

static void flush_stdin(struct exec *e, struct buf *out)
{
    while (e->fd[0] >= 0 && buf_pending(&e->in) > 0) {
        ssize_t n = write(e->fd[0], e->in.data + e->in.off, buf_pending(&e->in));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) { /* EPIPE: the process closed its stdin; what is left is discarded */
            close_fd(&e->fd[0]);
            break;
        }
        consumed_stdin(e, (size_t)n);
    }
    if (e->fd[0] < 0 && buf_pending(&e->in) > 0)
        consumed_stdin(e, buf_pending(&e->in));
    if (e->fd[0] >= 0 && e->in_close && buf_pending(&e->in) == 0)
        close_fd(&e->fd[0]);
    grant_stdin(e, out, buf_pending(&e->in) == 0);
}

const char *exec_stdin(struct exec *e, const uint8_t *p, size_t n, struct buf *out)
{
    if (n == 0) {
        e->in_close = true;
    } else if (n > e->in_credit) {
        return E_BAD_PAYLOAD;
    } else {
        e->in_credit -= n;
        if (e->fd[0] < 0 || e->in_close || buf_put(&e->in, p, n) < 0) {
            e->in.err = 0;
            e->in_grant += n; /* stdin is gone: drop the bytes but keep the host's credit flowing */
        }
    }
    flush_stdin(e, out);
    return NULL;
}

/* ---- signals and credit ---- */

static void cancel_unstarted(struct exec *e);

void exec_signal(struct exec *e, int signo)
{
    kill_group(e, signo);
    if (signo == SIGKILL && e->pid == 0)
        cancel_unstarted(e);
}

void exec_window(struct exec *e, uint32_t increment)
{
    e->out_credit += increment;
    if (e->out_credit > MAX_CREDIT)
        e->out_credit = MAX_CREDIT;
}

/* ---- output ---- */

/* May this output pipe be read now? Without credit only once the cap is reached (then
 * everything read is discarded, which costs no credit). After the leader exited, only what was
 * in the pipe at that moment still belongs to the exec. */
static bool output_readable(const struct exec *e, int i)
{
    if (e->fd[i] < 0 || (e->exited && e->drain[i - 1] == 0))
        return false;
    return e->out_credit > 0 || (e->cap && e->out_total >= e->cap);
}

static void pump_output(struct exec *e, int i, struct buf *out, size_t high_water)
{
    while (output_readable(e, i) && buf_pending(out) < high_water) {
        bool capped = e->cap && e->out_total >= e->cap;
        size_t want = MAX_DATA_FRAME;
        if (!capped && e->out_credit < want)
            want = (size_t)e->out_credit;
        /* Read straight into the output queue; only the bytes kept become a frame. */
        uint8_t *frame = buf_tail(out, HEADER_SIZE + want);
        if (!frame)
            break;
        ssize_t n = read(e->fd[i], frame + HEADER_SIZE, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) { /* EOF (or a broken pipe): every writer is gone */
            close_fd(&e->fd[i]);
            break;
        }
        if (e->exited)
            e->drain[i - 1] -= (uint64_t)n < e->drain[i - 1] ? (uint64_t)n : e->drain[i - 1];
        size_t keep = (size_t)n;
        if (e->cap) {
            uint64_t room = e->cap > e->out_total ? e->cap - e->out_total : 0;
            if (keep > room) {
                keep = (size_t)room;
                e->truncated = true;
            }
        }
        if (keep > 0) {
            enc_data_commit(out, i == 1 ? MSG_STDOUT : MSG_STDERR, e->channel, keep);
            e->out_total += keep;
            e->out_credit -= keep;
        }
    }
}

static void send_exit(struct exec *e, struct buf *out)
{
    int code, sig = 0;
    /* A leader that exited on its own just before its deadline was not killed by us. */
    bool timed_out = e->timed_out && WIFSIGNALED(e->status) && WTERMSIG(e->status) == SIGKILL;
    if (WIFSIGNALED(e->status)) {
        sig = WTERMSIG(e->status);
        code = 128 + sig;
    } else {
        code = WEXITSTATUS(e->status);
    }
    size_t at = enc_begin(out, MSG_EXIT, e->channel);
    enc_u32(out, 1, (uint32_t)code);
    enc_u32(out, 2, (uint32_t)sig);
    enc_u8(out, 3, timed_out);
    enc_u8(out, 4, e->truncated);
    enc_u64(out, 5, (e->end_ns - e->start_ns) / 1000u);
    if (e->fast)
        enc_u8(out, 6, 1);
    if (enc_end(out, at) < 0)
        return; /* out of memory: try again on the next loop iteration */
    ended[ended_next++ % (sizeof ended / sizeof ended[0])] = e->channel;
    release(e);
}

/* ---- the serve loop's view ---- */

static void min_timeout(int *timeout_ms, uint64_t ns)
{
    int ms = (int)((ns + 999999u) / 1000000u);
    if (*timeout_ms < 0 || ms < *timeout_ms)
        *timeout_ms = ms;
}

static int fs_pi = -1; /* pollfd index of the forkserver socket in this loop iteration */

int execs_poll_prepare(struct pollfd *p, bool out_room, int *timeout_ms)
{
    uint64_t now = mono_ns();
    int n = fs_poll_prepare(p);
    fs_pi = n ? 0 : -1;
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        e->pi[0] = e->pi[1] = e->pi[2] = -1;
        if (!e->used)
            continue;
        if (e->fd[0] >= 0 && buf_pending(&e->in) > 0) {
            e->pi[0] = n;
            p[n++] = (struct pollfd){ .fd = e->fd[0], .events = POLLOUT };
        }
        for (int i = 1; i < 3; i++) {
            /* Watching a pipe we will not read would spin on POLLHUP: leave it out entirely. */
            if (!out_room || !output_readable(e, i))
                continue;
            if (e->hold[i - 1] > now) {
                min_timeout(timeout_ms, e->hold[i - 1] - now);
            } else {
                e->pi[i] = n;
                p[n++] = (struct pollfd){ .fd = e->fd[i], .events = POLLIN };
            }
        }
    }
    return n;
}

static size_t pipe_avail(int fd)
{
    int avail = 0;
    return ioctl(fd, FIONREAD, &avail) == 0 && avail > 0 ? (size_t)avail : 0;
}

void execs_poll_handle(const struct pollfd *p, struct buf *out)
{
    if (fs_pi >= 0)
        fs_poll_handle(&p[fs_pi]);
    uint64_t now = mono_ns();
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        if (!e->used)
            continue;
        if (e->pi[0] >= 0 && p[e->pi[0]].revents)
            flush_stdin(e, out);
        for (int i = 1; i < 3; i++) {
            bool ready = e->pi[i] >= 0 && p[e->pi[i]].revents;
            bool held = e->hold[i - 1] != 0;
            if (ready && !held && !e->exited && pipe_avail(e->fd[i]) < MAX_DATA_FRAME) {
                e->hold[i - 1] = now + COALESCE_NS; /* let more output pile up first */
                continue;
            }
            if (ready || e->exited || (held && now >= e->hold[i - 1])) {
                e->hold[i - 1] = 0;
                pump_output(e, i, out, OUTQ_HIGH);
            }
        }
        /* EXIT once the leader is reaped and its output up to then has been forwarded. */
        if (e->exited && (e->fd[1] < 0 || e->drain[0] == 0) && (e->fd[2] < 0 || e->drain[1] == 0))
            send_exit(e, out);
    }
}

static bool leader_reaped(pid_t pid, int status)
{
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        if (!e->used || e->pid != pid || e->exited)
            continue;
        e->exited = true;
        e->status = status;
        e->end_ns = mono_ns();
        /* What the leader wrote before it exited is in the pipes now; that much is drained
         * before EXIT. Later output from background processes is not the exec's. */
        for (int i = 1; i < 3; i++)
            e->drain[i - 1] = e->fd[i] >= 0 ? pipe_avail(e->fd[i]) : 0;
        return true;
    }
    return false;
}

void execs_reaped(pid_t pid, int status)
{
    if (leader_reaped(pid, status) || fs_reaped(pid))
        return;
    /* Perhaps a forkserver worker whose report is still unread: it reported before it could
     * exit, and we could reap it only after that, so the report is waiting on the socket. */
    fs_drain();
    leader_reaped(pid, status);
}

/* ---- the forkserver's answers ---- */

static void deliver_pending_signals(struct exec *e)
{
    uint64_t sigs = e->pend_sigs;
    e->pend_sigs = 0;
    for (int s = 1; s <= 64; s++)
        if (sigs & (1ull << (s - 1)))
            kill_group(e, s);
}

/* Ends an exec whose process never started, as if it had ended with `status`. */
static void finish_unstarted(struct exec *e, int status)
{
    wake_now = true;
    close_fd(&e->fs_mem);
    e->fs_seq = 0;
    for (int i = 0; i < 3; i++)
        close_fd(&e->cfd[i]);
    e->exited = true;
    e->status = status;
    e->end_ns = mono_ns();
    for (int i = 1; i < 3; i++)
        e->drain[i - 1] = e->fd[i] >= 0 ? pipe_avail(e->fd[i]) : 0;
}

/* SIGKILL (a timeout, or the host) for an exec the forkserver has not reported yet: it must end
 * now and never run. The worker reads the code only after its report, so emptying the memfd
 * first and then reading the reports decides it: a report there means a pid to kill as usual;
 * none means the worker, if it ever comes, finds no code and exits (its late report kills it). */
static void cancel_unstarted(struct exec *e)
{
    if (ftruncate(e->fs_mem, 0) < 0)
        return; /* then it dies as soon as its pid is known */
    fs_drain();
    if (e->used && e->pid == 0 && e->fs_mem >= 0 && !e->exited)
        finish_unstarted(e, SIGKILL);
}

/* The forkserver will not run it: a fresh process does, on the same pipes. */
static void fall_back(struct exec *e)
{
    if (e->pend_sigs & (1ull << (SIGKILL - 1))) { /* killed before it started: it never will */
        finish_unstarted(e, SIGKILL);
        return;
    }
    off_t len = lseek(e->fs_mem, 0, SEEK_END);
    void *map = len > 0 ? mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE, e->fs_mem, 0) : MAP_FAILED;
    pid_t pid = -1;
    if (map != MAP_FAILED) {
        struct frame f = { .type = MSG_EXEC, .channel = e->channel, .payload = map, .len = (uint32_t)len };
        pid = fork_child(&f, e->cfd);
        munmap(map, (size_t)len);
    }
    close_fd(&e->fs_mem);
    e->fs_seq = 0;
    if (pid > 0) {
        e->pid = pid;
        deliver_pending_signals(e);
        return;
    }
    /* Nothing can run it: it ends as a process that could not be started would (126). */
    dprintf(e->cfd[2], "emberd-init: cannot start the process: %s\n", strerror(errno));
    finish_unstarted(e, 126 << 8);
}

static struct exec *fs_waiting(uint32_t seq)
{
    for (int k = 0; k < MAX_EXECS; k++)
        if (execs[k].used && execs[k].pid == 0 && execs[k].fs_seq == seq && execs[k].fs_mem >= 0)
            return &execs[k];
    return NULL;
}

void execs_fs_report(uint32_t seq, int32_t value)
{
    struct exec *e = fs_waiting(seq);
    if (!e) { /* its exec is gone (the host left): nobody wants this worker */
        if (value > 0 && kill(-value, SIGKILL) < 0)
            kill(value, SIGKILL);
        return;
    }
    if (value <= 0) {
        fall_back(e);
        return;
    }
    e->pid = value;
    e->fast = true;
    e->fs_seq = 0;
    close_fd(&e->fs_mem);
    for (int i = 0; i < 3; i++)
        close_fd(&e->cfd[i]);
    deliver_pending_signals(e);
}

void execs_fs_lost(void)
{
    for (int k = 0; k < MAX_EXECS; k++)
        if (execs[k].used && execs[k].pid == 0 && execs[k].fs_mem >= 0)
            fall_back(&execs[k]);
}

int execs_timeouts(void)
{
    uint64_t now = mono_ns(), next = UINT64_MAX;
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        if (!e->used || e->exited || e->deadline_ns == 0)
            continue;
        if (now >= e->deadline_ns) {
            e->timed_out = true;
            e->deadline_ns = 0;
            exec_signal(e, SIGKILL);
        } else if (e->deadline_ns - now < next) {
            next = e->deadline_ns - now;
        }
    }
    int fs_ms = fs_timeouts();
    if (wake_now) { /* an exec ended without a process to reap: the loop must see it at once */
        wake_now = false;
        return 0;
    }
    if (next == UINT64_MAX)
        return fs_ms;
    uint64_t ms = (next + 999999u) / 1000000u; /* round up: never wake before the deadline */
    if (fs_ms >= 0 && (uint64_t)fs_ms < ms)
        ms = (uint64_t)fs_ms;
    return ms > 60000 ? 60000 : (int)ms;
}

void execs_kill_all(void)
{
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        if (!e->used)
            continue;
        kill_group(e, SIGKILL);
        release(e);
    }
    memset(ended, 0, sizeof ended);
}

/* Exec channels (see exec.h): the table, and each exec's life from EXEC to EXIT. An exec ends
 * when its process (the group leader) was reaped and its pipes were read up to that point; then
 * EXIT goes out and the slot is free. */
#include "exec.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fastpath.h"
#include "forkserver.h"
#include "pty.h"
#include "spawn.h"
#include "util.h"

struct exec {
    bool used;
    uint32_t channel;
    pid_t pid;               /* also the process group id; 0 while the hand-off waits */
    bool fast;               /* a forkserver worker runs it */
    struct handoff handoff;  /* while it waits for the forkserver */
    struct pipes io;
    struct pty pty;          /* on a tty: the master stands in for the pipes */
    bool timed_out, exited;
    int status;
    uint64_t start_ns, end_ns, deadline_ns;
};

static struct exec execs[MAX_EXECS];
static bool wake_now; /* an exec ended outside the poll loop's view: do not sleep before handling it */
static uint32_t ended[64]; /* ring of recently finished channels (0 = empty slot) */
static unsigned ended_next;
static int forkserver_n; /* pollfds of the forkserver (first in the exec's part) in this loop iteration */

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
        handoff_hold_signal(&e->handoff, signo);
        return;
    }
    if (kill(-e->pid, signo) < 0 && errno == ESRCH && !e->exited)
        kill(e->pid, signo);
}

static void release(struct exec *e)
{
    handoff_release(&e->handoff);
    pipes_close(&e->io);
    pty_close(&e->pty);
    memset(e, 0, sizeof *e);
}

/* The leader is gone (reaped, or it never started): what it wrote is drained before EXIT. */
static void mark_exited(struct exec *e, int status)
{
    e->exited = true;
    e->status = status;
    e->end_ns = mono_ns();
    pipes_writer_exited(&e->io);
    if (e->pty.on)
        pty_writer_exited(&e->pty, &e->io, e->end_ns);
}

/* ---- starting an exec ---- */

const char *exec_start(const struct frame *f, char *msg, size_t msglen)
{
    const char *code = spawn_check(f, msg, msglen);
    if (code || (code = pty_check(f, msg, msglen)))
        return code;
    uint16_t rows, cols;
    bool tty = pty_wanted(f, &rows, &cols);
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

    struct pipes_setup setup = { 0 };
    uint64_t timeout_ms = 0;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        if (t.tag == 5) {
            setup.input = t.val;
            setup.input_len = t.len;
        } else if (t.tag == 6) {
            setup.stdin_open = t.num != 0;
        } else if (t.tag == 7) {
            timeout_ms = t.num;
        } else if (t.tag == 8) {
            setup.cap = t.num;
        }
    }

    memset(e, 0, sizeof *e);
    handoff_init(&e->handoff);
    int cfd[3];
    if (pipes_open(&e->io, f->channel, &setup, cfd, msg, msglen) < 0) {
        memset(e, 0, sizeof *e);
        return E_SPAWN_FAILED;
    }
    if (tty && pty_open(&e->pty, &e->io, cfd, rows, cols, msg, msglen) < 0) {
        for (int i = 0; i < 3; i++)
            close(cfd[i]);
        pipes_close(&e->io);
        memset(e, 0, sizeof *e);
        return E_SPAWN_FAILED;
    }
    e->start_ns = mono_ns();
    /* A tty exec never takes the fast path: the forkserver's workers are not session leaders
     * of a terminal. */
    bool fast = !tty && handoff_begin(&e->handoff, f, cfd);
    if (!fast && (e->pid = spawn_child(f, cfd)) < 0) {
        snprintf(msg, msglen, "fork: %s", strerror(errno));
        for (int i = 0; i < 3; i++)
            close(cfd[i]);
        pipes_close(&e->io);
        pty_close(&e->pty);
        memset(e, 0, sizeof *e);
        return E_SPAWN_FAILED;
    }
    e->used = true;
    e->channel = f->channel;
    if (timeout_ms > 0) {
        /* Saturate instead of overflowing on absurd timeouts. */
        uint64_t ns = timeout_ms > UINT64_MAX / 2000000u ? UINT64_MAX / 2 : timeout_ms * 1000000u;
        e->deadline_ns = e->start_ns + ns;
    }
    forget_ended(f->channel);
    return NULL;
}

/* ---- the forkserver's news ---- */

/* A waiting exec's hand-off is over: it runs, or it ended without a process. */
static void started(struct exec *e, struct start s)
{
    if (s.pid == 0) {
        wake_now = true; /* nothing will be reaped for it: the loop must look at once */
        mark_exited(e, s.status);
        return;
    }
    e->pid = s.pid;
    e->fast = s.fast;
    for (int signo = 1; signo <= 64; signo++)
        if (s.sigs & (1ull << (signo - 1)))
            kill_group(e, signo);
}

/* A worker said it is done (FORKSERVER_EXITED): the exec ends as if its leader had been reaped
 * with that status, and the worker, which has only _exit left to do, is killed so that it cannot
 * outlive its exec whatever it does. It is reaped later like any orphan. Not yet reaped (e->exited
 * is false), so its pid is still its own. */
static void early_exit(pid_t pid, int status)
{
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        if (!e->used || !e->fast || e->pid != pid || e->exited)
            continue;
        kill(pid, SIGKILL);
        mark_exited(e, status << 8); /* as waitpid would say for exit(status) */
        wake_now = true;
        return;
    }
}

/* Takes every event the forkserver has for us. The forkserver only queues them (forkserver.h
 * says why); acting on them here cannot re-enter any caller. */
static void take_forkserver_events(void)
{
    struct forkserver_event ev;
    while (forkserver_take(&ev)) {
        if (ev.kind == FORKSERVER_EXITED) {
            early_exit(ev.pid, ev.value);
            continue;
        }
        bool wanted = false;
        for (int k = 0; k < MAX_EXECS; k++) {
            struct exec *e = &execs[k];
            if (!e->used || !handoff_waiting(&e->handoff))
                continue;
            if (ev.kind == FORKSERVER_LOST) {
                started(e, handoff_fall_back(&e->handoff));
            } else if (e->handoff.seq == ev.seq) {
                started(e, handoff_reported(&e->handoff, ev.value));
                wanted = true;
                break;
            }
        }
        if (ev.kind == FORKSERVER_REPORT && !wanted) /* its exec is gone (the host left) */
            handoff_unwanted(ev.value);
    }
}

/* ---- host requests ---- */

const char *exec_stdin(struct exec *e, const uint8_t *p, size_t n, struct buf *out)
{
    return pipes_stdin(&e->io, p, n, out);
}

void exec_signal(struct exec *e, int signo)
{
    kill_group(e, signo);
    if (e->pty.on && signo == SIGKILL && e->pid > 0)
        pty_kill_session(e->pid); /* the shell's jobs have process groups of their own */
    /* A SIGKILL for an exec not started yet must end it now and never let it run: after the
     * memfd is emptied no worker can run the code, and the reports already sent say whether
     * one already has (then it is killed as usual, its pid now known). */
    if (signo == SIGKILL && e->pid == 0 && !e->exited && handoff_cancel(&e->handoff)) {
        take_forkserver_events();
        if (handoff_waiting(&e->handoff))
            started(e, handoff_killed(&e->handoff));
    }
}

void exec_window(struct exec *e, uint32_t increment)
{
    pipes_window(&e->io, increment);
}

int exec_resize(struct exec *e, uint16_t rows, uint16_t cols)
{
    return pty_resize(&e->pty, rows, cols);
}

/* ---- EXIT ---- */

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
    enc_u8(out, 4, e->io.truncated);
    enc_u64(out, 5, (e->end_ns - e->start_ns) / 1000u);
    if (e->fast)
        enc_u8(out, 6, 1);
    if (enc_end(out, at) < 0)
        return; /* out of memory: try again on the next loop iteration */
    ended[ended_next++ % (sizeof ended / sizeof ended[0])] = e->channel;
    release(e);
}

/* ---- the serve loop's view ---- */

int execs_poll_prepare(struct pollfd *p, bool out_room, int *timeout_ms)
{
    uint64_t now = mono_ns();
    int n = forkserver_poll_prepare(p);
    forkserver_n = n;
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        if (e->used)
            n = pipes_poll_prepare(&e->io, p, n, out_room, now, timeout_ms);
    }
    return n;
}

void execs_poll_handle(const struct pollfd *p, struct buf *out)
{
    for (int i = 0; i < forkserver_n; i++)
        if (p[i].revents) {
            take_forkserver_events();
            break;
        }
    uint64_t now = mono_ns();
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        if (!e->used)
            continue;
        pipes_poll_handle(&e->io, p, out, now);
        if (e->pty.on ? e->exited && pty_drained(&e->pty, &e->io, now) : pipes_drained(&e->io))
            send_exit(e, out);
    }
}

static bool leader_reaped(pid_t pid, int status)
{
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        if (!e->used || e->pid != pid || e->exited)
            continue;
        mark_exited(e, status);
        return true;
    }
    return false;
}

void execs_reaped(pid_t pid, int status)
{
    if (leader_reaped(pid, status) || forkserver_reaped(pid))
        return;
    /* Perhaps a forkserver worker whose report is still unread: it reported before it could
     * exit, and we could reap it only after that, so the report is waiting on the socket. */
    take_forkserver_events();
    leader_reaped(pid, status);
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
    for (int k = 0; k < MAX_EXECS; k++) {
        int ms = execs[k].used && execs[k].exited ? pty_timeout_ms(&execs[k].pty, now) : -1;
        if (ms >= 0 && (uint64_t)ms * 1000000u < next)
            next = (uint64_t)ms * 1000000u;
    }
    int server_ms = forkserver_timeouts();
    take_forkserver_events(); /* the watchdog may have given up on the server */
    if (wake_now) { /* an exec ended without a process to reap: the loop must see it at once */
        wake_now = false;
        return 0;
    }
    if (next == UINT64_MAX)
        return server_ms;
    uint64_t ms = (next + 999999u) / 1000000u; /* round up: never wake before the deadline */
    if (server_ms >= 0 && (uint64_t)server_ms < ms)
        ms = (uint64_t)server_ms;
    return ms > 60000 ? 60000 : (int)ms;
}

void execs_kill_all(void)
{
    for (int k = 0; k < MAX_EXECS; k++) {
        struct exec *e = &execs[k];
        if (!e->used)
            continue;
        kill_group(e, SIGKILL);
        if (e->pty.on && e->pid > 0)
            pty_kill_session(e->pid);
        release(e);
    }
    memset(ended, 0, sizeof ended);
}

/* The serve loop: one poll() over the control channel, a signalfd and every exec's pipes.
 * Everything is non-blocking; output to the host goes through one bounded queue, because a
 * write to virtio-serial can block or complete partially at any time. */
#include "serve.h"

#include <errno.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "exec.h"
#include "limits.h"
#include "portfwd.h"
#include "util.h"

#define READ_CHUNK (256u * 1024)

static struct control *ctl;
static struct decoder dec;
static struct buf outq;
static int sigfd = -1;

static void send_error(uint32_t channel, const char *code, const char *msg)
{
    size_t at = enc_begin(&outq, MSG_ERROR, channel);
    enc_str(&outq, 1, code);
    enc_str(&outq, 2, msg);
    enc_end(&outq, at);
}

/* The host is gone (or replaced): nobody will read what its execs produce. */
static void end_host_connection(const char *why)
{
    say("host connection ended (%s); killing its execs, closing its connections", why);
    execs_kill_all();
    conns_close_all();
    dec_reset(&dec);
    buf_clear(&outq);
}

/* Last value of a field (fields were validated by tlv_check). */
static bool field(const struct frame *f, uint8_t tag, struct tlv *out)
{
    bool found = false;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t))
        if (t.tag == tag) {
            *out = t;
            found = true;
        }
    return found;
}

#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07) /* <linux/random.h>; musl ships no kernel headers */
#endif

/* Mixes the host's bytes into the pool and reseeds the CRNG at once: writing to /dev/urandom
 * alone only mixes, so two clones restored from one snapshot could keep producing the same
 * "random" bytes until the next periodic reseed. */
static void reseed(const void *data, size_t len)
{
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (write(fd, data, len) < 0 || ioctl(fd, RNDRESEEDCRNG) < 0)
        say("reseeding the CRNG: %s", strerror(errno));
    close(fd);
}

static void on_hello(const struct frame *f)
{
    uint64_t up = uptime_ms();
    struct tlv t;
    field(f, 1, &t);
    if (t.num != PROTO_VERSION)
        say("host speaks protocol %llu, this agent %d", (unsigned long long)t.num, PROTO_VERSION);
    if (opt.pid1 && field(f, 2, &t)) {
        struct timespec ts = { .tv_sec = (time_t)(t.num / 1000000000u), .tv_nsec = (long)(t.num % 1000000000u) };
        if (clock_settime(CLOCK_REALTIME, &ts) < 0)
            say("clock_settime: %s", strerror(errno));
    }
    if (opt.pid1 && field(f, 3, &t) && t.len > 0)
        reseed(t.val, t.len);
    if (opt.pid1 && field(f, 4, &t) && t.len > 0 && t.len <= 64 && sethostname((const char *)t.val, t.len) < 0)
        say("sethostname: %s", strerror(errno));
    struct limits_req req = { 0 };
    if ((req.has_disk = field(f, 5, &t)))
        req.disk_bytes = t.num;
    if ((req.has_pids = field(f, 6, &t)))
        req.pids_max = (uint32_t)t.num;
    char why[200];
    const char *err = req.has_disk || req.has_pids ? limits_apply(&req, why, sizeof why) : NULL;
    if (err)
        say("HELLO limits not applied: %s: %s", err, why);

    size_t at = enc_begin(&outq, MSG_HELLO_ACK, 0);
    enc_u32(&outq, 1, PROTO_VERSION);
    enc_str(&outq, 2, AGENT_VERSION);
    enc_str(&outq, 3, "exec");
    enc_str(&outq, 3, "signal");
    enc_str(&outq, 3, "window");
    enc_str(&outq, 3, "stdin");
    enc_str(&outq, 3, "pty");
    enc_str(&outq, 3, "port");
    enc_str(&outq, 4, ctl->name);
    enc_u64(&outq, 5, up);
    limits_report(&outq);
    if (err) {
        enc_str(&outq, 9, err);
        enc_str(&outq, 10, why);
    }
    enc_end(&outq, at);
}

static void __attribute__((noreturn)) shutdown_now(void)
{
    if (!opt.pid1) {
        execs_kill_all();
        conns_close_all();
        exit(0);
    }
    say("shutdown");
    kill(-1, SIGKILL);
    sync();
    reboot(RB_AUTOBOOT);
    say("reboot: %s", strerror(errno));
    for (;;)
        pause();
}

static void on_frame(const struct frame *f)
{
    char why[160];
    const char *name = msg_name(f->type);
    bool from_host = f->type == MSG_HELLO || f->type == MSG_PING || f->type == MSG_EXEC ||
                     f->type == MSG_STDIN || f->type == MSG_SIGNAL || f->type == MSG_WINDOW ||
                     f->type == MSG_RESIZE || f->type == MSG_SHUTDOWN || f->type == MSG_CONNECT ||
                     f->type == MSG_CLOSE;
    if (!from_host) {
        if (name)
            snprintf(why, sizeof why, "%s is not a host->guest message", name);
        else
            snprintf(why, sizeof why, "unknown message type 0x%02x", f->type);
        send_error(f->channel, E_UNKNOWN_TYPE, why);
        return;
    }
    bool conn_msg = f->type == MSG_HELLO || f->type == MSG_PING || f->type == MSG_SHUTDOWN;
    if ((conn_msg && f->channel != 0) || ((f->type == MSG_EXEC || f->type == MSG_CONNECT) && f->channel == 0)) {
        snprintf(why, sizeof why, "%s on channel %u", name, f->channel);
        send_error(f->channel, E_BAD_CHANNEL, why);
        return;
    }
    if (msg_is_tlv(f->type) && tlv_check(f->type, f->payload, f->len, why, sizeof why) < 0) {
        send_error(f->channel, E_BAD_PAYLOAD, why);
        return;
    }

    /* Execs and connections share the channel namespace: STDIN and WINDOW go to whichever owns
     * the channel, SIGNAL and RESIZE only to an exec, CLOSE only to a connection. */
    struct exec *e = NULL;
    struct conn *pc = NULL;
    bool any = f->type == MSG_STDIN || f->type == MSG_WINDOW;
    if (any || f->type == MSG_SIGNAL || f->type == MSG_RESIZE || f->type == MSG_CLOSE) {
        if (f->type != MSG_CLOSE)
            e = exec_find(f->channel);
        if (!e && (any || f->type == MSG_CLOSE))
            pc = conn_find(f->channel);
        if (!e && !pc) {
            if (!exec_recently_ended(f->channel) && !conn_recently_closed(f->channel)) {
                snprintf(why, sizeof why, "%s for channel %u, which has no %s", name, f->channel,
                         any ? "exec or connection" : f->type == MSG_CLOSE ? "connection" : "exec");
                send_error(f->channel, E_NO_SUCH_CHANNEL, why);
            }
            return;
        }
    }

    struct tlv t;
    const char *err;
    switch (f->type) {
    case MSG_HELLO:
        on_hello(f);
        break;
    case MSG_PING:
        if (f->len > MAX_PING)
            send_error(0, E_BAD_PAYLOAD, "PING carries at most 4096 bytes");
        else
            enc_raw(&outq, MSG_PONG, 0, f->payload, f->len);
        break;
    case MSG_SHUTDOWN:
        shutdown_now();
    case MSG_EXEC:
        if (conn_find(f->channel)) {
            snprintf(why, sizeof why, "channel %u has an open connection", f->channel);
            send_error(f->channel, E_CHANNEL_IN_USE, why);
        } else if ((err = exec_start(f, why, sizeof why))) {
            send_error(f->channel, err, why);
        } else {
            conn_forget(f->channel);
        }
        break;
    case MSG_CONNECT:
        if (exec_find(f->channel)) {
            snprintf(why, sizeof why, "channel %u already has a running exec", f->channel);
            send_error(f->channel, E_CHANNEL_IN_USE, why);
        } else if ((err = conn_open(f, &outq, why, sizeof why))) {
            send_error(f->channel, err, why);
        }
        break;
    case MSG_CLOSE:
        conn_close(pc, &outq);
        break;
    case MSG_STDIN:
        if (pc)
            conn_stdin(pc, f->payload, f->len, &outq);
        else if (exec_stdin(e, f->payload, f->len, &outq))
            send_error(f->channel, E_BAD_PAYLOAD, "STDIN beyond the granted window");
        break;
    case MSG_SIGNAL:
        field(f, 1, &t);
        if (t.num < 1 || t.num >= NSIG)
            send_error(f->channel, E_BAD_PAYLOAD, "signo out of range");
        else
            exec_signal(e, (int)t.num);
        break;
    case MSG_WINDOW:
        field(f, 1, &t);
        if (pc)
            conn_window(pc, (uint32_t)t.num);
        else
            exec_window(e, (uint32_t)t.num);
        break;
    case MSG_RESIZE: {
        struct tlv c;
        field(f, 1, &t);
        field(f, 2, &c);
        if (t.num < 1 || t.num > 65535 || c.num < 1 || c.num > 65535)
            send_error(f->channel, E_BAD_PAYLOAD, "RESIZE rows and cols must be 1-65535");
        else if (exec_resize(e, (uint16_t)t.num, (uint16_t)c.num) < 0)
            send_error(f->channel, E_BAD_PAYLOAD, "RESIZE for an exec without a tty");
        break;
    }
    }
}

/* Decodes and handles buffered frames while there is room to answer them. */
static void process_input(void)
{
    struct frame f;
    const char *code, *msg;
    while (buf_pending(&outq) < OUTQ_MAX) {
        int r = dec_next(&dec, &f, &code, &msg);
        if (r == DEC_MORE)
            break;
        if (r == DEC_ERROR)
            send_error(0, code, msg);
        else
            on_frame(&f);
    }
}

static void read_input(bool hangup)
{
    size_t room;
    uint8_t *p = dec_space(&dec, &room);
    if (room > READ_CHUNK)
        room = READ_CHUNK;
    if (room == 0) { /* a full frame is waiting for the output queue to drain */
        if (hangup) {
            ctl_drop(ctl);
            end_host_connection("hang-up");
        }
        return;
    }
    ssize_t n = ctl_read(ctl, p, room);
    if (n > 0)
        dec_commit(&dec, (size_t)n);
    else if (n < 0)
        end_host_connection("end of stream");
}

static void flush_output(void)
{
    while (buf_pending(&outq) > 0 && ctl_writable(ctl)) {
        ssize_t n = ctl_write(ctl, outq.data + outq.off, buf_pending(&outq));
        if (n < 0) {
            end_host_connection("write failed");
            return;
        }
        if (n == 0)
            return;
        buf_consume(&outq, (size_t)n);
    }
}

static void handle_signals(void)
{
    struct signalfd_siginfo si;
    while (read(sigfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGCHLD || si.ssi_signo == SIGIO)
            continue;
        if (!opt.pid1) { /* host mode: terminate cleanly, taking the execs along */
            execs_kill_all();
            conns_close_all();
            exit(0);
        }
        say("ignoring signal %u", si.ssi_signo);
    }
    /* Reap everything: exec leaders and every orphan re-parented to us. */
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        execs_reaped(pid, status);
}

void serve(struct control *c)
{
    ctl = c;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGIO); /* virtio-serial: a host attached to or left the port */
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN); /* a closed stdin pipe is an EPIPE, not a dead agent */
    sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd < 0 || dec_init(&dec) < 0) {
        say("cannot start: %s", strerror(errno));
        for (;;) /* PID 1 must not exit */
            pause();
    }
    handle_signals(); /* children that exited before the signalfd existed */

    for (;;) {
        struct pollfd p[1 + CTL_POLLFDS + EXEC_POLLFDS + PORTFWD_POLLFDS];
        int n = 0;
        p[n++] = (struct pollfd){ .fd = sigfd, .events = POLLIN };
        int timeout = execs_timeouts();
        struct pollfd *pc = p + n;
        n += ctl_prepare(c, pc, buf_pending(&outq) < OUTQ_MAX, buf_pending(&outq) > 0, &timeout);
        struct pollfd *pe = p + n;
        n += execs_poll_prepare(pe, buf_pending(&outq) < OUTQ_HIGH, &timeout);
        struct pollfd *pp = p + n;
        n += conns_poll_prepare(pp, buf_pending(&outq) < OUTQ_HIGH);
        if (poll(p, n, timeout) < 0) {
            if (errno != EINTR) {
                say("poll: %s", strerror(errno));
                sleep_ms(10);
            }
            continue;
        }
        if (p[0].revents)
            handle_signals();
        if (ctl_accept(c, pc))
            end_host_connection("a new host connected");
        if (ctl_readable(c, pc))
            read_input(ctl_hangup(c, pc));
        process_input();
        execs_poll_handle(pe, &outq);
        conns_poll_handle(pp, &outq);
        flush_output();
    }
}

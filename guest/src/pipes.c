/* An exec's pipes: stdin in, output out under credit (see pipes.h). */
#include "pipes.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define GRANT_BATCH 32768 /* grant STDIN credit back in batches, not per write */
#define MAX_CREDIT (1ull << 40)
/* A writer making small writes would otherwise cost a frame, a virtio kick and two context
 * switches per write (expensive under TCG). A pipe with less than a full frame waiting is read
 * this long after it became readable instead; the process exiting ends the wait. */
#define COALESCE_NS 1000000u
#define PIPE_SIZE (256 * 1024)

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

int pipes_open(struct pipes *io, uint32_t channel, const struct pipes_setup *s, int cfd[3], char *msg, size_t msglen)
{
    memset(io, 0, sizeof *io);
    io->channel = channel;
    io->out_credit = INITIAL_WINDOW;
    io->in_credit = INITIAL_WINDOW;
    io->cap = s->cap;
    io->in_close = !s->stdin_open; /* stdin_open absent or 0: close after the stdin field */
    if (s->input_len > 0 && buf_put(&io->in, s->input, s->input_len) < 0) {
        buf_free(&io->in);
        snprintf(msg, msglen, "out of memory for stdin");
        return -1;
    }
    io->in_free = s->input_len;

    int p[3][2] = { { -1, -1 }, { -1, -1 }, { -1, -1 } };
    for (int i = 0; i < 3; i++) {
        if (pipe2(p[i], O_CLOEXEC) < 0) {
            snprintf(msg, msglen, "pipe: %s", strerror(errno));
            for (int j = 0; j < i; j++) {
                close(p[j][0]);
                close(p[j][1]);
            }
            buf_free(&io->in);
            return -1;
        }
    }
    cfd[0] = p[0][0];
    cfd[1] = p[1][1];
    cfd[2] = p[2][1];
    io->fd[0] = p[0][1];
    io->fd[1] = p[1][0];
    io->fd[2] = p[2][0];
    for (int i = 0; i < 3; i++) {
        fcntl(io->fd[i], F_SETFL, O_NONBLOCK); /* our ends only: each end is its own open file */
        io->pi[i] = -1;
    }
    /* Room for a burst of output to wait while the host has no credit or we coalesce. */
    fcntl(io->fd[1], F_SETPIPE_SZ, PIPE_SIZE);
    fcntl(io->fd[2], F_SETPIPE_SZ, PIPE_SIZE);
    if (io->in_close && buf_pending(&io->in) == 0)
        close_fd(&io->fd[0]); /* no stdin at all: the process sees EOF right away */
    return 0;
}

void pipes_close(struct pipes *io)
{
    for (int i = 0; i < 3; i++)
        close_fd(&io->fd[i]);
    buf_free(&io->in);
}

/* ---- stdin ---- */

static void grant_stdin(struct pipes *io, struct buf *out, bool force)
{
    if (io->in_grant == 0 || (!force && io->in_grant < GRANT_BATCH))
        return;
    size_t at = enc_begin(out, MSG_WINDOW, io->channel);
    enc_u32(out, 1, (uint32_t)io->in_grant);
    if (enc_end(out, at) == 0) {
        io->in_credit += io->in_grant;
        io->in_grant = 0;
    }
}

/* Bytes leave `in` (written or discarded): the part the host paid credit for is owed back. */
static void consumed_stdin(struct pipes *io, size_t n)
{
    size_t free_part = n < io->in_free ? n : io->in_free;
    io->in_free -= free_part;
    io->in_grant += n - free_part;
    buf_consume(&io->in, n);
}

static void flush_stdin(struct pipes *io, struct buf *out)
{
    while (io->fd[0] >= 0 && buf_pending(&io->in) > 0) {
        ssize_t n = write(io->fd[0], io->in.data + io->in.off, buf_pending(&io->in));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) { /* EPIPE: the process closed its stdin; what is left is discarded */
            close_fd(&io->fd[0]);
            break;
        }
        consumed_stdin(io, (size_t)n);
    }
    if (io->fd[0] < 0 && buf_pending(&io->in) > 0)
        consumed_stdin(io, buf_pending(&io->in));
    if (io->fd[0] >= 0 && io->in_close && buf_pending(&io->in) == 0)
        close_fd(&io->fd[0]);
    grant_stdin(io, out, buf_pending(&io->in) == 0);
}

const char *pipes_stdin(struct pipes *io, const uint8_t *p, size_t n, struct buf *out)
{
    if (n == 0) {
        io->in_close = true;
    } else if (n > io->in_credit) {
        return E_BAD_PAYLOAD;
    } else {
        io->in_credit -= n;
        if (io->fd[0] < 0 || io->in_close || buf_put(&io->in, p, n) < 0) {
            io->in.err = 0;
            io->in_grant += n; /* stdin is gone: drop the bytes but keep the host's credit flowing */
        }
    }
    flush_stdin(io, out);
    return NULL;
}

/* ---- output ---- */

void pipes_window(struct pipes *io, uint32_t increment)
{
    io->out_credit += increment;
    if (io->out_credit > MAX_CREDIT)
        io->out_credit = MAX_CREDIT;
}

/* May this output pipe be read now? Without credit only once the cap is reached (then
 * everything read is discarded, which costs no credit). After the process exited, only what was
 * in the pipe at that moment still belongs to the exec. */
static bool output_readable(const struct pipes *io, int i)
{
    if (io->fd[i] < 0 || (io->writer_gone && io->drain[i - 1] == 0))
        return false;
    return io->out_credit > 0 || (io->cap && io->out_total >= io->cap);
}

static void pump_output(struct pipes *io, int i, struct buf *out)
{
    while (output_readable(io, i) && buf_pending(out) < OUTQ_HIGH) {
        bool capped = io->cap && io->out_total >= io->cap;
        size_t want = MAX_DATA_FRAME;
        if (!capped && io->out_credit < want)
            want = (size_t)io->out_credit;
        /* Read straight into the output queue; only the bytes kept become a frame. */
        uint8_t *frame = buf_tail(out, HEADER_SIZE + want);
        if (!frame)
            break;
        ssize_t n = read(io->fd[i], frame + HEADER_SIZE, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) { /* EOF (or a broken pipe): every writer is gone */
            close_fd(&io->fd[i]);
            break;
        }
        if (io->writer_gone)
            io->drain[i - 1] -= (uint64_t)n < io->drain[i - 1] ? (uint64_t)n : io->drain[i - 1];
        size_t keep = (size_t)n;
        if (io->cap) {
            uint64_t room = io->cap > io->out_total ? io->cap - io->out_total : 0;
            if (keep > room) {
                keep = (size_t)room;
                io->truncated = true;
            }
        }
        if (keep > 0) {
            enc_data_commit(out, i == 1 ? MSG_STDOUT : MSG_STDERR, io->channel, keep);
            io->out_total += keep;
            io->out_credit -= keep;
        }
    }
}

static void min_timeout(int *timeout_ms, uint64_t ns)
{
    int ms = (int)((ns + 999999u) / 1000000u);
    if (*timeout_ms < 0 || ms < *timeout_ms)
        *timeout_ms = ms;
}

int pipes_poll_prepare(struct pipes *io, struct pollfd *p, int n, bool out_room, uint64_t now, int *timeout_ms)
{
    io->pi[0] = io->pi[1] = io->pi[2] = -1;
    if (io->fd[0] >= 0 && buf_pending(&io->in) > 0) {
        io->pi[0] = n;
        p[n++] = (struct pollfd){ .fd = io->fd[0], .events = POLLOUT };
    }
    for (int i = 1; i < 3; i++) {
        /* Watching a pipe we will not read would spin on POLLHUP: leave it out entirely. */
        if (!out_room || !output_readable(io, i))
            continue;
        if (io->hold[i - 1] > now) {
            min_timeout(timeout_ms, io->hold[i - 1] - now);
        } else {
            io->pi[i] = n;
            p[n++] = (struct pollfd){ .fd = io->fd[i], .events = POLLIN };
        }
    }
    return n;
}

static size_t pipe_avail(int fd)
{
    int avail = 0;
    return ioctl(fd, FIONREAD, &avail) == 0 && avail > 0 ? (size_t)avail : 0;
}

void pipes_poll_handle(struct pipes *io, const struct pollfd *p, struct buf *out, uint64_t now)
{
    if (io->pi[0] >= 0 && p[io->pi[0]].revents)
        flush_stdin(io, out);
    for (int i = 1; i < 3; i++) {
        bool ready = io->pi[i] >= 0 && p[io->pi[i]].revents;
        bool held = io->hold[i - 1] != 0;
        if (ready && !held && !io->writer_gone && pipe_avail(io->fd[i]) < MAX_DATA_FRAME) {
            io->hold[i - 1] = now + COALESCE_NS; /* let more output pile up first */
            continue;
        }
        if (ready || io->writer_gone || (held && now >= io->hold[i - 1])) {
            io->hold[i - 1] = 0;
            pump_output(io, i, out);
        }
    }
}

void pipes_writer_exited(struct pipes *io)
{
    io->writer_gone = true;
    for (int i = 1; i < 3; i++)
        io->drain[i - 1] = io->fd[i] >= 0 ? pipe_avail(io->fd[i]) : 0;
}

bool pipes_drained(const struct pipes *io)
{
    return io->writer_gone && (io->fd[1] < 0 || io->drain[0] == 0) && (io->fd[2] < 0 || io->drain[1] == 0);
}

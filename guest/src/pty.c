/* Pseudo-terminal execs (see pty.h). */
#include "pty.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <termios.h>
#include <unistd.h>

static bool size_field(const struct tlv *t) { return t->tag == 11 || t->tag == 12; }

bool pty_wanted(const struct frame *f, uint16_t *rows, uint16_t *cols)
{
    bool on = false;
    uint16_t r = PTY_DEFAULT_ROWS, c = PTY_DEFAULT_COLS;
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        if (t.tag == 10)
            on = t.num != 0;
        else if (t.tag == 11 && t.num >= 1 && t.num <= 65535)
            r = (uint16_t)t.num;
        else if (t.tag == 12 && t.num >= 1 && t.num <= 65535)
            c = (uint16_t)t.num;
    }
    if (rows)
        *rows = r;
    if (cols)
        *cols = c;
    return on;
}

const char *pty_check(const struct frame *f, char *msg, size_t msglen)
{
    struct tlv t;
    struct tlv_iter it;
    tlv_iter_init(&it, f);
    while (tlv_next(&it, &t)) {
        if (size_field(&t) && (t.num < 1 || t.num > 65535)) {
            snprintf(msg, msglen, "EXEC %s must be 1-65535", t.spec->name);
            return E_BAD_PAYLOAD;
        }
    }
    return NULL;
}

static void set_size(int fd, uint16_t rows, uint16_t cols)
{
    struct winsize ws = { .ws_row = rows, .ws_col = cols };
    ioctl(fd, TIOCSWINSZ, &ws);
}

#define DEVPTS_SUPER_MAGIC 0x1cd1

/* /dev/ptmx finds its ptys in the devpts mounted at /dev/pts next to it; the guest's /dev is a
 * devtmpfs without one until the first tty exec asks (host mode: the host's, already there). */
static void ensure_devpts(void)
{
    struct statfs st;
    if (statfs("/dev/pts", &st) == 0 && st.f_type == DEVPTS_SUPER_MAGIC)
        return;
    mkdir("/dev/pts", 0755);
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
}

int pty_open(struct pty *t, struct pipes *io, int cfd[3], uint16_t rows, uint16_t cols, char *msg, size_t msglen)
{
    ensure_devpts();
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    int s = -1, in = -1, own = -1, s1 = -1, s2 = -1;
    char name[64];
    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof name) != 0)
        goto fail;
    /* O_NOCTTY: the agent must never acquire the terminal; the child makes it its own. */
    s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    in = fcntl(m, F_DUPFD_CLOEXEC, 0);
    own = fcntl(m, F_DUPFD_CLOEXEC, 0);
    s1 = fcntl(s, F_DUPFD_CLOEXEC, 0);
    s2 = fcntl(s, F_DUPFD_CLOEXEC, 0);
    if (s < 0 || in < 0 || own < 0 || s1 < 0 || s2 < 0)
        goto fail;
    set_size(m, rows, cols);
    fcntl(m, F_SETFL, O_NONBLOCK); /* one open file: `in` and `own` are non-blocking too */

    for (int i = 0; i < 3; i++) {
        if (io->fd[i] >= 0)
            close(io->fd[i]);
        close(cfd[i]);
    }
    /* The pipes code writes stdin to fd[0] and reads stdout from fd[1]: both are the master.
     * Closing stdin (an empty STDIN) closes only the duplicate. */
    io->fd[0] = in;
    io->fd[1] = m;
    io->fd[2] = -1;
    cfd[0] = s;
    cfd[1] = s1;
    cfd[2] = s2;
    t->on = true;
    t->master = own;
    return 0;
fail:
    snprintf(msg, msglen, "pty: %s", strerror(errno));
    int fds[] = { m, s, in, own, s1, s2 };
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return -1;
}

void pty_close(struct pty *t)
{
    if (t->on)
        close(t->master);
    t->on = false;
    t->master = -1;
}

int pty_resize(struct pty *t, uint16_t rows, uint16_t cols)
{
    if (!t->on)
        return -1;
    set_size(t->master, rows, cols);
    return 0;
}

void pty_writer_exited(struct pty *t, struct pipes *io, uint64_t now)
{
    io->drain[0] = UINT64_MAX; /* not FIONREAD: see PTY_LINGER_NS */
    io->drain[1] = 0;
    t->quiet_until = now + PTY_LINGER_NS;
    t->seen_total = io->out_total;
}

bool pty_drained(struct pty *t, const struct pipes *io, uint64_t now)
{
    if (io->fd[1] < 0)
        return true; /* EIO: every writer is gone and all they wrote was read */
    /* Output still coming, or waiting for the host's credit: not quiet. */
    if (io->out_total != t->seen_total || io->out_credit == 0) {
        t->seen_total = io->out_total;
        t->quiet_until = now + PTY_LINGER_NS;
        return false;
    }
    return now >= t->quiet_until;
}

int pty_timeout_ms(const struct pty *t, uint64_t now)
{
    if (!t->on || t->quiet_until == 0)
        return -1;
    return t->quiet_until <= now ? 0 : (int)((t->quiet_until - now + 999999u) / 1000000u);
}

void pty_child_setup(void)
{
    ioctl(0, TIOCSCTTY, 0);
}

void pty_kill_session(pid_t sid)
{
    if (sid <= 1)
        return;
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        long pid = strtol(de->d_name, &end, 10);
        if (*end || pid <= 1)
            continue;
        if (getsid((pid_t)pid) == sid)
            kill((pid_t)pid, SIGKILL);
    }
    closedir(d);
}

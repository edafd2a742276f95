/* The exec side of the forkserver hand-off (see fastpath.h). */
#include "fastpath.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "forkserver.h"
#include "spawn.h"
#include "util.h"

#define SIG_BIT(s) (1ull << ((s) - 1))

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void handoff_init(struct handoff *h)
{
    *h = (struct handoff){ .memfd = -1, .cfd = { -1, -1, -1 } };
}

bool handoff_begin(struct handoff *h, const struct frame *f, int cfd[3])
{
    if (!forkserver_eligible(f) || forkserver_submit(f, cfd, &h->seq, &h->memfd) < 0)
        return false;
    memcpy(h->cfd, cfd, sizeof h->cfd);
    return true;
}

bool handoff_waiting(const struct handoff *h) { return h->seq != 0; }

void handoff_hold_signal(struct handoff *h, int signo) { h->sigs |= SIG_BIT(signo); }

/* The hand-off is over either way: the pipes' child ends and the payload are not needed. */
static struct start settle(struct handoff *h, struct start s)
{
    for (int i = 0; i < 3; i++)
        close_fd(&h->cfd[i]);
    close_fd(&h->memfd);
    h->seq = 0;
    s.sigs = s.pid > 0 ? h->sigs : 0;
    h->sigs = 0;
    return s;
}

bool handoff_cancel(struct handoff *h)
{
    return handoff_waiting(h) && ftruncate(h->memfd, 0) == 0;
}

struct start handoff_killed(struct handoff *h)
{
    return settle(h, (struct start){ .status = SIGKILL });
}

struct start handoff_reported(struct handoff *h, int32_t value)
{
    if (value <= 0)
        return handoff_fall_back(h);
    return settle(h, (struct start){ .pid = value, .fast = true });
}

struct start handoff_fall_back(struct handoff *h)
{
    if (h->sigs & SIG_BIT(SIGKILL)) /* killed before it started: it never will */
        return handoff_killed(h);
    off_t len = lseek(h->memfd, 0, SEEK_END);
    void *map = len > 0 ? mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE, h->memfd, 0) : MAP_FAILED;
    pid_t pid = -1;
    if (map != MAP_FAILED) {
        struct frame f = { .type = MSG_EXEC, .payload = map, .len = (uint32_t)len };
        pid = spawn_child(&f, h->cfd);
        munmap(map, (size_t)len);
    }
    if (pid > 0)
        return settle(h, (struct start){ .pid = pid });
    /* Nothing can run it: it ends as a process that could not be started would (126). */
    dprintf(h->cfd[2], "emberd-init: cannot start the process: %s\n", strerror(errno));
    return settle(h, (struct start){ .status = 126 << 8 });
}

void handoff_unwanted(int32_t value)
{
    if (value > 0 && kill(-value, SIGKILL) < 0)
        kill(value, SIGKILL);
}

void handoff_release(struct handoff *h)
{
    if (handoff_waiting(h) && ftruncate(h->memfd, 0) < 0) {
        /* then a late worker may start the code; its report, for nobody, gets it killed */
    }
    settle(h, (struct start){ 0 });
}

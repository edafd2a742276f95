#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct options opt = { .interp_file = "/etc/emberd/interpreter" };

void say(const char *fmt, ...)
{
    /* One write per line so lines from PID 1 and children do not interleave mid-line. */
    char line[512];
    size_t n = sizeof "emberd-init: " - 1;
    memcpy(line, "emberd-init: ", n);
    size_t room = sizeof line - n - 1; /* keep a byte for the newline */
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, room, fmt, ap);
    va_end(ap);
    if (m > 0)
        n += (size_t)m < room ? (size_t)m : room - 1;
    line[n++] = '\n';
    int saved = errno;
    if (write(2, line, n) < 0) { /* nowhere else to report it */ }
    errno = saved;
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
uint64_t uptime_ms(void) { return clock_ns(CLOCK_BOOTTIME) / 1000000u; }

void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

int write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return close(fd);
}

char *read_file(const char *path, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *buf = malloc(max + 1);
    size_t got = 0;
    while (buf && got < max) {
        ssize_t n = read(fd, buf + got, max - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            buf = NULL;
        }
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (buf) {
        buf[got] = 0;
        if (len)
            *len = got;
    }
    return buf;
}

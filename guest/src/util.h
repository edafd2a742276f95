/* Small helpers shared by every part of emberd-init. */
#ifndef EMBERD_UTIL_H
#define EMBERD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_VERSION "0.1.0"

/* Process-wide settings, fixed before the serve loop starts. */
struct options {
    bool pid1;              /* real guest: mounts, clock, entropy, reboot */
    const char *interp_file; /* where EXEC `code` finds its interpreter */
};
extern struct options opt;

/* "emberd-init: ..." on stderr (the console in the guest). */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t mono_ns(void);          /* CLOCK_MONOTONIC */
uint64_t uptime_ms(void);        /* CLOCK_BOOTTIME */
void sleep_ms(unsigned ms);
int write_file(const char *path, const void *data, size_t len);
/* Reads a whole small file into a NUL-terminated malloc'd buffer; NULL on error. */
char *read_file(const char *path, size_t max, size_t *len);

#endif

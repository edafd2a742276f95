#ifndef EMBERD_ROOTFS_H
#define EMBERD_ROOTFS_H

#include <stdint.h>

/* Settings from the kernel command line (emberd.*). */
struct bootopts {
    char overlay_size[32]; /* emberd.overlay_size=, tmpfs size= of the writable layer */
    char hostname[65];     /* emberd.hostname= */
};

void read_cmdline(struct bootopts *bo);
/* /proc, /sys, /dev (devtmpfs, with the console on fds 0-2), /run. */
void mount_early(void);
/* The pack (/dev/vda, squashfs) under a tmpfs overlay at /newroot, then switch into it. */
int mount_root(const struct bootopts *bo);
int switch_root(const char *newroot);
/* The writable layer (the overlay's tmpfs upper): its size and the bytes in use; -1 when there is
 * none (host mode, or no root filesystem). */
int upper_usage(uint64_t *size, uint64_t *used);
/* Sets its size (tmpfs size=, rounded up to pages by the kernel); -1 with errno. */
int upper_resize(uint64_t bytes);
void set_hostname(const char *name);
void loopback_up(void);

#endif

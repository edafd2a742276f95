/* Filesystems of the guest: the initramfs only carries this binary and its modules; everything
 * else comes from the pack image, mounted read-only under a tmpfs overlay. */
#include "rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "util.h"

#define ROOT_DEV "/dev/vda"
#define ROOT_WAIT_MS 5000

/* The overlay's tmpfs upper (the writable layer). After the switch root its mount point is in
 * the initramfs, out of reach of any path; this fd keeps it reachable for a remount (HELLO's
 * disk_bytes) through /proc/self/fd, and invisible to execs. */
static int upper_fd = -1;

static void mkdir_quiet(const char *path, mode_t mode)
{
    if (mkdir(path, mode) == 0)
        chmod(path, mode); /* the umask would have dropped bits of 01777 */
    else if (errno != EEXIST)
        say("mkdir %s: %s", path, strerror(errno));
}

static int mount_at(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
    if (mount(src, dst, type, flags, data) < 0 && errno != EBUSY) {
        say("mount %s on %s: %s", type ? type : src, dst, strerror(errno));
        return -1;
    }
    return 0;
}

void read_cmdline(struct bootopts *bo)
{
    memset(bo, 0, sizeof *bo);
    strcpy(bo->overlay_size, "256m");
    char *cmdline = read_file("/proc/cmdline", 4096, NULL);
    if (!cmdline)
        return;
    char *save = NULL;
    for (char *w = strtok_r(cmdline, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(w, "emberd.overlay_size=", 20) == 0) {
            const char *v = w + 20;
            /* It goes into a mount option string: digits and a unit only, no commas. */
            if (*v && strlen(v) < sizeof bo->overlay_size && strspn(v, "0123456789kKmMgG%") == strlen(v))
                strcpy(bo->overlay_size, v);
            else
                say("ignoring emberd.overlay_size=%s", v);
        } else if (strncmp(w, "emberd.hostname=", 16) == 0 && strlen(w + 16) < sizeof bo->hostname) {
            strcpy(bo->hostname, w + 16);
        }
    }
    free(cmdline);
}

void mount_early(void)
{
    mkdir_quiet("/proc", 0555);
    mkdir_quiet("/sys", 0555);
    mkdir_quiet("/dev", 0755);
    mkdir_quiet("/run", 0755);
    mount_at("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_at("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_at("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_at("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");

    /* The kernel opens the console for init only if the initramfs has /dev/console; make
     * sure fds 0-2 are the console (log output) now that devtmpfs has it. */
    int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) {
        for (int i = 0; i < 3; i++)
            if (fd != i)
                dup2(fd, i);
        if (fd > 2)
            close(fd);
    }

    /* What programs expect in /dev beyond device nodes. */
    mkdir_quiet("/dev/shm", 01777);
    mount_at("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    symlink("/proc/self/fd", "/dev/fd");
    symlink("/proc/self/fd/0", "/dev/stdin");
    symlink("/proc/self/fd/1", "/dev/stdout");
    symlink("/proc/self/fd/2", "/dev/stderr");
}

int mount_root(const struct bootopts *bo)
{
    /* virtio_blk probes while its module loads, but the /dev node appears asynchronously. */
    uint64_t deadline = mono_ns() + ROOT_WAIT_MS * 1000000ull;
    while (access(ROOT_DEV, F_OK) < 0) {
        if (mono_ns() > deadline) {
            say("%s did not appear within %d ms", ROOT_DEV, ROOT_WAIT_MS);
            return -1;
        }
        sleep_ms(2);
    }
    mkdir_quiet("/mnt", 0755);
    mkdir_quiet("/mnt/lower", 0755);
    mkdir_quiet("/mnt/upper", 0755);
    mkdir_quiet("/newroot", 0755);
    if (mount_at(ROOT_DEV, "/mnt/lower", "squashfs", MS_RDONLY | MS_NODEV, NULL) < 0)
        return -1;
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s,mode=0755", bo->overlay_size);
    if (mount_at("tmpfs", "/mnt/upper", "tmpfs", MS_NODEV, opts) < 0)
        return -1;
    upper_fd = open("/mnt/upper", O_PATH | O_DIRECTORY | O_CLOEXEC);
    mkdir_quiet("/mnt/upper/upper", 0755);
    mkdir_quiet("/mnt/upper/work", 0755);
    return mount_at("overlay", "/newroot", "overlay", MS_NODEV,
                    "lowerdir=/mnt/lower,upperdir=/mnt/upper/upper,workdir=/mnt/upper/work");
}

int upper_usage(uint64_t *size, uint64_t *used)
{
    struct statfs st;
    if (upper_fd < 0 || fstatfs(upper_fd, &st) < 0)
        return -1;
    *size = (uint64_t)st.f_blocks * (uint64_t)st.f_bsize;
    *used = (uint64_t)(st.f_blocks - st.f_bfree) * (uint64_t)st.f_bsize;
    return 0;
}

int upper_resize(uint64_t bytes)
{
    if (upper_fd < 0) {
        errno = ENOENT;
        return -1;
    }
    /* The size belongs to the tmpfs superblock: remounting this mount of it is enough (the
     * overlay writes through its own private clone of the mount). tmpfs refuses (EINVAL) a size
     * below what it holds. MS_NODEV: a remount replaces the mount's flags. */
    char path[32], opts[40];
    snprintf(path, sizeof path, "/proc/self/fd/%d", upper_fd);
    snprintf(opts, sizeof opts, "size=%llu", (unsigned long long)bytes);
    return mount(NULL, path, NULL, MS_REMOUNT | MS_NODEV, opts);
}

int switch_root(const char *newroot)
{
    static const struct { const char *name; mode_t mode; bool move; } dirs[] = {
        { "proc", 0555, true }, { "sys", 0555, true }, { "dev", 0755, true },
        { "run", 0755, true },  { "tmp", 01777, false }, { "root", 0700, false },
    };
    char path[256];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", newroot, dirs[i].name);
        mkdir_quiet(path, dirs[i].mode);
        if (dirs[i].move) {
            char from[64];
            snprintf(from, sizeof from, "/%s", dirs[i].name);
            mount_at(from, path, NULL, MS_MOVE, NULL);
        }
    }
    /* pivot_root() cannot take the initramfs (rootfs) away: move the new root over "/" and
     * chroot into it, as switch_root(8) does. The initramfs stays below, unreachable. */
    if (chdir(newroot) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
        say("switch root to %s: %s", newroot, strerror(errno));
        return -1;
    }
    return 0;
}

void set_hostname(const char *name)
{
    if (*name && sethostname(name, strlen(name)) < 0)
        say("sethostname: %s", strerror(errno));
}

/* No network device, but 127.0.0.1 should work for programs that talk to themselves. */
void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return;
    struct ifreq ifr = { 0 };
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
}

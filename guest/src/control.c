#include "control.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

/* <linux/vm_sockets.h> is not in musl's headers. */
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define VMADDR_CID_ANY 0xffffffffu
#define IOCTL_VM_SOCKETS_GET_LOCAL_CID _IO(7, 0xb9)
struct sockaddr_vm {
    sa_family_t svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_zero[sizeof(struct sockaddr) - sizeof(sa_family_t) - sizeof(unsigned short) -
                           2 * sizeof(unsigned int)];
};

/* A port nobody has open on the host side is watched with SIGIO (virtio_console signals host
 * connects and disconnects to O_ASYNC owners); this slow poll is only a safety net. */
#define SERIAL_RECHECK_MS 250

static int listen_on(int fd, const struct sockaddr *a, socklen_t len)
{
    if (fd < 0)
        return -1;
    if (bind(fd, a, len) < 0 || listen(fd, 4) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* /dev/vsock exists as soon as vsock.ko is loaded, and bind() works even without a transport;
 * only a virtio-vsock device gives the guest a CID, so that is what decides. */
static int vsock_listener(void)
{
    int dev = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
    if (dev < 0)
        return -1;
    unsigned int cid = VMADDR_CID_ANY;
    int r = ioctl(dev, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
    close(dev);
    if (r < 0 || cid == VMADDR_CID_ANY || cid <= 2)
        return -1;
    struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_port = VSOCK_PORT, .svm_cid = VMADDR_CID_ANY };
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    return listen_on(fd, (struct sockaddr *)&a, sizeof a);
}

/* The port appears in sysfs when the host's virtio-serial control messages arrive, and the
 * /dev node a moment later (devtmpfs): both asynchronously. */
static int serial_port(void)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d)
        return -1;
    int fd = -1;
    struct dirent *de;
    while (fd < 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[300];
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", de->d_name);
        char *name = read_file(path, 64, NULL);
        if (name && strcmp(name, "emberd.control\n") == 0) {
            snprintf(path, sizeof path, "/dev/%s", de->d_name);
            fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        }
        free(name);
    }
    closedir(d);
    return fd;
}

void control_open_guest(struct control *c)
{
    memset(c, 0, sizeof *c);
    c->listen_fd = c->fd = c->pi_listen = c->pi_conn = -1;
    uint64_t start = mono_ns();
    for (unsigned round = 0;; round++) {
        if ((c->listen_fd = vsock_listener()) >= 0) {
            c->kind = T_VSOCK;
            c->name = "vsock";
            return;
        }
        if ((c->fd = serial_port()) >= 0) {
            fcntl(c->fd, F_SETOWN, getpid());
            c->kind = T_SERIAL;
            c->name = "virtio-serial";
            return;
        }
        /* PID 1 must not exit; keep looking, but say what is missing. */
        if (round % 1000 == 999)
            say("no control channel after %llu ms (neither a vsock device nor a virtio-serial port "
                "named emberd.control); still waiting",
                (unsigned long long)((mono_ns() - start) / 1000000u));
        sleep_ms(5);
    }
}

int control_open_unix(struct control *c, const char *path)
{
    memset(c, 0, sizeof *c);
    c->fd = c->pi_listen = c->pi_conn = -1;
    c->kind = T_UNIX;
    c->name = "unix";
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(a.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path); /* a stale socket from an earlier run */
    c->listen_fd = listen_on(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0),
                             (struct sockaddr *)&a, sizeof a);
    return c->listen_fd < 0 ? -1 : 0;
}

/* SIGIO on host connect/disconnect while no host is attached (it would also fire for every
 * incoming buffer, so it is off while a host is attached and POLLIN does the job). */
static void serial_async(struct control *c, bool on, int *timeout_ms)
{
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || !!(fl & O_ASYNC) == on)
        return;
    fcntl(c->fd, F_SETFL, on ? fl | O_ASYNC : fl & ~O_ASYNC);
    if (on)
        *timeout_ms = 0; /* a host may have arrived just before SIGIO was armed: look once more */
}

int ctl_prepare(struct control *c, struct pollfd *p, bool want_in, bool want_out, int *timeout_ms)
{
    int n = 0;
    c->pi_listen = c->pi_conn = -1;
    if (c->listen_fd >= 0) {
        c->pi_listen = n;
        p[n++] = (struct pollfd){ .fd = c->listen_fd, .events = POLLIN };
    }
    if (c->kind == T_SERIAL)
        serial_async(c, !c->present, timeout_ms);
    if (c->kind == T_SERIAL && !c->present) {
        /* With no host on the port, poll() reports POLLHUP (and POLLIN) nonstop: do not watch
         * the fd; SIGIO (on the serve loop's signalfd) says when a host arrives. */
        if (*timeout_ms < 0 || *timeout_ms > SERIAL_RECHECK_MS)
            *timeout_ms = SERIAL_RECHECK_MS;
    } else if (c->fd >= 0 && (want_in || want_out)) {
        c->pi_conn = n;
        p[n++] = (struct pollfd){ .fd = c->fd, .events = (want_in ? POLLIN : 0) | (want_out ? POLLOUT : 0) };
    }
    return n;
}

void ctl_drop(struct control *c)
{
    c->active = false;
    if (c->kind == T_SERIAL) {
        c->present = false; /* the port stays open for the next host */
    } else if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

bool ctl_accept(struct control *c, const struct pollfd *p)
{
    if (c->pi_listen < 0 || !p[c->pi_listen].revents)
        return false;
    int fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return false;
    /* One host at a time: a new connection means the old host is gone (or restarted). */
    bool replaced = c->fd >= 0;
    if (replaced)
        ctl_drop(c);
    c->fd = fd;
    c->pi_conn = -1; /* this iteration's poll results were for the old connection */
    return replaced;
}

bool ctl_readable(const struct control *c, const struct pollfd *p)
{
    if (c->kind == T_SERIAL && !c->present)
        return true; /* look for a host (woken by SIGIO or the recheck timer) */
    return c->pi_conn >= 0 && (p[c->pi_conn].revents & (POLLIN | POLLHUP | POLLERR));
}

bool ctl_hangup(const struct control *c, const struct pollfd *p)
{
    return c->pi_conn >= 0 && (p[c->pi_conn].revents & (POLLHUP | POLLERR));
}

bool ctl_writable(const struct control *c) { return c->fd >= 0 && (c->kind != T_SERIAL || c->present); }

ssize_t ctl_read(struct control *c, void *buf, size_t n)
{
    if (c->fd < 0)
        return 0;
    for (;;) {
        ssize_t r = read(c->fd, buf, n);
        if (r > 0) {
            c->present = c->active = true;
            return r;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN) {
            c->present = true; /* serial: a host is attached, it just has not written */
            return 0;
        }
        /* EOF or error. On virtio-serial, 0 also means "no host attached": only after data
         * arrived is it a departure. */
        bool was_active = c->active || c->kind != T_SERIAL;
        ctl_drop(c);
        return was_active ? -1 : 0;
    }
}

ssize_t ctl_write(struct control *c, const void *buf, size_t n)
{
    if (!ctl_writable(c))
        return 0;
    for (;;) {
        ssize_t r = c->kind == T_SERIAL ? write(c->fd, buf, n) : send(c->fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return 0;
        ctl_drop(c);
        return -1;
    }
}

/* emberd-init: PID 1 of every emberd microVM, and the guest end of docs/protocol.md.
 *
 *   mount /proc /sys /dev /run -> load modules -> mount the pack and switch root ->
 *   the exec cgroup (limits.h) -> lo, and eth0 when the host gave one (net.h) -> open the control channel -> serve the protocol forever
 *   (reaping every child).
 *
 * Outside a VM (not PID 1), `emberd-init --listen-unix PATH` skips the boot steps and serves the
 * same protocol on a Unix socket, so the host-side tests can drive the real agent. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "control.h"
#include "limits.h"
#include "modules.h"
#include "net.h"
#include "rootfs.h"
#include "serve.h"
#include "util.h"

static void boot(struct control *ctl)
{
    uint64_t t0 = uptime_ms();
    mount_early();
    struct bootopts bo;
    read_cmdline(&bo);
    load_modules("/lib/modules");
    uint64_t t1 = uptime_ms();
    if (mount_root(&bo) < 0 || switch_root("/newroot") < 0)
        say("no root filesystem: serving from the initramfs, execs will fail");
    limits_init();
    set_hostname(bo.hostname);
    loopback_up();
    net_up();
    uint64_t t2 = uptime_ms();
    control_open_guest(ctl);
    /* One line of boot profile: where the time between kernel start and serving went. */
    say("boot: kernel %llu ms, modules %llu ms, root %llu ms, control channel %llu ms",
        (unsigned long long)t0, (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1),
        (unsigned long long)(uptime_ms() - t2));
}

static int host_mode(struct control *ctl, int argc, char **argv)
{
    if (argc != 3 || strcmp(argv[1], "--listen-unix") != 0) {
        fprintf(stderr, "usage: %s --listen-unix PATH   (as PID 1 it boots the VM instead)\n", argv[0]);
        return 2;
    }
    const char *interp = getenv("EMBERD_INTERPRETER_FILE");
    if (interp && *interp)
        opt.interp_file = interp;
    /* Orphans of our execs come to us, as they would to PID 1 in the guest. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (control_open_unix(ctl, argv[2]) < 0) {
        say("listen on %s: %s", argv[2], strerror(errno));
        return 1;
    }
    return 0;
}

/* fds 0-2 must be taken, or a pipe could land there and be clobbered by dup2 in a child. */
static void fill_stdio(void)
{
    int fd;
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd < 3) {}
    if (fd > 2)
        close(fd);
}

int main(int argc, char **argv)
{
    struct control ctl;
    opt.pid1 = getpid() == 1;
    if (opt.pid1) {
        boot(&ctl); /* the console becomes fds 0-2 as soon as /dev exists */
        fill_stdio();
    } else {
        fill_stdio();
        int rc = host_mode(&ctl, argc, argv);
        if (rc)
            return rc;
    }
    say("%s %s serving on %s (uptime %llu ms)", opt.pid1 ? "agent" : "host-mode agent", AGENT_VERSION,
        ctl.name, (unsigned long long)uptime_ms());
    serve(&ctl);
}

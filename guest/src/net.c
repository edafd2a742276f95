/* eth0 from the kernel command line: the host decides everything (address, gateway, resolver);
 * the guest only applies it. No DHCP: nothing to answer on the host, nothing to race at boot. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

#define NET_IF "eth0"
#define NET_WAIT_MS 3000

int net_parse(const char *v, struct netconf *nc)
{
    char buf[64];
    if (strlen(v) >= sizeof buf)
        return -1;
    strcpy(buf, v);
    char *slash = strchr(buf, '/');
    char *comma = strchr(buf, ',');
    if (!slash || !comma || comma < slash)
        return -1;
    *slash = '\0';
    *comma = '\0';
    struct in_addr a, g;
    if (inet_pton(AF_INET, buf, &a) != 1 || inet_pton(AF_INET, comma + 1, &g) != 1)
        return -1;
    char *end;
    long p = strtol(slash + 1, &end, 10);
    if (end == slash + 1 || *end || p < 1 || p > 30)
        return -1;
    nc->addr = a.s_addr;
    nc->prefix = (int)p;
    nc->gw = g.s_addr;
    return 0;
}

static void set_sin(struct sockaddr *sa, uint32_t addr)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = addr };
    memcpy(sa, &sin, sizeof sin);
}

static int find_cmdline_net(struct netconf *nc)
{
    char *cmdline = read_file("/proc/cmdline", 4096, NULL);
    if (!cmdline)
        return -1;
    int rc = 1;
    char *save = NULL;
    for (char *w = strtok_r(cmdline, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(w, "emberd.net=", 11) == 0) {
            rc = net_parse(w + 11, nc);
            if (rc < 0)
                say("ignoring malformed emberd.net=%s", w + 11);
            break;
        }
    }
    free(cmdline);
    return rc;
}

static int configure(int s, const struct netconf *nc)
{
    struct ifreq ifr = { 0 };
    strcpy(ifr.ifr_name, NET_IF);
    set_sin(&ifr.ifr_addr, nc->addr);
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
        return say("%s: SIOCSIFADDR: %s", NET_IF, strerror(errno)), -1;
    set_sin(&ifr.ifr_netmask, htonl(~0u << (32 - nc->prefix)));
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
        return say("%s: SIOCSIFNETMASK: %s", NET_IF, strerror(errno)), -1;
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return say("%s: SIOCGIFFLAGS: %s", NET_IF, strerror(errno)), -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return say("%s: SIOCSIFFLAGS: %s", NET_IF, strerror(errno)), -1;
    struct rtentry rt;
    memset(&rt, 0, sizeof rt);
    set_sin(&rt.rt_dst, 0);
    set_sin(&rt.rt_genmask, 0);
    set_sin(&rt.rt_gateway, nc->gw);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = (char *)NET_IF;
    if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST)
        return say("default route: %s", strerror(errno)), -1;
    return 0;
}

void net_up(void)
{
    struct netconf nc;
    if (find_cmdline_net(&nc) != 0)
        return;
    /* virtio_net binds its device while its module loads; the wait covers a slow probe. */
    uint64_t until = uptime_ms() + NET_WAIT_MS;
    while (if_nametoindex(NET_IF) == 0 && uptime_ms() < until)
        sleep_ms(10);
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        say("network: socket: %s", strerror(errno));
        return;
    }
    int rc = configure(s, &nc);
    close(s);
    if (rc < 0)
        return;
    char gw[INET_ADDRSTRLEN], conf[64];
    inet_ntop(AF_INET, &nc.gw, gw, sizeof gw);
    int n = snprintf(conf, sizeof conf, "nameserver %s\n", gw);
    /* The pack's /etc/resolv.conf may be a symlink (to /run/...): replace it with a file. */
    unlink("/etc/resolv.conf");
    int fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, conf, (size_t)n) != n)
        say("/etc/resolv.conf: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
}

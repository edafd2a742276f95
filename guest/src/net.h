/* The guest's one network interface, when the host gave it one (docs/network.md, "Egress"). */
#ifndef EMBERD_NET_H
#define EMBERD_NET_H

#include <stdint.h>

struct netconf {
    uint32_t addr;   /* network byte order */
    int prefix;      /* 1..30 */
    uint32_t gw;     /* the default route; also the resolver */
};

/* Parses the value of `emberd.net=A.B.C.D/P,G.H.I.J`; 0 on success, -1 if malformed. */
int net_parse(const char *v, struct netconf *nc);
/* When /proc/cmdline has `emberd.net=`: waits for eth0, gives it the address, brings it up, adds
 * the default route and writes /etc/resolv.conf naming the gateway. Without it: nothing (a
 * sandbox without network has no device at all). */
void net_up(void);

#endif

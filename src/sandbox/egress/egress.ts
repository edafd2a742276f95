// Egress for the sandboxes of one daemon (docs/network.md "Egress"): opt-in per sandbox, and
// then only to its allowlist. `open` builds one sandbox's plumbing (layout.ts) and returns what
// the VMM needs (BootSpec.network) and how to read and remove it; `cleanStale` removes what a
// crashed predecessor with the same run base left; `close` removes the host table.
//
// Nothing survives a sandbox: its netns holds its tap, veth end, nft table and qdiscs and goes
// with `ip netns del`; the host veth goes with its peer; the resolver is a socket of this process.
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EmberdError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import type { GuestNetwork } from '../../vmm/backend.ts';
import { egressNames, GATEWAY_MAC, GUEST_MAC, GUEST_NET, guestKernelArg, MAX_SLOTS, slotLayout, TAP, UPLINK, type EgressNames, type SlotLayout } from './layout.ts';
import { egressUnavailable, hostAddresses, ip, ipBatch, linksWithPrefix, netnsWithPrefix, nft, readCounters, readSysctl, sysctl, tc, type NftCounters } from './host-net.ts';
import { parseIpv4, parsePolicy, type EgressPolicy } from './policy.ts';
import { SandboxResolver, type Upstream } from './resolver.ts';
import { hostRuleset, resolvedElements, SANDBOX_TABLE, sandboxRuleset } from './ruleset.ts';

export interface EgressOptions {
  runBase: string;
  /** The uid/gid the VMM runs as: the tap is created owned by it, so it can open it unprivileged. */
  vmmUid: number;
  vmmGid: number;
  /** The resolver's upstream (--egress-dns); undefined: names cannot be resolved (SERVFAIL). */
  upstream?: Upstream;
  /** Mbit/s each way when a create names none (--egress-rate-mbit); undefined: unlimited. */
  defaultRateMbit?: number;
  log: Logger;
}

export interface EgressRequest { allow: string[]; rateMbit?: number }

export interface EgressView {
  allow: string[];
  rate_mbit: number | null;
  bytes_out: number;
  bytes_in: number;
  refused_connections: number;
  dns_answered: number;
  dns_refused: number;
}

/** Totals for /metrics: live sandboxes' counters plus those of the ones already gone. */
export interface EgressTotals { bytesOut: number; bytesIn: number; refused: number; dnsAnswered: number; dnsRefused: number }

/** Marks that this daemon switched net.ipv4.ip_forward on (so its close switches it back). */
const FORWARD_MARK = 'egress-ip-forward';

export class SandboxEgress {
  private last: NftCounters = { tx_bytes: 0, rx_bytes: 0, refused: 0 };
  readonly layout: SlotLayout;
  readonly allow: string[];
  readonly policy: EgressPolicy;
  readonly resolver: SandboxResolver;
  /** What the VMM attaches (BootSpec.network). */
  readonly network: GuestNetwork;
  private readonly owner: Egress;

  constructor(layout: SlotLayout, allow: string[], policy: EgressPolicy, resolver: SandboxResolver, network: GuestNetwork, owner: Egress) {
    this.layout = layout;
    this.allow = allow;
    this.policy = policy;
    this.resolver = resolver;
    this.network = network;
    this.owner = owner;
  }

  /** The kernel command-line word of the guest's eth0 (guest/src/net.c). */
  readonly kernelArg = guestKernelArg();

  /** Reads the counters again (from the netns's nft table); the last read if that fails. */
  async refresh(): Promise<EgressView> {
    try { this.last = await readCounters(this.layout.netns, SANDBOX_TABLE); } catch { /* gone meanwhile */ }
    return this.view();
  }

  view(): EgressView {
    return {
      allow: this.allow,
      rate_mbit: this.policy.rateMbit ?? null,
      bytes_out: this.last.tx_bytes,
      bytes_in: this.last.rx_bytes,
      refused_connections: this.last.refused,
      dns_answered: this.resolver.counters.answered,
      dns_refused: this.resolver.counters.refused,
    };
  }

  /** Removes everything of this sandbox's egress. Idempotent; never rejects. */
  close(): Promise<void> {
    return this.owner.release(this);
  }
}

export class Egress {
  readonly names: EgressNames;
  private readonly opts: EgressOptions;
  private readonly slots = new Map<number, SandboxEgress>();
  private readonly closing = new Map<SandboxEgress, Promise<void>>();
  private hostReady: Promise<void> | undefined;
  private readonly gone: EgressTotals = { bytesOut: 0, bytesIn: 0, refused: 0, dnsAnswered: 0, dnsRefused: 0 };

  constructor(opts: EgressOptions) {
    this.opts = opts;
    this.names = egressNames(opts.runBase);
  }

  /** Why creates with `network` are refused here (not root, tools missing), or undefined. */
  unavailable(): string | undefined {
    return egressUnavailable();
  }

  /** Removes the netns, veths and host table a predecessor with this run base left. */
  async cleanStale(): Promise<string[]> {
    if (this.unavailable()) return [];
    const removed: string[] = [];
    for (const ns of netnsWithPrefix(this.names.netnsPrefix)) { await ip(['netns', 'del', ns]).catch(() => {}); removed.push(ns); }
    for (const l of linksWithPrefix(this.names.vethPrefix)) { await ip(['link', 'del', l]).catch(() => {}); removed.push(l); }
    if (await nft(undefined, ['list', 'table', 'ip', this.names.hostTable]).then(() => true, () => false)) {
      await nft(undefined, ['delete', 'table', 'ip', this.names.hostTable]).catch(() => {});
      removed.push(`nft table ip ${this.names.hostTable}`);
    }
    this.restoreForwarding();
    return removed;
  }

  /** Builds the sandbox's plumbing; on any failure removes what it made and throws EGRESS_SETUP_FAILED. */
  async open(id: string, req: EgressRequest): Promise<SandboxEgress> {
    const why = this.unavailable();
    if (why) throw new EmberdError('EGRESS_UNAVAILABLE', `this daemon cannot give sandboxes a network: ${why}`);
    const hostAddrs = await hostAddresses();
    const policy = parsePolicy(req.allow, hostAddrs.map((a) => parseIpv4(a)!), req.rateMbit ?? this.opts.defaultRateMbit);
    await (this.hostReady ??= this.prepareHost().catch((e) => { this.hostReady = undefined; throw e; }));
    const slot = this.freeSlot(hostAddrs);
    const layout = slotLayout(this.names, id, slot);
    let resolver: SandboxResolver | undefined;
    const placeholder = {} as SandboxEgress;
    this.slots.set(slot, placeholder);
    try {
      await ip(['netns', 'add', layout.netns]);
      await ipBatch(undefined, [
        `link add ${layout.hostVeth} type veth peer name ${UPLINK} netns ${layout.netns}`,
        `addr add ${layout.hostAddr}/30 dev ${layout.hostVeth}`,
        `link set ${layout.hostVeth} up`,
      ]);
      await ipBatch(layout.netns, [
        'link set lo up',
        `addr add ${layout.nsAddr}/30 dev ${UPLINK}`,
        `link set ${UPLINK} up`,
        `route add default via ${layout.hostAddr}`,
        `tuntap add dev ${TAP} mode tap user ${this.opts.vmmUid} group ${this.opts.vmmGid}`,
        `link set ${TAP} address ${GATEWAY_MAC}`,
        `addr add ${GUEST_NET.gateway}/${GUEST_NET.prefix} dev ${TAP}`,
        `link set ${TAP} up`,
      ]);
      await sysctl(layout.netns, 'net.ipv4.ip_forward', '1');
      await sysctl(layout.netns, 'net.ipv6.conf.all.disable_ipv6', '1');
      resolver = await SandboxResolver.listen(layout.hostAddr, policy.names, this.opts.upstream, (addrs, ttl) => nft(layout.netns, ['-f', '-'], resolvedElements(addrs, ttl)).then(() => {}));
      await nft(layout.netns, ['-f', '-'], sandboxRuleset({ policy, hostAddrs, resolver: { addr: layout.hostAddr, port: resolver.port } }));
      await nft(undefined, ['add', 'element', 'ip', this.names.hostTable, 'dns', `{ ${resolver.port} }`]);
      if (policy.rateMbit) {
        // Each way: towards the world on veth0, towards the guest on tap0 (a qdisc shapes what leaves).
        const burst = Math.max(16_384, Math.ceil((policy.rateMbit * 1e6) / 8 / 100)); // 10 ms at the rate
        for (const dev of [UPLINK, TAP]) await tc(layout.netns, ['qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${policy.rateMbit}mbit`, 'burst', String(burst), 'latency', '50ms']);
      }
      const sb = new SandboxEgress(layout, req.allow, policy, resolver, { netns: layout.netns, tap: TAP, mac: GUEST_MAC }, this);
      this.slots.set(slot, sb);
      return sb;
    } catch (e) {
      resolver?.close();
      await this.removePlumbing(layout, resolver?.port);
      this.slots.delete(slot);
      throw e instanceof EmberdError ? e : new EmberdError('EGRESS_SETUP_FAILED', `the sandbox's network could not be set up: ${(e as Error).message}`);
    }
  }

  release(sb: SandboxEgress): Promise<void> {
    let p = this.closing.get(sb);
    if (!p) {
      p = (async () => {
        const v = await sb.refresh();
        this.gone.bytesOut += v.bytes_out; this.gone.bytesIn += v.bytes_in; this.gone.refused += v.refused_connections;
        this.gone.dnsAnswered += v.dns_answered; this.gone.dnsRefused += v.dns_refused;
        const port = sb.resolver.port;
        sb.resolver.close();
        await this.removePlumbing(sb.layout, port);
        for (const [k, v2] of this.slots) if (v2 === sb) this.slots.delete(k);
      })();
      this.closing.set(sb, p);
    }
    return p;
  }

  /** Live sandboxes' counters (refreshed) plus the gone ones'. */
  async totals(): Promise<EgressTotals> {
    const t = { ...this.gone };
    for (const sb of this.slots.values()) {
      if (!(sb instanceof SandboxEgress) || this.closing.has(sb)) continue;
      const v = await sb.refresh();
      t.bytesOut += v.bytes_out; t.bytesIn += v.bytes_in; t.refused += v.refused_connections; t.dnsAnswered += v.dns_answered; t.dnsRefused += v.dns_refused;
    }
    return t;
  }

  /** Removes the host table (after every sandbox's egress is closed) and undoes ip_forward if emberd set it. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.slots.values()].filter((s) => s instanceof SandboxEgress).map((s) => s.close()));
    if (!this.hostReady) return;
    await nft(undefined, ['delete', 'table', 'ip', this.names.hostTable]).catch(() => {});
    this.restoreForwarding();
    this.hostReady = undefined;
  }

  private async removePlumbing(layout: SlotLayout, port: number | undefined): Promise<void> {
    await ip(['netns', 'del', layout.netns]).catch(() => {});
    await ip(['link', 'del', layout.hostVeth]).catch(() => {}); // normally gone with its peer
    if (port) await nft(undefined, ['delete', 'element', 'ip', this.names.hostTable, 'dns', `{ ${port} }`]).catch(() => {});
  }

  /** The host's forwarding and this daemon's host table, once. */
  private async prepareHost(): Promise<void> {
    const mark = join(this.opts.runBase, FORWARD_MARK);
    const flipped = readSysctl('net.ipv4.ip_forward') !== '1';
    if (flipped) {
      writeFileSync(mark, '1');
      await sysctl(undefined, 'net.ipv4.ip_forward', '1');
      this.opts.log.warn('egress: net.ipv4.ip_forward was off; emberd switched it on, and its nft table drops forwarding that does not involve its sandboxes (switched back off when emberd stops)');
    }
    await nft(undefined, ['delete', 'table', 'ip', this.names.hostTable]).catch(() => {});
    await nft(undefined, ['-f', '-'], hostRuleset(this.names.hostTable, this.names.vethPrefix, existsSync(mark)));
  }

  private restoreForwarding(): void {
    const mark = join(this.opts.runBase, FORWARD_MARK);
    if (!existsSync(mark)) return;
    // Another daemon's egress may still need it: switch it off only when no emberd veth is left.
    if (!linksWithPrefix('eb').length) { try { writeFileSync('/proc/sys/net/ipv4/ip_forward', '0'); } catch { /* not root */ } }
    rmSync(mark, { force: true });
  }

  private freeSlot(hostAddrs: string[]): number {
    const taken = new Set(hostAddrs.map((a) => parseIpv4(a)!));
    for (let i = 0; i < MAX_SLOTS; i++) {
      if (this.slots.has(i)) continue;
      const l = slotLayout(this.names, 'x', i);
      if (!taken.has(parseIpv4(l.hostAddr)!) && !taken.has(parseIpv4(l.nsAddr)!)) return i;
    }
    throw new EmberdError('EGRESS_SETUP_FAILED', `no free address for a sandbox network: all ${MAX_SLOTS} /30s of 10.231.0.0/16 are in use`);
  }
}

// The commands egress runs on the host (iproute2, nftables), and what it reads back. Each
// function is one step; egress.ts composes them. Everything a sandbox gets lives in its own netns
// (tap, veth end, nft table, qdiscs) plus one host-side veth: deleting the netns and that veth
// removes it all.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { EmberdError } from '../../errors.ts';
import { parseIpv4 } from './policy.ts';

const run = promisify(execFile);

export const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p));
export const NFT = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p));
export const TC = ['/usr/sbin/tc', '/sbin/tc', '/usr/bin/tc'].find((p) => existsSync(p));
export const NETNS_DIR = '/run/netns';

async function cmd(bin: string | undefined, args: string[], input?: string): Promise<string> {
  if (!bin) throw new EmberdError('EGRESS_UNAVAILABLE', 'iproute2 or nftables is not installed (apt-get install iproute2 nftables)');
  try {
    if (input === undefined) return (await run(bin, args, { timeout: 10_000 })).stdout;
    return await new Promise<string>((resolve, reject) => {
      const child = execFile(bin, args, { timeout: 10_000 }, (err, stdout, stderr) => (err ? reject(Object.assign(err, { stderr })) : resolve(stdout)));
      child.stdin!.end(input);
    });
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`${bin.split('/').pop()} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
}

export const ip = (args: string[]) => cmd(IP, args);
/** iproute2's batch mode: one process for many commands (`ip -n NS -b -`). */
export const ipBatch = (netns: string | undefined, lines: string[]) => cmd(IP, [...(netns ? ['-n', netns] : []), '-b', '-'], `${lines.join('\n')}\n`);
export const nft = (netns: string | undefined, args: string[], input?: string) =>
  netns ? cmd(IP, ['netns', 'exec', netns, NFT ?? 'nft', ...args], input) : cmd(NFT, args, input);
export const tc = (netns: string, args: string[]) => cmd(IP, ['netns', 'exec', netns, TC ?? 'tc', ...args]);

/** A sysctl of the host netns (or a netns, through `ip netns exec`), by its /proc/sys path. */
export async function sysctl(netns: string | undefined, key: string, value: string): Promise<void> {
  if (!netns) { writeFileSync(`/proc/sys/${key.replaceAll('.', '/')}`, value); return; }
  await cmd(IP, ['netns', 'exec', netns, 'sh', '-c', `echo ${value} > /proc/sys/${key.replaceAll('.', '/')}`]);
}

export function readSysctl(key: string): string {
  return readFileSync(`/proc/sys/${key.replaceAll('.', '/')}`, 'utf8').trim();
}

/** Why egress cannot work on this host, or undefined if it can. */
export function egressUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'emberd is not root: network namespaces, veths and nftables need root; run emberd as root to create sandboxes with "network"';
  if (!IP) return 'iproute2 (ip) is not installed: apt-get install iproute2';
  if (!NFT) return 'nftables (nft) is not installed: apt-get install nftables';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun does not exist (modprobe tun)';
  return undefined;
}

/** The host's own IPv4 addresses (every interface of the host netns). */
export async function hostAddresses(): Promise<string[]> {
  const out = JSON.parse(await ip(['-j', '-4', 'addr', 'show'])) as { addr_info?: { local?: string }[] }[];
  return out.flatMap((l) => (l.addr_info ?? []).map((a) => a.local).filter((a): a is string => !!a && parseIpv4(a) !== undefined));
}

/** Named netns (`ip netns add`) whose name starts with `prefix`. */
export function netnsWithPrefix(prefix: string): string[] {
  try { return readdirSync(NETNS_DIR).filter((n) => n.startsWith(prefix)); } catch { return []; }
}

/** Host interfaces whose name starts with `prefix`. */
export function linksWithPrefix(prefix: string): string[] {
  try { return readdirSync('/sys/class/net').filter((n) => n.startsWith(prefix)); } catch { return []; }
}

export interface NftCounters { tx_bytes: number; rx_bytes: number; refused: number }

/** The sandbox table's named counters (ruleset.ts), read in its netns. */
export async function readCounters(netns: string, table: string): Promise<NftCounters> {
  const j = JSON.parse(await nft(netns, ['-j', 'list', 'counters', 'table', 'inet', table])) as { nftables: { counter?: { name: string; packets: number; bytes: number } }[] };
  const c = new Map(j.nftables.flatMap((e) => (e.counter ? [[e.counter.name, e.counter] as const] : [])));
  return { tx_bytes: c.get('tx')?.bytes ?? 0, rx_bytes: c.get('rx')?.bytes ?? 0, refused: c.get('refused')?.packets ?? 0 };
}

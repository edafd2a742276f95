// E2B's egress options of a create (`allow_internet_access`, `network: {allowOut, denyOut, ...}`)
// as emberd's `network.allow`, where an allowlist can say the same; INVALID_REQUEST (400, E2B's
// error shape) where it cannot. Pure.
//
// E2B: a destination is allowed if it is in allowOut, else unless it is in denyOut;
// allow_internet_access false is denyOut 0.0.0.0/0. emberd: only what `allow` lists, and the
// special ranges (private, link-local, loopback, ...) only when an entry lies inside one, so
// 0.0.0.0/0 is "every public IPv4 address" (docs/network.md "Egress").
import type { EgressRequest } from '../sandbox/egress/egress.ts';
import { SPECIAL_RANGES, parseCidr, within } from '../sandbox/egress/policy.ts';
import { EmberdError } from '../errors.ts';

/** E2B's ALL_TRAFFIC. */
const ALL = '0.0.0.0/0';
const special = SPECIAL_RANGES.map((r) => parseCidr(r)!);

/** What the create asked, kept to be answered back by getInfo. */
export interface E2bNetworkAsked {
  allowInternetAccess: boolean | null;
  network?: { allowOut?: string[]; denyOut?: string[] };
}

function bad(message: string): EmberdError {
  return new EmberdError('INVALID_REQUEST', message);
}

function list(v: unknown, field: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw bad(`network.${field} must be a list of strings`);
  return v.map((x: string) => x.trim());
}

/**
 * The emberd egress request of an E2B create body, or undefined: no network device. Without any
 * network option that is emberd's default (E2B's is internet on), on purpose.
 */
export function egressOfE2b(body: Record<string, unknown>): { egress?: EgressRequest; asked: E2bNetworkAsked } {
  const internet = body.allow_internet_access;
  if (internet !== undefined && internet !== null && typeof internet !== 'boolean') throw bad('allow_internet_access must be true or false');
  const net = body.network;
  if (net !== undefined && net !== null && (typeof net !== 'object' || Array.isArray(net))) throw bad('network must be an object');
  const asked: E2bNetworkAsked = { allowInternetAccess: typeof internet === 'boolean' ? internet : null };
  if (internet === undefined && (net === undefined || net === null)) return { asked };

  const n = (net ?? {}) as Record<string, unknown>;
  // Inbound and HTTP-level features of E2B's proxy: emberd has no such proxy.
  if (n.rules !== undefined && Object.keys(n.rules ?? {}).length) throw bad('network.rules (header transforms on egress) is not supported by emberd; remove it');
  if (n.egressProxy !== undefined && n.egressProxy !== null) throw bad('network.egressProxy is not supported by emberd; remove it');
  if (n.maskRequestHost !== undefined) throw bad('network.maskRequestHost is not supported by emberd (it has no sandbox URLs); remove it');
  if (Array.isArray(n.httpsPorts) && n.httpsPorts.length) throw bad('network.httpsPorts is not supported by emberd (it has no sandbox URLs); remove it');
  if (n.allowPublicTraffic === true) throw bad('network.allowPublicTraffic: true is not supported: emberd serves no unauthenticated sandbox URLs; leave it unset');

  const allowOut = list(n.allowOut, 'allowOut') ?? [];
  const denyOut = list(n.denyOut, 'denyOut') ?? [];
  for (const a of allowOut) {
    if (a.startsWith('*.')) throw bad(`network.allowOut entry "${a}": emberd allows exact host names only; list each name (e.g. "${a.slice(2)}")`);
  }
  const denyAll = internet === false || denyOut.includes(ALL);
  for (const d of denyOut) {
    if (d === ALL) continue;
    const c = parseCidr(d);
    if (!c) throw bad(`network.denyOut entry "${d}" is not an IPv4 address or CIDR (E2B takes no host names in denyOut either)`);
    // Already closed in emberd unless an allowOut entry opens it, which wins in E2B too.
    if (denyAll || special.some((s) => within(c, s))) continue;
    throw bad(`network.denyOut entry "${d}" cannot be expressed: emberd's egress is an allowlist and cannot open the internet except some public addresses; list what the sandbox may reach in allowOut and set denyOut: [ALL_TRAFFIC] ("0.0.0.0/0")`);
  }
  if (net) asked.network = { ...(n.allowOut !== undefined && { allowOut }), ...(n.denyOut !== undefined && { denyOut }) };
  if (denyAll) return { asked, ...(allowOut.length && { egress: { allow: allowOut } }) };
  // Internet on: every public address. Names resolve only if listed (emberd's resolver answers allowed names only).
  return { asked, egress: { allow: [ALL, ...allowOut.filter((a) => a !== ALL)] } };
}

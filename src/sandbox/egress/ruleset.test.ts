import { test } from 'node:test';
import assert from 'node:assert/strict';
import { disjoint, hostRuleset, resolvedElements, sandboxRuleset } from './ruleset.ts';
import { formatCidr, parseCidr, parsePolicy } from './policy.ts';

const rules = (allow: string[], hostAddrs: string[] = ['192.0.2.2']) => sandboxRuleset({
  policy: parsePolicy(allow, hostAddrs.map((a) => parseCidr(a)!.addr)),
  hostAddrs,
  resolver: { addr: '10.231.0.1', port: 40000 },
});

/** The lines of one chain. */
function chain(text: string, name: string): string[] {
  const start = text.indexOf(`chain ${name} {`);
  assert.ok(start >= 0, name);
  return text.slice(start, text.indexOf('\n  }', start)).split('\n').slice(1).map((l) => l.trim());
}

function set(text: string, name: string): string {
  return /elements = \{ ([^}]*) \}/.exec(text.split('\n').find((l) => l.includes(`set ${name} {`))!)?.[1] ?? '';
}

test('the outbound order: replies, the resolver, plumbing refused, explicit, special refused, allowed, resolved, refused', () => {
  assert.deepEqual(chain(rules(['198.51.100.0/24']), 'outbound'), [
    'ct state established,related counter name tx accept',
    'meta nfproto ipv6 goto refuse',
    'ip daddr 10.231.0.1 udp dport 40000 ct status dnat counter name tx accept',
    'ip daddr 10.231.0.0/16 goto refuse',
    'ip daddr @explicit counter name tx accept',
    'ip daddr @special goto refuse',
    'ip daddr @allow counter name tx accept',
    'ip daddr @resolved counter name tx accept',
    'goto refuse',
  ]);
});

test('special ranges (metadata and the host included) are refused unless listed inside them', () => {
  const t = rules(['0.0.0.0/0', '10.1.0.0/16']);
  const special = set(t, 'special');
  for (const r of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16', '127.0.0.0/8', '192.0.2.2']) assert.ok(special.includes(r), r);
  assert.equal(set(t, 'allow'), '0.0.0.0/0');
  assert.equal(set(t, 'explicit'), '10.1.0.0/16');
});

test('an empty allowlist refuses everything but DNS to the resolver (which refuses every name)', () => {
  const t = rules([]);
  assert.equal(set(t, 'allow'), '');
  assert.equal(set(t, 'explicit'), '');
  assert.deepEqual(chain(t, 'prerouting').slice(-1), ['iifname "tap0" ip daddr 10.255.255.1 udp dport 53 dnat ip to 10.231.0.1:40000']);
});

test('the netns accepts nothing from the guest for itself, and forwards only tap0 <-> veth0', () => {
  const t = rules([]);
  assert.deepEqual(chain(t, 'input'), ['type filter hook input priority filter; policy drop;', 'ct state established,related accept', 'iifname "lo" accept']);
  assert.deepEqual(chain(t, 'forward'), [
    'type filter hook forward priority filter; policy drop;',
    'iifname "veth0" oifname "tap0" ct state established,related counter name rx accept',
    'iifname "tap0" oifname "veth0" jump outbound',
  ]);
  assert.deepEqual(chain(t, 'refuse'), ['counter name refused', 'meta l4proto tcp reject with tcp reset', 'reject with icmpx admin-prohibited']);
});

test('overlapping entries collapse (nft refuses overlapping interval elements)', () => {
  assert.deepEqual(disjoint(['198.51.100.0/24', '198.51.100.7', '198.51.100.0/24', '0.0.0.0/0'].map((c) => parseCidr(c)!)).map(formatCidr), ['0.0.0.0/0']);
  assert.deepEqual(disjoint(['198.51.100.7', '203.0.113.0/24'].map((c) => parseCidr(c)!)).map(formatCidr), ['198.51.100.7', '203.0.113.0/24']);
});

test('resolved answers are added with a timeout', () => {
  assert.equal(resolvedElements(['203.0.113.9', '203.0.113.10'], 300), 'add element inet emberd resolved { 203.0.113.9 timeout 300s, 203.0.113.10 timeout 300s }\n');
});

test('the host table: the veths may reach only the resolvers, forwarding only theirs when emberd switched it on', () => {
  const t = hostRuleset('emberd_ab12', 'ebab12', true);
  assert.deepEqual(chain(t, 'input').slice(1), ['iifname "ebab12*" ct state established,related accept', 'iifname "ebab12*" udp dport @dns accept', 'iifname "ebab12*" drop']);
  assert.equal(chain(t, 'forward').at(-1), 'drop');
  assert.notEqual(chain(hostRuleset('emberd_ab12', 'ebab12', false), 'forward').at(-1), 'drop');
  assert.deepEqual(chain(t, 'postrouting').slice(1), ['ip saddr 10.231.0.0/16 oifname != "ebab12*" masquerade']);
});

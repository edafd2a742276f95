// E2B's egress options as emberd's allowlist. The bodies are the ones the installed official SDK
// sends: each case's Sandbox.create is caught by a server on 127.0.0.1 that records the body and
// refuses the create, and the recorded body is what is translated.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Sandbox, ALL_TRAFFIC, type SandboxOpts } from 'e2b';
import { egressOfE2b } from './network.ts';
import { isEmberdError } from '../errors.ts';

let server: Server;
let url: string;
let last: Record<string, unknown> | undefined;

before(async () => {
  server = createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => { text += c.toString(); });
    req.on('end', () => {
      last = JSON.parse(text) as Record<string, unknown>;
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 400, message: 'recorded' }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => { server.close(); });

/** The create body the SDK sends for these options. */
async function bodyOf(o: Partial<SandboxOpts>): Promise<Record<string, unknown>> {
  last = undefined;
  await assert.rejects(Sandbox.create({ apiKey: 'e2b_0', apiUrl: url, sandboxUrl: url, ...o }), /recorded/);
  assert.ok(last, 'the SDK sent no create');
  return last;
}

const allowOf = async (o: Partial<SandboxOpts>) => egressOfE2b(await bodyOf(o)).egress?.allow;

function refused(body: Record<string, unknown>, re: RegExp): void {
  assert.throws(() => egressOfE2b(body), (e: unknown) => isEmberdError(e, 'INVALID_REQUEST') && re.test(e.message));
}

test('no network option: no network device (emberd\'s default, not E2B\'s internet on)', async () => {
  const body = await bodyOf({});
  assert.equal('allow_internet_access' in body && body.allow_internet_access !== undefined, false);
  assert.deepEqual(egressOfE2b(body), { asked: { allowInternetAccess: null } });
  assert.equal(await allowOf({ allowInternetAccess: false }), undefined, 'internet off is no device');
});

test('allowInternetAccess true (snake case on the wire) is every public address: 0.0.0.0/0', async () => {
  const body = await bodyOf({ allowInternetAccess: true });
  assert.equal(body.allow_internet_access, true);
  assert.deepEqual(egressOfE2b(body), { asked: { allowInternetAccess: true }, egress: { allow: ['0.0.0.0/0'] } });
});

test('allowOut with denyOut ALL_TRAFFIC (or internet off) is exactly the allowlist', async () => {
  assert.deepEqual(await allowOf({ network: { allowOut: ['198.51.100.2', 'pypi.org'], denyOut: [ALL_TRAFFIC] } }), ['198.51.100.2', 'pypi.org']);
  assert.deepEqual(await allowOf({ network: { allowOut: ({ allTraffic }) => ['10.1.2.0/24', allTraffic === '0.0.0.0/0' ? 'x.test' : 'y'], denyOut: ({ allTraffic }) => [allTraffic] } }), ['10.1.2.0/24', 'x.test']);
  assert.deepEqual(await allowOf({ allowInternetAccess: false, network: { allowOut: ['203.0.113.7'] } }), ['203.0.113.7']);
  assert.equal(await allowOf({ network: { denyOut: [ALL_TRAFFIC] } }), undefined, 'everything denied: no device');
});

test('allowOut without a deny-all keeps the internet open (allowOut wins over denyOut only), its names resolvable', async () => {
  assert.deepEqual(await allowOf({ network: { allowOut: ['pypi.org', '10.0.0.5'] } }), ['0.0.0.0/0', 'pypi.org', '10.0.0.5']);
  // a denyOut inside a special range is already closed in emberd
  assert.deepEqual(await allowOf({ network: { denyOut: ['10.0.0.0/8', '169.254.169.254'] } }), ['0.0.0.0/0']);
  const { asked } = egressOfE2b(await bodyOf({ network: { allowOut: ['pypi.org'], denyOut: ['10.0.0.0/8'] } }));
  assert.deepEqual(asked, { allowInternetAccess: null, network: { allowOut: ['pypi.org'], denyOut: ['10.0.0.0/8'] } });
});

test('what an allowlist cannot say is a 400 naming the option', async () => {
  refused(await bodyOf({ network: { denyOut: ['1.1.1.1'] } }), /denyOut entry "1\.1\.1\.1" cannot be expressed.*ALL_TRAFFIC/);
  refused(await bodyOf({ allowInternetAccess: true, network: { denyOut: ['198.51.100.0/24'] } }), /cannot be expressed/);
  refused({ network: { denyOut: ['example.com'] } }, /not an IPv4 address or CIDR/);
  refused(await bodyOf({ network: { allowOut: ['*.example.com'], denyOut: [ALL_TRAFFIC] } }), /exact host names only.*"example\.com"/);
  refused(await bodyOf({ network: { rules: { 'api.example.com': [{ transform: { headers: { a: 'b' } } }] } } }), /network\.rules/);
  refused(await bodyOf({ network: { egressProxy: { address: 'proxy.example.com:1080' } } }), /egressProxy/);
  refused(await bodyOf({ network: { maskRequestHost: 'x' } }), /maskRequestHost/);
  refused(await bodyOf({ network: { allowPublicTraffic: true } }), /allowPublicTraffic/);
  assert.deepEqual(egressOfE2b(await bodyOf({ network: { allowPublicTraffic: false, denyOut: [ALL_TRAFFIC] } })).egress, undefined);
  refused({ allow_internet_access: 'yes' }, /true or false/);
  refused({ network: { allowOut: 'pypi.org' } }, /list of strings/);
});

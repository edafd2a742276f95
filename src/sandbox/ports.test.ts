// PortForwards' own rules (ports.ts) with a stand-in for the guest's connections: limits, the
// idempotent open, the listener's refusals, closing. The real path through a guest is
// test/e2e-ports.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { PassThrough } from 'node:stream';
import { PortForwards, MAX_CONNECTIONS, MAX_PORTS } from './ports.ts';
import type { PortConnection } from '../agent/port-channel.ts';
import { EmberdError, isEmberdError } from '../errors.ts';
import { silentLogger } from '../log.ts';

/** A connection that echoes what it is sent, with the counters PortForwards reads. */
function echoConnection(port: number): PortConnection {
  const c = new PassThrough() as unknown as PortConnection & { bytesToGuest: number; bytesFromGuest: number };
  Object.assign(c, { port, bytesToGuest: 0, bytesFromGuest: 0 });
  return c;
}

const refuse = async (): Promise<PortConnection> => { throw new EmberdError('PORT_NOT_LISTENING', 'nothing listens'); };

test('open is idempotent; a second open with tcp adds the listener; bad ports are refused', async () => {
  const p = new PortForwards('sb_t', silentLogger);
  const a = await p.open(8000, { tcp: false }, async () => echoConnection(8000));
  assert.equal(a.created, true);
  assert.equal(a.view.host, null);
  const b = await p.open(8000, { tcp: true }, async () => echoConnection(8000));
  assert.equal(b.created, false);
  assert.match(b.view.host!, /^127\.0\.0\.1:\d+$/);
  for (const bad of [0, 65536, 1.5, -1]) await assert.rejects(p.open(bad, { tcp: false }, refuse), (e) => isEmberdError(e, 'INVALID_REQUEST'));
  await p.closeAll();
});

test(`at most ${MAX_PORTS} ports and ${MAX_CONNECTIONS} open connections`, async () => {
  const p = new PortForwards('sb_t', silentLogger);
  for (let i = 1; i <= MAX_PORTS; i++) await p.open(i, { tcp: false }, async () => echoConnection(i));
  await assert.rejects(p.open(MAX_PORTS + 1, { tcp: false }, refuse), (e) => isEmberdError(e, 'TOO_MANY_PORTS'));
  const open: PortConnection[] = [];
  for (let i = 0; i < MAX_CONNECTIONS; i++) open.push(await p.connect(1 + (i % MAX_PORTS)));
  await assert.rejects(p.connect(1), (e) => isEmberdError(e, 'TOO_MANY_CONNECTIONS'));
  open[0]!.destroy();
  await new Promise((r) => setImmediate(r));
  const again = await p.connect(1); // a place was freed
  assert.equal(p.get(1).connections, MAX_CONNECTIONS / MAX_PORTS);
  again.destroy();
  await p.closeAll();
  assert.ok(open.every((c) => c.destroyed), 'closeAll ends every connection');
  await assert.rejects(p.open(1, { tcp: false }, refuse), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND'));
});

test('the listener carries bytes both ways, and resets a client when the guest refuses', async () => {
  const p = new PortForwards('sb_t', silentLogger);
  const echo = await p.open(1, { tcp: true }, async () => echoConnection(1));
  const [h, port] = echo.view.host!.split(':');
  const s = connect({ host: h, port: Number(port) });
  s.write('ping');
  const [got] = await new Promise<Buffer[]>((r) => s.once('data', (b: Buffer) => r([b])));
  assert.equal(got!.toString(), 'ping');
  s.destroy();

  const refused = await p.open(2, { tcp: true }, refuse);
  const [h2, port2] = refused.view.host!.split(':');
  const s2 = connect({ host: h2, port: Number(port2) });
  const code = await new Promise<string>((r) => { s2.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? '')); s2.on('close', () => r('closed')); });
  assert.equal(code, 'ECONNRESET');

  await p.close(1);
  assert.throws(() => p.get(1), (e) => isEmberdError(e, 'PORT_NOT_FOUND'));
  const s3 = connect({ host: h, port: Number(port) });
  const e3 = await new Promise<string>((r) => s3.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? '')));
  assert.equal(e3, 'ECONNREFUSED', 'a closed port\'s listener is gone');
  await p.closeAll();
});

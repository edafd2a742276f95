// The host's side of proxied ports (port-channel.ts, AgentClient.connectPort) against a scripted
// guest on an in-memory stream: what goes on the wire, in what order, within what credit. The real
// guest (guest/src/portfwd.c) is tested by guest/tests/portfwd_test.py and test/e2e-ports.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { duplexPair, type Duplex } from 'node:stream';
import { once } from 'node:events';
import { AgentClient } from './client.ts';
import { FrameDecoder, INITIAL_WINDOW, MsgType, decodeTlv, encodeFrame, encodeMessage, fieldsToObject, type Frame } from './codec.ts';
import { isEmberdError } from '../errors.ts';

/** A guest that says HELLO_ACK with `port` and records every frame the host sends. */
class ScriptedGuest {
  readonly frames: Frame[] = [];
  private waiters: { match: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];
  readonly side: Duplex;
  constructor(side: Duplex) {
    this.side = side;
    const dec = new FrameDecoder(() => {});
    side.on('data', (c: Buffer) => {
      for (const f of dec.push(c)) {
        if (f.type === MsgType.HELLO) {
          side.write(encodeMessage('HELLO_ACK', 0, { proto_version: 1, agent_version: 'test', capability: ['exec', 'port'] }));
          continue;
        }
        this.frames.push(f);
        const w = this.waiters.find((x) => x.match(f));
        if (w) { this.waiters.splice(this.waiters.indexOf(w), 1); w.resolve(f); }
      }
    });
  }
  next(match: (f: Frame) => boolean): Promise<Frame> {
    const seen = this.frames.find(match);
    if (seen) { this.frames.splice(this.frames.indexOf(seen), 1); return Promise.resolve(seen); }
    return new Promise((resolve) => this.waiters.push({ match, resolve: (f) => { this.frames.splice(this.frames.indexOf(f), 1); resolve(f); } }));
  }
  send(frame: Buffer): void { this.side.write(frame); }
}

async function setup(): Promise<{ client: AgentClient; guest: ScriptedGuest }> {
  const [host, guestSide] = duplexPair();
  const guest = new ScriptedGuest(guestSide);
  const client = new AgentClient(host);
  await client.hello(2000);
  return { client, guest };
}

const ofType = (type: number, channel?: number) => (f: Frame) => f.type === type && (channel === undefined || f.channel === channel);

test('connectPort sends CONNECT and resolves on CONNECTED; bytes go both ways as STDIN/STDOUT', async () => {
  const { client, guest } = await setup();
  const pending = client.connectPort(8000, 2000);
  const connect = await guest.next(ofType(MsgType.CONNECT));
  assert.equal(fieldsToObject(MsgType.CONNECT, decodeTlv(MsgType.CONNECT, connect.payload)).port, 8000);
  guest.send(encodeMessage('CONNECTED', connect.channel, {}));
  const conn = await pending;
  conn.write('GET / HTTP/1.0\r\n\r\n');
  const stdin = await guest.next(ofType(MsgType.STDIN, connect.channel));
  assert.equal(stdin.payload.toString(), 'GET / HTTP/1.0\r\n\r\n');
  guest.send(encodeFrame(MsgType.STDOUT, connect.channel, Buffer.from('hello')));
  const [chunk] = await once(conn, 'data') as [Buffer];
  assert.equal(chunk.toString(), 'hello');
  // The bytes were taken at once: their credit goes back.
  const win = await guest.next(ofType(MsgType.WINDOW, connect.channel));
  assert.equal(fieldsToObject(MsgType.WINDOW, decodeTlv(MsgType.WINDOW, win.payload)).increment, 5);
  // The host ends its side: an empty STDIN; the guest's EOF and CLOSE end the stream, no CLOSE back.
  conn.end();
  const eof = await guest.next(ofType(MsgType.STDIN, connect.channel));
  assert.equal(eof.payload.length, 0);
  guest.send(encodeFrame(MsgType.STDOUT, connect.channel));
  guest.send(encodeMessage('CLOSE', connect.channel, {}));
  await once(conn, 'close');
  assert.equal(client.portConnections().length, 0);
  await new Promise((r) => setImmediate(r));
  assert.equal(guest.frames.filter(ofType(MsgType.CLOSE)).length, 0, 'no CLOSE owed after the guest closed');
  client.close();
});

test('a refused port rejects with PORT_NOT_LISTENING and frees the channel', async () => {
  const { client, guest } = await setup();
  const pending = client.connectPort(9, 2000);
  const connect = await guest.next(ofType(MsgType.CONNECT));
  guest.send(encodeMessage('CLOSE', connect.channel, { code: 'CONNECT_REFUSED', message: 'Connection refused' }));
  await assert.rejects(pending, (e) => isEmberdError(e, 'PORT_NOT_LISTENING'));
  assert.equal(client.portConnections().length, 0);
  client.close();
});

test('an ERROR on the channel (CHANNEL_IN_USE) rejects the connect with PORT_CONNECT_FAILED', async () => {
  const { client, guest } = await setup();
  const pending = client.connectPort(80, 2000);
  const connect = await guest.next(ofType(MsgType.CONNECT));
  guest.send(encodeMessage('ERROR', connect.channel, { code: 'CHANNEL_IN_USE', message: 'busy' }));
  await assert.rejects(pending, (e) => isEmberdError(e, 'PORT_CONNECT_FAILED'));
  client.close();
});

test('writes wait for the guest\'s credit: never more than INITIAL_WINDOW before a WINDOW', async () => {
  const { client, guest } = await setup();
  const pending = client.connectPort(8000, 2000);
  const connect = await guest.next(ofType(MsgType.CONNECT));
  guest.send(encodeMessage('CONNECTED', connect.channel, {}));
  const conn = await pending;
  let written = false;
  conn.write(Buffer.alloc(INITIAL_WINDOW + 1000, 1), () => { written = true; });
  let got = 0;
  while (got < INITIAL_WINDOW) got += (await guest.next(ofType(MsgType.STDIN, connect.channel))).payload.length;
  assert.equal(got, INITIAL_WINDOW);
  await new Promise((r) => setImmediate(r));
  assert.equal(guest.frames.filter(ofType(MsgType.STDIN, connect.channel)).length, 0, 'nothing beyond the credit');
  assert.equal(written, false);
  guest.send(encodeMessage('WINDOW', connect.channel, { increment: 4096 }));
  const rest = await guest.next(ofType(MsgType.STDIN, connect.channel));
  assert.equal(rest.payload.length, 1000);
  conn.destroy();
  client.close();
});

test('a reader that does not read gets no credit back: the guest is held to what it was given', async () => {
  const { client, guest } = await setup();
  const pending = client.connectPort(8000, 2000);
  const connect = await guest.next(ofType(MsgType.CONNECT));
  guest.send(encodeMessage('CONNECTED', connect.channel, {}));
  const conn = await pending;
  // Nobody reads conn; its buffer (16 KiB high-water mark) fills, and the rest is withheld.
  for (let i = 0; i < 4; i++) guest.send(encodeFrame(MsgType.STDOUT, connect.channel, Buffer.alloc(65536, 2)));
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r)); // every frame delivered
  const granted = guest.frames.filter(ofType(MsgType.WINDOW, connect.channel))
    .reduce((n, f) => n + Number(fieldsToObject(MsgType.WINDOW, decodeTlv(MsgType.WINDOW, f.payload)).increment), 0);
  assert.ok(granted < 4 * 65536, `granted ${granted} of ${4 * 65536} bytes nobody read`);
  // Reading it all hands the rest back.
  let read = 0;
  conn.on('data', (c: Buffer) => { read += c.length; });
  while (read < 4 * 65536) await new Promise((r) => setImmediate(r));
  let total = 0;
  while (total < 4 * 65536) {
    total = guest.frames.filter(ofType(MsgType.WINDOW, connect.channel))
      .reduce((n, f) => n + Number(fieldsToObject(MsgType.WINDOW, decodeTlv(MsgType.WINDOW, f.payload)).increment), 0);
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(total, 4 * 65536);
  conn.destroy();
  client.close();
});

test('output beyond the credit is a protocol violation that ends the connection', async () => {
  const { client, guest } = await setup();
  const pending = client.connectPort(8000, 2000);
  const connect = await guest.next(ofType(MsgType.CONNECT));
  guest.send(encodeMessage('CONNECTED', connect.channel, {}));
  const conn = await pending;
  conn.pause();
  conn.on('error', () => {});
  for (let i = 0; i < 5; i++) guest.send(encodeFrame(MsgType.STDOUT, connect.channel, Buffer.alloc(65536, 3)));
  await client.closed;
  assert.equal(client.closeReason?.code, 'AGENT_PROTOCOL');
});

test('destroying the connection sends CLOSE; the end of the control stream fails open connections', async () => {
  const { client, guest } = await setup();
  const a = client.connectPort(1, 2000);
  const ca = await guest.next(ofType(MsgType.CONNECT));
  guest.send(encodeMessage('CONNECTED', ca.channel, {}));
  const connA = await a;
  connA.destroy();
  await guest.next(ofType(MsgType.CLOSE, ca.channel));
  const b = client.connectPort(2, 2000);
  const cb = await guest.next(ofType(MsgType.CONNECT));
  assert.notEqual(cb.channel, ca.channel);
  guest.send(encodeMessage('CONNECTED', cb.channel, {}));
  const connB = await b;
  const failed = once(connB, 'error');
  guest.side.destroy();
  const [err] = await failed as [Error];
  assert.ok(isEmberdError(err, 'AGENT_DISCONNECTED'), String(err));
});

test('a guest without the port capability is AGENT_VERSION_MISMATCH, with nothing sent', async () => {
  const [host, guestSide] = duplexPair();
  const dec = new FrameDecoder(() => {});
  const seen: number[] = [];
  guestSide.on('data', (c: Buffer) => {
    for (const f of dec.push(c)) {
      seen.push(f.type);
      if (f.type === MsgType.HELLO) guestSide.write(encodeMessage('HELLO_ACK', 0, { proto_version: 1, agent_version: 'old', capability: ['exec'] }));
    }
  });
  const client = new AgentClient(host);
  await client.hello(2000);
  await assert.rejects(client.connectPort(80, 1000), (e) => isEmberdError(e, 'AGENT_VERSION_MISMATCH'));
  assert.ok(!seen.includes(MsgType.CONNECT));
  client.close();
});

// PtySession's refusals, on a real AgentClient over an in-process stream (the VM tests are
// test/pty.test.ts and test/e2b-pty.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { duplexPair } from 'node:stream';
import { AgentClient } from '../agent/client.ts';
import { decodeTlv, encodeFrame, encodeMessage, fieldsToObject, FrameDecoder, INITIAL_WINDOW, MsgType, type Frame } from '../agent/codec.ts';
import { isEmberdError } from '../errors.ts';
import { PtySession } from './pty.ts';

/** An AgentClient whose guest is this test: it answers HELLO and records every frame it gets. */
async function agentSaying(capabilities: string[]) {
  const [host, guest] = duplexPair();
  const agent = new AgentClient(host);
  const dec = new FrameDecoder();
  const got: Frame[] = [];
  guest.on('data', (b: Buffer) => {
    for (const f of dec.push(b)) {
      got.push(f);
      if (f.type === MsgType.HELLO) guest.write(encodeMessage('HELLO_ACK', 0, { proto_version: 1, agent_version: 'test', capability: capabilities.map((c) => Buffer.from(c)) }));
    }
  });
  await agent.hello(5000);
  return { agent, guest, got, close: () => { agent.close(); guest.destroy(); } };
}

const settle = () => new Promise((r) => setImmediate(r));

test('a guest agent without the pty capability is refused (it would run the shell on pipes)', async () => {
  const { agent, close } = await agentSaying(['exec', 'signal', 'window', 'stdin']);
  assert.throws(() => new PtySession(agent, { rows: 24, cols: 80 }), (e: unknown) => isEmberdError(e, 'AGENT_VERSION_MISMATCH'));
  close();
});

test('sizes outside 1-65535 are INVALID_REQUEST, at open and on resize', async () => {
  const { agent, close } = await agentSaying(['exec', 'pty']);
  for (const [rows, cols] of [[0, 80], [24, 65536], [1.5, 80]]) {
    assert.throws(() => new PtySession(agent, { rows: rows!, cols: cols! }), (e: unknown) => isEmberdError(e, 'INVALID_REQUEST'));
  }
  const pty = new PtySession(agent, { rows: 24, cols: 80 });
  assert.throws(() => pty.resize(0, 0), (e: unknown) => isEmberdError(e, 'INVALID_REQUEST'));
  close();
  await assert.rejects(pty.exited, (e: unknown) => isEmberdError(e, 'AGENT_DISCONNECTED'));
});

test('the EXEC asks for a tty of the size, RESIZE follows; output credit goes back only as the consumer says', async () => {
  const { agent, guest, got, close } = await agentSaying(['exec', 'pty']);
  const pty = new PtySession(agent, { rows: 30, cols: 100 });
  await settle();
  const exec = got.find((f) => f.type === MsgType.EXEC)!;
  const fields = fieldsToObject(MsgType.EXEC, decodeTlv(MsgType.EXEC, exec.payload));
  assert.deepEqual([fields.tty, fields.rows, fields.cols, fields.stdin_open], [1, 30, 100, 1]);
  pty.resize(40, 120);
  await settle();
  const resize = got.find((f) => f.type === MsgType.RESIZE)!;
  assert.deepEqual(fieldsToObject(MsgType.RESIZE, decodeTlv(MsgType.RESIZE, resize.payload)), { rows: 40, cols: 120 });

  // The guest spends its whole initial window; nothing is granted back until consumed() says so.
  const chunks: Buffer[] = [];
  pty.onData((b) => chunks.push(b));
  for (let sent = 0; sent < INITIAL_WINDOW; sent += 65536) guest.write(encodeFrame(MsgType.STDOUT, exec.channel, Buffer.alloc(65536, 0x79)));
  await settle();
  assert.equal(chunks.reduce((n, b) => n + b.length, 0), INITIAL_WINDOW);
  assert.equal(got.filter((f) => f.type === MsgType.WINDOW).length, 0);
  pty.consumed(65536);
  await settle();
  const windows = got.filter((f) => f.type === MsgType.WINDOW).map((f) => fieldsToObject(MsgType.WINDOW, decodeTlv(MsgType.WINDOW, f.payload)).increment);
  assert.deepEqual(windows, [65536]);
  close();
  await assert.rejects(pty.exited);
});

// PtySession's refusals, on a real AgentClient over an in-process stream (the VM tests are
// test/pty.test.ts and test/e2b-pty.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { duplexPair } from 'node:stream';
import { AgentClient } from '../agent/client.ts';
import { encodeMessage, FrameDecoder, MsgType } from '../agent/codec.ts';
import { isEmberdError } from '../errors.ts';
import { PtySession } from './pty.ts';

async function agentSaying(capabilities: string[]) {
  const [host, guest] = duplexPair();
  const agent = new AgentClient(host);
  const dec = new FrameDecoder();
  guest.on('data', (b: Buffer) => {
    for (const f of dec.push(b)) {
      if (f.type === MsgType.HELLO) guest.write(encodeMessage('HELLO_ACK', 0, { proto_version: 1, agent_version: 'test', capability: capabilities.map((c) => Buffer.from(c)) }));
    }
  });
  await agent.hello(5000);
  return { agent, close: () => { agent.close(); guest.destroy(); } };
}

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

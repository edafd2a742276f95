// A hostile (or broken) guest agent, through the real SandboxManager and AgentClient: after a
// proper handshake it sends garbage, output beyond its credit, frames of the maximum length,
// stops reading, or hangs up mid-exec. Each time the daemon must stay up, answer with a stable
// code at once, keep its memory bounded, leave no file or VM behind, and a neighbour sandbox
// must not notice. The agent is scripted here: a real guest cannot be made to misbehave this
// way without another agent binary; the real-VM cases are test/hostile-guest.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { FrameDecoder, MAX_PAYLOAD, MsgType, encodeFrame, encodeMessage } from '../src/agent/codec.ts';
import { MAX_UNREAD_BYTES } from '../src/agent/client.ts';
import { isEmberdError } from '../src/errors.ts';
import type { Backend, BootSpec, VmExit, VmHandle } from '../src/vmm/backend.ts';
import { HostAgentBackend } from '../src/vmm/host-agent/host-agent-backend.ts';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { eventually } from './helpers/daemon.ts';
import { testManagers } from './helpers/test-manager.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

type Misbehaviour = 'garbage' | 'overrun' | 'flood' | 'max-frames' | 'deaf' | 'hangup';

/** Handshakes like emberd-init, then misbehaves on the first EXEC. */
function evilAgent(sock: Socket, mode: Misbehaviour): void {
  const decoder = new FrameDecoder();
  sock.on('error', () => {});
  sock.on('data', (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) {
      if (f.type === MsgType.HELLO) {
        sock.write(encodeMessage('HELLO_ACK', 0, { proto_version: 1, agent_version: '0.0.0-evil', capability: ['exec'], transport: 'unix', uptime_ms: 1n }));
        if (mode === 'deaf') sock.pause(); // from now on it reads nothing
      } else if (f.type === MsgType.EXEC) {
        const ch = f.channel;
        if (mode === 'garbage') sock.write(Buffer.from('this is not a frame '.repeat(1000)));
        if (mode === 'hangup') sock.destroy();
        if (mode === 'overrun' || mode === 'flood') {
          // 64 KiB frames (the largest a guest may send) until the host says stop: 16 MiB at most;
          // a flood then ends the exec as if all was well, ignoring the output cap it was given.
          const chunk = encodeFrame(MsgType.STDOUT, ch, Buffer.alloc(65536, 0x78));
          for (let i = 0; i < 256 && !sock.destroyed; i++) sock.write(chunk);
          if (mode === 'flood') sock.write(encodeMessage('EXIT', ch, { exit_code: 0, duration_us: 1n }));
        }
        if (mode === 'max-frames') {
          // Frames of the maximum length on a type the host ignores, then a proper exit.
          const big = encodeFrame(MsgType.PONG, 0, Buffer.alloc(MAX_PAYLOAD, 0x61));
          for (let i = 0; i < 64; i++) sock.write(big);
          sock.write(encodeMessage('EXIT', ch, { exit_code: 0, duration_us: 1n }));
        }
      }
    }
  });
}

/** The first boot gets the evil agent; later boots (the neighbour) the real agent on the host. */
class EvilBackend implements Backend {
  readonly name = 'host-agent' as const;
  readonly info = new HostAgentBackend().info;
  private readonly real = new HostAgentBackend();
  private evil: Misbehaviour | undefined;
  stopped = 0;
  servers: Server[] = [];
  constructor(mode: Misbehaviour) {
    this.evil = mode;
  }

  async boot(spec: BootSpec): Promise<VmHandle> {
    const mode = this.evil;
    if (!mode) return this.real.boot(spec);
    this.evil = undefined;
    mkdirSync(spec.runDir, { recursive: true });
    const path = join(spec.runDir, 'evil.sock');
    const peers: Socket[] = [];
    const server = createServer((s) => { peers.push(s); evilAgent(s, mode); });
    this.servers.push(server);
    await new Promise<void>((r) => server.listen(path, r));
    const control = connect(path);
    await new Promise<void>((r) => control.once('connect', r));
    let done!: (e: VmExit) => void;
    const exited = new Promise<VmExit>((r) => { done = r; });
    let stopping: Promise<VmExit> | undefined;
    return {
      pid: process.pid, control, exited, consoleTail: () => '', resources: () => ({ pid: process.pid, paths: [path] }),
      stop: () => (stopping ??= (async () => {
        this.stopped++;
        control.destroy();
        for (const p of peers) p.destroy(); // a "guest" that reads nothing never sees the hang-up
        await new Promise((r) => server.close(r));
        rmSync(path, { force: true });
        done({ code: 0, signal: null, reason: 'stopped' });
        return exited;
      })()),
    };
  }
}

const managers = testManagers('emb-evil-');
writeFileSync(join(managers.base, 'interp'), 'sh\n-c\n');
process.env.EMBERD_INTERPRETER_FILE = join(managers.base, 'interp');

/** Boots an evil sandbox and a real neighbour, runs the exec the evil one misbehaves on. */
async function against(mode: Misbehaviour, exec: (m: ReturnType<typeof managers.make>, id: string) => Promise<unknown>) {
  const backend = new EvilBackend(mode);
  const m = managers.make({ backend, sandboxes: { max: 8 } });
  const evil = await m.create();
  const neighbour = await m.create();
  // Buffers live outside the JS heap: count both, after full collections (garbage is not growth;
  // buffers are freed once their objects are swept, so collect twice with a turn in between).
  const used = async () => {
    for (let i = 0; i < 2; i++) { gc(); await new Promise((r) => setImmediate(r)); }
    const u = process.memoryUsage();
    return u.heapUsed + u.arrayBuffers;
  };
  const before = await used();
  const outcome = await exec(m, evil.id).then(() => undefined, (e: unknown) => e);
  const heapGrowthMib = (await used() - before) / 1048576;
  const r = await m.exec(neighbour.id, { code: 'echo fine' });
  assert.equal(r.stdout.toString(), 'fine\n', 'the neighbour did not notice');
  return { m, backend, evil, neighbour, outcome, heapGrowthMib };
}

async function assertFailedAndFreed(m: ReturnType<typeof managers.make>, backend: EvilBackend, id: string, code: string) {
  const sb = m.get(id);
  await eventually(() => sb.state === 'failed', 10_000, `sandbox failed with ${code}`);
  assert.equal(sb.failure?.code, code);
  await sb.released;
  assert.equal(backend.stopped, 1, 'its VM was stopped');
  assert.equal(existsSync(sb.runDir), false, 'its run dir is gone');
  await m.destroy(id);
  assert.deepEqual(readdirSync(m.config.runBase).filter((n) => n === id), []);
}

test('garbage after the handshake: the exec fails AGENT_PROTOCOL at once, the sandbox fails, nothing is left', async () => {
  const { m, backend, evil, outcome } = await against('garbage', (m, id) => m.exec(id, { code: 'true' }));
  assert.ok(isEmberdError(outcome, 'AGENT_PROTOCOL'), String(outcome));
  await assertFailedAndFreed(m, backend, evil.id, 'AGENT_PROTOCOL');
});

test('output beyond the credit window (a streamed exec nobody reads, 16 MiB sent): stopped after the window, not buffered', async () => {
  const { m, backend, evil, outcome, heapGrowthMib } = await against('overrun', async (m, id) => {
    const events = await m.execStream(id, { code: 'true' }); // never read: no credit goes back
    await new Promise((_, reject) => events.once('error', reject).once('close', () => reject(new Error('closed'))).once('readable', () => {
      // Look only at what the stream ends with, never consuming the output.
      void m.get(id).agent!.closed.then(() => reject(m.get(id).agent!.closeReason));
    }));
  });
  assert.ok(isEmberdError(outcome, 'AGENT_PROTOCOL') && /beyond the credit/.test(outcome.message), String(outcome));
  assert.ok(heapGrowthMib < 8, `daemon heap grew ${heapGrowthMib.toFixed(1)} MiB`);
  await assertFailedAndFreed(m, backend, evil.id, 'AGENT_PROTOCOL');
});

test('a flood within the credit that ignores the output cap: a buffered exec keeps the cap and no more', async () => {
  let result: Awaited<ReturnType<ReturnType<typeof managers.make>['exec']>> | undefined;
  const { m, evil, outcome } = await against('flood', async (m, id) => { result = await m.exec(id, { code: 'true' }); });
  assert.equal(outcome, undefined, String(outcome));
  // 16 MiB sent, all within the credit the host kept granting; the test manager's cap is 1 MiB.
  assert.deepEqual({ kept: result!.stdout.length, truncated: result!.truncated }, { kept: m.config.exec.outputCap, truncated: true });
  await m.destroy(evil.id);
});

test('frames of the maximum length (64 x 1 MiB) are read and dropped one at a time; the exec completes', async () => {
  const { m, evil, outcome, heapGrowthMib } = await against('max-frames', (m, id) => m.exec(id, { code: 'true' }));
  assert.equal(outcome, undefined, 'the exec answered normally');
  // A decoder that kept what it dropped would hold all 64 MiB; one frame at a time is 1 MiB, plus
  // what the scripted guest itself (in this process) still has queued.
  assert.ok(heapGrowthMib < 48, `daemon heap grew ${heapGrowthMib.toFixed(1)} MiB for 64 MiB received`);
  assert.equal(m.get(evil.id).state, 'ready');
  await m.destroy(evil.id);
});

test('a guest that stops reading: the host stops at MAX_UNREAD_BYTES queued, fails the sandbox, the daemon keeps serving', async () => {
  const stdin = Buffer.alloc(512 * 1024 - 1024, 0x73); // inline in EXEC frames, so they pile up unread
  const { m, backend, evil, outcome } = await against('deaf', async (m, id) => {
    const failures: unknown[] = [];
    for (let i = 0; i * stdin.length < MAX_UNREAD_BYTES * 2 && failures.length === 0; i++) {
      m.exec(id, { code: 'true', stdin }).then(() => failures.push(new Error('an exec answered')), (e: unknown) => failures.push(e));
      await new Promise((r) => setImmediate(r));
    }
    await eventually(() => failures.length > 0, 10_000, 'the host gave up on the deaf guest');
    throw failures[0];
  });
  assert.ok(isEmberdError(outcome, 'AGENT_PROTOCOL') && /has not read/.test(outcome.message), String(outcome));
  await assertFailedAndFreed(m, backend, evil.id, 'AGENT_PROTOCOL');
});

test('a guest that hangs up mid-exec: the exec fails AGENT_DISCONNECTED at once; the sandbox fails when its VM lives on', async () => {
  const { m, backend, evil, outcome } = await against('hangup', (m, id) => m.exec(id, { code: 'sleep 100' }));
  assert.ok(isEmberdError(outcome, 'AGENT_DISCONNECTED'), String(outcome));
  await assertFailedAndFreed(m, backend, evil.id, 'AGENT_DISCONNECTED');
});

// SandboxManager lifecycle rules, with the real guest agent running on the host (no VMM): fast
// enough to test every transition, including the failure paths.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { SandboxManager, type ManagerConfig } from './manager.ts';
import { HostAgentBackend } from '../../test/helpers/host-agent-backend.ts';
import { isEmberdError } from '../errors.ts';
import type { Backend, BootSpec, VmHandle } from '../vmm/backend.ts';
import { connectUnix } from '../agent/connect.ts';

const base = mkdtempSync('/tmp/emb-mgr-');
const kernel = join(base, 'vmlinux');
writeFileSync(kernel, '');
writeFileSync(join(base, 'interp'), 'sh\n-c\n');
process.env.EMBERD_INTERPRETER_FILE = join(base, 'interp');
after(() => rmSync(base, { recursive: true, force: true }));

let n = 0;
const managers: SandboxManager[] = [];
// A failing case must not leave agent processes holding the test process open.
after(() => Promise.all(managers.map((m) => m.shutdown())));

function manager(over: Partial<ManagerConfig> = {}): SandboxManager {
  const runBase = join(base, `run${n++}`);
  const m = new SandboxManager({
    backend: new HostAgentBackend(),
    kernel,
    initramfs: kernel,
    packs: new Map([['shell', { name: 'shell', image: kernel }], ['python', { name: 'python', image: kernel }]]),
    defaultPack: 'shell',
    machine: { vcpus: 1, memoryMib: 64 },
    runBase,
    bootTimeoutMs: 10_000,
    maxSandboxes: 4,
    exec: { defaultTimeoutMs: 10_000, maxTimeoutMs: 60_000, outputCap: 1 << 20 },
    ...over,
  });
  managers.push(m);
  return m;
}

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

test('create -> ready -> exec -> destroy leaves no process and no file', async () => {
  const m = manager();
  const sb = await m.create();
  assert.equal(sb.state, 'ready');
  assert.equal(sb.pack, 'shell');
  assert.ok(sb.readyAt);
  const r = await m.exec(sb.id, { code: 'echo $((6*7))' });
  assert.equal(r.stdout.toString(), '42\n');
  const pid = sb.vm!.pid;
  await m.destroy(sb.id);
  assert.equal(alive(pid), false);
  assert.equal(existsSync(sb.runDir), false);
  assert.equal(sb.state, 'gone');
  assert.throws(() => m.get(sb.id), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND'));
});

test('unknown packs, malformed ids and the sandbox limit are refused with their codes', async () => {
  const m = manager({ maxSandboxes: 1 });
  await assert.rejects(m.create('cobol'), (e) => isEmberdError(e, 'UNKNOWN_LANGUAGE_PACK') && /python, shell|shell, python/.test(e.message));
  assert.throws(() => m.get('nope'), (e) => isEmberdError(e, 'INVALID_SANDBOX_ID'));
  const sb = await m.create();
  await assert.rejects(m.create(), (e) => isEmberdError(e, 'TOO_MANY_SANDBOXES'));
  await m.shutdown();
  assert.equal(sb.state, 'gone');
});

test('a VMM that dies marks the sandbox failed and frees it; DELETE then forgets it', async () => {
  const m = manager();
  const sb = await m.create();
  process.kill(sb.vm!.pid, 'SIGKILL');
  await sb.vm!.exited;
  await sb.released;
  assert.equal(sb.state, 'failed');
  assert.equal(sb.failure?.code, 'VMM_EXITED');
  assert.equal(existsSync(sb.runDir), false);
  await assert.rejects(m.exec(sb.id, { code: 'true' }), (e) => isEmberdError(e, 'SANDBOX_FAILED'));
  await m.destroy(sb.id);
  assert.equal(m.list().length, 0);
});

test('a boot failure answers BOOT_FAILED and leaves nothing behind', async () => {
  const m = manager({ kernel: join(base, 'missing') });
  await assert.rejects(m.create(), (e) => isEmberdError(e, 'BOOT_FAILED'));
  assert.deepEqual(existsSync(m.config.runBase) ? readdirSync(m.config.runBase) : [], []);
});

/** A backend whose "guest" accepts the connection but never answers: a hung boot. */
class SilentBackend implements Backend {
  readonly name = 'qemu' as const;
  readonly info = new HostAgentBackend().info;
  servers: Server[] = [];
  async boot(spec: BootSpec): Promise<VmHandle> {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(spec.runDir, { recursive: true });
    const path = join(spec.runDir, 's.sock');
    const server = createServer(() => {}).listen(path);
    this.servers.push(server);
    const control = await connectUnix(path, spec.deadline);
    let done!: () => void;
    const exited = new Promise<void>((r) => { done = r; }).then(() => ({ code: 0, signal: null, reason: 'stopped' }));
    return {
      pid: process.pid, control, exited, consoleTail: () => 'silent guest', resources: () => ({ pid: process.pid, paths: [path] }),
      stop: async () => { control.destroy(); server.close(); rmSync(path, { force: true }); done(); return exited; },
    };
  }
}

test('a guest that never answers fails the create with BOOT_TIMEOUT and is torn down', async () => {
  const backend = new SilentBackend();
  const m = manager({ backend, bootTimeoutMs: 1500 });
  const t0 = Date.now();
  await assert.rejects(m.create(), (e) => isEmberdError(e, 'BOOT_TIMEOUT') && /silent guest/.test(e.message));
  assert.ok(Date.now() - t0 < 8000);
  assert.equal(readdirSync(m.config.runBase).length, 0);
  assert.equal(backend.servers.every((s) => !s.listening), true);
});

test('DELETE while creating cancels the boot', async () => {
  const m = manager({ backend: new SilentBackend(), bootTimeoutMs: 30_000 });
  const creating = m.create();
  creating.catch(() => {});
  await new Promise((r) => setTimeout(r, 200));
  const [sb] = m.list();
  assert.equal(sb!.state, 'creating');
  await m.destroy(sb!.id);
  await assert.rejects(creating);
  assert.equal(m.list().length, 0);
  assert.equal(readdirSync(m.config.runBase).length, 0);
});

test('shutdown destroys every sandbox and refuses new ones', async () => {
  const m = manager();
  const sbs = await Promise.all([m.create(), m.create(), m.create()]);
  const pids = sbs.map((s) => s.vm!.pid);
  await m.shutdown();
  assert.ok(pids.every((p) => !alive(p)));
  assert.equal(m.list().length, 0);
  await assert.rejects(m.create(), (e) => isEmberdError(e, 'SHUTTING_DOWN'));
});

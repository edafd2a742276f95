// SandboxManager lifecycle rules, with the real guest agent running on the host (no VMM): fast
// enough to test every transition, including the failure paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { HostAgentBackend } from '../vmm/host-agent/host-agent-backend.ts';
import { isEmberdError } from '../errors.ts';
import type { Backend, BootSpec, VmHandle } from '../vmm/backend.ts';
import { connectUnix } from '../agent/connect.ts';
import { testManagers } from '../../test/helpers/test-manager.ts';
import { captureLog } from '../../test/helpers/log.ts';
import { isLive } from '../../test/helpers/procs.ts';
import { eventually } from '../../test/helpers/daemon.ts';

const managers = testManagers();
const { base, kernel } = managers;
writeFileSync(join(base, 'interp'), 'sh\n-c\n');
process.env.EMBERD_INTERPRETER_FILE = join(base, 'interp'); // `code` runs as sh -c
const manager = managers.make;

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
  assert.throws(() => m.get(sb.id), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND'), 'forgotten at once');
  await m.torndown(); // the VM ends in the background
  assert.equal(isLive(pid), false);
  assert.equal(existsSync(sb.runDir), false);
  assert.equal(sb.state, 'gone');
  assert.throws(() => m.get(sb.id), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND'));
});

test('unknown packs, ids of any shape that name no sandbox, and the sandbox limit are refused with their codes', async () => {
  const m = manager({ sandboxes: { max: 1 } });
  await assert.rejects(m.create({ pack: 'cobol' }), (e) => isEmberdError(e, 'UNKNOWN_LANGUAGE_PACK') && /python, shell|shell, python/.test(e.message));
  for (const id of ['nope', 'sb_00000000000000000000', 'SB_X', '']) {
    assert.throws(() => m.get(id), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND') && e.status === 404, id);
  }
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

test('failed_create_stayed_registered: a create that fails leaves no sandbox in the registry (its id was never answered)', async () => {
  const m = manager({ images: { kernel: join(base, 'missing'), initramfs: kernel, packs: new Map([['shell', { name: 'shell', image: kernel }]]) } });
  for (let i = 0; i < 3; i++) await assert.rejects(m.create(), (e) => isEmberdError(e, 'BOOT_FAILED'));
  assert.deepEqual(m.list(), []);
});

test('a boot failure answers BOOT_FAILED and leaves nothing behind', async () => {
  const m = manager({ images: { kernel: join(base, 'missing'), initramfs: kernel, packs: new Map([['shell', { name: 'shell', image: kernel }]]) } });
  await assert.rejects(m.create(), (e) => isEmberdError(e, 'BOOT_FAILED'));
  assert.deepEqual(existsSync(m.config.runBase) ? readdirSync(m.config.runBase) : [], []);
});

/** A backend whose "guest" accepts the connection but never answers: a hung boot. */
class SilentBackend implements Backend {
  readonly name = 'host-agent' as const;
  readonly info = new HostAgentBackend().info;
  servers: Server[] = [];
  /** Settles once a boot has its control stream: the sandbox is then creating, waiting for HELLO. */
  booted: Promise<void>;
  private onBooted!: () => void;
  constructor() {
    this.booted = new Promise((r) => { this.onBooted = r; });
  }
  async boot(spec: BootSpec): Promise<VmHandle> {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(spec.runDir, { recursive: true });
    const path = join(spec.runDir, 's.sock');
    const server = createServer(() => {}).listen(path);
    this.servers.push(server);
    const control = await connectUnix(path, spec.deadline);
    this.onBooted();
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
  const m = manager({ backend, sandboxes: { bootTimeoutMs: 1500 } });
  await assert.rejects(m.create(), (e) => isEmberdError(e, 'BOOT_TIMEOUT') && /silent guest/.test(e.message));
  assert.equal(readdirSync(m.config.runBase).length, 0);
  assert.equal(backend.servers.every((s) => !s.listening), true);
});

test('DELETE while creating cancels the boot', async () => {
  const backend = new SilentBackend();
  const m = manager({ backend, sandboxes: { bootTimeoutMs: 30_000 } });
  const creating = m.create();
  creating.catch(() => {});
  await backend.booted;
  const [sb] = m.list();
  assert.equal(sb!.state, 'creating');
  await m.destroy(sb!.id);
  await assert.rejects(creating);
  assert.equal(m.list().length, 0);
  await m.torndown();
  assert.equal(readdirSync(m.config.runBase).length, 0);
});

test('shutdown destroys every sandbox and refuses new ones', async () => {
  const m = manager();
  const sbs = await Promise.all([m.create(), m.create(), m.create()]);
  const pids = sbs.map((s) => s.vm!.pid);
  await m.shutdown();
  assert.ok(pids.every((p) => !isLive(p)));
  assert.equal(m.list().length, 0);
  await assert.rejects(m.create(), (e) => isEmberdError(e, 'SHUTTING_DOWN'));
});

test('shutdown_warned_vm_stopped_unexpectedly_for_pooled_vms: the daemon stopping its own VMs logs no warning', async () => {
  const { log, lines } = captureLog();
  const m = manager({ sandboxes: { poolSize: 2 }, log });
  m.start();
  const pooled = () => (m.status().pool?.shell?.ready ?? 0) + (m.status().pool?.python?.ready ?? 0);
  await eventually(() => pooled() === 4, 30_000, 'both packs\' pools full');
  const sb = await m.create({ pack: 'shell' }); // one handed out, its refill on the way
  await m.shutdown();
  assert.equal(sb.state, 'gone');
  const warnings = lines().filter((l) => l.level === 'warn' || l.level === 'error');
  assert.deepEqual(warnings, [], 'no warning for VMs the daemon stopped itself');
});

test('lifetime: a sandbox is destroyed at its deadline like a DELETE; its id then says it expired', async () => {
  const m = manager();
  const sb = await m.create({ timeoutS: 1 });
  assert.equal(sb.view().timeout_s, 1);
  const expires = Date.parse(sb.view().expires_at!);
  assert.ok(expires > Date.parse(sb.view().created_at), 'expires_at after the create');
  const pid = sb.vm!.pid;
  await eventually(() => sb.state === 'gone', 30_000, 'the expiry');
  assert.equal(isLive(pid), false);
  assert.equal(existsSync(sb.runDir), false);
  assert.throws(() => m.get(sb.id), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND') && /expired at .*timeout_s was 1/.test(e.message));
  await m.create({ pack: 'shell' }).then((s) => m.destroy(s.id));
  assert.throws(() => m.get(sb.id), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND') && /expired/.test(e.message), 'still remembered');
});

test('lifetime: POST timeout resets the deadline; bounds come from the daemon', async () => {
  const m = manager({ sandboxes: { max: 8, timeoutS: 30, maxTimeoutS: 600 } });
  assert.equal((await m.create()).view().timeout_s, 30, 'the daemon default');
  const kept = await m.create({ timeoutS: 1 });
  await m.setTimeout(kept.id, 600);
  assert.equal(kept.view().timeout_s, 600);
  // A sandbox made after it with the same 1 s expires; by then kept's first deadline has passed too.
  const probe = await m.create({ timeoutS: 1 });
  await eventually(() => probe.state === 'gone', 30_000, 'the later sandbox\'s expiry');
  assert.equal(kept.state, 'ready', 'the extended sandbox is still there');
  assert.throws(() => m.get(probe.id), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND'));
  await assert.rejects(m.create({ timeoutS: 601 }), (e) => isEmberdError(e, 'INVALID_REQUEST') && /maximum of 600/.test(e.message));
  await assert.rejects(m.create({ timeoutS: 0 }), (e) => isEmberdError(e, 'INVALID_REQUEST') && /--max-sandbox-timeout 0/.test(e.message));
  await assert.rejects(m.setTimeout(kept.id, 601), (e) => isEmberdError(e, 'INVALID_REQUEST'));
  const forever = await manager({ sandboxes: { maxTimeoutS: 0 } }).create({ timeoutS: 0 });
  assert.deepEqual([forever.view().expires_at, forever.view().timeout_s], [null, 0], 'no deadline when the daemon allows it');
});

test('admission: 429 carries Retry-After; a create that would eat the memory reserve is 503 before any VMM starts', async () => {
  const m = manager({ sandboxes: { max: 1 } });
  await m.create({ timeoutS: 30 });
  await assert.rejects(m.create(), (e) => isEmberdError(e, 'TOO_MANY_SANDBOXES') && e.status === 429 && e.retryAfterS! >= 1 && e.retryAfterS! <= 30);
  let boots = 0;
  const backend = new HostAgentBackend();
  const counting: Backend = { name: backend.name, info: backend.info, boot: (spec) => { boots++; return backend.boot(spec); } };
  const low = manager({ backend: counting, hostMemoryMib: () => 300, admission: { maxConcurrentBoots: 2, queueTimeoutMs: 1000, memoryReserveMib: 256 } });
  await assert.rejects(low.create(), (e) => isEmberdError(e, 'HOST_MEMORY_LOW') && e.status === 503 && e.retryAfterS === 5 && /300 MiB available/.test(e.message));
  assert.equal(boots, 0, 'no VMM was started');
  assert.deepEqual([low.list().length, existsSync(low.config.runBase) ? readdirSync(low.config.runBase) : []], [0, []]);
  const roomy = manager({ backend: counting, hostMemoryMib: () => 64 + 256, admission: { maxConcurrentBoots: 2, queueTimeoutMs: 1000, memoryReserveMib: 256 } });
  await roomy.create();
  assert.equal(boots, 1, 'exactly the reserve left is enough');
});

test('admission: creates beyond --max-concurrent-boots wait in line; past the queue timeout TOO_BUSY; a queued create can be deleted', async () => {
  const backend = new SilentBackend(); // boots hang until their boot timeout
  const m = manager({ backend, sandboxes: { max: 8, bootTimeoutMs: 30_000 }, admission: { maxConcurrentBoots: 1, queueTimeoutMs: 300, memoryReserveMib: 0 } });
  const first = m.create();
  first.catch(() => {});
  await backend.booted;
  await assert.rejects(m.create(), (e) => isEmberdError(e, 'TOO_BUSY') && e.status === 503 && e.retryAfterS === 2);
  assert.equal(m.list().length, 1, 'the refused create left nothing registered');
  const patient = manager({ backend, sandboxes: { max: 8 }, admission: { maxConcurrentBoots: 1, queueTimeoutMs: 60_000, memoryReserveMib: 0 } });
  const a = patient.create();
  a.catch(() => {});
  const b = patient.create();
  b.catch(() => {});
  await eventually(() => patient.status().admission.boots.queued === 1, 10_000, 'the second create queued');
  assert.equal(patient.status().admission.boots.running, 1);
  const queued = patient.list().find((s) => s.state === 'creating' && !s.vm)!;
  await patient.destroy(queued.id);
  await assert.rejects(b, (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND'));
  assert.equal(patient.status().admission.boots.queued, 0);
  await Promise.all([m.shutdown(), patient.shutdown()]); // cancels the hung boots
  await Promise.allSettled([first, a]);
});

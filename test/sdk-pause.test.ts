// The TypeScript SDK's pause, resume and fork (docs/sdk.md) against a real daemon with real VMs:
// what a paused sandbox keeps, forks that start from it and diverge, the create options, and the
// daemon's error codes as EmberdError. One daemon; three VMs (the sandbox and two forks) plus one
// for the create options.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { Sandbox, EmberdError } from '../src/sdk/index.ts';

let d: TestDaemon;
before(async () => { d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']); });
after(async () => {
  for (const s of await d.client.listSandboxes()) await d.client.deleteSandbox(s.id).catch(() => {});
  assert.equal(await d.stop(), 0, d.log());
});

const conn = () => ({ url: d.addr, token: null });
const isCode = (code: string, status?: number) => (e: unknown) => e instanceof EmberdError && e.code === code && (status === undefined || e.status === status);

test('pause keeps a file and a session variable; resume brings them back; fork(2) gives two Sandboxes that see them and diverge', async () => {
  const sb = await Sandbox.create({ ...conn(), pack: 'python' });
  try {
    await sb.files.write('/root/kept.txt', 'still here');
    await sb.runCode('x = 41', { session: 's' });

    const p = await sb.pause();
    assert.equal(p.state, 'paused');
    assert.ok(p.paused && p.paused.bytes > 0 && p.paused.pauseMs >= 0 && !Number.isNaN(Date.parse(p.paused.pausedAt)), JSON.stringify(p.paused));
    assert.equal((await sb.info()).state, 'paused');
    assert.equal((await sb.pause()).state, 'paused', 'pausing a paused sandbox answers it as it is');

    const r = await sb.resume({ timeoutS: 900 });
    assert.deepEqual([r.state, r.bootMode, r.paused], ['ready', 'resume', null]);
    assert.ok(r.expiresAt && Date.parse(r.expiresAt) > Date.now() + 600_000, `a new lifetime from now: ${r.expiresAt}`);
    assert.equal(await sb.files.read('/root/kept.txt'), 'still here');
    assert.equal((await sb.runCode('x + 1', { session: 's' })).value, '42');
    assert.equal((await sb.resume()).state, 'ready', 'a running sandbox is answered as is');

    const forks = await sb.fork(2);
    try {
      assert.equal(forks.length, 2);
      assert.ok(forks.every((f) => f instanceof Sandbox && f.pack === 'python' && f.id !== sb.id));
      for (const f of forks) {
        const i = await f.info();
        assert.deepEqual([i.state, i.bootMode, i.forkedFrom], ['ready', 'fork', sb.id]);
        assert.equal(await f.files.read('/root/kept.txt'), 'still here');
        assert.equal((await f.runCode('x', { session: 's' })).value, '41');
      }
      await forks[0]!.runCode('x = 1', { session: 's' });
      await forks[1]!.files.write('/root/kept.txt', 'fork 1');
      assert.deepEqual(await Promise.all([...forks, sb].map(async (s) => (await s.runCode('x', { session: 's' })).value)), ['1', '41', '41']);
      assert.deepEqual(await Promise.all([...forks, sb].map((s) => s.files.read('/root/kept.txt'))), ['still here', 'fork 1', 'still here']);
    } finally {
      for (const f of forks) assert.equal(await f.kill(), true);
    }

    await assert.rejects(sb.fork(0), isCode('INVALID_REQUEST', 400));
    await assert.rejects(sb.fork(17), isCode('INVALID_REQUEST', 400));
    await assert.rejects(sb.resume({ timeoutS: -1 }), isCode('INVALID_REQUEST', 400));
  } finally {
    await sb.kill();
  }
  const gone = await Sandbox.connect('sb_aaaaaaaaaaaaaaaaaaaa', conn()).catch((e: unknown) => e);
  assert.ok(isCode('SANDBOX_NOT_FOUND', 404)(gone));
  await assert.rejects(d.client.pauseSandbox('sb_aaaaaaaaaaaaaaaaaaaa'), isCode('SANDBOX_NOT_FOUND', 404));
  await assert.rejects(d.client.forkSandbox('sb_aaaaaaaaaaaaaaaaaaaa'), isCode('SANDBOX_NOT_FOUND', 404));
});

test('create with onTimeout pause and autoResume false: the info says so, and a call on it while paused is SANDBOX_PAUSED until resume()', async () => {
  const sb = await Sandbox.create({ ...conn(), pack: 'python', onTimeout: 'pause', autoResume: false });
  try {
    const i = await sb.info();
    assert.deepEqual([i.onTimeout, i.autoResume, i.paused, i.forkedFrom], ['pause', false, null, null]);
    await sb.pause();
    await assert.rejects(sb.runCode('print(1)'), isCode('SANDBOX_PAUSED', 409));
    await sb.resume();
    assert.equal((await sb.runCode('print(1)')).stdout, '1\n');
  } finally {
    await sb.kill();
  }
  const s = await d.client.createSandbox({ language_pack: 'shell' });
  try { // the defaults, as the daemon answers them
    assert.deepEqual([s.on_timeout, s.auto_resume, s.paused, s.forked_from], ['destroy', true, null, null]);
  } finally {
    await d.client.deleteSandbox(s.id);
  }
});

// Fast create: golden snapshots, restore-on-create, the warm pool and the fallbacks, on real VMs.
// Each daemon gets a private images dir, so snapshots are built here and can be damaged here.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';
import { privateImagesDir } from './helpers/private-images.ts';
import { isLive, vmmsBelow } from './helpers/procs.ts';

const images = privateImagesDir({ packs: ['python', 'shell'] }); // the packs the cases use: fewer goldens to build
after(() => images.cleanup());

async function snapshotsReady(d: TestDaemon): Promise<boolean> {
  const info = (await http(d, 'GET', '/')).json;
  return Object.values(info.snapshots as Record<string, { status: string }>).every((s) => s.status === 'ready');
}

const sh = (d: TestDaemon, id: string, code: string) =>
  http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify({ code }));

describe('restore from a golden snapshot (pool off)', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startDaemon(['--images-dir', images.dir, '--pool-size', '0', '--snapshot-shapes', '1x384', '--shared-memory', 'on']);
    await eventually(() => snapshotsReady(d), 240_000, 'golden snapshots built'); // a bound for a busy CI machine, not a timing
  });
  after(async () => { assert.equal(await d.stop(), 0, d.log()); });

  test('GET / reports each pack\'s snapshot with its size', async () => {
    const info = (await http(d, 'GET', '/')).json;
    for (const pack of ['python', 'shell']) {
      assert.equal(info.snapshots[pack].status, 'ready');
      assert.ok(info.snapshots[pack].bytes > 1_000_000);
      assert.match(info.snapshots[pack].key, /^[0-9a-f]{32}$/);
    }
    assert.equal(info.pool, null);
  });

  test('a shape listed in --snapshot-shapes has goldens of its own and restores; its guest has that memory', async () => {
    const info = (await http(d, 'GET', '/')).json;
    assert.equal(info.snapshots['shell@1x384'].status, 'ready');
    assert.notEqual(info.snapshots['shell@1x384'].key, info.snapshots.shell.key);
    const c = await http(d, 'POST', '/sandboxes', '{"language_pack":"shell","memory_mib":384}');
    assert.equal(c.status, 201, c.text);
    assert.deepEqual([c.json.boot_mode, c.json.memory_mib], ['restore', 384]);
    const mem = Number(/MemTotal:\s+(\d+)/.exec((await sh(d, c.json.id, 'cat /proc/meminfo')).json.stdout)![1]) / 1024;
    assert.ok(mem > 384 * 0.85 && mem <= 384, `MemTotal ${mem} MiB`);
    await http(d, 'DELETE', `/sandboxes/${c.json.id}`);
  });

  test('restored clones are unique and clean: entropy, clock, hostname, overlay', async () => {
    const [a, b] = [(await d.client.createSandbox({ language_pack: 'shell' })), (await d.client.createSandbox({ language_pack: 'shell' }))];
    assert.deepEqual([a.boot_mode, b.boot_mode], ['restore', 'restore']);
    const rand = async (id: string) => (await sh(d, id, 'head -c 16 /dev/urandom | od -An -tx1')).json.stdout;
    const [ra, rb] = await Promise.all([rand(a.id), rand(b.id)]);
    assert.notEqual(ra, rb, 'two clones of one snapshot read the same random bytes');
    for (const sb of [a, b]) {
      const t = await sh(d, sb.id, 'date +%s');
      assert.ok(Math.abs(Number(t.json.stdout) - Date.now() / 1000) <= 1.5, `guest clock ${t.json.stdout.trim()} vs host ${Date.now() / 1000}`);
      assert.equal((await sh(d, sb.id, 'cat /proc/sys/kernel/hostname')).json.stdout, `${sb.id.replace('_', '-')}\n`);
    }
    await sh(d, a.id, 'echo secret > /root/a; echo x > /tmp/a');
    const c = await d.client.createSandbox({ language_pack: 'shell' });
    assert.equal((await sh(d, c.id, 'ls -A /root /tmp')).json.stdout, '/root:\n\n/tmp:\n');
    for (const sb of [a, b, c]) await d.client.deleteSandbox(sb.id);
  });

  test('python clones run code right away (the interpreter was warmed before the snapshot)', async () => {
    const sb = await d.client.createSandbox({ language_pack: 'python' });
    assert.equal(sb.boot_mode, 'restore');
    const r = await d.client.exec(sb.id, { code: 'import random; print(6*7, random.random() != random.random())' });
    assert.equal(r.stdout, '42 True\n');
    await d.client.deleteSandbox(sb.id);
  });

  test('a snapshot whose shared memory file is gone still restores (from the stream) and gets the file back', async () => {
    const key = (await http(d, 'GET', '/')).json.snapshots.shell.key;
    const memory = join(images.dir, 'snapshots', key, 'shared', 'memory');
    assert.ok(existsSync(memory), 'a ready QEMU golden has its shared memory file');
    rmSync(memory);
    const sb = await d.client.createSandbox({ language_pack: 'shell' });
    assert.equal(sb.boot_mode, 'restore', 'the stream serves the restore, not a cold boot');
    assert.equal((await sh(d, sb.id, 'echo ok')).json.stdout, 'ok\n');
    await eventually(async () => existsSync(memory), 120_000, 'the shared memory file rebuilt from the stream');
    await d.client.deleteSandbox(sb.id);
  });

  test('a corrupt snapshot falls back to a cold boot and is rebuilt', async () => {
    const info = (await http(d, 'GET', '/')).json;
    const key = info.snapshots.shell.key;
    // Both restore paths broken: the stream and the shared-memory unit built from it.
    writeFileSync(join(images.dir, 'snapshots', key, 'state.zst'), 'not a snapshot');
    writeFileSync(join(images.dir, 'snapshots', key, 'shared', 'state.zst'), 'not a snapshot');
    const sb = await d.client.createSandbox({ language_pack: 'shell' });
    assert.equal(sb.boot_mode, 'cold', 'the create is served by a cold boot');
    assert.equal((await sh(d, sb.id, 'echo ok')).json.stdout, 'ok\n');
    assert.match(d.log(), /snapshot of pack shell failed to restore/);
    await eventually(() => snapshotsReady(d), 240_000, 'snapshot rebuilt');
    const again = await d.client.createSandbox({ language_pack: 'shell' });
    assert.equal(again.boot_mode, 'restore');
    for (const s of [sb, again]) await d.client.deleteSandbox(s.id);
  });
});

describe('warm pool', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startDaemon(['--images-dir', images.dir, '--pool-size', '1']);
  });
  after(() => d.stop()); // when a case failed before its own stop

  test('a pooled sandbox gets the limits its create asks for at the handover', async () => {
    await eventually(async () => (await http(d, 'GET', '/')).json.pool.shell.ready === 1, 120_000, 'pool filled');
    const c = await http(d, 'POST', '/sandboxes', '{"language_pack":"shell","disk_mib":40,"pids_max":30}');
    assert.equal(c.status, 201, c.text);
    assert.deepEqual([c.json.boot_mode, c.json.disk_mib, c.json.pids_max], ['pool', 40, 30]);
    const df = (await sh(d, c.json.id, 'df -k / | tail -1; cat /sys/fs/cgroup/execs/pids.max')).json.stdout.trim().split('\n');
    assert.deepEqual([Number(df[0].trim().split(/\s+/)[1]), df[1]], [40 * 1024, '30']);
    await http(d, 'DELETE', `/sandboxes/${c.json.id}`);
  });

  test('a create is served from the pool, which refills; SIGTERM leaves no pooled VM', async () => {
    const poolReady = async () => (await http(d, 'GET', '/')).json.pool.shell.ready === 1;
    await eventually(poolReady, 120_000, 'pool filled');
    const sb = await d.client.createSandbox({ language_pack: 'shell' });
    assert.equal(sb.boot_mode, 'pool');
    assert.equal((await sh(d, sb.id, 'cat /proc/sys/kernel/hostname')).json.stdout, `${sb.id.replace('_', '-')}\n`);
    await eventually(poolReady, 60_000, 'pool refilled');
    const daemonPid = d.proc.pid!;
    const vmms = vmmsBelow(daemonPid);
    assert.ok(vmms.length >= 3, `the pooled python and shell VMs plus the sandbox run (${vmms.length})`);
    assert.equal(await d.stop(), 0, d.log());
    assert.deepEqual(vmms.filter(isLive), [], 'a pooled VM outlived the daemon');
  });
});

// Pause, resume and fork of live sandboxes on real VMs (docs/snapshots.md "Pause and resume"):
// what survives (a file, a session variable, a running background process and its output), across
// a daemon restart and a crash of the daemon; forks that start from the parent's state and then
// diverge; disk reclaimed on delete; saved states that cannot be resumed answer with their code.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';
import { privateImagesDir } from './helpers/private-images.ts';
import { isLive } from './helpers/procs.ts';

const images = privateImagesDir({ packs: ['python'] });
const stateDir = mkdtempSync('/tmp/emb-state-');
const pausedDir = join(stateDir, 'paused');
after(() => { images.cleanup(); rmSync(stateDir, { recursive: true, force: true }); });

const daemon = (extra: string[] = []) => startDaemon(['--images-dir', images.dir, '--pool-size', '0', '--state-dir', stateDir, ...extra]);
const post = (d: TestDaemon, path: string, body?: unknown) => http(d, 'POST', path, body === undefined ? undefined : JSON.stringify(body));
const py = async (d: TestDaemon, id: string, code: string) => {
  const r = await post(d, `/sandboxes/${id}/exec`, { code });
  assert.equal(r.status, 200, r.text);
  return r.json as { stdout: string; stderr: string; exit_code: number };
};
const cell = async (d: TestDaemon, id: string, code: string) => {
  const r = await post(d, `/sandboxes/${id}/exec`, { code, session: 's' });
  assert.equal(r.status, 200, r.text);
  return r.json as { value: string | null; stdout: string };
};
/** The counter the background process has printed so far (one line a tick). */
const ticks = async (d: TestDaemon, id: string, pid: string) => {
  const r = await http(d, 'GET', `/sandboxes/${id}/processes/${pid}/output?max_bytes=1000000`);
  assert.equal(r.status, 200, r.text);
  const lines = Buffer.from(r.json.data, r.json.encoding === 'base64' ? 'base64' : 'utf8').toString().trim().split('\n').filter(Boolean);
  return lines.map(Number);
};
const COUNTER = 'import time\nfor i in range(10**6):\n    print(i, flush=True)\n    time.sleep(0.1)';

async function ready(d: TestDaemon): Promise<boolean> {
  const info = (await http(d, 'GET', '/')).json;
  return info.snapshots.python.status === 'ready';
}

describe('pause and resume, across daemons', () => {
  let d: TestDaemon;
  let id: string;
  let pid: string;
  before(async () => {
    d = await daemon(['--on-shutdown', 'pause']);
    await eventually(() => ready(d), 240_000, 'golden snapshot built'); // a bound for a busy CI machine, not a timing
    const c = await post(d, '/sandboxes', { timeout_s: 600 });
    assert.equal(c.status, 201, c.text);
    id = c.json.id;
    await py(d, id, 'open("/root/kept.txt", "w").write("still here")');
    await cell(d, id, 'x = 41');
    const bg = await post(d, `/sandboxes/${id}/exec`, { code: COUNTER, background: true });
    assert.equal(bg.status, 202, bg.text);
    pid = bg.json.process_id;
    await eventually(async () => (await ticks(d, id, pid)).length >= 3, 30_000, 'the counter runs');
  });
  after(async () => { await d.stop(); });

  test('pause saves it to disk and ends its VM; resume brings back the file, the session and the running process', async () => {
    const vmm = (await http(d, 'GET', `/sandboxes/${id}`)).json.vmm_pid as number;
    const p = await post(d, `/sandboxes/${id}/pause`);
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.state, 'paused');
    assert.ok(p.json.paused.bytes > 1_000_000, JSON.stringify(p.json.paused));
    await eventually(() => !isLive(vmm), 10_000, 'the paused VM\'s QEMU is gone');
    assert.equal((await http(d, 'GET', `/sandboxes/${id}`)).json.vmm_pid, null);
    assert.ok(existsSync(join(pausedDir, id, 'sandbox.json')));
    const before = (await ticks(d, id, pid)).length;

    const r = await post(d, `/sandboxes/${id}/resume`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual([r.json.state, r.json.boot_mode, r.json.paused], ['ready', 'resume', null]);
    assert.equal((await py(d, id, 'print(open("/root/kept.txt").read())')).stdout, 'still here\n');
    assert.equal((await cell(d, id, 'x + 1')).value, '42');
    const seq = await (async () => { await eventually(async () => (await ticks(d, id, pid)).length > before + 2, 30_000, 'the counter goes on after resume'); return ticks(d, id, pid); })();
    assert.deepEqual(seq, seq.map((_, i) => i), 'the output goes on where it stopped: nothing lost, nothing twice');
    const t = Number((await py(d, id, 'import time; print(time.time())')).stdout);
    assert.ok(Math.abs(t - Date.now() / 1000) < 2, `guest clock ${t} vs host ${Date.now() / 1000}`);
    assert.ok(!existsSync(join(pausedDir, id, 'vm')), 'the saved VM is removed once resumed');
  });

  test('a call on a paused sandbox resumes it; a pause while an exec runs is SANDBOX_BUSY', async () => {
    assert.equal((await post(d, `/sandboxes/${id}/pause`)).status, 200);
    assert.equal((await cell(d, id, 'x')).value, '41');
    assert.equal((await http(d, 'GET', `/sandboxes/${id}`)).json.state, 'ready');
    // A streamed exec: its first line says it runs.
    const res = await fetch(`${d.url}/sandboxes/${id}/exec`, { method: 'POST', headers: { accept: 'application/x-ndjson' }, body: JSON.stringify({ code: 'import time\nprint("go", flush=True)\ntime.sleep(2)' }) });
    const reader = res.body!.getReader();
    const first = await reader.read();
    assert.match(Buffer.from(first.value!).toString(), /go/);
    const busy = await post(d, `/sandboxes/${id}/pause`);
    assert.equal(busy.status, 409, busy.text);
    assert.equal(busy.json.error.code, 'SANDBOX_BUSY');
    let rest = '';
    for (;;) { const c = await reader.read(); if (c.done) break; rest += Buffer.from(c.value).toString(); }
    assert.match(rest, /"exit"/, 'the exec ran to its end');
  });

  test('a sandbox paused at shutdown (--on-shutdown pause) is listed by the next daemon and resumes with everything', async () => {
    await d.stop();
    d = await daemon();
    const listed = (await http(d, 'GET', '/sandboxes')).json.sandboxes.find((s: { id: string }) => s.id === id);
    assert.equal(listed?.state, 'paused', JSON.stringify(listed));
    assert.equal((await cell(d, id, 'x + 1')).value, '42', 'the session came back');
    assert.equal((await py(d, id, 'print(open("/root/kept.txt").read())')).stdout, 'still here\n');
    const n = (await ticks(d, id, pid)).length;
    await eventually(async () => (await ticks(d, id, pid)).length > n + 2, 30_000, 'the background process still runs after a daemon restart');
  });

  test('a paused sandbox survives a daemon killed with SIGKILL; a running one does not', async () => {
    assert.equal((await post(d, `/sandboxes/${id}/pause`)).status, 200);
    const other = await post(d, '/sandboxes', {});
    assert.equal(other.status, 201);
    d.proc.kill('SIGKILL');
    await d.stop().catch(() => {});
    d = await daemon();
    const ids = (await http(d, 'GET', '/sandboxes')).json.sandboxes.map((s: { id: string }) => s.id);
    assert.ok(ids.includes(id) && !ids.includes(other.json.id), JSON.stringify(ids));
    assert.equal((await cell(d, id, 'x')).value, '41');
  });

  test('forks start from the parent\'s state and diverge; the parent goes on', async () => {
    const f = await post(d, `/sandboxes/${id}/fork`, { count: 2 });
    assert.equal(f.status, 201, f.text);
    const forks = f.json.sandboxes as { id: string; boot_mode: string; forked_from: string }[];
    assert.equal(forks.length, 2);
    for (const k of forks) {
      assert.deepEqual([k.boot_mode, k.forked_from], ['fork', id]);
      assert.equal((await cell(d, k.id, 'x')).value, '41');
      assert.equal((await py(d, k.id, 'print(open("/root/kept.txt").read())')).stdout, 'still here\n');
      assert.equal((await py(d, k.id, 'import socket; print(socket.gethostname())')).stdout, `${k.id.replace('_', '-')}\n`);
    }
    await cell(d, forks[0]!.id, 'x = 1');
    await cell(d, forks[1]!.id, 'x = 2');
    await py(d, forks[0]!.id, 'open("/root/kept.txt", "w").write("fork 0")');
    assert.deepEqual([(await cell(d, forks[0]!.id, 'x')).value, (await cell(d, forks[1]!.id, 'x')).value, (await cell(d, id, 'x')).value], ['1', '2', '41']);
    assert.equal((await py(d, forks[1]!.id, 'print(open("/root/kept.txt").read())')).stdout, 'still here\n');
    const rnd = await Promise.all([id, ...forks.map((k) => k.id)].map(async (s) => (await py(d, s, 'import os; print(os.urandom(16).hex())')).stdout));
    assert.equal(new Set(rnd).size, 3, 'forks read their own random bytes');
    const procs = (await http(d, 'GET', `/sandboxes/${forks[0]!.id}/processes`)).json.processes;
    assert.equal(procs[0]?.state, 'running', 'the background process was forked too');
    for (const k of forks) assert.equal((await http(d, 'DELETE', `/sandboxes/${k.id}`)).status, 204);
    assert.deepEqual(readdirSync(pausedDir).filter((n) => n.includes('fork')), [], 'no fork image is left behind');
  });

  test('forks of a session draw different random numbers (its random module is reseeded in each fork, before their first cell)', async () => {
    const c = await post(d, '/sandboxes', {});
    assert.equal(c.status, 201, c.text);
    const sid = c.json.id as string;
    const draw = 'random.random(), r2(), rnd.random()';
    await cell(d, sid, 'import random\nfrom random import random as r2\nrnd = random.Random()\nrandom.seed(7)');
    const f = await post(d, `/sandboxes/${sid}/fork`, { count: 2 });
    assert.equal(f.status, 201, f.text);
    const ids = (f.json.sandboxes as { id: string }[]).map((k) => k.id);
    const drawn = await Promise.all([sid, ...ids].map(async (s) => (await cell(d, s, draw)).value));
    const globals = drawn.map((v) => v!.split(', ').slice(0, 2).join());
    assert.equal(new Set(globals).size, 3, `the module's generator differs in each fork and the parent: ${drawn.join(' | ')}`);
    for (const s of [sid, ...ids]) await http(d, 'DELETE', `/sandboxes/${s}`);
  });

  test('resume of one sandbox keeps the boot files of another resumed one (a resume does not scan and prune the store)', async () => {
    const b = (await post(d, '/sandboxes', {})).json.id as string;
    assert.equal((await post(d, `/sandboxes/${id}/pause`)).status, 200);
    assert.equal((await post(d, `/sandboxes/${id}/resume`)).status, 200); // its dir now holds only its boot files
    assert.equal((await post(d, `/sandboxes/${b}/pause`)).status, 200);
    assert.equal((await post(d, `/sandboxes/${b}/resume`)).status, 200);
    const again = await post(d, `/sandboxes/${id}/pause`);
    assert.equal(again.status, 200, again.text);
    assert.equal((await post(d, `/sandboxes/${id}/resume`)).status, 200);
    await http(d, 'DELETE', `/sandboxes/${b}`);
  });

  test('deleting a paused sandbox reclaims its disk', async () => {
    assert.equal((await post(d, `/sandboxes/${id}/pause`)).status, 200);
    assert.ok(existsSync(join(pausedDir, id)));
    assert.equal((await http(d, 'DELETE', `/sandboxes/${id}`)).status, 204);
    await eventually(() => !existsSync(join(pausedDir, id)), 10_000, 'the paused dir is removed');
  });

  test('auto_resume false: calls answer SANDBOX_PAUSED until an explicit resume; on_timeout pause pauses at the deadline', async () => {
    const c = await post(d, '/sandboxes', { auto_resume: false, on_timeout: 'pause', timeout_s: 3 });
    assert.equal(c.status, 201, c.text);
    await eventually(async () => (await http(d, 'GET', `/sandboxes/${c.json.id}`)).json.state === 'paused', 60_000, 'paused at its deadline');
    const r = await post(d, `/sandboxes/${c.json.id}/exec`, { code: 'print(1)' });
    assert.equal(r.status, 409, r.text);
    assert.equal(r.json.error.code, 'SANDBOX_PAUSED');
    const back = await post(d, `/sandboxes/${c.json.id}/resume`, { timeout_s: 600 });
    assert.equal(back.status, 200, back.text);
    assert.equal((await py(d, c.json.id, 'print(1)')).stdout, '1\n');
    await http(d, 'DELETE', `/sandboxes/${c.json.id}`);
  });

  test('a corrupt saved VM fails its resume with SAVED_STATE_CORRUPT; an unknown format is listed as SAVED_STATE_INCOMPATIBLE', async () => {
    const c = await post(d, '/sandboxes', {});
    const sid = c.json.id as string;
    assert.equal((await post(d, `/sandboxes/${sid}/pause`)).status, 200);
    const vmDir = join(pausedDir, sid, 'vm');
    for (const f of readdirSync(vmDir)) writeFileSync(join(vmDir, f), 'not a saved VM');
    const r = await post(d, `/sandboxes/${sid}/resume`);
    assert.equal(r.status, 409, r.text);
    assert.equal(r.json.error.code, 'SAVED_STATE_CORRUPT');
    assert.equal((await http(d, 'GET', `/sandboxes/${sid}`)).json.state, 'failed');
    assert.equal((await http(d, 'DELETE', `/sandboxes/${sid}`)).status, 204);

    const old = join(pausedDir, 'sb_00000000000000000000');
    mkdirSync(old, { recursive: true });
    writeFileSync(join(old, 'sandbox.json'), JSON.stringify({ format: 'emberd-paused/0', id: 'sb_00000000000000000000', pack: 'python' }));
    await d.stop();
    d = await daemon();
    const g = await http(d, 'GET', '/sandboxes/sb_00000000000000000000');
    assert.equal(g.status, 200, g.text);
    assert.deepEqual([g.json.state, g.json.error?.code], ['failed', 'SAVED_STATE_INCOMPATIBLE']);
    const e = await post(d, '/sandboxes/sb_00000000000000000000/resume');
    assert.equal(e.json.error.code, 'SANDBOX_FAILED', e.text);
    assert.equal((await http(d, 'DELETE', '/sandboxes/sb_00000000000000000000')).status, 204);
    await eventually(() => !existsSync(old), 10_000, 'its dir is removed on delete');
  });
});

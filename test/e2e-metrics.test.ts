// GET /metrics on a real daemon with real VMs: a private images dir holding only the shell pack
// (so one golden snapshot is built, not one per pack), the pool off, auth on. A restored sandbox
// runs an ok, a non-zero and a timed-out exec and is deleted; a cold-booted one (a shape with no
// golden) expires; a create is refused. Then the scrape is parsed strictly (test/helpers/prom-text.ts)
// and each metric must have moved by exactly what was done.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';
import { privateImagesDir } from './helpers/private-images.ts';
import { vmmsBelow } from './helpers/procs.ts';
import { checkFamilies, labelValues, parsePromText, valueOf, type Family } from './helpers/prom-text.ts';

const images = privateImagesDir({ packs: ['shell'] }); // one golden to build
let d: TestDaemon;
let auth: Record<string, string>;

const call = (method: string, path: string, body?: unknown) => http(d, method, path, body === undefined ? undefined : JSON.stringify(body), auth);

async function scrape(): Promise<Map<string, Family>> {
  const res = await call('GET', '/metrics');
  assert.equal(res.status, 200, res.text);
  assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const families = parsePromText(res.text);
  checkFamilies(families, 'emberd_');
  return families;
}

before(async () => {
  d = await startDaemon(['--images-dir', images.dir, '--pool-size', '0', '--default-pack', 'shell', '--auth', 'on', '--max-concurrent-boots', '1']);
  auth = { authorization: `Bearer ${d.token}` };
  await eventually(async () => (await call('GET', '/')).json.snapshots?.shell?.status === 'ready', 300_000, 'the shell golden snapshot');
});

after(async () => {
  const pid = d.proc.pid!;
  assert.equal(await d.stop(), 0, d.log());
  assert.deepEqual(vmmsBelow(pid), []);
  images.cleanup();
});

test('/metrics is under the daemon\'s auth', async () => {
  const res = await http(d, 'GET', '/metrics');
  assert.equal(res.status, 401);
  assert.equal(res.json.error.code, 'UNAUTHORIZED');
});

test('a restored and a cold sandbox, three execs, a refusal, a delete and an expiry move exactly their metrics', { timeout: 600_000 }, async () => {
  let f = await scrape();
  assert.equal(valueOf(f, 'emberd_snapshot_ready', { pack: 'shell', shape: '1x256' }), 1);
  assert.ok(valueOf(f, 'emberd_snapshot_bytes', { pack: 'shell', shape: '1x256' })! > 1_000_000);
  assert.equal(valueOf(f, 'emberd_snapshot_status', { pack: 'shell', shape: '1x256', status: 'ready' }), 1);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'golden' }), 1, 'the golden VM ended once saved');
  assert.equal(valueOf(f, 'emberd_pool_target_sandboxes', { pack: 'shell' }), 0);
  assert.equal(valueOf(f, 'emberd_sandboxes', { state: 'ready', pack: 'shell' }), 0);

  const created = await call('POST', '/sandboxes', {});
  assert.equal(created.status, 201, created.text);
  assert.equal(created.json.boot_mode, 'restore');
  const id = created.json.id as string;
  f = await scrape();
  assert.equal(valueOf(f, 'emberd_sandboxes', { state: 'ready', pack: 'shell' }), 1);

  const exec = async (body: object) => {
    const r = await call('POST', `/sandboxes/${id}/exec`, body);
    assert.equal(r.status, 200, r.text);
    return r.json;
  };
  assert.equal((await exec({ code: 'echo ok' })).exit_code, 0);
  assert.equal((await exec({ code: 'exit 7' })).exit_code, 7);
  assert.equal((await exec({ code: 'sleep 30', timeout_ms: 500 })).timed_out, true);
  assert.equal((await call('POST', '/sandboxes', { language_pack: 'cobol' })).json.error.code, 'UNKNOWN_LANGUAGE_PACK');
  assert.equal((await call('DELETE', `/sandboxes/${id}`)).status, 204);

  // A shape with no golden cold-boots; its one-second life then ends it.
  const cold = await call('POST', '/sandboxes', { memory_mib: 192, timeout_s: 1 });
  assert.equal(cold.status, 201, cold.text);
  assert.equal(cold.json.boot_mode, 'cold');
  await eventually(async () => (await call('GET', `/sandboxes/${cold.json.id}`)).status === 404, 30_000, 'the cold sandbox expired');
  await eventually(async () => valueOf(await scrape(), 'emberd_vmm_exits_total', { reason: 'expired' }) === 1, 30_000, 'its VMM exited');

  f = await scrape();
  assert.equal(valueOf(f, 'emberd_sandbox_create_duration_seconds_count', { boot_mode: 'restore', pack: 'shell' }), 1);
  assert.equal(valueOf(f, 'emberd_sandbox_create_duration_seconds_count', { boot_mode: 'cold', pack: 'shell' }), 1);
  assert.ok(valueOf(f, 'emberd_sandbox_create_duration_seconds_sum', { boot_mode: 'cold', pack: 'shell' })! > 0);
  assert.equal(valueOf(f, 'emberd_sandbox_create_failures_total', { code: 'UNKNOWN_LANGUAGE_PACK' }), 1);
  for (const outcome of ['ok', 'nonzero_exit', 'timeout']) {
    assert.equal(valueOf(f, 'emberd_execs_total', { kind: 'exec', outcome }), 1, outcome);
    assert.equal(valueOf(f, 'emberd_exec_duration_seconds_count', { kind: 'exec', outcome }), 1, outcome);
  }
  assert.ok(valueOf(f, 'emberd_exec_duration_seconds_sum', { kind: 'exec', outcome: 'timeout' })! >= 0.5, 'a timed-out exec lasts its timeout');
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'deleted' }), 1);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'expired' }), 1);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'golden' }), 1);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'crashed' }), undefined);
  for (const state of ['creating', 'ready', 'destroying', 'failed']) assert.equal(valueOf(f, 'emberd_sandboxes', { state, pack: 'shell' }), 0, state);

  const req = (method: string, route: string, status: number) => valueOf(f, 'emberd_http_request_duration_seconds_count', { method, route, status_code: String(status) });
  assert.equal(req('POST', '/sandboxes/:id/exec', 200), 3);
  assert.equal(req('POST', '/sandboxes', 201), 2);
  assert.equal(req('POST', '/sandboxes', 400), 1);
  assert.equal(req('DELETE', '/sandboxes/:id', 204), 1);
  assert.ok(req('GET', '/sandboxes/:id', 404)! >= 1);
  assert.equal(req('GET', '/metrics', 401), 1);
  assert.deepEqual(labelValues(f).filter((v) => v.includes('sb_')), [], 'no label holds a sandbox id');

  // prom-client's process metrics, under their usual names.
  assert.ok(valueOf(f, 'process_resident_memory_bytes')! > 10_000_000);
  assert.equal(f.get('process_cpu_seconds_total')?.type, 'counter');
  assert.equal(valueOf(f, 'emberd_build_info', { version: JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version }), 1);
});

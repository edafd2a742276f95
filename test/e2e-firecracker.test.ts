// The whole sandbox loop over HTTP with `--backend firecracker`: a real daemon drives the
// Firecracker API test double (spec-validated API, hybrid vsock, guest under QEMU). One boot.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, http, processExists, eventually, type TestDaemon } from './helpers/daemon.ts';
import { isLive, liveProcessesWith } from './helpers/procs.ts';
import { FIRECRACKER_DOUBLE } from './firecracker-double/path.ts';
import { FirecrackerApiSpec, SPEC_VERSIONS } from '../src/vmm/firecracker/api-spec.ts';

let d: TestDaemon;
const work = mkdtempSync(join(tmpdir(), 'emb-e2efc-'));
const record = join(work, 'requests.jsonl');

before(async () => {
  process.env.FC_DOUBLE_RECORD = record; // the daemon and the doubles it spawns inherit it
  try {
    // No warm pool: each pooled sandbox is one more TCG boot (the pool is tested with QEMU). No
    // snapshots: golden builds would add boots and requests here, and this daemon shares the images
    // dir (its prune would remove the QEMU tests' snapshots); test/e2e-firecracker-snapshots.test.ts covers them.
    d = await startDaemon(['--backend', 'firecracker', '--firecracker', FIRECRACKER_DOUBLE, '--pool-size', '0', '--snapshots', 'off']);
  } finally {
    delete process.env.FC_DOUBLE_RECORD;
  }
});
after(async () => {
  const code = await d.stop();
  rmSync(work, { recursive: true, force: true });
  assert.equal(code, 0, `daemon exit code; log:\n${d.log()}`);
});

test('GET / reports the firecracker backend, its version and why', async () => {
  const r = await http(d, 'GET', '/');
  assert.equal(r.status, 200);
  assert.equal(r.json.backend.name, 'firecracker');
  assert.equal(r.json.backend.version, '1.15.1');
  assert.equal(r.json.backend.binary, FIRECRACKER_DOUBLE);
  assert.match(r.json.backend.reason, /--backend firecracker/);
  assert.ok(r.json.backend.warnings.some((w: string) => /test double/.test(w)));
  assert.match(d.log(), /backend firecracker 1\.15\.1/);
});

test('create -> exec print(6*7) -> delete, leaving no process and no file', { timeout: 120_000 }, async () => {
  const c = await http(d, 'POST', '/sandboxes');
  assert.equal(c.status, 201, c.text);
  const id: string = c.json.id;
  const info = await http(d, 'GET', `/sandboxes/${id}`);
  assert.equal(info.json.backend, 'firecracker');
  const pid: number = info.json.vmm_pid;
  assert.ok(isLive(pid));
  // The double and its QEMU carry the VM id on their command lines.
  const fcId = id.replace('_', '-');
  assert.ok(liveProcessesWith(fcId).length >= 2, 'the double and its QEMU run for this sandbox');
  assert.deepEqual(readdirSync(join(d.runDir, id)).sort(), ['firecracker.sock', 'firecracker.vsock']);

  const e = await http(d, 'POST', `/sandboxes/${id}/exec`, '{"code":"print(6*7)"}', { 'content-type': 'application/json' });
  assert.equal(e.status, 200, e.text);
  assert.deepEqual([e.json.stdout, e.json.stderr, e.json.exit_code], ['42\n', '', 0]);

  const del = await http(d, 'DELETE', `/sandboxes/${id}`);
  assert.equal(del.status, 204);
  // The VM ends in the background once DELETE has answered.
  await eventually(() => !processExists(pid), 30_000, 'the Firecracker (double) process is gone');
  await eventually(() => liveProcessesWith(fcId).length === 0, 30_000, 'no double or QEMU left for this sandbox');
  await eventually(() => !existsSync(join(d.runDir, id)), 30_000, 'run dir removed');
  assert.deepEqual(readdirSync(d.runDir).filter((n) => n !== 'emberd.pid'), []);

  // Every API request the daemon's driver made validates against both supported specs.
  const reqs = readFileSync(record, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(reqs.slice(0, 6).map((r) => `${r.method} ${r.path} ${r.status}`), [
    'GET /version 200', 'PUT /machine-config 204', 'PUT /boot-source 204', 'PUT /drives/pack 204', 'PUT /vsock 204', 'PUT /actions 204',
  ]);
  assert.equal(reqs[5].body.action_type, 'InstanceStart');
  // After the guest's SHUTDOWN the VM normally ends within the grace period; if not, the driver
  // sent SendCtrlAltDel.
  for (const r of reqs.slice(6)) assert.equal(r.body?.action_type, 'SendCtrlAltDel');
  for (const v of SPEC_VERSIONS) for (const r of reqs) assert.ok(FirecrackerApiSpec.load(v, 'firecracker').validateRequest(r).ok, `${v} ${r.path}`);
});

// The spec validator: the copied swaggers are verbatim, every operation compiles, and wrong
// requests (unknown field, wrong type, missing required, bad enum, unknown path) are caught.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { FirecrackerApiSpec, SPEC_FILES, SPEC_VERSIONS } from './api-spec.ts';

test('the swagger files are the upstream blobs named in spec/ORIGIN.md', () => {
  const blobs = { '1.15.1': 'ec2219e8804117439d48846adf64a95e94ad2d56', '1.16.1': 'e988218bbdad8c6c37d7bb415db56a561bdcc98f' };
  for (const v of SPEC_VERSIONS) {
    const data = readFileSync(SPEC_FILES[v]);
    const sha = createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
    assert.equal(sha, blobs[v], `${v}: git blob id`);
    assert.equal(FirecrackerApiSpec.load(v).version, v);
  }
});

test('every operation of both specs compiles under ajv strict mode', () => {
  for (const v of SPEC_VERSIONS) {
    for (const strictness of ['spec', 'firecracker'] as const) {
      const s = FirecrackerApiSpec.load(v, strictness);
      assert.ok(s.operations().length >= 37);
      // Validating anything forces ajv to compile the operation and every definition it references.
      for (const op of s.operations()) s.validateRequest({ method: op.method, path: op.template.replace(/\{\w+\}/g, 'x'), body: op.hasBody ? {} : undefined });
    }
  }
});

const spec = FirecrackerApiSpec.load('1.15.1');
const good = { drive_id: 'pack', path_on_host: '/p.sqfs', is_root_device: false, is_read_only: true };

test('a valid request passes', () => {
  assert.deepEqual(spec.validateRequest({ method: 'PUT', path: '/drives/pack', body: good }), { ok: true, operationId: 'putGuestDriveByID' });
  assert.equal(spec.validateRequest({ method: 'GET', path: '/version' }).ok, true);
  assert.equal(spec.validateRequest({ method: 'PUT', path: '/actions?x=1', body: { action_type: 'InstanceStart' } }).ok, true);
});

const wrong: [string, { method: string; path: string; body?: unknown }, RegExp][] = [
  ['unknown field (deny_unknown_fields)', { method: 'PUT', path: '/drives/pack', body: { ...good, readonly: true } }, /unknown field "readonly"/],
  ['unknown nested field', { method: 'PUT', path: '/drives/pack', body: { ...good, rate_limiter: { bandwidth: { size: 1, refill_time: 1, burst: 2 } } } }, /rate_limiter\/bandwidth: unknown field "burst"/],
  ['wrong type', { method: 'PUT', path: '/machine-config', body: { vcpu_count: '2', mem_size_mib: 256 } }, /vcpu_count: must be integer/],
  ['missing required field', { method: 'PUT', path: '/vsock', body: { uds_path: '/v.sock' } }, /missing required field "guest_cid"/],
  ['out of range', { method: 'PUT', path: '/machine-config', body: { vcpu_count: 33, mem_size_mib: 256 } }, /vcpu_count: must be <= 32/],
  ['guest CID below 3', { method: 'PUT', path: '/vsock', body: { guest_cid: 2, uds_path: '/v.sock' } }, /guest_cid: must be >= 3/],
  ['bad enum', { method: 'PUT', path: '/actions', body: { action_type: 'Reboot' } }, /must be one of/],
  ['missing body', { method: 'PUT', path: '/boot-source' }, /requires a body/],
  ['body where none is defined', { method: 'GET', path: '/version', body: {} }, /takes no body/],
  ['unknown path', { method: 'PUT', path: '/drive/pack', body: good }, /no such path/],
  ['method not defined for the path', { method: 'DELETE', path: '/drives/pack' }, /DELETE is not defined/],
  ['not an object', { method: 'PUT', path: '/boot-source', body: ['vmlinux'] }, /must be object/],
];
for (const [name, req, re] of wrong) {
  test(`a deliberately wrong request is caught: ${name}`, () => {
    const v = spec.validateRequest(req);
    assert.equal(v.ok, false, JSON.stringify(req));
    assert.match((v as { errors: string[] }).errors.join('\n'), re);
  });
}

test('Firecracker strictness also rejects negative integers (Rust unsigned fields)', () => {
  const body = { stats_polling_interval_s: -1 };
  assert.equal(spec.validateRequest({ method: 'PATCH', path: '/balloon/statistics', body }).ok, true, 'the swagger itself allows it');
  assert.equal(FirecrackerApiSpec.load('1.15.1', 'firecracker').validateRequest({ method: 'PATCH', path: '/balloon/statistics', body }).ok, false);
});

test('responses are checked leniently (a newer Firecracker may add fields)', () => {
  assert.equal(spec.validateResponse('GET', '/version', 200, { firecracker_version: '1.15.1', extra: 1 }).ok, true);
  assert.equal(spec.validateResponse('GET', '/version', 200, {}).ok, false);
  assert.equal(spec.validateResponse('PUT', '/actions', 400, { fault_message: 'x' }).ok, true);
  assert.equal(spec.validateResponse('PUT', '/actions', 204, undefined).ok, true);
});

test('1.16.1 knows what 1.15.1 does not (PATCH /pmem), so versions are not mixed up', () => {
  const req = { method: 'PATCH', path: '/pmem/p0', body: { id: 'p0' } };
  assert.equal(FirecrackerApiSpec.load('1.16.1').validateRequest(req).ok, true);
  assert.equal(spec.validateRequest(req).ok, false);
});

// Admission control over real HTTP: 429 and 503 refusals carry Retry-After and a stable code,
// a create that would eat the host's memory reserve is refused before any VMM starts, and GET /
// shows the boot line. One VM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, http } from './helpers/daemon.ts';
import { vmmsBelow } from './helpers/procs.ts';

const quiet = ['--pool-size', '0', '--snapshots', 'off'];

test('over --max-sandboxes: 429 TOO_MANY_SANDBOXES with Retry-After (seconds until the first expiry)', async () => {
  const d = await startDaemon([...quiet, '--max-sandboxes', '1']);
  try {
    const a = await http(d, 'POST', '/sandboxes', '{"language_pack":"shell","timeout_s":20}');
    assert.equal(a.status, 201, a.text);
    const b = await http(d, 'POST', '/sandboxes', '{"language_pack":"shell"}');
    assert.equal(b.status, 429);
    assert.equal(b.json.error.code, 'TOO_MANY_SANDBOXES');
    const retry = Number(b.headers.get('retry-after'));
    assert.ok(retry >= 1 && retry <= 20, `Retry-After ${retry}`);
    const info = (await http(d, 'GET', '/')).json;
    assert.deepEqual(Object.keys(info.admission.boots).sort(), ['max', 'queued', 'running']);
    assert.equal(info.admission.boots.running, 0);
    assert.ok(info.admission.host_available_mib > 0);
  } finally {
    assert.equal(await d.stop(), 0, d.log());
  }
});

test('a create that would leave less than --memory-reserve: 503 HOST_MEMORY_LOW, Retry-After, no VMM started', async () => {
  const d = await startDaemon([...quiet, '--memory-reserve', String(1 << 24)]); // 16 TiB: more than any host has
  try {
    const r = await http(d, 'POST', '/sandboxes', '{"language_pack":"shell"}');
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.error.code, 'HOST_MEMORY_LOW');
    assert.match(r.json.error.message, /--memory-reserve/);
    assert.equal(r.headers.get('retry-after'), '5');
    assert.deepEqual(vmmsBelow(d.proc.pid!), [], 'no VMM was spawned');
    assert.deepEqual((await http(d, 'GET', '/sandboxes')).json.sandboxes, []);
  } finally {
    assert.equal(await d.stop(), 0, d.log());
  }
});

// The warm handover on real VMs: DELETE answers before the VM is gone and never leaks it or makes
// a later create fail; a pooled sandbox's warm-up exec leaves nothing a user could see.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';
import { vmmsBelow } from './helpers/procs.ts';

/** What a user could see of earlier execs: files in the usual places, other processes, sessions. */
const LOOK = `
import os
procs = []
for p in os.listdir('/proc'):
    if not p.isdigit() or int(p) in (os.getpid(), os.getppid()): continue
    try:
        cmd = open(f'/proc/{p}/cmdline', 'rb').read()
        # The forkserver and its parked workers are exec machinery, their count a matter of timing.
        if b'<emberd-forkserver>' not in cmd: procs.append(cmd.replace(b'\\0', b' ').decode())
    except OSError: pass
print(sorted(os.listdir('/tmp')), sorted(os.listdir('/root')), sorted(os.listdir('/dev/shm')))
print(sorted(procs))
`;

async function look(d: TestDaemon, id: string): Promise<{ seen: string; sessions: unknown; processes: unknown }> {
  const r = await http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify({ code: LOOK }));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.exit_code, 0, r.text);
  return {
    seen: r.json.stdout,
    sessions: (await http(d, 'GET', `/sandboxes/${id}/sessions`)).json,
    processes: (await http(d, 'GET', `/sandboxes/${id}/processes`)).json,
  };
}

test('DELETE answers before the VM is gone, the id is 404 at once, a create right after is never refused, and no VM is left', async () => {
  const d = await startDaemon(['--snapshots', 'off', '--pool-size', '0', '--max-sandboxes', '1', '--default-pack', 'shell']);
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await http(d, 'POST', '/sandboxes', '{}', { 'content-type': 'application/json' });
      assert.equal(c.status, 201, c.text); // the previous one may still be tearing down: never TOO_MANY_SANDBOXES
      ids.push(c.json.id);
      assert.equal((await http(d, 'DELETE', `/sandboxes/${c.json.id}`)).status, 204);
      const gone = await http(d, 'GET', `/sandboxes/${c.json.id}`);
      assert.equal(gone.status, 404);
      assert.equal(gone.json.error.code, 'SANDBOX_NOT_FOUND');
      assert.equal((await http(d, 'DELETE', `/sandboxes/${c.json.id}`)).status, 404, 'a second DELETE');
    }
    assert.deepEqual((await http(d, 'GET', '/sandboxes')).json.sandboxes, []);
    await eventually(() => vmmsBelow(d.proc.pid!).length === 0, 20_000, 'every deleted VM stopped');
  } finally {
    assert.equal(await d.stop(), 0, d.log());
  }
});

test('a pooled sandbox ran its warm-up exec, and nothing of it is visible: same files, processes and sessions as an unwarmed sandbox', async () => {
  const pooled = await startDaemon(['--snapshots', 'off', '--pool-size', '1']);
  const cold = await startDaemon(['--snapshots', 'off', '--pool-size', '0']);
  try {
    await eventually(async () => (await http(pooled, 'GET', '/')).json.pool.python?.ready >= 1, 120_000, 'python pool filled');
    const a = await pooled.client.createSandbox({ language_pack: 'python' });
    assert.equal(a.boot_mode, 'pool');
    const b = await cold.client.createSandbox({ language_pack: 'python' });
    assert.equal(b.boot_mode, 'cold');
    const warmed = await look(pooled, a.id);
    const unwarmed = await look(cold, b.id);
    assert.deepEqual(warmed, unwarmed);
    assert.match(warmed.seen, /^\[\] \[\] \[\]\n/, 'no files in /tmp, /root, /dev/shm');
  } finally {
    assert.equal(await pooled.stop(), 0, pooled.log());
    assert.equal(await cold.stop(), 0, cold.log());
  }
});

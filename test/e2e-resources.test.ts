// Per-sandbox resources over HTTP, on real VMs: the machine a create asks for is the one the
// guest sees; the sandbox's env reaches every exec (an exec's own env wins); bounds are 400s that
// name the flag. A non-default shape cold-boots unless --snapshot-shapes lists it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, http, type TestDaemon } from './helpers/daemon.ts';

let d: TestDaemon;
before(async () => { d = await startDaemon(['--pool-size', '0', '--max-vcpus', '2', '--max-memory', '1024']); });
after(async () => { assert.equal(await d.stop(), 0, d.log()); });

const exec = async (id: string, body: object) => {
  const r = await http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify(body));
  assert.equal(r.status, 200, r.text);
  return r.json;
};

test('vcpus and memory_mib: the guest sees what was asked; GET and the list show it; it cold-boots', async () => {
  const c = await http(d, 'POST', '/sandboxes', JSON.stringify({ language_pack: 'shell', vcpus: 2, memory_mib: 512 }));
  assert.equal(c.status, 201, c.text);
  const id = c.json.id;
  try {
    assert.deepEqual([c.json.vcpus, c.json.memory_mib, c.json.boot_mode], [2, 512, 'cold'], 'no golden of this shape: a cold boot');
    const r = await exec(id, { code: 'nproc; grep MemTotal /proc/meminfo' });
    const [nproc, mem] = r.stdout.trim().split('\n');
    assert.equal(nproc, '2');
    const memTotalMib = Number(/(\d+) kB/.exec(mem)![1]) / 1024;
    // MemTotal is what the kernel manages: the asked size less what it reserved for itself.
    assert.ok(memTotalMib > 512 * 0.85 && memTotalMib <= 512, `MemTotal ${memTotalMib} MiB for 512 asked`);
    const one = (await http(d, 'GET', `/sandboxes/${id}`)).json;
    assert.deepEqual([one.vcpus, one.memory_mib], [2, 512]);
    const listed = (await http(d, 'GET', '/sandboxes')).json.sandboxes.find((s: { id: string }) => s.id === id);
    assert.deepEqual([listed.vcpus, listed.memory_mib], [2, 512]);
  } finally {
    await http(d, 'DELETE', `/sandboxes/${id}`);
  }
});

test('the default shape is the daemon\'s; bounds come from --max-vcpus and --max-memory', async () => {
  for (const [body, re] of [
    [{ vcpus: 3 }, /vcpus 3 is above this daemon's maximum of 2.*--max-vcpus/],
    [{ memory_mib: 2048 }, /memory_mib 2048 is above this daemon's maximum of 1024.*--max-memory/],
    [{ vcpus: 0 }, /vcpus/],
    [{ memory_mib: 96 }, /memory_mib/],
    [{ env: { '1X': 'y' } }, /environment variable names/],
  ] as const) {
    const r = await http(d, 'POST', '/sandboxes', JSON.stringify(body));
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.json.error.code, 'INVALID_REQUEST');
    assert.match(r.json.error.message, re);
  }
  const c = await http(d, 'POST', '/sandboxes', '{"language_pack":"shell"}');
  assert.deepEqual([c.json.vcpus, c.json.memory_mib], [1, 256]);
  await http(d, 'DELETE', `/sandboxes/${c.json.id}`);
});

test('disk_mib and pids_max: applied in the guest at the handshake (here a restore), shown, and enforced', async () => {
  const c = await http(d, 'POST', '/sandboxes', JSON.stringify({ language_pack: 'shell', disk_mib: 48, pids_max: 40 }));
  assert.equal(c.status, 201, c.text);
  const id = c.json.id;
  try {
    assert.deepEqual([c.json.disk_mib, c.json.pids_max], [48, 40]);
    const df = await exec(id, { code: 'df -k / | tail -1; cat /sys/fs/cgroup/execs/pids.max' });
    const [line, pids] = df.stdout.trim().split('\n');
    assert.equal(Number(line.trim().split(/\s+/)[1]), 48 * 1024, `df of /: ${line}`);
    assert.equal(pids, '40');
    const fill = await exec(id, { code: 'dd if=/dev/zero of=/root/big bs=1M count=64 2>&1; echo status $?' });
    assert.match(fill.stdout, /No space left on device/);
    assert.equal((await exec(id, { code: 'rm /root/big; echo still $((6*7))' })).stdout, 'still 42\n', 'the sandbox keeps working');
    const forks = await exec(id, { code: 'i=0; while [ $i -lt 60 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null; echo $(jobs -p | wc -l); kill $(jobs -p) 2>/dev/null' });
    assert.ok(Number(forks.stdout.trim()) < 40, `started ${forks.stdout.trim()} of 60 under pids_max 40`);
  } finally {
    await http(d, 'DELETE', `/sandboxes/${id}`);
  }
  // pids_max 100000 passes the schema and is refused by the guest (above its ceiling), after a boot.
  for (const [body, re] of [[{ disk_mib: 9000 }, /--max-disk/], [{ pids_max: 10_000_000 }, /pids/], [{ disk_mib: 8 }, /disk_mib/], [{ pids_max: 100_000 }, /pids/]] as const) {
    const r = await http(d, 'POST', '/sandboxes', JSON.stringify({ language_pack: 'shell', ...body }));
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.match(r.json.error.message, re);
  }
});

test('env: every exec, session and background process inherits it; an exec\'s own env wins', async () => {
  const c = await http(d, 'POST', '/sandboxes', JSON.stringify({ language_pack: 'python', env: { GREETING: 'hi', WHO: 'sandbox' } }));
  assert.equal(c.status, 201, c.text);
  const id = c.json.id;
  try {
    assert.deepEqual(c.json.env, { GREETING: 'hi', WHO: 'sandbox' });
    const code = 'import os; print(os.environ["GREETING"], os.environ["WHO"])';
    assert.equal((await exec(id, { code })).stdout, 'hi sandbox\n');
    assert.equal((await exec(id, { code, env: { WHO: 'exec' } })).stdout, 'hi exec\n', 'the exec\'s env wins');
    assert.equal((await exec(id, { argv: ['sh', '-c', 'echo $GREETING'] })).stdout, 'hi\n');
    assert.equal((await exec(id, { session: 's', code })).stdout, 'hi sandbox\n');
    const bg = await http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify({ argv: ['sh', '-c', 'echo $WHO'], background: true }));
    const pid = bg.json.process_id;
    await http(d, 'GET', `/sandboxes/${id}/processes/${pid}/wait?timeout_ms=60000`);
    assert.equal((await http(d, 'GET', `/sandboxes/${id}/processes/${pid}/output`)).json.data, 'sandbox\n');
  } finally {
    await http(d, 'DELETE', `/sandboxes/${id}`);
  }
});

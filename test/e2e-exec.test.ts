// Exec for agents over HTTP on a real microVM: stdin bytes, output encodings, timeouts, NDJSON
// streaming, client disconnects and background processes. One shell sandbox serves every case.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';

let d: TestDaemon;
let id: string;

before(async () => {
  d = await startDaemon();
  id = (await d.client.createSandbox({ language_pack: 'shell' })).id;
});
after(async () => {
  await d.client.deleteSandbox(id).catch(() => {});
  assert.equal(await d.stop(), 0, d.log());
});

const exec = (body: object, headers: Record<string, string> = {}) =>
  http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify(body), { 'content-type': 'application/json', ...headers });

async function processesMatching(re: RegExp): Promise<number> {
  const r = await exec({ argv: ['sh', '-c', 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " "; echo'] });
  return (r.json.stdout.match(new RegExp(re.source, 'g')) ?? []).length;
}

test('stdin_base64 and output_encoding base64 carry exact bytes, including invalid UTF-8', async () => {
  const bytes = Buffer.from([0, 1, 0xff, 0xfe, 0x80, 0x0a, 0xc3]);
  const r = await exec({ argv: ['cat'], stdin_base64: bytes.toString('base64'), output_encoding: 'base64' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(Buffer.from(r.json.stdout, 'base64'), bytes);
  const t = await exec({ argv: ['cat'], stdin_base64: bytes.toString('base64') });
  assert.equal(t.json.stdout, Buffer.from(bytes).toString('utf8'), 'utf8 mode replaces invalid bytes');
  assert.ok(t.json.stdout.includes('\ufffd'));
});

test('the guest hostname is the sandbox id', async () => {
  const r = await exec({ argv: ['cat', '/proc/sys/kernel/hostname'] });
  assert.equal(r.json.stdout, `${id.replace('_', '-')}\n`);
});

test('env and cwd apply; stdin text is passed', async () => {
  const r = await exec({ code: 'echo "$A-$B" "$(pwd)"; cat', env: { A: 'x', B: 'y z' }, cwd: '/tmp', stdin: 'in\n' });
  assert.equal(r.json.stdout, 'x-y z /tmp\nin\n');
});

test('a timeout kills the whole group, within 10% + 100 ms of the asked time (guest-measured)', async () => {
  for (const ms of [300, 1500]) {
    const r = await exec({ code: 'sleep 1003 & sleep 1004', timeout_ms: ms });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.timed_out, true);
    assert.equal(r.json.exit_code, 137);
    assert.ok(r.json.duration_ms >= ms, `killed early: ${r.json.duration_ms} < ${ms}`);
    assert.ok(r.json.duration_ms <= ms * 1.1 + 100, `killed late: ${r.json.duration_ms} ms for ${ms}`);
  }
  assert.equal(await processesMatching(/sleep 100[34]/), 0, 'a child of a timed-out exec survived');
});

/** Reads an NDJSON response line by line. */
async function* events(res: Response): AsyncGenerator<any> {
  const reader = res.body!.getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += Buffer.from(value).toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      yield JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  }
}

test('NDJSON streaming delivers output while the process still runs, then one exit event', async () => {
  // The process waits for a file that the test creates only after it has seen the first event:
  // a buffered answer would deadlock here instead of passing.
  await exec({ code: 'rm -f /tmp/go' });
  const res = await fetch(`${d.url}/sandboxes/${id}/exec`, {
    method: 'POST',
    headers: { accept: 'application/x-ndjson', 'content-type': 'application/json' },
    body: JSON.stringify({ code: 'echo first; echo err >&2; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo second', timeout_ms: 60_000 }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type')!, /application\/x-ndjson/);
  const seen: any[] = [];
  for await (const ev of events(res)) {
    seen.push(ev);
    if (ev.type === 'stdout' && ev.data.includes('first')) {
      const t = await exec({ code: 'touch /tmp/go' });
      assert.equal(t.status, 200);
    }
  }
  const out = seen.filter((e) => e.type === 'stdout').map((e) => e.data).join('');
  const err = seen.filter((e) => e.type === 'stderr').map((e) => e.data).join('');
  assert.equal(out, 'first\nsecond\n');
  assert.equal(err, 'err\n');
  assert.deepEqual(seen.at(-1), { type: 'exit', exit_code: 0, duration_ms: seen.at(-1).duration_ms, timed_out: false, truncated: false });
  assert.equal(seen.filter((e) => e.type === 'exit').length, 1);
});

test('a client that disconnects mid-stream kills the process', async () => {
  const ac = new AbortController();
  const res = await fetch(`${d.url}/sandboxes/${id}/exec`, {
    method: 'POST',
    headers: { accept: 'application/x-ndjson' },
    body: JSON.stringify({ code: 'echo started; sleep 1005 & sleep 1006', timeout_ms: 600_000 }),
    signal: ac.signal,
  });
  const it = events(res);
  assert.equal((await it.next()).value.data, 'started\n');
  assert.ok((await processesMatching(/sleep 100[56]/)) >= 1);
  ac.abort();
  await eventually(async () => (await processesMatching(/sleep 100[56]/)) === 0, 10_000, 'the streamed process group is killed');
});

test('background process: poll output while it runs, write stdin, wait for it', async () => {
  const start = await exec({ code: 'echo tick; read line; echo "got:$line"; echo bye >&2', background: true });
  assert.equal(start.status, 202, start.text);
  const pid = start.json.process_id;
  assert.match(pid, /^p_[0-9a-f]{16}$/);
  await eventually(async () => (await http(d, 'GET', `/sandboxes/${id}/processes/${pid}/output?stream=stdout`)).json.data === 'tick\n', 10_000, 'tick');
  const mid = await http(d, 'GET', `/sandboxes/${id}/processes/${pid}`);
  assert.equal(mid.json.state, 'running');
  const w = await http(d, 'POST', `/sandboxes/${id}/processes/${pid}/stdin`, JSON.stringify({ data: 'hello\n', eof: true }));
  assert.equal(w.status, 204, w.text);
  const done = await http(d, 'GET', `/sandboxes/${id}/processes/${pid}/wait?timeout_ms=30000`);
  assert.equal(done.json.state, 'exited');
  assert.equal(done.json.exit_code, 0);
  const rest = await http(d, 'GET', `/sandboxes/${id}/processes/${pid}/output?stream=stdout&offset=5`);
  assert.deepEqual([rest.json.data, rest.json.next_offset, rest.json.eof], ['got:hello\n', 15, true]);
  const err = await http(d, 'GET', `/sandboxes/${id}/processes/${pid}/output?stream=stderr`);
  assert.equal(err.json.data, 'bye\n');
  const list = await http(d, 'GET', `/sandboxes/${id}/processes`);
  assert.ok(list.json.processes.some((p: { process_id: string }) => p.process_id === pid));
  assert.equal((await http(d, 'DELETE', `/sandboxes/${id}/processes/${pid}`)).status, 204);
  const gone = await http(d, 'GET', `/sandboxes/${id}/processes/${pid}`);
  assert.equal(gone.status, 404);
  assert.equal(gone.json.error.code, 'PROCESS_NOT_FOUND');
});

test('background process: signal by name, wait with a timeout, delete kills a running one', async () => {
  const a = (await exec({ code: 'sleep 1007', background: true })).json.process_id;
  const early = await http(d, 'GET', `/sandboxes/${id}/processes/${a}/wait?timeout_ms=200`);
  assert.equal(early.json.state, 'running');
  assert.equal((await http(d, 'POST', `/sandboxes/${id}/processes/${a}/signal`, JSON.stringify({ signal: 'SIGTERM' }))).status, 204);
  const r = await http(d, 'GET', `/sandboxes/${id}/processes/${a}/wait?timeout_ms=30000`);
  assert.deepEqual([r.json.state, r.json.signal, r.json.exit_code], ['exited', 15, 143]);
  const bad = await http(d, 'POST', `/sandboxes/${id}/processes/${a}/signal`, JSON.stringify({ signal: 'SIGNOPE' }));
  assert.equal(bad.status, 400);
  const b = (await exec({ code: 'sleep 1008', background: true })).json.process_id;
  assert.equal((await http(d, 'DELETE', `/sandboxes/${id}/processes/${b}`)).status, 204);
  assert.equal(await processesMatching(/sleep 1008/), 0);
});

test('sessions over HTTP: state survives, the last expression is the value, errors keep the session', async () => {
  const py = (await d.client.createSandbox({ language_pack: 'python' })).id;
  try {
    const run = (code: string, extra: object = {}) => http(d, 'POST', `/sandboxes/${py}/exec`, JSON.stringify({ session: 'main', code, ...extra }));
    const a = await run('import math\nx = 6*7\ndef f(y): return y + x');
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.value, null);
    const b = await run('print("side"); f(0)');
    assert.deepEqual([b.json.stdout, b.json.value, b.json.exit_code], ['side\n', '42', 0]);
    const c = await run('1/0');
    assert.equal(c.json.exit_code, 1);
    assert.match(c.json.stderr, /ZeroDivisionError/);
    assert.equal((await run('math.floor(x / 2)')).json.value, '21');
    const bad = await run('x', { argv: undefined, cwd: '/tmp' });
    assert.equal(bad.status, 400);
    const list = await http(d, 'GET', `/sandboxes/${py}/sessions`);
    assert.deepEqual(list.json.sessions.map((s: { name: string }) => s.name), ['main']);
    assert.equal((await http(d, 'DELETE', `/sandboxes/${py}/sessions/main`)).status, 204);
    assert.equal((await run('x')).json.exit_code, 1, 'a deleted session starts afresh');
    const shell = await exec({ session: 'main', code: 'echo hi' });
    assert.equal(shell.status, 400);
    assert.equal(shell.json.error.code, 'SESSIONS_UNSUPPORTED');
  } finally {
    await d.client.deleteSandbox(py);
  }
});

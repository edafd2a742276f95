// End to end over HTTP, on real microVMs booted by a real daemon. One daemon serves the whole
// file; sandboxes are shared between cases only where sharing cannot hide a bug.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, http, processExists, eventually, type TestDaemon } from './helpers/daemon.ts';
import { isLive, vmmsBelow } from './helpers/procs.ts';

let d: TestDaemon;
const created: string[] = [];

before(async () => { d = await startDaemon(); });
after(async () => {
  for (const id of created) await http(d, 'DELETE', `/sandboxes/${id}`).catch(() => {});
  const code = await d.stop();
  assert.equal(code, 0, `daemon exit code; log:\n${d.log()}`);
});

async function create(pack?: string): Promise<string> {
  const r = await http(d, 'POST', '/sandboxes', pack ? JSON.stringify({ language_pack: pack }) : undefined, pack ? { 'content-type': 'application/json' } : {});
  assert.equal(r.status, 201, r.text);
  created.push(r.json.id);
  return r.json.id;
}

async function exec(id: string, body: object) {
  return http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify(body), { 'content-type': 'application/json' });
}

describe('the seed API, verbatim', () => {
  test('POST /sandboxes -> exec print(6*7) -> DELETE, exec right after create', async () => {
    // Exactly what README's curl examples send.
    const c = await http(d, 'POST', '/sandboxes');
    assert.equal(c.status, 201);
    assert.match(c.json.id, /^sb_[a-z0-9]{20}$/);
    created.push(c.json.id);
    const e = await http(d, 'POST', `/sandboxes/${c.json.id}/exec`, '{"code":"print(6*7)"}', { 'content-type': 'application/json' });
    assert.equal(e.status, 200, e.text);
    assert.equal(e.json.stdout, '42\n');
    assert.equal(e.json.stderr, '');
    assert.equal(e.json.exit_code, 0);
    assert.ok(Number.isInteger(e.json.duration_ms) && e.json.duration_ms >= 0);
    for (const k of ['stdout', 'stderr', 'exit_code', 'duration_ms']) assert.ok(k in e.json, `exec answer lacks ${k}`);
    const del = await http(d, 'DELETE', `/sandboxes/${c.json.id}`);
    assert.equal(del.status, 204);
    assert.equal(del.text, '');
  });

  test('a body sent without a JSON content type (curl -d) is still read as JSON', async () => {
    const id = await create();
    const e = await http(d, 'POST', `/sandboxes/${id}/exec`, '{"code":"import sys; print(sys.version_info[0]); sys.exit(3)"}', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(e.status, 200, e.text);
    assert.equal(e.json.stdout, '3\n');
    assert.equal(e.json.exit_code, 3);
  });
});

describe('language packs', () => {
  test('shell pack runs POSIX shell code, with stderr and exit codes', async () => {
    const id = await create('shell');
    const e = await exec(id, { code: 'echo $((6*7)); echo warn >&2; exit 5' });
    assert.equal(e.status, 200, e.text);
    assert.deepEqual([e.json.stdout, e.json.stderr, e.json.exit_code], ['42\n', 'warn\n', 5]);
    const info = await http(d, 'GET', `/sandboxes/${id}`);
    assert.equal(info.json.language_pack, 'shell');
  });

  test('python pack has the standard library agents use', async () => {
    const id = await create('python');
    const code = 'import json,re,csv,sqlite3,decimal,datetime,statistics,urllib.parse,ssl,zlib,hashlib\n'
      + 'db=sqlite3.connect(":memory:"); db.execute("create table t(x)"); db.execute("insert into t values (41)")\n'
      + 'print(json.dumps({"v": db.execute("select x+1 from t").fetchone()[0], "d": str(decimal.Decimal("0.1")+decimal.Decimal("0.2")), "z": len(zlib.compress(b"a"*100)) < 100}))';
    const e = await exec(id, { code });
    assert.equal(e.status, 200, e.text);
    assert.equal(e.json.stderr, '');
    assert.deepEqual(JSON.parse(e.json.stdout), { v: 42, d: '0.3', z: true });
  });
});

describe('errors have stable codes and say what to do', () => {
  const cases: [string, string, string | undefined, number, string][] = [
    ['malformed JSON', '/sandboxes', '{"language_pack":', 400, 'INVALID_JSON'],
    ['unknown pack', '/sandboxes', '{"language_pack":"cobol"}', 400, 'UNKNOWN_LANGUAGE_PACK'],
    ['unknown field', '/sandboxes', '{"languagepack":"python"}', 400, 'INVALID_REQUEST'],
    ['pack of the wrong type', '/sandboxes', '{"language_pack":7}', 400, 'INVALID_REQUEST'],
    ['body is not an object', '/sandboxes', '[1,2]', 400, 'INVALID_REQUEST'],
    ['invalid id', '/sandboxes/../../etc/exec', '{"code":"1"}', 404, 'ROUTE_NOT_FOUND'],
    ['unknown sandbox', '/sandboxes/sb_aaaaaaaaaaaaaaaaaaaa/exec', '{"code":"1"}', 404, 'SANDBOX_NOT_FOUND'],
  ];
  for (const [name, path, body, status, code] of cases) {
    test(name, async () => {
      const r = await http(d, 'POST', path, body, { 'content-type': 'application/json' });
      assert.equal(r.status, status, r.text);
      assert.equal(r.json.error.code, code);
      assert.ok(r.json.error.message.length > 10);
    });
  }

  test('unknown pack names the available ones', async () => {
    const r = await http(d, 'POST', '/sandboxes', '{"language_pack":"cobol"}');
    assert.match(r.json.error.message, /python/);
    assert.match(r.json.error.message, /shell/);
  });

  test('unknown_ids_answered_400: every id that names no sandbox, whatever its shape, is 404 SANDBOX_NOT_FOUND', async () => {
    const calls: [string, string, string?][] = [
      ['GET', ''], ['DELETE', ''], ['POST', '/exec', '{"code":"1"}'], ['GET', '/processes'], ['GET', '/processes/p_1'],
      ['GET', '/sessions'], ['DELETE', '/sessions/main'], ['GET', '/files/stat?path=/'], ['GET', '/files?path=/etc/hostname'],
    ];
    for (const id of ['sb_bbbbbbbbbbbbbbbbbbbb', 'sb_NOPE', 'doesnotexist', 'sb_' + 'x'.repeat(200)]) {
      for (const [method, rest, body] of calls) {
        const r = await http(d, method, `/sandboxes/${id}${rest}`, body, body ? { 'content-type': 'application/json' } : {});
        assert.equal(r.status, 404, `${method} /sandboxes/${id}${rest}: ${r.text}`);
        assert.equal(r.json.error.code, 'SANDBOX_NOT_FOUND');
        assert.match(r.json.error.message, /GET \/sandboxes/, 'the message says how to find the ids');
      }
    }
  });

  test('a body over the limit is 413 and the daemon keeps serving', async () => {
    const r = await http(d, 'POST', '/sandboxes', JSON.stringify({ language_pack: 'x'.repeat(3 * 1024 * 1024) }));
    assert.equal(r.status, 413);
    assert.equal(r.json.error.code, 'BODY_TOO_LARGE');
    assert.equal((await http(d, 'GET', '/')).status, 200);
  });

  test('exec bodies are validated before anything runs', async () => {
    const id = await create('shell');
    for (const [body, re] of [
      ['{}', /exactly one of "code"/],
      ['{"code":"1","argv":["true"]}', /exactly one of "code"/],
      ['{"code":1}', /code/],
      ['{"code":"1","timeout_ms":0}', /timeout_ms/],
      ['{"code":"1","timeout_ms":99999999999}', /maximum/],
      ['{"code":"1","env":{"1BAD":"x"}}', /environment variable names/],
    ] as const) {
      const r = await exec(id, JSON.parse(body));
      assert.equal(r.status, 400, `${body}: ${r.text}`);
      assert.match(r.json.error.message, re, body);
    }
  });

  test('unknown routes are JSON 404s', async () => {
    const r = await http(d, 'GET', '/nope');
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, 'ROUTE_NOT_FOUND');
  });
});

describe('isolation and lifecycle', () => {
  test('4 sandboxes in parallel: no crossed output, no shared files', async () => {
    const ids = await Promise.all([0, 1, 2, 3].map(() => create('shell')));
    assert.equal(new Set(ids).size, 4);
    const outs = await Promise.all(ids.map((id, i) => exec(id, {
      code: `echo ${id} > /root/mine; i=0; while [ $i -lt 2000 ]; do echo "${i}:${id}"; i=$((i+1)); done`,
    })));
    outs.forEach((r, i) => {
      assert.equal(r.status, 200, r.text);
      const lines = r.json.stdout.trimEnd().split('\n');
      assert.equal(lines.length, 2000);
      assert.ok(lines.every((l: string) => l === `${i}:${ids[i]}`), `sandbox ${i} saw foreign output`);
    });
    // Each sandbox sees only its own file; a brand-new one sees none.
    const reads = await Promise.all(ids.map((id) => exec(id, { code: 'cat /root/mine; ls /root' })));
    reads.forEach((r, i) => assert.equal(r.json.stdout, `${ids[i]}\nmine\n`));
    const fresh = await create('shell');
    const f = await exec(fresh, { code: 'ls -A /root; ls /tmp | wc -l' });
    assert.equal(f.json.stdout, '0\n');
  });

  test('GET /sandboxes and GET /sandboxes/{id} describe live sandboxes', async () => {
    const id = await create('shell');
    const list = await http(d, 'GET', '/sandboxes');
    assert.ok(list.json.sandboxes.some((s: { id: string; state: string }) => s.id === id && s.state === 'ready'));
    const one = await http(d, 'GET', `/sandboxes/${id}`);
    assert.equal(one.json.state, 'ready');
    assert.equal(one.json.backend, 'qemu');
    assert.ok(processExists(one.json.vmm_pid));
    assert.equal(typeof one.json.boot_log_tail, 'string');
    assert.ok(one.json.boot_ms >= 0);
    assert.ok(['cold', 'restore', 'pool'].includes(one.json.boot_mode));
    const info = await http(d, 'GET', '/');
    assert.equal(info.json.backend.name, 'qemu');
    const built = ((await http(d, 'GET', '/packs')).json.packs as { name: string; error: string | null }[]).filter((p) => p.error === null).map((p) => p.name);
    assert.deepEqual(info.json.language_packs.sort(), built.sort(), 'GET / names the packs GET /packs lists');
    for (const p of ['python', 'shell']) assert.ok(built.includes(p), p);
  });

  test('DELETE leaves no VMM process and no file in the run directory', async () => {
    const id = await create('shell');
    const pid = (await http(d, 'GET', `/sandboxes/${id}`)).json.vmm_pid;
    assert.ok(existsSync(join(d.runDir, id)));
    assert.equal((await http(d, 'DELETE', `/sandboxes/${id}`)).status, 204);
    assert.equal((await http(d, 'GET', `/sandboxes/${id}`)).status, 404, 'forgotten as DELETE answers');
    // The VM ends in the background (within the guest's shutdown grace, else QMP quit, else SIGKILL).
    await eventually(() => !processExists(pid), 30_000, 'VMM gone');
    await eventually(() => !existsSync(join(d.runDir, id)), 30_000, 'run dir removed');
    assert.equal((await http(d, 'DELETE', `/sandboxes/${id}`)).status, 404);
  });

  test('a VMM killed from outside marks the sandbox failed and frees it', async () => {
    const id = await create('shell');
    const pid = (await http(d, 'GET', `/sandboxes/${id}`)).json.vmm_pid;
    process.kill(pid, 'SIGKILL');
    await eventually(async () => (await http(d, 'GET', `/sandboxes/${id}`)).json.state === 'failed', 10_000, 'state failed');
    const info = await http(d, 'GET', `/sandboxes/${id}`);
    assert.equal(info.json.error.code, 'VMM_EXITED');
    assert.equal(info.json.vmm_pid, null);
    await eventually(() => !existsSync(join(d.runDir, id)), 5000, 'run dir removed');
    const e = await exec(id, { code: 'echo hi' });
    assert.equal(e.status, 409);
    assert.equal(e.json.error.code, 'SANDBOX_FAILED');
    assert.equal((await http(d, 'DELETE', `/sandboxes/${id}`)).status, 204);
    assert.equal((await http(d, 'GET', `/sandboxes/${id}`)).status, 404);
  });
});

test('lifetime over HTTP: timeout_s, expires_at in GET and the list, POST /timeout, then 404 that says it expired', async () => {
  const c = await http(d, 'POST', '/sandboxes', '{"language_pack":"shell","timeout_s":600}');
  assert.equal(c.status, 201, c.text);
  const id = c.json.id;
  created.push(id);
  assert.equal(c.json.timeout_s, 600);
  const first = Date.parse(c.json.expires_at);
  const listed = (await http(d, 'GET', '/sandboxes')).json.sandboxes.find((s: { id: string }) => s.id === id);
  assert.equal(listed.expires_at, c.json.expires_at);
  const t = await http(d, 'POST', `/sandboxes/${id}/timeout`, '{"timeout_s":1}');
  assert.equal(t.status, 200, t.text);
  assert.ok(Date.parse(t.json.expires_at) < first, 'the deadline moved to now + 1 s');
  for (const [body, re] of [['{}', /timeout_s/], ['{"timeout_s":-1}', /timeout_s/], ['{"timeout_s":999999999}', /timeout_s/], ['{"timeout_s":0}', /--max-sandbox-timeout 0/]] as const) {
    const bad = await http(d, 'POST', `/sandboxes/${id}/timeout`, body);
    assert.equal(bad.status, 400, body);
    assert.match(bad.json.error.message, re, body);
  }
  await eventually(async () => (await http(d, 'GET', `/sandboxes/${id}`)).status === 404, 30_000, 'the expiry');
  const gone = await exec(id, { code: 'true' });
  assert.equal(gone.status, 404);
  assert.equal(gone.json.error.code, 'SANDBOX_NOT_FOUND');
  assert.match(gone.json.error.message, /expired at \S+ \(its timeout_s was 1\)/);
});

test('logs are JSON lines: a request line has its id, method, route, status and duration; sandbox lines their id', async () => {
  const id = await create('shell');
  const r = await exec(id, { code: 'true' });
  const reqId = r.headers.get('x-request-id');
  assert.ok(reqId, 'X-Request-Id is sent');
  const lines = () => d.log().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  await eventually(() => lines().some((l) => l.req_id === reqId && l.msg === 'request'), 10_000, 'the request line');
  const line = lines().find((l) => l.req_id === reqId && l.msg === 'request')!;
  assert.deepEqual({ level: line.level, method: line.method, route: line.route, status: line.status, sandbox: line.sandbox }, { level: 'info', method: 'POST', route: '/sandboxes/:id/exec', status: 200, sandbox: id });
  assert.equal(typeof line.duration_ms, 'number');
  assert.ok(lines().some((l) => l.sandbox === id && l.msg === 'sandbox ready'), 'the sandbox\'s own lines carry its id');
});

test('SIGTERM to the daemon destroys every VM and leaves no file', async () => {
  const d2 = await startDaemon();
  const ids = await Promise.all([0, 1].map(async () => (await d2.client.createSandbox({ language_pack: 'shell' })).id));
  const pids = await Promise.all(ids.map(async (id) => (await d2.client.getSandbox(id)).vmm_pid!));
  const runDir = d2.runDir;
  d2.proc.kill('SIGTERM');
  const code = await new Promise((r) => d2.proc.once('exit', r));
  assert.equal(code, 0, d2.log());
  for (const pid of pids) assert.equal(processExists(pid), false, `VMM ${pid} survived the daemon`);
  assert.deepEqual(existsSync(runDir) ? readdirSync(runDir) : [], []);
  assert.doesNotMatch(d2.log(), /stopped unexpectedly/, 'no warning for the VMs the daemon stopped itself (the pool included)');
  await d2.stop();
});

test('a SIGKILLed daemon takes its VMMs with it; the next start on the run dir removes what it left and serves', async () => {
  const d2 = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  const ids = await Promise.all([0, 1].map(async () => (await d2.client.createSandbox({ language_pack: 'shell' })).id));
  const vmms = vmmsBelow(d2.proc.pid!);
  assert.equal(vmms.length, 2);
  d2.proc.kill('SIGKILL');
  await new Promise((r) => d2.proc.once('exit', r));
  await eventually(() => vmms.every((p) => !isLive(p)), 30_000, 'the VMMs died with the daemon (PDEATHSIG)');
  assert.deepEqual(readdirSync(d2.runDir).filter((n) => n.startsWith('sb_')).sort(), [...ids].sort(), 'the killed daemon left its run dirs');
  const d3 = await startDaemon(['--pool-size', '0', '--snapshots', 'off', '--run-dir', d2.runDir]);
  try {
    assert.deepEqual(readdirSync(d2.runDir).filter((n) => n.startsWith('sb_')), [], 'the next start removed them');
    assert.match(d3.log(), /removed 2 stale sandbox directories/);
    const sb = await d3.client.createSandbox({ language_pack: 'shell' });
    assert.equal((await d3.client.exec(sb.id, { code: 'echo ok' })).stdout, 'ok\n');
  } finally {
    assert.equal(await d3.stop(), 0, d3.log());
    await d2.stop();
  }
});

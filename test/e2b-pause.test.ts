// The official E2B SDK's pause, resume (connect) and lifecycle onTimeout 'pause' against a real
// daemon and real VMs (docs/e2b.md), and its network options on create as far as a daemon
// answers them here (the translation itself: src/e2b/network.test.ts).
// First: it keeps the real fetch before daemon.ts checks the global one (see the helper).
import { startDaemon, eventually } from './helpers/e2b-fetch.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Sandbox, SandboxError, CommandExitError, ALL_TRAFFIC, type SandboxOpts } from 'e2b';
import { egressUnavailable } from '../src/sandbox/egress/host-net.ts';


type Daemon = Awaited<ReturnType<typeof startDaemon>>;
let d: Daemon;
let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
const made: Sandbox[] = [];

before(async () => {
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  opts = { apiKey: 'e2b_0', apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/sbx` };
});

after(async () => {
  await Promise.allSettled(made.map((s) => s.kill()));
  const file = `${d.runDir}.openapi-mismatches`;
  if (existsSync(file)) writeFileSync(file, readFileSync(file, 'utf8').split('\n').filter((l) => l && !/^[A-Z]+ \/e2b\//.test(l)).map((l) => `${l}\n`).join(''));
  await d?.stop();
});

async function create(o: Partial<SandboxOpts> = {}): Promise<Sandbox> {
  const s = await Sandbox.create({ ...opts, ...o });
  made.push(s);
  return s;
}

/** Lines of the counter's file so far (0 before it exists). */
const counted = async (s: Sandbox) => (await s.files.read('/tmp/count').catch(() => '')).trim().split('\n').filter(Boolean).length;

const ids = async (state: 'running' | 'paused') => (await Sandbox.list({ ...opts, query: { state: [state] } }).nextItems()).map((s) => s.sandboxId);

test('pause, list paused, connect resumes: files and the access token survive', { timeout: 300_000 }, async () => {
  const sbx = await create({ metadata: { suite: 'e2b-pause' } });
  await sbx.files.write('/home/user/kept.txt', 'before the pause');

  assert.equal(await sbx.pause(), true);
  assert.equal(await sbx.pause(), false, 'already paused');
  assert.ok((await ids('paused')).includes(sbx.sandboxId));
  assert.ok(!(await ids('running')).includes(sbx.sandboxId));
  const all = await Sandbox.list({ ...opts, query: { metadata: { suite: 'e2b-pause' } } }).nextItems();
  assert.deepEqual(all.map((s) => [s.sandboxId, s.state]), [[sbx.sandboxId, 'paused']], 'no state filter: running and paused');
  const info = await sbx.getInfo();
  assert.equal(info.state, 'paused');
  assert.deepEqual(info.lifecycle, { onTimeout: 'kill', autoResume: false });
  assert.equal(await sbx.isRunning(), false);
  // E2B's default is no auto-resume: traffic to a paused sandbox fails instead of resuming it.
  await assert.rejects(sbx.commands.run('true'), /paused/);
  assert.equal((await sbx.getInfo()).state, 'paused', 'the refused command did not resume it');

  const again = await Sandbox.connect(sbx.sandboxId, { ...opts, timeoutMs: 120_000 });
  assert.equal((await again.getInfo()).state, 'running');
  assert.equal(await again.files.read('/home/user/kept.txt'), 'before the pause');
  assert.equal((await again.commands.run('echo resumed')).stdout, 'resumed\n');
  // the first client's envd access token is still the sandbox's
  assert.equal(await sbx.files.read('/home/user/kept.txt'), 'before the pause');
  // connect of a running sandbox keeps it running
  await sbx.connect();
  assert.equal(await sbx.isRunning(), true);
  assert.equal(await sbx.kill(), true);
});

// The bug: the E2B follower of a stdin command held the process object from before the pause; a
// resume replaces those objects, so the old one never exited and, once the command ended, the
// follower's poll spun without yielding and hung the daemon.
test('a stdin command followed across a pause and resume goes on, and its end is seen (the follower held the pre-pause process and spun)', { timeout: 300_000 }, async () => {
  const sbx = await create();
  const counter = await sbx.commands.run('i=0; while [ $i -lt 100000 ]; do echo $i >> /tmp/count; i=$((i+1)); sleep 0.2; done', { background: true, stdin: true });
  await eventually(async () => (await counted(sbx)) >= 2, 20_000);
  assert.equal(await sbx.pause(), true);
  await sbx.connect();
  const n = await counted(sbx);
  await eventually(async () => (await counted(sbx)) > n + 1, 20_000, 'the command counts on after the resume');
  assert.equal(await counter.kill(), true);
  await assert.rejects(counter.wait(), (e: unknown) => e instanceof CommandExitError, 'the follower sees the end');
  assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n', 'the daemon still answers');
  await sbx.kill();
});

test('pause is refused (an error, not "already paused") while a command without stdin runs', { timeout: 300_000 }, async () => {
  const sbx = await create();
  const h = await sbx.commands.run('sleep 600', { background: true });
  await assert.rejects(sbx.pause(), (e: unknown) => e instanceof SandboxError && /400: .*stdin: true/.test(e.message));
  assert.equal((await sbx.getInfo()).state, 'running');
  await h.kill();
  await eventually(async () => (await sbx.commands.list()).length === 0, 20_000);
  assert.equal(await sbx.pause(), true);
  assert.equal(await Sandbox.kill(sbx.sandboxId, opts), true, 'a paused sandbox can be killed');
  assert.ok(!(await ids('paused')).includes(sbx.sandboxId));
});

test('lifecycle onTimeout pause: paused at its deadline, then resumed by traffic with autoResume', { timeout: 300_000 }, async () => {
  const sbx = await create({ timeoutMs: 4_000, lifecycle: { onTimeout: 'pause', autoResume: true } });
  await sbx.files.write('/home/user/kept.txt', 'kept');
  assert.deepEqual((await sbx.getInfo()).lifecycle, { onTimeout: 'pause', autoResume: true });
  await eventually(async () => (await sbx.getInfo()).state === 'paused', 60_000);
  assert.equal((await sbx.commands.run('cat /home/user/kept.txt')).stdout, 'kept', 'the command resumed it');
  assert.equal((await sbx.getInfo()).state, 'running');
  await sbx.setTimeout(120_000);
});

test('what emberd cannot do is a 400: filesystem-only pauses and resumes', { timeout: 300_000 }, async () => {
  await assert.rejects(create({ lifecycle: { onTimeout: { action: 'pause', keepMemory: false } } }), /400: .*keepMemory/);
  const sbx = await create();
  await assert.rejects(sbx.pause({ keepMemory: false }), /400: .*keepMemory/);
  assert.equal(await sbx.pause(), true);
  await assert.rejects(Sandbox.connect(sbx.sandboxId, { ...opts, onResume: 'reboot' }), /400: .*onResume/);
  await sbx.connect();
  assert.equal((await sbx.commands.run('echo ok')).stdout, 'ok\n');
  await sbx.kill();
});

test('network options: denyOut emberd cannot express is a 400; the rest needs egress', { timeout: 300_000 }, async () => {
  await assert.rejects(create({ network: { denyOut: ['1.1.1.1'] } }), (e: unknown) => e instanceof SandboxError && /400: .*denyOut entry "1\.1\.1\.1"/.test(e.message));
  const why = egressUnavailable();
  if (why) {
    // this daemon gives no sandbox a network: EGRESS_UNAVAILABLE, said as such
    await assert.rejects(create({ allowInternetAccess: true }), /501: .*network/);
    return;
  }
  const sbx = await create({ network: { allowOut: ['198.51.100.2'], denyOut: [ALL_TRAFFIC] } });
  const info = await sbx.getInfo();
  assert.equal(info.allowInternetAccess, undefined);
  assert.deepEqual(info.network?.allowOut, ['198.51.100.2']);
  assert.deepEqual(info.network?.denyOut, [ALL_TRAFFIC]);
  assert.match((await sbx.commands.run('ls /sys/class/net')).stdout, /\beth0\b/, 'a network device, as emberd gives only with network');
  await sbx.kill();
});

test('getHost(port) names the port through the daemon: curl reaches a server started with commands.run', { timeout: 120_000 }, async () => {
  const sbx = await create();
  await sbx.commands.run('python3 -m http.server 8000 --bind 127.0.0.1 --directory /run/e2b', { background: true });
  const host = sbx.getHost(8000);
  assert.equal(host, `8000-${sbx.sandboxId}.localhost:${d.addr.split(':')[1]}`);
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  // curl resolves *.localhost to loopback itself; the server may take a moment to listen.
  let body = '';
  await eventually(async () => {
    const r = await promisify(execFile)('curl', ['-s', '--max-time', '20', `http://${host}/.E2B_SANDBOX_ID`]).catch(() => ({ stdout: '' }));
    body = r.stdout;
    return body.trim() === sbx.sandboxId;
  }, 60_000, 'the server in the sandbox answering through getHost');
  assert.equal(body.trim(), sbx.sandboxId);
  await sbx.kill();
});

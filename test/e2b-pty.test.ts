// E2B's sandbox.pty (the official `e2b` SDK) against a real daemon and a real VM: create with a
// size and onData, sendInput, resize, kill, and a shell's exit status. Pointed at the daemon, and
// its answers exempted from emberd's OpenAPI check, as in test/e2b-sdk.test.ts.
// First: it keeps the real fetch before daemon.ts checks the global one (see the helper).
import { startDaemon, eventually } from './helpers/e2b-fetch.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Sandbox, CommandExitError } from 'e2b';


type Daemon = Awaited<ReturnType<typeof startDaemon>>;
let d: Daemon;
let sbx: Sandbox;
const E2B_ANSWER = /^[A-Z]+ \/e2b\//;

before(async () => {
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  sbx = await Sandbox.create({ apiKey: 'e2b_0', apiUrl: `${d.url}/e2b`, sandboxUrl: `${d.url}/e2b/sbx` });
});

after(async () => {
  await sbx?.kill().catch(() => {});
  const file = `${d.runDir}.openapi-mismatches`;
  if (existsSync(file)) writeFileSync(file, readFileSync(file, 'utf8').split('\n').filter((l) => l && !E2B_ANSWER.test(l)).map((l) => `${l}\n`).join(''));
  await d?.stop();
});

/** A terminal's output as it arrives, and a wait for a pattern in what came after `from`. */
function collector() {
  const dec = new TextDecoder();
  const c = {
    out: '',
    onData: (b: Uint8Array) => { c.out += dec.decode(b, { stream: true }); },
    async until(re: RegExp, from = 0): Promise<RegExpMatchArray> {
      let m: RegExpMatchArray | null = null;
      await eventually(() => (m = c.out.slice(from).match(re)) !== null, 30_000, `${re} in ${JSON.stringify(c.out.slice(-500))}`);
      return m!;
    },
  };
  return c;
}
const keys = (s: string) => new TextEncoder().encode(s);

test('pty.create gives a login bash on a terminal of the asked size; sendInput, resize, connect, and exit status', async () => {
  const t = collector();
  const h = await sbx.pty.create({ cols: 100, rows: 30, onData: t.onData });
  assert.ok(h.pid > 0);
  let from = t.out.length;
  await sbx.pty.sendInput(h.pid, keys('echo "S=$(stty size) T=$(tty) E=$TERM"\n'));
  const m = await t.until(/S=(\d+ \d+) T=(\S+) E=(\S+)/, from);
  assert.deepEqual([m[1], m[3]], ['30 100', 'xterm-256color']);
  assert.match(m[2]!, /^\/dev\/pts\/\d+$/);

  await sbx.pty.resize(h.pid, { cols: 120, rows: 40 });
  from = t.out.length;
  await sbx.pty.sendInput(h.pid, keys('echo "R=$(stty size)"\n'));
  assert.equal((await t.until(/R=(\d+ \d+)/, from))[1], '40 120');

  assert.ok((await sbx.commands.list()).some((p) => p.pid === h.pid), 'a running pty is listed');
  // pty.connect: a second client follows the same terminal from now on.
  const t2 = collector();
  const h2 = await sbx.pty.connect(h.pid, { onData: t2.onData });
  await sbx.pty.sendInput(h.pid, keys('echo "C=$((40+2))"\n'));
  await t2.until(/C=42/);
  await h2.disconnect();
  await sbx.pty.sendInput(h.pid, keys('exit 5\n'));
  await assert.rejects(h.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === 5);
});

test('pty.kill ends the terminal (and answers false for one that is gone); Ctrl-C reaches the foreground job', async () => {
  const t = collector();
  const h = await sbx.pty.create({ cols: 80, rows: 24, onData: t.onData });
  await sbx.pty.sendInput(h.pid, keys('sleep 999\n'));
  await eventually(async () => (await sbx.commands.run('cat /proc/[0-9]*/cmdline | tr "\\0" " "')).stdout.includes('sleep 999'), 30_000, 'the sleep to run');
  const from = t.out.length;
  await sbx.pty.sendInput(h.pid, keys('\x03echo "rc=$?"\n'));
  assert.equal((await t.until(/rc=(\d+)/, from))[1], '130');

  assert.equal(await sbx.pty.kill(h.pid), true);
  await assert.rejects(h.wait());
  await eventually(async () => !(await sbx.commands.list()).some((p) => p.pid === h.pid), 30_000, 'the pty to leave the list');
  assert.equal(await sbx.pty.kill(h.pid), false);
});

test('resize of a process without a terminal is refused; commands still run on pipes', async () => {
  const h = await sbx.commands.run('sleep 30', { background: true });
  await assert.rejects(sbx.pty.resize(h.pid, { cols: 10, rows: 10 }), /no terminal/);
  await h.kill();
  const r = await sbx.commands.run('test -t 0 && echo tty || echo notty');
  assert.equal(r.stdout, 'notty\n');
});

// GET /sandboxes/{id}/pty on a real microVM: a login shell on a guest pseudo-terminal over a
// WebSocket (docs/api.md, "PTY"). One shell sandbox serves every case.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';

let d: TestDaemon;
let id: string;

before(async () => {
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  id = (await d.client.createSandbox({ language_pack: 'shell' })).id;
});
after(async () => {
  await d.client.deleteSandbox(id).catch(() => {});
  assert.equal(await d.stop(), 0, d.log());
});

/** A terminal client: everything the server sent, and waits on it (no sleeps). */
class Term {
  readonly ws: WebSocket;
  out = '';
  controls: any[] = [];
  readonly closed: Promise<number>;
  private waiters: (() => void)[] = [];

  constructor(query = '', sandbox = id) {
    this.ws = new WebSocket(`${d.url.replace(/^http/, 'ws')}/sandboxes/${sandbox}/pty${query}`);
    this.ws.on('message', (data: Buffer, binary: boolean) => {
      if (binary) this.out += data.toString('utf8');
      else this.controls.push(JSON.parse(data.toString('utf8')));
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((r) => this.ws.on('close', (code) => { r(code); for (const w of this.waiters.splice(0)) w(); }));
  }

  opened(): Promise<void> {
    return new Promise((res, rej) => { this.ws.once('open', () => res()); this.ws.once('error', rej); });
  }

  type(s: string): void {
    this.ws.send(Buffer.from(s), { binary: true });
  }

  /** Resolves once the output (from `from` on) matches; rejects after `ms`. */
  async until(re: RegExp, from = 0, ms = 30_000): Promise<RegExpMatchArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = this.out.slice(from).match(re);
      if (m) return m;
      if (Date.now() > end || this.ws.readyState === WebSocket.CLOSED) throw new Error(`no ${re} in the terminal's output: ${JSON.stringify(this.out.slice(-2000))}`);
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, end - Date.now()).unref(); });
    }
  }

  /** Runs a command line and returns what it printed between two markers. */
  async run(cmd: string): Promise<string> {
    const tag = Math.random().toString(36).slice(2, 8);
    const from = this.out.length;
    // The markers are printed by the shell ('B''EGIN' is not itself in the echoed input).
    this.type(`echo B''EGIN${tag}; ${cmd}; echo E''ND${tag}\r`);
    const m = await this.until(new RegExp(`BEGIN${tag}\\r?\\n([\\s\\S]*?)END${tag}`), from);
    return m[1]!.replace(/\r/g, '');
  }
}

const exec = (argv: string[]) => http(d, 'POST', `/sandboxes/${id}/exec`, JSON.stringify({ argv }), { 'content-type': 'application/json' });
/** Command lines of the guest's processes matching `re` (the exec listing them never matches). */
async function guestProcesses(re: RegExp): Promise<string[]> {
  const r = await exec(['sh', '-c', 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < $f 2>/dev/null; echo; done']);
  return (r.json.stdout as string).split('\n').filter((l) => re.test(l));
}

test('the shell runs on a /dev/pts terminal with the asked size, TERM set, and follows a resize', async () => {
  const t = new Term('?rows=30&cols=100');
  await t.opened();
  assert.match(await t.run('tty'), /^\/dev\/pts\/\d+\n$/);
  assert.equal(await t.run('stty size'), '30 100\n');
  assert.equal(await t.run('echo $TERM'), 'xterm-256color\n');
  t.ws.send(JSON.stringify({ type: 'resize', rows: 40, cols: 120 }));
  assert.equal(await t.run('stty size'), '40 120\n');
  t.ws.close();
  await t.closed;
});

test('typed input reaches the shell and its echo comes back; exit 3 ends the socket with exit_code 3', async () => {
  const t = new Term();
  await t.opened();
  const from = t.out.length;
  t.type('echo hel""lo\r');
  await t.until(/echo hel""lo/, from); // the terminal's echo of the keystrokes
  await t.until(/\nhello\r?\n/, from); // the command's output
  t.type('exit 3\r');
  assert.equal(await t.closed, 1000);
  assert.deepEqual(t.controls.filter((c) => c.type === 'exit'), [{ type: 'exit', exit_code: 3, signal: 0 }]);
});

test('Ctrl-C interrupts the foreground sleep and the shell carries on', async () => {
  const t = new Term();
  await t.opened();
  await t.run('true');
  t.type('sleep 4321\r');
  await eventually(async () => (await guestProcesses(/^sleep 4321/)).length === 1, 20_000, 'the sleep to start');
  const from = t.out.length;
  t.type('\x03');
  t.type('echo rc=$?\r');
  assert.equal((await t.until(/rc=(\d+)/, from))[1], '130');
  assert.deepEqual(await guestProcesses(/^sleep 4321/), []);
  t.ws.close();
  await t.closed;
});

test('closing the socket kills the terminal session, background jobs included', async () => {
  const t = new Term();
  await t.opened();
  await t.run('sleep 5551 & sleep 5552 & true');
  t.type('sleep 5553\r');
  await eventually(async () => (await guestProcesses(/^sleep 555[123]/)).length === 3, 20_000, 'three sleeps to run');
  t.ws.close();
  await t.closed;
  await eventually(async () => (await guestProcesses(/^sleep 555[123]/)).length === 0, 20_000, 'no sleep left in the guest');
});

test('a cmd runs instead of the login shell; text control that is not a resize is answered with an error', async () => {
  const t = new Term(`?cmd=${encodeURIComponent('read line; echo got:$line; exit 7')}`);
  await t.opened();
  t.ws.send('{"type":"resize","rows":0,"cols":5}');
  t.ws.send('not json');
  await eventually(() => t.controls.length >= 2, 20_000, 'two error answers');
  assert.deepEqual(t.controls.map((c) => [c.type, c.code]), [['error', 'INVALID_REQUEST'], ['error', 'INVALID_JSON']]);
  t.type('abc\r');
  await t.until(/got:abc/);
  assert.equal(await t.closed, 1000);
  assert.equal(t.controls.at(-1).exit_code, 7);
});

test('a command that exits at once leaves all of its output first, past several credit windows', async () => {
  const t = new Term(`?cmd=${encodeURIComponent('seq 1 100000')}`);
  await t.opened();
  assert.equal(await t.closed, 1000);
  const lines = t.out.split('\r\n').filter(Boolean);
  assert.equal(lines.length, 100000);
  assert.equal(lines.at(-1), '100000');
  assert.equal(t.controls.at(-1).exit_code, 0);
});

/** The HTTP answer a WebSocket client gets when the upgrade is refused. */
function refused(url: string): Promise<{ status: number; body: any }> {
  return new Promise((res, rej) => {
    const ws = new WebSocket(url);
    ws.on('open', () => { ws.close(); rej(new Error('the upgrade was accepted')); });
    ws.on('error', () => {});
    ws.on('unexpected-response', (_req, r) => {
      let text = '';
      r.on('data', (c: Buffer) => { text += c; });
      r.on('end', () => res({ status: r.statusCode!, body: JSON.parse(text) }));
    });
  });
}

test('errors come before the upgrade, as JSON with a code: bad id 404, bad size 400, plain GET 400', async () => {
  const ws = d.url.replace(/^http/, 'ws');
  const missing = await refused(`${ws}/sandboxes/sb_doesnotexist/pty`);
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, 'SANDBOX_NOT_FOUND');
  const bad = await refused(`${ws}/sandboxes/${id}/pty?rows=0`);
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, 'INVALID_REQUEST');
  assert.match(bad.body.error.message, /rows/);
  const plain = await http(d, 'GET', `/sandboxes/${id}/pty`);
  assert.equal(plain.status, 400);
  assert.match(plain.json.error.message, /WebSocket/);
});

// ---- emberctl shell ----

const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

function run(cmd: string, args: string[], input: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { env: { ...process.env, EMBERD_ADDR: d.addr } });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => { out += b; });
    p.stderr.on('data', (b: Buffer) => { err += b; });
    p.on('close', (code) => resolve({ code, out, err }));
    p.stdin.end(input);
  });
}

test('emberctl shell: piped keystrokes reach the shell, its status is the exit status; a bad id is the API error', async () => {
  const r = await run(process.execPath, [CLI, 'shell', id], 'echo "sh-$((6*7))"; exit 4\n');
  assert.equal(r.code, 4, r.err);
  assert.match(r.out, /\nsh-42\r?\n/);
  const bad = await run(process.execPath, [CLI, 'shell', 'sb_doesnotexist'], '');
  assert.equal(bad.code, 1);
  assert.match(bad.err, /SANDBOX_NOT_FOUND/);
});

test('emberctl shell on a real terminal (script(1)): the terminal\'s size becomes the sandbox\'s', async () => {
  // script gives emberctl a pty of its own, sized 33x99 before emberctl starts.
  const inner = `stty rows 33 cols 99; exec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} shell ${id}`;
  const r = await run('script', ['-qec', inner, '/dev/null'], 'echo "S=$(stty size)"; exit 6\n');
  assert.equal(r.code, 6, r.out + r.err);
  assert.match(r.out, /S=33 99/);
});

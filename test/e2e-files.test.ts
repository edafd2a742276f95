// Files in and out of real microVMs over HTTP (docs/api.md, "Files"). One daemon and one python
// sandbox serve most cases (they only add files under their own directories); a second daemon with
// a 1 MiB --max-upload and one shell sandbox covers the size limit, and one test VM drives
// SandboxFiles directly where a case needs the host side's buffers exactly. Data is streamed and
// hashed on the fly: no test holds a large transfer in memory. Nothing waits a fixed time: each
// case waits for the event it needs, seen in the guest.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { chmodSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { EmberdApiError } from '../src/sdk/client.ts';
import { SandboxFiles } from '../src/sandbox/files.ts';
import { startDaemon, http, eventually, type TestDaemon } from './helpers/daemon.ts';
import { bootTestVm, type TestVm } from './helpers/vm.ts';
import { rssKib } from './helpers/procs.ts';

const MiB = 1024 * 1024;
/** No golden snapshot builds or warm-pool VMs: exactly one boot per daemon (two cores are shared). */
const NO_EXTRA_VMS = ['--snapshots', 'off', '--pool-size', '0'];
const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
let d: TestDaemon;
let id: string;
const tmp = mkdtempSync(join(tmpdir(), 'emberd-files-'));

/** A daemon with one sandbox of `pack`. */
async function daemonWithSandbox(args: string[], pack: string): Promise<{ daemon: TestDaemon; sandbox: string }> {
  const daemon = await startDaemon(args);
  const r = await http(daemon, 'POST', '/sandboxes', JSON.stringify({ language_pack: pack }));
  assert.equal(r.status, 201, r.text);
  return { daemon, sandbox: r.json.id };
}

/** Deletes the sandbox and stops the daemon, which must exit 0; nothing if it never started. */
async function stopDaemon(t: TestDaemon | undefined, sb: string | undefined): Promise<void> {
  if (!t) return; // it did not start: before() reported why
  if (sb) await http(t, 'DELETE', `/sandboxes/${sb}`).catch(() => {});
  assert.equal(await t.stop(), 0, `daemon exit code; log:\n${t.log()}`);
}

before(async () => {
  ({ daemon: d, sandbox: id } = await daemonWithSandbox(NO_EXTRA_VMS, 'python'));
});
after(async () => {
  rmSync(tmp, { recursive: true, force: true });
  await stopDaemon(d, id);
});

// ---- helpers -----------------------------------------------------------------------------------

const q = (path: string, extra = '') => `?path=${encodeURIComponent(path)}${extra}`;

/** PUT with a streamed body (a Readable: chunked) or a Buffer (with Content-Length). */
function put(t: TestDaemon, sb: string, query: string, body: Readable | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; json: any; text: string }> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = request(`${t.url}/sandboxes/${sb}/files${query}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', ...(Buffer.isBuffer(body) ? { 'content-length': String(body.length) } : {}), ...headers },
    }, (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => { text += s; });
      res.on('end', () => {
        let json: any;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode!, json, text });
      });
    });
    // A server that answers early (413) and closes may make the rest of our body fail to send.
    req.on('error', (e) => { if (!answered) reject(e); });
    if (Buffer.isBuffer(body)) req.end(body);
    else body.pipe(req).on('error', () => {});
  });
}

function get(t: TestDaemon, sb: string, path: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    request(`${t.url}/sandboxes/${sb}/files${path}`, resolve).on('error', reject).end();
  });
}

async function sha256(stream: AsyncIterable<Buffer>): Promise<{ hash: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const b of stream) { h.update(b); size += b.length; }
  return { hash: h.digest('hex'), size };
}

/** n pseudo-random bytes in 64 KiB chunks, hashed into `h` as they are produced. */
function randomSource(n: number, h: Hash): Readable {
  let left = n;
  return new Readable({
    read() {
      if (left <= 0) { this.push(null); return; }
      const b = randomBytes(Math.min(64 * 1024, left));
      left -= b.length;
      h.update(b);
      this.push(b);
    },
  });
}

async function exec(t: TestDaemon, sb: string, body: object) {
  const r = await http(t, 'POST', `/sandboxes/${sb}/exec`, JSON.stringify(body), { 'content-type': 'application/json' });
  assert.equal(r.status, 200, r.text);
  return r.json as { stdout: string; stderr: string; exit_code: number };
}

async function list(t: TestDaemon, sb: string, dir: string): Promise<any[]> {
  const r = await http(t, 'GET', `/sandboxes/${sb}/files/list${q(dir)}`);
  assert.equal(r.status, 200, r.text);
  return r.json.entries;
}

function expectError(r: { status: number; json: any; text: string }, status: number, code: string): void {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json?.error?.code, code, r.text);
  assert.ok(r.json.error.message.length > 10);
}

/** The largest buffer the host's TCP autotuning may give a socket (the third field of the sysctl). */
function tcpBufferMax(which: 'tcp_rmem' | 'tcp_wmem'): number {
  return Number(readFileSync(`/proc/sys/net/ipv4/${which}`, 'utf8').trim().split(/\s+/)[2]);
}

/** The state of the guest's `cat -- <file>`: blocked writing to its full pipe, and its read offset. */
type Held = { blocked: boolean; pos: number };

const CAT_STATE = `for p in $(pidof cat); do
  case "$(tr '\\0' ' ' < /proc/$p/cmdline)" in *" -- $1 "*) ;; *) continue;; esac
  for f in /proc/$p/fd/*; do
    [ "$(readlink "$f")" = "$1" ] && echo "$(cat /proc/$p/wchan) $(grep '^pos:' /proc/$p/fdinfo/\${f##*/})"
  done
done`;

/**
 * Waits until the guest's `cat -- <file>` is held back: blocked in write, with the same read offset
 * in two samples in a row. Each sample is an exec the agent serves, so an agent with credit would
 * have read the pipe meanwhile: the same offset twice means it had none. Fails if cat ends first.
 */
async function waitUntilHeld(t: TestDaemon, sb: string, file: string): Promise<Held> {
  let last: Held | undefined;
  let now: Held | undefined;
  await eventually(async () => {
    const out = (await exec(t, sb, { argv: ['sh', '-c', CAT_STATE, 'sh', file] })).stdout.trim();
    const m = /^(\S+) pos:\s+(\d+)$/.exec(out);
    assert.ok(m, `cat of ${file} is gone (it read the whole file while its reader was paused) or unreadable: ${JSON.stringify(out)}`);
    [last, now] = [now, { blocked: m[1] === 'pipe_wait_writable', pos: Number(m[2]) }];
    return !!last && last.blocked && now.blocked && last.pos === now.pos;
  }, 120_000, `cat of ${file} held back while its reader is paused`);
  return now!;
}

// ---- cases -------------------------------------------------------------------------------------

describe('upload and download', () => {
  test('a random binary file round-trips byte for byte (sha256 on both ends)', async () => {
    const data = randomBytes(1_234_567);
    const want = createHash('sha256').update(data).digest('hex');
    const up = await put(d, id, q('/root/rt/blob.bin'), data);
    assert.equal(up.status, 201, up.text);
    assert.deepEqual(up.json, { path: '/root/rt/blob.bin', size: data.length });
    // Checked inside the guest, independently of the download path...
    const inGuest = await exec(d, id, { argv: ['sha256sum', '/root/rt/blob.bin'] });
    assert.equal(inGuest.stdout.split(' ')[0], want);
    // ...and through the download path.
    const res = await get(d, id, q('/root/rt/blob.bin'));
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.deepEqual(await sha256(res), { hash: want, size: data.length });
  });

  test('an empty body makes an empty file; an upload replaces a file atomically and keeps its mode', async () => {
    const empty = await http(d, 'PUT', `/sandboxes/${id}/files${q('/root/rt/empty')}`);
    assert.equal(empty.status, 201, empty.text);
    assert.equal(empty.json.size, 0);
    const res = await get(d, id, q('/root/rt/empty'));
    assert.equal(res.statusCode, 200);
    assert.deepEqual(await sha256(res), { hash: createHash('sha256').digest('hex'), size: 0 });

    assert.equal((await put(d, id, q('/root/rt/keep', '&mode=0640'), Buffer.from('one'))).status, 201);
    assert.equal((await put(d, id, q('/root/rt/keep'), Buffer.from('two two'))).status, 201);
    const st = await http(d, 'GET', `/sandboxes/${id}/files/stat${q('/root/rt/keep')}`);
    assert.equal(st.json.mode, '0640');
    assert.equal(st.json.size, 7);
    assert.equal((await exec(d, id, { argv: ['cat', '/root/rt/keep'] })).stdout, 'two two');
  });

  test('100 MiB each way, streamed, sha256-checked; a paused reader holds the guest back, not daemon memory', async (t) => {
    const n = 100 * MiB;
    const file = '/root/big/100m.bin';
    const h = createHash('sha256');
    let t0 = performance.now();
    const up = await put(d, id, q(file), randomSource(n, h));
    const upS = (performance.now() - t0) / 1000;
    assert.equal(up.status, 201, up.text);
    assert.equal(up.json.size, n);
    const want = h.digest('hex');

    // Everything between the guest's cat and this client that may legitimately hold bytes: the
    // agent's pipe, the credit in flight plus the stream buffer in the daemon, the loopback
    // socket's buffers at their largest, and 1 MiB for Node's stream buffers on both ends.
    const mostInBetween = 256 * 1024 + 2 * MiB + tcpBufferMax('tcp_rmem') + tcpBufferMax('tcp_wmem') + MiB;
    const pauseAt = 4 * MiB;
    assert.ok(pauseAt + mostInBetween < n, `the file must be larger than what the path can buffer (${mostInBetween} bytes) for the check to mean anything`);

    const rss0 = rssKib(d.proc.pid!);
    t0 = performance.now();
    const res = await get(d, id, q(file));
    assert.equal(res.statusCode, 200);
    const hd = createHash('sha256');
    let got = 0;
    let pausedMs = 0;
    let held: Held | undefined;
    let grewKiB = 0;
    for await (const b of res as AsyncIterable<Buffer>) {
      hd.update(b);
      got += b.length;
      if (!held && got >= pauseAt) {
        // Stop reading until the guest's cat is held back: with end-to-end flow control it ends up
        // blocked in write with the agent out of credit; without it, it would read on to the end
        // of the file and the daemon would hold the rest.
        const p0 = performance.now();
        held = await waitUntilHeld(d, id, file);
        pausedMs = performance.now() - p0;
        grewKiB = rssKib(d.proc.pid!) - rss0;
      }
    }
    const downS = (performance.now() - t0 - pausedMs) / 1000;
    assert.equal(got, n);
    assert.equal(hd.digest('hex'), want);
    // Every byte the daemon could have buffered has left cat: cat's read offset bounds it.
    const ahead = held!.pos - pauseAt;
    assert.ok(ahead < mostInBetween, `cat read ${ahead} bytes beyond what the paused client had taken (at most ${mostInBetween} may be in between)`);
    t.diagnostic(`100 MiB: upload ${(100 / upS).toFixed(1)} MiB/s, download ${(100 / downS).toFixed(1)} MiB/s (excluding the pause); paused client: cat held ${(ahead / MiB).toFixed(1)} MiB ahead (bound ${(mostInBetween / MiB).toFixed(1)}), daemon RSS ${grewKiB >= 0 ? '+' : ''}${(grewKiB / 1024).toFixed(1)} MiB`);
    const del = await http(d, 'DELETE', `/sandboxes/${id}/files${q('/root/big', '&recursive=true')}`);
    assert.equal(del.status, 204, del.text);
  });

  test('a client that leaves a download ends the guest process, before or after the first byte', async () => {
    await exec(d, id, { argv: ['mkfifo', '/root/never.fifo'] });
    const running = async (what: string) => (await exec(d, id, { argv: ['ps', '-o', 'args'] })).stdout.includes(what);
    // No writer ever opens the FIFO: the download waits for its first byte until the client leaves.
    const waiting = request(`${d.url}/sandboxes/${id}/files${q('/root/never.fifo')}`);
    waiting.on('error', () => {});
    waiting.end();
    await eventually(() => running('cat -- /root/never.fifo'), 10_000, 'cat of the FIFO running');
    waiting.destroy();
    await eventually(async () => !(await running('cat -- /root/never.fifo')), 10_000, 'cat of the FIFO killed');
    // An endless file: read a little, then hang up.
    const res = await get(d, id, q('/dev/zero'));
    assert.equal(res.statusCode, 200);
    let n = 0;
    for await (const b of res as AsyncIterable<Buffer>) { n += b.length; if (n > MiB) break; }
    await eventually(async () => !(await running('cat -- /dev/zero')), 10_000, 'cat of /dev/zero killed');
  });

  test('a client that aborts an upload leaves no file, partial or temporary', async () => {
    const listing = () => http(d, 'GET', `/sandboxes/${id}/files/list${q('/root/abort')}`);
    const req = request(`${d.url}/sandboxes/${id}/files${q('/root/abort/f.bin')}`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' } });
    req.on('error', () => {});
    req.write(randomBytes(2 * MiB));
    // Hang up only once the upload is under way in the guest: its temporary file holds bytes.
    await eventually(async () => {
      const r = await listing();
      return r.status === 200 && r.json.entries.some((e: any) => e.name.startsWith('.emberd-upload-') && e.size > 0);
    }, 60_000, 'the upload\'s temporary file in /root/abort, with bytes in it');
    req.destroy();
    await eventually(async () => {
      const r = await listing();
      return r.status === 200 && r.json.entries.length === 0;
    }, 10_000, 'no file left in /root/abort');
  });
});

// Issue 9, item 1: output is never lost when the writer dies. A download is `exec cat`, a tar read
// `exec tar`: the tool exits right after its last write, while the tail may still sit in the pipe
// to the guest agent. The agent must drain what the leader left in the pipe before it reports EXIT.
describe('output loss when the guest tool exits right after writing', () => {
  /** Uploads `n` random bytes to `path`; returns their sha256. */
  async function seed(path: string, n: number): Promise<string> {
    const data = randomBytes(n);
    assert.equal((await put(d, id, q(path), data)).status, 201);
    return createHash('sha256').update(data).digest('hex');
  }

  /** Downloads `query` `runs` times; every run must be exactly `want`. */
  async function downloadRepeatedly(query: string, want: { hash: string; size: number }, runs: number): Promise<void> {
    for (let run = 1; run <= runs; run++) {
      const res = await get(d, id, query);
      assert.equal(res.statusCode, 200, `run ${run}`);
      assert.deepEqual(await sha256(res), want, `run ${run} of ${runs}: the download is not the file`);
    }
  }

  test('download output loss: a 200,000-byte file arrives whole and byte-identical, 50 runs in a row', async () => {
    const hash = await seed('/root/loss/200k.bin', 200_000);
    await downloadRepeatedly(q('/root/loss/200k.bin'), { hash, size: 200_000 }, 50);
  });

  test('download output loss: sizes that are no multiple of the pipe size (1 B, 64 KiB + 1, 256 KiB + 1) arrive whole, 50 runs each', async () => {
    // The agent's pipes hold 256 KiB (PIPE_SIZE in guest/src/exec.c); the default is 64 KiB.
    for (const n of [1, 64 * 1024 + 1, 256 * 1024 + 1]) {
      const hash = await seed(`/root/loss/${n}.bin`, n);
      await downloadRepeatedly(q(`/root/loss/${n}.bin`), { hash, size: n }, 50);
    }
  });

  test('tar download output loss: a directory read as tar arrives whole (the same bytes as tar in the guest), 50 runs in a row', async () => {
    await seed('/root/losstar/a.bin', 200_000);
    await seed('/root/losstar/sub/b.bin', 70_001);
    // busybox tar of an unchanged directory is deterministic: the guest's own hash of it is the truth.
    const inGuest = await exec(d, id, { argv: ['sh', '-c', 'cd /root/losstar && tar -c -f - . | sha256sum && tar -c -f - . | wc -c'] });
    const [hashLine, sizeLine] = inGuest.stdout.trim().split('\n');
    const want = { hash: hashLine!.split(' ')[0]!, size: Number(sizeLine) };
    assert.ok(want.size > 270_001, inGuest.stdout);
    await downloadRepeatedly(q('/root/losstar', '&format=tar'), want, 50);
  });

  describe('the tail is still in the guest, without credit, when cat exits (SandboxFiles on a VM of its own)', () => {
    let vm: TestVm;
    let files: SandboxFiles;
    before(async () => {
      vm = await bootTestVm('shell');
      files = new SandboxFiles(vm.agent, { timeoutMs: 60_000, transferTimeoutMs: 600_000, outputCap: 1 << 20 });
    });
    after(async () => { await vm?.stop(); });

    test('download output loss without credit: a 2 MiB + 100,000-byte file whose reader waits until cat exited arrives whole, 10 runs', async (t) => {
      // An unread download takes 1 MiB of credit in flight plus up to 1 MiB of stream buffer (less
      // the last frame) on the host; the agent's pipe holds 256 KiB. So cat can write all of this
      // file and exit, and at least 100,000 bytes are still in its pipe with no credit left: they
      // must follow once the reader reads.
      const n = 2 * MiB + 100_000;
      const data = randomBytes(n);
      const want = createHash('sha256').update(data).digest('hex');
      assert.deepEqual(await files.writeFile('/root/nocredit.bin', Readable.from([data]), { maxBytes: n }), { path: '/root/nocredit.bin', size: n });
      const catRunning = async () => (await vm.agent.run({ argv: ['ps', '-o', 'args'], timeoutMs: 10_000 })).stdout.toString().includes('cat -- /root/nocredit.bin');
      const onHost: number[] = [];
      for (let run = 1; run <= 10; run++) {
        const stream = await files.readFile('/root/nocredit.bin');
        await eventually(async () => !(await catRunning()), 60_000, `run ${run}: cat exited while its reader waited`);
        onHost.push(stream.readableLength);
        assert.ok(stream.readableLength <= n - 100_000, `run ${run}: ${stream.readableLength} bytes on the host before anything was read`);
        assert.deepEqual(await sha256(stream), { hash: want, size: n }, `run ${run}: the download is not the file`);
      }
      t.diagnostic(`on the host when cat exited: ${Math.min(...onHost)}..${Math.max(...onHost)} of ${n} bytes`);
    });
  });
});

describe('metadata', () => {
  test('parent directories are created and mode is honoured (an uploaded 0755 script runs)', async () => {
    const up = await put(d, id, q('/root/p/q/r/run.sh', '&mode=0755'), Buffer.from('#!/bin/sh\necho ran "$1"\n'));
    assert.equal(up.status, 201, up.text);
    const r = await exec(d, id, { argv: ['/root/p/q/r/run.sh', 'ok'] });
    assert.equal(r.stdout, 'ran ok\n');
    const plain = await put(d, id, q('/root/p/plain.txt'), Buffer.from('x'));
    assert.equal(plain.status, 201);
    const st = (path: string) => http(d, 'GET', `/sandboxes/${id}/files/stat${q(path)}`);
    assert.equal((await st('/root/p/q/r/run.sh')).json.mode, '0755');
    assert.equal((await st('/root/p/plain.txt')).json.mode, '0644');
    assert.equal((await st('/root/p/q')).json.type, 'dir');
    const bad = await put(d, id, q('/root/p/bad', '&mode=999'), Buffer.from('x'));
    expectError(bad, 400, 'INVALID_REQUEST');
  });

  test('stat and list: names (spaces, newlines, dotfiles), types, sizes, modes, mtimes', async () => {
    const t0 = Date.now();
    await put(d, id, q('/root/ls/with space.txt', '&mode=0600'), Buffer.from('12345'));
    await put(d, id, q('/root/ls/.hidden'), Buffer.from(''));
    await put(d, id, q('/root/ls/line\nbreak'), Buffer.from('ab'));
    await put(d, id, q('/root/ls/-dash'), Buffer.from('abc'));
    await exec(d, id, { argv: ['sh', '-c', 'mkdir /root/ls/sub && ln -s "with space.txt" /root/ls/link && mkfifo /root/ls/fifo'] });

    const entries = await list(d, id, '/root/ls');
    const by = Object.fromEntries(entries.map((e) => [e.name, e]));
    assert.deepEqual(entries.map((e) => e.name), ['-dash', '.hidden', 'fifo', 'line\nbreak', 'link', 'sub', 'with space.txt']);
    assert.deepEqual(
      Object.fromEntries(entries.map((e) => [e.name, [e.type, e.path]])),
      {
        '-dash': ['file', '/root/ls/-dash'], '.hidden': ['file', '/root/ls/.hidden'], fifo: ['other', '/root/ls/fifo'],
        'line\nbreak': ['file', '/root/ls/line\nbreak'], link: ['symlink', '/root/ls/link'], sub: ['dir', '/root/ls/sub'],
        'with space.txt': ['file', '/root/ls/with space.txt'],
      },
    );
    assert.equal(by['with space.txt'].size, 5);
    assert.equal(by['with space.txt'].mode, '0600');
    assert.equal(by['line\nbreak'].size, 2);
    assert.equal(by['.hidden'].size, 0);
    assert.equal(by.link.size, 'with space.txt'.length);
    for (const e of entries) {
      assert.match(e.mode, /^[0-7]{4}$/);
      const m = Date.parse(e.mtime);
      assert.ok(Math.abs(m - t0) < 120_000, `${e.name}: mtime ${e.mtime} is far from the host clock ${new Date(t0).toISOString()}`);
      assert.equal(new Date(m).toISOString(), e.mtime);
    }
    const st = await http(d, 'GET', `/sandboxes/${id}/files/stat${q('/root/ls/with space.txt')}`);
    assert.equal(st.status, 200, st.text);
    assert.deepEqual(st.json, by['with space.txt']);
    const root = await http(d, 'GET', `/sandboxes/${id}/files/stat${q('/')}`);
    assert.equal(root.json.type, 'dir');
    assert.equal(root.json.name, '/');
    assert.deepEqual(await list(d, id, '/root/ls/sub'), []);
  });

  test('paths are normalized inside the sandbox: .. cannot climb above /', async () => {
    await put(d, id, q('/root/norm/../norm2/./a'), Buffer.from('n'));
    const st = await http(d, 'GET', `/sandboxes/${id}/files/stat${q('/../../..//root/norm2/a/')}`);
    assert.equal(st.status, 200, st.text);
    assert.equal(st.json.path, '/root/norm2/a');
    const host = await get(d, id, q('/../../../../etc/../etc/hostname'));
    assert.equal(host.statusCode, 200);
    const chunks: Buffer[] = [];
    for await (const b of host as AsyncIterable<Buffer>) chunks.push(b);
    const name = Buffer.concat(chunks).toString().trim();
    assert.equal(name, (await exec(d, id, { argv: ['cat', '/etc/hostname'] })).stdout.trim());
  });

  test('delete: a file, an empty directory, a tree with recursive=true; a non-empty one without is 409', async () => {
    await put(d, id, q('/root/del/tree/a/b.txt'), Buffer.from('b'));
    await put(d, id, q('/root/del/file'), Buffer.from('f'));
    await exec(d, id, { argv: ['mkdir', '/root/del/emptydir'] });
    const del = (path: string, extra = '') => http(d, 'DELETE', `/sandboxes/${id}/files${q(path, extra)}`);
    assert.equal((await del('/root/del/file')).status, 204);
    assert.equal((await del('/root/del/emptydir')).status, 204);
    expectError(await del('/root/del/tree'), 409, 'DIRECTORY_NOT_EMPTY');
    assert.match((await del('/root/del/tree')).json.error.message, /recursive=true/);
    assert.equal((await del('/root/del/tree', '&recursive=true')).status, 204);
    assert.deepEqual(await list(d, id, '/root/del'), []);
    expectError(await del('/root/del/file'), 404, 'FILE_NOT_FOUND');
    expectError(await del('/', '&recursive=true'), 400, 'INVALID_PATH');
  });
});

describe('errors', () => {
  test('a missing path is 404 FILE_NOT_FOUND for download, stat, list and delete', async () => {
    for (const [method, path] of [['GET', '/files'], ['GET', '/files/stat'], ['GET', '/files/list'], ['DELETE', '/files']]) {
      expectError(await http(d, method!, `/sandboxes/${id}${path}${q('/root/no/such/thing')}`), 404, 'FILE_NOT_FOUND');
    }
  });

  test('file-vs-directory mix-ups are 400 with a code that says which', async () => {
    await put(d, id, q('/root/mix/file'), Buffer.from('x'));
    expectError(await http(d, 'GET', `/sandboxes/${id}/files${q('/root/mix')}`), 400, 'IS_A_DIRECTORY');
    expectError(await put(d, id, q('/root/mix'), Buffer.from('x')), 400, 'IS_A_DIRECTORY');
    expectError(await put(d, id, q('/root/mix/file/below'), Buffer.from('x')), 400, 'NOT_A_DIRECTORY');
    expectError(await put(d, id, q('/root/mix/file/deeper/below'), Buffer.from('x')), 400, 'NOT_A_DIRECTORY');
    expectError(await http(d, 'GET', `/sandboxes/${id}/files/list${q('/root/mix/file')}`), 400, 'NOT_A_DIRECTORY');
    expectError(await http(d, 'GET', `/sandboxes/${id}/files${q('/root/mix/file', '&format=tar')}`), 400, 'NOT_A_DIRECTORY');
    expectError(await put(d, id, q('/root/mix/file', '&format=tar'), Buffer.alloc(1024)), 400, 'NOT_A_DIRECTORY');
    // nothing was created by the failed uploads
    assert.deepEqual((await list(d, id, '/root/mix')).map((e) => e.name), ['file']);
  });

  test('relative, empty, missing and NUL-containing paths are 400 INVALID_PATH; unknown parameters 400', async () => {
    for (const query of ['?path=root/x', '?path=', '', '?path=%2Froot%2Fa%00b', '?path=.']) {
      expectError(await http(d, 'GET', `/sandboxes/${id}/files/stat${query}`), 400, 'INVALID_PATH');
      expectError(await put(d, id, query, Buffer.from('x')), 400, 'INVALID_PATH');
    }
    expectError(await http(d, 'GET', `/sandboxes/${id}/files${q('/x', '&format=zip')}`), 400, 'INVALID_REQUEST');
    expectError(await http(d, 'GET', `/sandboxes/${id}/files/stat${q('/x', '&recursive=true')}`), 400, 'INVALID_REQUEST');
    expectError(await http(d, 'GET', `/sandboxes/sb_aaaaaaaaaaaaaaaaaaaa/files/stat${q('/x')}`), 404, 'SANDBOX_NOT_FOUND');
    expectError(await put(d, 'sb_NOPE', q('/x'), Buffer.from('x')), 404, 'SANDBOX_NOT_FOUND'); // not even shaped like an id: still no sandbox (docs/api.md)
  });
});

test('a full filesystem is 507 NO_SPACE and leaves no partial file; an over-long name is INVALID_PATH', async () => {
  const m = await exec(d, id, { argv: ['sh', '-c', 'mkdir -p /mnt/tiny && mount -t tmpfs -o size=1m tmpfs /mnt/tiny'] });
  assert.equal(m.exit_code, 0, m.stderr);
  expectError(await put(d, id, q('/mnt/tiny/f.bin'), randomSource(3 * MiB, createHash('sha256'))), 507, 'NO_SPACE');
  assert.deepEqual(await list(d, id, '/mnt/tiny'), []);
  expectError(await put(d, id, q(`/root/${'n'.repeat(300)}`), Buffer.from('x')), 400, 'INVALID_PATH');
  expectError(await put(d, id, q('/proc/not-here'), Buffer.from('x')), 403, 'PERMISSION_DENIED');
});

describe('directories as tar streams', () => {
  test('a tar built on the host extracts into the sandbox and comes back with the same contents', async () => {
    const src = join(tmp, 'src');
    mkdirSync(join(src, 'sub dir', 'nested'), { recursive: true });
    mkdirSync(join(src, 'empty'));
    writeFileSync(join(src, 'a.txt'), 'alpha\n');
    writeFileSync(join(src, 'bin.dat'), randomBytes(300_000));
    writeFileSync(join(src, 'sub dir', 'nested', 'deep.txt'), 'deep\n');
    writeFileSync(join(src, 'run.sh'), '#!/bin/sh\necho tar-ran\n');
    chmodSync(join(src, 'run.sh'), 0o755);
    const tarFile = join(tmp, 'src.tar');
    const mk = spawnSync('tar', ['-c', '-f', tarFile, '--format=ustar', '-C', src, '.']);
    assert.equal(mk.status, 0, mk.stderr.toString());

    const up = await put(d, id, q('/root/proj', '&format=tar'), readFileSync(tarFile), { 'content-type': 'application/x-tar' });
    assert.equal(up.status, 201, up.text);
    assert.deepEqual(up.json, { path: '/root/proj', size: statSync(tarFile).size });
    assert.deepEqual((await list(d, id, '/root/proj')).map((e) => `${e.name}:${e.type}`), ['a.txt:file', 'bin.dat:file', 'empty:dir', 'run.sh:file', 'sub dir:dir']);
    assert.equal((await exec(d, id, { argv: ['/root/proj/run.sh'] })).stdout, 'tar-ran\n');

    const res = await get(d, id, q('/root/proj', '&format=tar'));
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'application/x-tar');
    const back = join(tmp, 'back.tar');
    await pipeline(res, createWriteStream(back));
    const out = join(tmp, 'out');
    mkdirSync(out);
    const x = spawnSync('tar', ['-x', '-f', back, '-C', out]);
    assert.equal(x.status, 0, x.stderr.toString());
    for (const f of ['a.txt', 'bin.dat', 'sub dir/nested/deep.txt', 'run.sh']) {
      assert.ok(readFileSync(join(out, f)).equals(readFileSync(join(src, f))), `${f} differs after the round trip`);
    }
    assert.equal(statSync(join(out, 'run.sh')).mode & 0o777, 0o755);
    assert.ok(statSync(join(out, 'empty')).isDirectory());
  });

  test('a body that is not a tar is 400 INVALID_TAR', async () => {
    expectError(await put(d, id, q('/root/notatar', '&format=tar'), randomBytes(4096)), 400, 'INVALID_TAR');
  });
});

describe('--max-upload', () => {
  let small: TestDaemon;
  let sid: string;
  before(async () => {
    ({ daemon: small, sandbox: sid } = await daemonWithSandbox([...NO_EXTRA_VMS, '--max-upload', String(MiB)], 'shell'));
  });
  after(async () => { await stopDaemon(small, sid); });

  test('exactly the limit is accepted', async () => {
    const r = await put(small, sid, q('/root/lim/exact'), randomBytes(MiB));
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.size, MiB);
  });

  test('a declared length over the limit is 413 before any byte is read (files and tars)', async () => {
    const r = await put(small, sid, q('/root/lim/declared'), randomBytes(MiB + 1));
    expectError(r, 413, 'FILE_TOO_LARGE');
    assert.match(r.json.error.message, /--max-upload/);
    expectError(await put(small, sid, q('/root/lim/tree', '&format=tar'), randomBytes(2 * MiB)), 413, 'FILE_TOO_LARGE');
  });

  test('a streamed (chunked) upload over the limit is 413 and leaves the old file and no partial one', async () => {
    assert.equal((await put(small, sid, q('/root/lim/target'), Buffer.from('original'))).status, 201);
    const r = await put(small, sid, q('/root/lim/target'), randomSource(3 * MiB, createHash('sha256')));
    expectError(r, 413, 'FILE_TOO_LARGE');
    assert.deepEqual((await list(small, sid, '/root/lim')).map((e) => e.name), ['exact', 'target']);
    assert.equal((await exec(small, sid, { argv: ['cat', '/root/lim/target'] })).stdout, 'original');
  });

  test('the SDK reports an over-limit streamed upload as FILE_TOO_LARGE, not as a broken connection', async () => {
    await assert.rejects(small.client.uploadFile(sid, '/root/lim/sdk', randomSource(3 * MiB, createHash('sha256'))),
      (e: unknown) => e instanceof EmberdApiError && e.code === 'FILE_TOO_LARGE' && e.status === 413);
    assert.deepEqual((await small.client.list(sid, '/root/lim')).map((e) => e.name), ['exact', 'target']);
  });

  test('the sandbox still runs the seed exec afterwards', async () => {
    const r = await exec(small, sid, { code: 'echo $((6*7))' });
    assert.equal(r.stdout, '42\n');
  });
});

describe('SDK and emberctl', () => {
  test('SDK: uploadFile (bytes and a stream), downloadFile, stat, list, deleteFile', async () => {
    const c = d.client;
    const data = randomBytes(200_000);
    assert.deepEqual(await c.uploadFile(id, '/root/sdk/a.bin', data, { mode: 0o600 }), { path: '/root/sdk/a.bin', size: data.length });
    assert.deepEqual(await c.uploadFile(id, '/root/sdk/b.txt', Readable.from([Buffer.from('str'), Buffer.from('eam')])), { path: '/root/sdk/b.txt', size: 6 });
    const back = await sha256(await c.downloadFile(id, '/root/sdk/a.bin'));
    assert.equal(back.hash, createHash('sha256').update(data).digest('hex'));
    const st = await c.stat(id, '/root/sdk/a.bin');
    assert.deepEqual([st.type, st.size, st.mode], ['file', data.length, '0600']);
    assert.deepEqual((await c.list(id, '/root/sdk')).map((e) => e.name), ['a.bin', 'b.txt']);
    await c.deleteFile(id, '/root/sdk', { recursive: true });
    await assert.rejects(c.stat(id, '/root/sdk'), (e: unknown) => e instanceof EmberdApiError && e.code === 'FILE_NOT_FOUND');
    await assert.rejects(c.downloadFile(id, '/root'), (e: unknown) => e instanceof EmberdApiError && e.code === 'IS_A_DIRECTORY');
  });

  test('emberctl upload, files and download', () => {
    const ctl = (...args: string[]) => spawnSync(process.execPath, [CLI, '--addr', d.addr, ...args], { cwd: tmp, encoding: 'utf8' });
    const local = join(tmp, 'cli.bin');
    writeFileSync(local, randomBytes(70_000));
    const up = ctl('upload', id, local, '/root/cli/in dir/cli.bin', '--mode', '0750');
    assert.equal(up.status, 0, up.stderr);
    assert.match(up.stdout, /uploaded 70000 bytes to \/root\/cli\/in dir\/cli.bin/);
    const ls = ctl('files', id, '/root/cli/in dir');
    assert.equal(ls.status, 0, ls.stderr);
    assert.match(ls.stdout, /^- 0750 +70000 +\S+ +cli\.bin$/m);
    const down = ctl('download', id, '/root/cli/in dir/cli.bin', 'cli.back');
    assert.equal(down.status, 0, down.stderr);
    assert.ok(readFileSync(join(tmp, 'cli.back')).equals(readFileSync(local)));
    const missing = ctl('download', id, '/root/cli/none', 'none.bin');
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /FILE_NOT_FOUND/);
    assert.equal(existsSync(join(tmp, 'none.bin')), false);
  });
});

test('the seed exec still works in the sandbox that moved all these files', async () => {
  const r = await http(d, 'POST', `/sandboxes/${id}/exec`, '{"code":"print(6*7)"}', { 'content-type': 'application/json' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.stdout, '42\n');
  assert.equal(r.json.exit_code, 0);
});

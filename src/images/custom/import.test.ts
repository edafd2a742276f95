// `emberd packs import` without a VM: a root directory and an OCI archive holding only a static
// busybox with sh and echo linked become packs; what the files API needs is added from Debian's
// busybox-static; imports are reproducible and cached; bad names and interpreters are refused.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readManifest } from '../manifest.ts';
import { silentProgress } from '../progress.ts';
import { testDownloadsDir } from '../testing.ts';
import type { CustomPackMeta } from './custom-step.ts';
import { CustomPackError } from './errors.ts';
import { importPack, type ImportOptions } from './import.ts';
import { FILES_API_TOOLS } from './pack-contract.ts';
import { customPackSkipReason, tarLayer, writeOciArchive } from './testing.ts';

const BUSYBOX = ['/usr/bin/busybox', '/bin/busybox'].find((p) => spawnSync(p, ['true']).status === 0);
const skip = customPackSkipReason({ tools: ['umoci', 'apt-get', 'mksquashfs', 'unsquashfs'] }) || (BUSYBOX === undefined && 'no busybox on this host');
const work = mkdtempSync(join(tmpdir(), 'emb-import-test-'));
after(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => join(work, String(n++));
const downloadsDir = testDownloadsDir();
const run = (o: Partial<ImportOptions> & Pick<ImportOptions, 'dir' | 'source'>) => importPack({ name: 'tiny', downloadsDir, progress: silentProgress, ...o });

/** /bin/busybox, /bin/sh and /bin/echo: a shell, but none of the files API's tools. */
function tinyRoot(): string {
  const root = fresh();
  mkdirSync(join(root, 'bin'), { recursive: true });
  copyFileSync(BUSYBOX as string, join(root, 'bin/busybox'));
  spawnSync('chmod', ['755', join(root, 'bin/busybox')]);
  symlinkSync('busybox', join(root, 'bin/sh'));
  symlinkSync('busybox', join(root, 'bin/echo'));
  return root;
}

const meta = (dir: string, name = 'tiny'): CustomPackMeta => JSON.parse(readFileSync(join(dir, `packs/${name}.json`), 'utf8')) as CustomPackMeta;
const sqfs = async (dir: string, name = 'tiny'): Promise<string | undefined> => (await readManifest(dir))?.files[`packs/${name}.sqfs`]?.sha256;

test('--rootfs: reproducible, cached, missing files API tools added from busybox-static, the image\'s own kept', { skip }, async () => {
  const root = tinyRoot();
  const [a, b] = [fresh(), fresh()];
  const times: string[] = [];
  for (const dir of [a, b]) {
    const t0 = performance.now();
    assert.equal((await run({ dir, source: { kind: 'rootfs', path: root }, env: { X: '1' }, description: 'tiny' })).status, 'built');
    times.push(`${((performance.now() - t0) / 1000).toFixed(1)}s`);
  }
  process.stderr.write(`# rootfs imports: ${times.join(', ')}; sha256 ${await sqfs(a)} and ${await sqfs(b)}\n`);
  assert.equal(await sqfs(b), await sqfs(a));
  assert.equal((await run({ dir: a, source: { kind: 'rootfs', path: root }, env: { X: '1' }, description: 'tiny' })).status, 'cached');
  const m = meta(a);
  assert.equal(m.custom, true);
  assert.deepEqual(m.interpreter, ['sh', '-c']);
  assert.deepEqual(m.env, { X: '1' });
  assert.equal(m.source.kind, 'rootfs');
  const missing = FILES_API_TOOLS.filter((t) => t !== 'sh');
  assert.deepEqual(m.added, ['/usr/local/emberd/bin/busybox', ...missing.map((t) => `/usr/local/bin/${t}`)], 'sh was there: not added, nor /bin/sh');
  assert.deepEqual(m.packages.map((p) => p.name), ['busybox-static']);

  writeFileSync(join(root, 'new-file'), 'x');
  assert.equal((await run({ dir: a, source: { kind: 'rootfs', path: root }, env: { X: '1' }, description: 'tiny' })).status, 'built', 'a changed root is imported again');
});

test('--oci-archive: the image config\'s Env, overridden by --env; the unpacked pack works (chroot)', { skip }, async () => {
  const root = tinyRoot();
  const archive = writeOciArchive(`${fresh()}.tar`, [{ layers: [tarLayer(root, ['bin'])], tag: 'latest', env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'FROM=image', 'BOTH=image'] }]);
  const dir = fresh();
  assert.equal((await run({ dir, source: { kind: 'oci-archive', path: archive }, env: { BOTH: 'flag' } })).status, 'built');
  const m = meta(dir);
  assert.deepEqual(m.env, { PATH: '/usr/local/bin:/usr/bin:/bin', FROM: 'image', BOTH: 'flag' });
  assert.deepEqual(m.source, { kind: 'oci-archive', sha256: m.source.kind === 'oci-archive' ? m.source.sha256 : '', ref: 'latest' });
  if (process.getuid?.() !== 0) return;
  const unpacked = fresh();
  assert.equal(spawnSync('unsquashfs', ['-q', '-n', '-d', unpacked, join(dir, 'packs/tiny.sqfs')]).status, 0);
  // What the files API runs, in the pack: a listing and a tar of /etc.
  const r = spawnSync('chroot', [unpacked, 'sh', '-c', 'cd /etc/emberd && printf "%s\\n" * | xargs stat -c "%n %s" && tar -c -f - . | tar -t -f - | sort && cat interpreter'], {
    env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' },
  });
  assert.equal(r.stderr.toString(), '');
  assert.equal(r.stdout.toString(), 'interpreter 6\npack 5\n./\n./interpreter\n./pack\nsh\n-c\n');
});

test('an image without any shell gets /bin/sh too; an interpreter it lacks is refused with the fix', { skip }, async () => {
  const root = fresh();
  mkdirSync(join(root, 'app'), { recursive: true });
  writeFileSync(join(root, 'app/data'), 'distroless-ish\n');
  const archive = writeOciArchive(`${fresh()}.tar`, [{ layers: [tarLayer(root, ['app'])] }]);
  const dir = fresh();
  await run({ dir, source: { kind: 'oci-archive', path: archive } });
  assert.ok(meta(dir).added?.includes('/bin/sh'));
  assert.ok(meta(dir).added?.includes('/usr/local/bin/sh'));

  await assert.rejects(run({ dir, name: 'py', source: { kind: 'oci-archive', path: archive }, interpreter: ['python3', '-c'] }), (e: CustomPackError) => {
    assert.equal(e.code, 'PACK_IMPORT_INVALID');
    assert.equal(e.exitCode, 2);
    assert.match(e.message, /the interpreter "python3 -c" cannot run: no executable python3 .*; name one the image has with --interpreter/);
    return true;
  });
});

test('bad names, sources and a missing archive are refused before anything is built', { skip }, async () => {
  const dir = fresh();
  await assert.rejects(run({ dir, name: 'shell', source: { kind: 'rootfs', path: work } }), (e: CustomPackError) => e.code === 'PACK_NAME_INVALID' && /is a built-in pack/.test(e.message));
  await assert.rejects(run({ dir, name: 'Bad Name', source: { kind: 'rootfs', path: work } }), (e: CustomPackError) => e.code === 'PACK_NAME_INVALID');
  await assert.rejects(run({ dir, source: { kind: 'oci-archive', path: join(work, 'nope.tar') } }), /--oci-archive .*nope\.tar is not a file/);
  await assert.rejects(run({ dir, source: { kind: 'rootfs', path: join(work, 'nope') } }), /--rootfs .*nope is not a directory/);
});

// Custom packs in real VMs: a pack built from a spec that adds a Debian package (GNU hello) runs
// that package's program; an OCI archive made here with umoci (a static busybox with only sh and
// echo linked, no init) is imported and boots, runs echo and code, and serves the files API with
// the tools the importer added. Both are built into a private images dir (copies of the built
// shell pack, the shared kernel and initramfs) before the daemon starts on it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { customPackSkipReason, privateImagesWithPacks } from '../src/images/custom/testing.ts';
import { testDownloadsDir } from '../src/images/testing.ts';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';

const MAIN = fileURLToPath(new URL('../src/daemon/main.ts', import.meta.url));
const BUSYBOX = ['/usr/bin/busybox', '/bin/busybox'].find((p) => spawnSync(p, ['true']).status === 0);
const skip = customPackSkipReason({ packs: ['shell'], tools: ['umoci', 'apt-get', 'mksquashfs', 'unsquashfs'] }) || (BUSYBOX === undefined && 'no busybox on this host');

let work = '';
let images = '';
let d: TestDaemon | undefined;
const timings: string[] = [];

function emberd(...args: string[]): string {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, `emberd ${args.join(' ')}:\n${r.stderr}`);
  timings.push(`${args.slice(0, 2).join(' ')} ${((performance.now() - t0) / 1000).toFixed(1)}s`);
  return r.stderr;
}

function sh(cmd: string, args: string[], cwd: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/** An OCI image layout tarball made the way a user would with umoci: busybox, sh and echo, nothing else. */
function tinyOciArchive(): string {
  const dir = join(work, 'oci');
  mkdirSync(dir);
  sh('umoci', ['init', '--layout', 'layout'], dir);
  sh('umoci', ['new', '--image', 'layout:tiny'], dir);
  sh('umoci', ['unpack', '--image', 'layout:tiny', 'bundle'], dir);
  const rootfs = join(dir, 'bundle/rootfs');
  mkdirSync(join(rootfs, 'bin'), { recursive: true });
  copyFileSync(BUSYBOX as string, join(rootfs, 'bin/busybox'));
  sh('chmod', ['755', join(rootfs, 'bin/busybox')], dir);
  symlinkSync('busybox', join(rootfs, 'bin/sh'));
  symlinkSync('busybox', join(rootfs, 'bin/echo'));
  sh('umoci', ['repack', '--image', 'layout:tiny', 'bundle'], dir);
  sh('umoci', ['config', '--image', 'layout:tiny', '--os', 'linux', '--architecture', 'amd64', '--config.env', 'FROM_IMAGE=yes'], dir);
  const archive = join(work, 'tiny-oci.tar');
  sh('tar', ['-C', join(dir, 'layout'), '-cf', archive, '.'], dir);
  return archive;
}

before(async () => {
  if (skip) return;
  work = mkdtempSync('/tmp/emb-custom-');
  images = privateImagesWithPacks(['shell']);
  writeFileSync(join(work, 'greet'), '#!/bin/sh\necho "greetings, $1"\n', { mode: 0o755 });
  writeFileSync(
    join(work, 'hello.yaml'),
    'name: hello-tools\nbase: shell\ndescription: busybox plus GNU hello\npackages: [hello]\nfiles:\n  - { src: greet, dest: /usr/local/bin/greet }\n',
  );
  const downloads = testDownloadsDir();
  const out = emberd('packs', 'build', join(work, 'hello.yaml'), '--dir', images, '--downloads', downloads);
  assert.match(out, /pack hello-tools \(build\)/, 'progress output');
  assert.match(emberd('packs', 'build', join(work, 'hello.yaml'), '--dir', images, '--downloads', downloads), /pack hello-tools: up to date/);
  emberd('packs', 'import', 'tiny-oci', '--oci-archive', tinyOciArchive(), '--dir', images, '--downloads', downloads, '--description', 'busybox from an OCI archive');
  process.stderr.write(`# ${timings.join(', ')}\n`);
  d = await startDaemon(['--images-dir', images, '--pool-size', '0', '--snapshots', 'off', '--default-pack', 'shell']);
});

after(async () => {
  if (d !== undefined) assert.equal(await d.stop(), 0, d.log());
  if (images !== '') rmSync(images, { recursive: true, force: true });
  if (work !== '') rmSync(work, { recursive: true, force: true });
});

test('a pack from a spec that adds a Debian package runs that package\'s program in a VM', { skip }, async () => {
  const c = d!.client;
  const { id } = await c.createSandbox({ language_pack: 'hello-tools' });
  try {
    const hello = await c.exec(id, { argv: ['hello'] });
    assert.equal(hello.stdout, 'Hello, world!\n', JSON.stringify(hello));
    assert.equal(hello.exit_code, 0);
    const greet = await c.exec(id, { code: 'greet "$(hello -g spec)"' });
    assert.equal(greet.stdout, 'greetings, spec\n', JSON.stringify(greet));
  } finally {
    await c.deleteSandbox(id);
  }
});

test('an OCI archive with no init of its own is imported, boots, runs echo and serves files', { skip }, async () => {
  const c = d!.client;
  const { id } = await c.createSandbox({ language_pack: 'tiny-oci' });
  try {
    const echo = await c.exec(id, { argv: ['echo', 'from an OCI image'] });
    assert.equal(echo.stdout, 'from an OCI image\n', JSON.stringify(echo));
    const code = await c.exec(id, { code: 'echo $((6*7)); cat /etc/emberd/pack' });
    assert.equal(code.stdout, '42\ntiny-oci\n', JSON.stringify(code));
    // The files API runs cat, stat, mv, tar...: the image had none, the importer added busybox's.
    await c.uploadFile(id, '/root/note.txt', 'uploaded\n');
    const listing = await c.list(id, '/root');
    assert.deepEqual(listing.map((f) => f.name), ['note.txt']);
    const chunks: Buffer[] = [];
    for await (const chunk of await c.downloadFile(id, '/root/note.txt')) chunks.push(chunk as Buffer);
    assert.equal(Buffer.concat(chunks).toString('utf8'), 'uploaded\n');
  } finally {
    await c.deleteSandbox(id);
  }
});

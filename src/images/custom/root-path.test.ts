// Paths in a foreign root resolve inside it: absolute symlinks restart at the root, `..` stops
// there, and writes through an image's links never reach the host. Also what pack-contract.ts
// finds on the guest's PATH through such links.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findProgram, missingTools, writeEmberdFiles } from './pack-contract.ts';
import { resolveInRoot, symlinkInRoot, writeFileInRoot } from './root-path.ts';

const base = mkdtempSync(join(tmpdir(), 'emb-root-test-'));
after(() => rmSync(base, { recursive: true, force: true }));

/** A root whose links all point at host paths if followed naively. */
let roots = 0;
function hostileRoot(): { root: string; host: string } {
  const root = join(base, `root${roots}`);
  const host = join(base, `host${roots++}`);
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  mkdirSync(host, { recursive: true });
  symlinkSync('/usr/bin', join(root, 'bin')); // absolute: inside the root that is root/usr/bin
  symlinkSync(host, join(root, 'hostdir')); // absolute, naming a host directory
  symlinkSync('../../../../../..', join(root, 'up')); // climbs above the root
  mkdirSync(join(root, 'etc'));
  symlinkSync('/loop2', join(root, 'loop1'));
  symlinkSync('/loop1', join(root, 'loop2'));
  return { root, host };
}

test('resolveInRoot: absolute links restart at the root, .. stops there, loops are refused', async () => {
  const { root, host } = hostileRoot();
  assert.equal(await resolveInRoot(root, '/bin/sh'), join(root, 'usr/bin/sh'));
  assert.equal(await resolveInRoot(root, '/hostdir/x'), join(root, host.slice(1), 'x'), 'a host path named by a link is taken inside the root');
  assert.equal(await resolveInRoot(root, '/up/etc'), join(root, 'etc'));
  assert.equal(await resolveInRoot(root, '/../../etc/passwd'), join(root, 'etc/passwd'));
  assert.equal(await resolveInRoot(root, '/bin', false), join(root, 'bin'), 'followLast false keeps the final link');
  await assert.rejects(resolveInRoot(root, '/loop1/x'), /too many levels of symbolic links/);
});

test('writes through an image\'s links stay in the root; a link at the target is replaced, not followed', async () => {
  const { root, host } = hostileRoot();
  await writeFileInRoot(root, '/hostdir/pwned', 'x');
  await writeFileInRoot(root, '/up/up/etc/emberd/pack', 'p\n');
  assert.deepEqual(readdirSync(host), [], 'nothing written into the host directory');
  assert.equal(readFileSync(join(root, host.slice(1), 'pwned'), 'utf8'), 'x');
  assert.equal(readFileSync(join(root, 'etc/emberd/pack'), 'utf8'), 'p\n');
  symlinkSync(join(host, 'target'), join(root, 'etc/hosts'));
  await writeFileInRoot(root, '/etc/hosts', 'h\n');
  assert.ok(lstatSync(join(root, 'etc/hosts')).isFile());
  assert.deepEqual(readdirSync(host), []);
  await symlinkInRoot(root, '/usr/local/emberd/bin/busybox', '/bin/cat');
  assert.equal(readlinkSync(join(root, 'usr/bin/cat')), '/usr/local/emberd/bin/busybox');
});

test('findProgram and missingTools look on the guest PATH (and the pack\'s own PATH) through the tree\'s links', async () => {
  const { root } = hostileRoot();
  writeFileSync(join(root, 'usr/bin/busybox'), '');
  chmodSync(join(root, 'usr/bin/busybox'), 0o755);
  symlinkSync('busybox', join(root, 'usr/bin/sh'));
  symlinkSync('/usr/bin/busybox', join(root, 'usr/bin/cat'));
  symlinkSync('missing', join(root, 'usr/bin/tar')); // dangling: not a tool
  writeFileSync(join(root, 'usr/bin/stat'), ''); // not executable: not a tool
  mkdirSync(join(root, 'opt/py/bin'), { recursive: true });
  writeFileSync(join(root, 'opt/py/bin/python3'), '');
  chmodSync(join(root, 'opt/py/bin/python3'), 0o755);
  assert.equal(await findProgram(root, 'sh'), '/usr/bin/sh');
  assert.equal(await findProgram(root, '/bin/cat'), '/bin/cat');
  assert.equal(await findProgram(root, 'python3'), null);
  assert.equal(await findProgram(root, 'python3', '/opt/py/bin:/usr/bin'), '/opt/py/bin/python3');
  assert.deepEqual(await missingTools(root), ['stat', 'mkdir', 'chmod', 'mv', 'rm', 'rmdir', 'tar', 'xargs', 'printf']);
  await writeEmberdFiles(root, 'p', ['sh', '-c']);
  assert.equal(readFileSync(join(root, 'etc/emberd/interpreter'), 'utf8'), 'sh\n-c\n');
  assert.equal(lstatSync(join(root, 'tmp')).mode & 0o7777, 0o1777);
});

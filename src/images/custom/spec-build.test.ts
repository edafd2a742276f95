// `emberd packs build` without a VM: a shell-based spec adding GNU hello, a file and an env,
// built twice into separate images dirs (byte-identical), cached on a rebuild, rebuilt when a
// copied file changes; as root the unpacked pack runs hello. And the errors a user meets.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readManifest } from '../manifest.ts';
import { silentProgress } from '../progress.ts';
import { testDownloadsDir } from '../testing.ts';
import type { CustomPackMeta } from './custom-step.ts';
import { CustomPackError } from './errors.ts';
import { parseSpec } from './spec.ts';
import { buildPackFromSpec } from './spec-build.ts';
import { customPackSkipReason, privateImagesWithPacks } from './testing.ts';

const skip = customPackSkipReason({ packs: ['shell'], tools: ['apt-get', 'mksquashfs', 'unsquashfs'] });
const work = mkdtempSync(join(tmpdir(), 'emb-spec-build-test-'));
const dirs: string[] = [];
after(() => {
  rmSync(work, { recursive: true, force: true });
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const imagesDir = (packs: string[] = ['shell']): string => {
  const d = privateImagesWithPacks(packs);
  dirs.push(d);
  return d;
};
const downloadsDir = testDownloadsDir();

const SPEC = `name: hello-tools
base: shell
description: busybox plus GNU hello
packages: [hello]
files:
  - { src: greet, dest: /usr/local/bin/greet }
env: { GREETING: friend }
`;
writeFileSync(join(work, 'greet'), '#!/bin/sh\necho "greetings, $GREETING"\n', { mode: 0o755 });
writeFileSync(join(work, 'pack.yaml'), SPEC);

const sqfsOf = async (dir: string, name = 'hello-tools'): Promise<string | undefined> => (await readManifest(dir))?.files[`packs/${name}.sqfs`]?.sha256;
let a = '';

test('a spec pack is reproducible (two images dirs, same sha256) and cached when nothing changed', { skip }, async () => {
  const spec = await parseSpec(SPEC, join(work, 'pack.yaml'));
  a = imagesDir();
  const b = imagesDir();
  const times: string[] = [];
  for (const dir of [a, b]) {
    const t0 = performance.now();
    const o = await buildPackFromSpec(spec, { dir, downloadsDir, progress: silentProgress });
    times.push(`${((performance.now() - t0) / 1000).toFixed(1)}s`);
    assert.equal(o.status, 'built');
  }
  const [ha, hb] = [await sqfsOf(a), await sqfsOf(b)];
  process.stderr.write(`# hello-tools builds: ${times.join(', ')}; sha256 ${ha} and ${hb}\n`);
  assert.ok(ha !== undefined && /^[0-9a-f]{64}$/.test(ha));
  assert.equal(hb, ha, 'same inputs, same squashfs');
  assert.equal(readFileSync(join(b, 'packs/hello-tools.json'), 'utf8'), readFileSync(join(a, 'packs/hello-tools.json'), 'utf8'));

  const meta = JSON.parse(readFileSync(join(a, 'packs/hello-tools.json'), 'utf8')) as CustomPackMeta;
  assert.equal(meta.custom, true);
  assert.equal(meta.sha256, ha);
  assert.deepEqual(meta.interpreter, ['sh', '-c'], "the base's interpreter");
  assert.deepEqual(meta.env, { GREETING: 'friend' });
  assert.equal(meta.description, 'busybox plus GNU hello');
  assert.equal(meta.source.kind, 'spec');
  const names = meta.packages.map((p) => p.name);
  assert.ok(names.includes('hello') && names.includes('libc6') && names.includes('busybox-static'), names.join(' '));
  assert.ok(!names.includes('dpkg') && !names.includes('coreutils'), 'no Essential packages forced in');

  const again = await buildPackFromSpec(spec, { dir: a, downloadsDir, progress: silentProgress });
  assert.equal(again.status, 'cached', 'an unchanged spec and inputs is up to date');
  assert.equal(await sqfsOf(a), ha);
});

test('a changed file rebuilds the pack; --force rebuilds it identically', { skip }, async () => {
  const dir = imagesDir();
  const src = join(work, 'changing');
  writeFileSync(src, 'one\n');
  const spec = await parseSpec(`name: changing\nbase: shell\nfiles: [{ src: changing, dest: /opt/f }]\n`, join(work, 'c.yaml'));
  assert.equal((await buildPackFromSpec(spec, { dir, progress: silentProgress })).status, 'built');
  const first = await sqfsOf(dir, 'changing');
  writeFileSync(src, 'two\n');
  assert.equal((await buildPackFromSpec(spec, { dir, progress: silentProgress })).status, 'built');
  const second = await sqfsOf(dir, 'changing');
  assert.notEqual(second, first);
  assert.equal((await buildPackFromSpec(spec, { dir, force: true, progress: silentProgress })).status, 'built');
  assert.equal(await sqfsOf(dir, 'changing'), second);
});

const canChroot = process.getuid?.() === 0 && spawnSync('chroot', ['--version']).error === undefined;

test('the pack runs the added program, the copied file and the interpreter file (chroot)', { skip: skip || (!canChroot && 'needs root and chroot') }, () => {
  const root = join(work, 'root');
  const x = spawnSync('unsquashfs', ['-q', '-n', '-d', root, join(a, 'packs/hello-tools.sqfs')]);
  assert.equal(x.status, 0, x.stderr.toString());
  const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', GREETING: 'test' };
  const r = spawnSync('chroot', [root, '/bin/sh', '-c', 'hello; greet; cat /etc/emberd/interpreter /etc/emberd/pack'], { env });
  assert.equal(r.stderr.toString(), '');
  assert.equal(r.stdout.toString(), 'Hello, world!\ngreetings, test\nsh\n-c\nhello-tools\n');
});

test('errors: an unknown Debian package (exit 2), a base not built here, an interpreter the pack lacks', { skip }, async () => {
  const dir = imagesDir();
  const unknown = await parseSpec('name: typo\nbase: shell\npackages: [hello, helllo-typo]\n', join(work, 't.yaml'));
  await assert.rejects(buildPackFromSpec(unknown, { dir, downloadsDir, progress: silentProgress }), (e: CustomPackError) => {
    assert.equal(e.code, 'PACK_SPEC_INVALID');
    assert.equal(e.exitCode, 2);
    assert.match(e.message, /packages: "helllo-typo" is not a Debian bookworm package this host's apt knows \(check the name with `apt-cache search helllo-typo`/);
    assert.doesNotMatch(e.message, /"hello"/);
    return true;
  });
  const virtual = await parseSpec('name: virt\nbase: shell\npackages: [awk]\n', join(work, 'v.yaml'));
  await assert.rejects(buildPackFromSpec(virtual, { dir, downloadsDir, progress: silentProgress }), /"awk" has no installable version \(a virtual package\?/);

  const onPython = await parseSpec('name: p\nbase: python\n', join(work, 'p.yaml'));
  await assert.rejects(buildPackFromSpec(onPython, { dir, progress: silentProgress }), (e: CustomPackError) => {
    assert.equal(e.code, 'PACK_BASE_NOT_BUILT');
    assert.equal(e.message, `base pack python is not built in ${dir}: run \`emberd images build --only python --dir ${dir}\``);
    return true;
  });

  const noRuby = await parseSpec('name: r\nbase: shell\ninterpreter: [ruby, -e]\n', join(work, 'r.yaml'));
  await assert.rejects(buildPackFromSpec(noRuby, { dir, progress: silentProgress }), (e: CustomPackError) => {
    assert.equal(e.code, 'PACK_SPEC_INVALID');
    assert.match(e.message, /the interpreter "ruby -e" cannot run: no executable ruby in any of \/usr\/local\/sbin:.*; add the package that has it to packages/);
    return true;
  });
  assert.equal(await sqfsOf(dir, 'r'), undefined, 'a failed build leaves no pack');
});

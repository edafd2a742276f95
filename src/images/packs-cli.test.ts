// `emberd packs` as a user runs it (the daemon's main, a real process): a problem in what was given
// exits 2 with a message that says how to fix it; list shows the packs of an images dir.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { customPackSkipReason, privateImagesWithPacks } from './custom/testing.ts';

const MAIN = fileURLToPath(new URL('../daemon/main.ts', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'emb-packs-cli-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

function emberd(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, 'packs', ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('a bad spec exits 2 and lists every problem with its fix', () => {
  const spec = join(work, 'bad.yaml');
  writeFileSync(spec, 'name: Shell!\nbase: pyhton\nextra: 1\n');
  const r = emberd('build', spec, '--dir', join(work, 'images'));
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /^emberd packs build: .*bad\.yaml:\n/);
  assert.match(r.stderr, /unknown key "extra" \(known keys: name, base,/);
  assert.match(r.stderr, /name "Shell!" is not a valid pack name: use 1 to 32 characters of a-z, 0-9 and "-"/);
  assert.match(r.stderr, /base "pyhton" is not a built-in pack: use one of shell, python/);
  const missing = emberd('build', join(work, 'nope.yaml'));
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot read the spec .*nope\.yaml/);
});

test('usage errors exit 2 with the usage', () => {
  for (const args of [[], ['frobnicate'], ['build'], ['import', 'x'], ['import', 'x', '--rootfs', work, '--oci-archive', 'a.tar'], ['import', 'x', '--rootfs', work, '--env', 'no-equals'], ['list', '--bogus']]) {
    const r = emberd(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /usage: emberd packs build SPEC/, args.join(' '));
  }
  const help = emberd('--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: emberd packs build SPEC/);
});

test('list shows built-in and custom packs', { skip: customPackSkipReason({ packs: ['shell'] }) }, () => {
  const dir = privateImagesWithPacks(['shell']);
  try {
    const r = emberd('list', '--dir', dir);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME\s+KIND\s+SIZE\s+INTERPRETER\s+DESCRIPTION\nshell\s+built-in\s+\S+ \S+\s+sh -c/);
    const j = JSON.parse(emberd('list', '--dir', dir, '--json').stdout);
    assert.deepEqual(j.map((p: { name: string; custom: boolean }) => [p.name, p.custom]), [['shell', false]]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

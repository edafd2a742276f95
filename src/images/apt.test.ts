import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { debFileName, parseControlRecords, parseDepends, resolveClosures } from './apt.ts';

test('Depends fields parse into alternative groups without versions or arch qualifiers', () => {
  assert.deepEqual(parseDepends(''), []);
  assert.deepEqual(parseDepends('libc6 (>= 2.34), dpkg (>= 1.15.4) | install-info, python3:any (>= 3.9~), foo [amd64]'), [
    ['libc6'],
    ['dpkg', 'install-info'],
    ['python3'],
    ['foo'],
  ]);
});

test('control records: multiple stanzas and continuation lines', () => {
  const recs = parseControlRecords('Package: a\nVersion: 1\nDescription: x\n more\n\nPackage: b\nVersion: 1:2-3\n');
  assert.equal(recs.length, 2);
  assert.equal(recs[0]?.get('Description'), 'x\nmore');
  assert.equal(recs[1]?.get('Version'), '1:2-3');
  assert.equal(debFileName({ name: 'zlib1g', version: '1:1.2.13.dfsg-1', arch: 'amd64' }), 'zlib1g_1%3a1.2.13.dfsg-1_amd64.deb');
});

const haveApt = spawnSync('apt-cache', ['policy', 'python3.11']).stdout?.toString().includes('Candidate: 3.11') === true;

test(
  'python closure: the libraries it links, but no Essential packages dragged in via dpkg',
  { skip: !haveApt && 'needs Debian bookworm apt lists (apt-get update)' },
  async () => {
    const t0 = performance.now();
    const r = await resolveClosures({ python: ['python3.11', 'busybox-static'], shell: ['busybox-static'] });
    const names = (r['python'] ?? []).map((p) => p.name);
    for (const n of ['python3.11', 'libpython3.11-stdlib', 'libc6', 'libssl3', 'libsqlite3-0', 'libffi8', 'zlib1g', 'liblzma5', 'busybox-static']) {
      assert.ok(names.includes(n), `${n} in closure`);
    }
    for (const n of ['dpkg', 'tar', 'perl-base', 'coreutils', 'bash', 'libselinux1']) assert.ok(!names.includes(n), `${n} not in closure`);
    assert.deepEqual((r['shell'] ?? []).map((p) => p.name), ['busybox-static']);
    assert.ok((r['python'] ?? []).every((p) => /^[0-9a-f]{64}$/.test(p.sha256)));
    process.stderr.write(`# resolved ${names.length} packages in ${((performance.now() - t0) / 1000).toFixed(1)}s\n`);
  },
);

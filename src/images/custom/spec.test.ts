// The pack spec's checks: every problem reported in one pass, each with where it is and how to
// fix it; a valid spec comes out normalized.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CustomPackError } from './errors.ts';
import { builtInPackNames } from './names.ts';
import { parseSpec } from './spec.ts';

const dir = mkdtempSync(join(tmpdir(), 'emb-spec-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, 'pack.yaml');
writeFileSync(join(dir, 'tool.sh'), '#!/bin/sh\n');
chmodSync(join(dir, 'tool.sh'), 0o755);
mkdirSync(join(dir, 'tree'));

async function problems(text: string): Promise<string[]> {
  try {
    await parseSpec(text, file);
  } catch (e) {
    assert.ok(e instanceof CustomPackError, String(e));
    assert.equal(e.code, 'PACK_SPEC_INVALID');
    assert.equal(e.exitCode, 2);
    const [head, ...lines] = e.message.split('\n');
    assert.equal(head, `${file}:`, 'the message starts with the spec file');
    return lines.map((l) => l.trim()).filter((l) => l !== '');
  }
  assert.fail('the spec was accepted');
}

test('a valid YAML spec, normalized: sorted unique packages, absolute srcs, octal modes, interpreter words', async () => {
  const s = await parseSpec(
    `name: my-tools
base: shell
description: tools for agents
packages: [jq, hello, jq]
files:
  - { src: tool.sh, dest: /usr/local/bin//tool/, mode: "0750" }
  - { src: tree, dest: /opt/tree }
env: { GREETING: "hi", EMPTY: "" }
interpreter: sh -e -c
`,
    file,
  );
  assert.deepEqual(s, {
    file,
    name: 'my-tools',
    base: 'shell',
    description: 'tools for agents',
    packages: ['hello', 'jq'],
    files: [
      { src: join(dir, 'tool.sh'), dest: '/usr/local/bin/tool', mode: 0o750 },
      { src: join(dir, 'tree'), dest: '/opt/tree' },
    ],
    env: { GREETING: 'hi', EMPTY: '' },
    interpreter: ['sh', '-e', '-c'],
  });
});

test('JSON is accepted too; optional keys default (no interpreter: the base pack decides)', async () => {
  const s = await parseSpec('{"name": "j", "base": "python"}', file);
  assert.deepEqual(s, { file, name: 'j', base: 'python', packages: [], files: [], env: {} });
});

test('unknown keys name the known ones', async () => {
  assert.deepEqual(await problems('name: a\nbase: shell\npakages: [x]\nfiles:\n  - { src: tool.sh, dest: /x, owner: root }\n'), [
    'files[0]: unknown key "owner" (known keys: src, dest, mode)',
    'unknown key "pakages" (known keys: name, base, description, packages, files, env, interpreter)',
  ]);
});

test('a name that is not [a-z0-9-]{1,32} or that is a built-in pack is refused with a way out', async () => {
  for (const bad of ['My_Pack', '', 'x'.repeat(33), 'a b']) {
    const [p] = await problems(`name: ${JSON.stringify(bad)}\nbase: shell\n`);
    assert.match(p as string, /is not a valid pack name: use 1 to 32 characters of a-z, 0-9 and "-"/);
  }
  for (const builtIn of builtInPackNames()) {
    assert.deepEqual(await problems(`name: ${builtIn}\nbase: shell\n`), [
      `name "${builtIn}" is a built-in pack (${builtInPackNames().join(', ')}): pick another name, e.g. "${builtIn}-custom"`,
    ]);
  }
});

test('the base must be a built-in pack, listed from the builder (so new packs count at once)', async () => {
  assert.ok(builtInPackNames().includes('shell') && builtInPackNames().includes('python'));
  assert.ok(!builtInPackNames().includes('kernel') && !builtInPackNames().includes('initramfs'));
  assert.deepEqual(await problems('name: a\nbase: pyhton\n'), [`base "pyhton" is not a built-in pack: use one of ${builtInPackNames().join(', ')}`]);
  assert.match((await problems('name: a\n'))[0] as string, /^base: base is required: the built-in pack to start from/);
});

test('files: a missing src says where relative paths start; dests inside the pack, not reserved, not twice', async () => {
  assert.deepEqual(
    await problems(`name: a
base: shell
files:
  - { src: nope.sh, dest: /usr/local/bin/nope }
  - { src: tool.sh, dest: usr/bin/tool }
  - { src: tool.sh, dest: /opt/../etc/x }
  - { src: tool.sh, dest: /etc/emberd/interpreter }
  - { src: tool.sh, dest: /proc/x }
  - { src: tool.sh, dest: /opt/t }
  - { src: tool.sh, dest: /opt/t/ }
  - { src: /dev/null, dest: /opt/null }
  - { src: tree, dest: /opt/tree, mode: "0755" }
`),
    [
      `files[0].src: ${join(dir, 'nope.sh')} does not exist (a relative src is taken from the spec's directory, ${dir})`,
      'files[1].dest: "usr/bin/tool" must be an absolute path inside the pack without "..", e.g. /usr/local/bin/tool',
      'files[2].dest: "/opt/../etc/x" must be an absolute path inside the pack without "..", e.g. /usr/local/bin/tool',
      'files[3].dest: /etc/emberd/interpreter is reserved (/proc, /sys, /dev, /run, /etc/emberd belong to the guest and emberd; the interpreter is set with interpreter:)',
      'files[4].dest: /proc/x is reserved (/proc, /sys, /dev, /run, /etc/emberd belong to the guest and emberd; the interpreter is set with interpreter:)',
      'files[6].dest: /opt/t is the dest of an earlier entry too',
      'files[7].src: /dev/null is neither a file nor a directory',
      `files[8].mode: ${join(dir, 'tree')} is a directory: mode applies to a file (a directory's files get 0755 if executable by their owner, else 0644)`,
    ],
  );
});

test('YAML traps get a hint: an unquoted mode or env number, and broken syntax', async () => {
  assert.deepEqual(await problems('name: a\nbase: shell\nfiles:\n  - { src: tool.sh, dest: /t, mode: 0755 }\nenv: { DEBUG: 1, 1X: "a" }\n'), [
    'files[0].mode: write the mode as a quoted octal string, e.g. mode: "0755" (YAML reads 0755 unquoted as the number 755)',
    'env.DEBUG: quote the value: environment values are strings (e.g. DEBUG: "1")',
    'env.1X: "1X" is not a variable name (letters, digits and _, not starting with a digit)',
  ]);
  assert.match((await problems('name: a\nbase: shell\nfiles:\n  - { src: tool.sh, dest: /t, mode: "999" }\n'))[0] as string, /^files\[0\]\.mode: mode must be 3 octal digits/);
  assert.match((await problems('name: a\nname: b\n'))[0] as string, /^not valid YAML\/JSON: Map keys must be unique at line 2/);
  assert.match((await problems('name: [a\n'))[0] as string, /^not valid YAML\/JSON:/);
  assert.deepEqual(await problems('- a\n- b\n'), ['the spec must be a mapping of keys (name, base, ...)']);
  assert.deepEqual(await problems(''), ['the spec must be a mapping of keys (name, base, ...)']);
});

test('interpreter: a list of words or a string, never empty, no newlines (the guest reads one word per line)', async () => {
  assert.deepEqual(await problems('name: a\nbase: shell\ninterpreter: []\n'), ['interpreter: interpreter needs at least one word, e.g. [sh, -c]']);
  assert.match((await problems('name: a\nbase: shell\ninterpreter: ["sh\\n-c"]\n'))[0] as string, /interpreter/);
  assert.match((await problems('name: a\nbase: shell\ninterpreter: 42\n'))[0] as string, /^interpreter: interpreter is the argv prefix of `code` execs/);
});

// The token file and the listen-address rules of --auth (the HTTP side is test/e2e-auth.test.ts).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadOrCreateToken } from './auth.ts';
import { parseConfig } from './config.ts';
import { isLoopback } from './loopback.ts';

const dir = mkdtempSync('/tmp/emb-auth-');
after(() => rmSync(dir, { recursive: true, force: true }));

test('the token is created once: 256 random bits as hex, mode 0600, in a 0700 directory', () => {
  const path = join(dir, 'state', 'token');
  const a = loadOrCreateToken(path);
  assert.equal(a.created, true);
  assert.match(a.token, /^[0-9a-f]{64}$/);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, 'state')).mode & 0o777, 0o700);
  const b = loadOrCreateToken(path);
  assert.deepEqual(b, { token: a.token, created: false }, 'the next start reads the same token');
  assert.notEqual(loadOrCreateToken(join(dir, 'other')).token, a.token, 'every file gets its own token');
});

test('a token file others can read, or one without a token, is refused with what to do', () => {
  const open = join(dir, 'open');
  writeFileSync(open, `${'a'.repeat(64)}\n`);
  chmodSync(open, 0o644);
  assert.throws(() => loadOrCreateToken(open), /can be read by other users.*chmod 600/);
  const junk = join(dir, 'junk');
  writeFileSync(junk, 'hunter2\n', { mode: 0o600 });
  assert.throws(() => loadOrCreateToken(junk), /does not hold a token.*delete it/);
  assert.equal(readFileSync(junk, 'utf8'), 'hunter2\n', 'a refused file is left as it was');
});

test('--auth: auto is off on loopback and on elsewhere; off beyond loopback is refused', () => {
  const cfg = (args: string[]) => { const c = parseConfig(args, {}); assert.ok(c !== 'help'); return c; };
  assert.equal(cfg([]).auth.enabled, false, 'the seed curl examples keep working on 127.0.0.1');
  assert.equal(cfg(['--addr', '0.0.0.0:7777']).auth.enabled, true);
  assert.equal(cfg(['--addr', '[::]:7777']).auth.enabled, true);
  assert.equal(cfg(['--auth', 'on']).auth.enabled, true);
  assert.throws(() => parseConfig(['--addr', '0.0.0.0:7777', '--auth', 'off'], {}), /--auth off is refused on 0\.0\.0\.0/);
  assert.throws(() => parseConfig(['--addr', '192.168.1.5:7777'], { EMBERD_AUTH: 'off' }), /refused/);
  assert.throws(() => parseConfig(['--auth', 'maybe'], {}), /auto, on or off/);
  assert.equal(cfg(['--state-dir', '/s']).auth.tokenFile, '/s/token');
  assert.equal(cfg(['--auth-token-file', '/t/tok']).auth.tokenFile, '/t/tok');
});

test('loopback addresses', () => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopback(h), true, h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'example.com', '127.0.0.1.example.com']) assert.equal(isLoopback(h), false, h);
});

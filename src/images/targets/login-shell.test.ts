// bash in the packs: the link to bash-static, the /etc files a login shell reads, bash's extras
// out; and /etc/profile as a login shell runs it (with the host's sh and, when there, bash).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKS } from '../build.ts';
import { BASH_PACKAGE, BASH_STATIC_PACKAGE, PROFILE, installBash } from './login-shell.ts';

function fakeTree(files: string[]): string {
  const tree = mkdtempSync(join(tmpdir(), 'login-shell-test-'));
  for (const f of files) {
    mkdirSync(join(tree, f, '..'), { recursive: true });
    writeFileSync(join(tree, f), '');
  }
  return tree;
}

test('a pack with bash-static gets usr/bin/bash linked to it; bash extras go; the login files are written', async () => {
  const tree = fakeTree(['usr/bin/bash-static', 'usr/bin/bashbug', 'usr/bin/clear_console', 'etc/skel/.bashrc', 'usr/share/debianutils/shells.d/bash']);
  try {
    await installBash(tree);
    assert.equal(readlinkSync(join(tree, 'usr/bin/bash')), 'bash-static');
    for (const gone of ['usr/bin/bashbug', 'usr/bin/clear_console', 'etc/skel', 'usr/share/debianutils']) assert.ok(!existsSync(join(tree, gone)), gone);
    assert.equal(readFileSync(join(tree, 'etc/profile'), 'utf8'), PROFILE);
    assert.match(readFileSync(join(tree, 'etc/shells'), 'utf8'), /^\/bin\/bash$/m);
    assert.ok(statSync(join(tree, 'etc/profile.d')).isDirectory());
    assert.equal(statSync(join(tree, 'etc/profile')).mode & 0o777, 0o644);
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
});

test('Debian bash is kept as it is; a tree with no bash at all is an error', async () => {
  const tree = fakeTree(['usr/bin/bash']);
  try {
    await installBash(tree);
    assert.ok(lstatSync(join(tree, 'usr/bin/bash')).isFile());
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
  const none = fakeTree([]);
  try {
    await assert.rejects(installBash(none), /neither bash nor bash-static/);
  } finally {
    rmSync(none, { recursive: true, force: true });
  }
});

test('every pack has bash: Debian bash beside a libc, bash-static in the libc-free shell pack', () => {
  for (const spec of Object.values(PACKS)) {
    const all = [...spec.roots, ...spec.extras];
    assert.ok(all.includes(spec.name === 'shell' ? BASH_STATIC_PACKAGE : BASH_PACKAGE), spec.name);
  }
  const shell = Object.values(PACKS).find((s) => s.name === 'shell');
  // bash-static depends on passwd (PAM, libc) for its postinst only: taken without dependencies.
  assert.ok(shell?.extras.includes(BASH_STATIC_PACKAGE) && !shell.roots.includes(BASH_STATIC_PACKAGE));
});

/** Runs /etc/profile the way a login shell does, then prints what the script after it sees. */
function loginShell(shell: string, env: NodeJS.ProcessEnv, profileDir: string): string {
  const r = spawnSync(shell, ['-c', `. ${profileDir}/profile; printf '%s|%s' "$PATH" "$FROM_PROFILE_D"; [ -n "\${BASH-}" ] && printf '|%s' "\${PS1-unset}"; true`], {
    // HOME elsewhere and stdin not a socket: Debian's bash reads ~/.bashrc when it thinks rsh/ssh ran it.
    env: { HOME: profileDir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  assert.equal(r.status, 0, r.stderr.toString());
  assert.equal(r.stderr.toString(), '');
  return r.stdout.toString();
}

test('/etc/profile keeps the exec\'s PATH, sets the agent\'s when there is none, reads profile.d, sets no prompt for bash -c', () => {
  const dir = mkdtempSync(join(tmpdir(), 'profile-test-'));
  try {
    // The profile names /etc/profile.d; point it at a test directory.
    writeFileSync(join(dir, 'profile'), PROFILE.replaceAll('/etc/profile.d', join(dir, 'profile.d')));
    mkdirSync(join(dir, 'profile.d'));
    writeFileSync(join(dir, 'profile.d/a.sh'), 'FROM_PROFILE_D=yes\n');
    writeFileSync(join(dir, 'profile.d/ignored.txt'), 'FROM_PROFILE_D=no\n');
    const shells = ['/bin/sh', ...['/bin/bash', '/usr/bin/bash'].filter((b) => existsSync(b)).slice(0, 1)];
    for (const sh of shells) {
      const bash = sh.endsWith('bash') ? '|unset' : ''; // a non-interactive bash has no PS1, and the profile sets none
      assert.equal(loginShell(sh, { PATH: '/opt/x:/usr/bin:/bin' }, dir), `/opt/x:/usr/bin:/bin|yes${bash}`, sh);
      const empty = loginShell(sh, { PATH: '' }, dir);
      assert.equal(empty, `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|yes${bash}`, sh);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync, chmodSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canRead, checkReadableBy, jailLayout, jailQemuArgs, prepareJail, TUN_NODE_SCRIPT, wrapperArgv } from './jail.ts';
import type { QemuConfinement } from './confinement.ts';
import { isEmberdError } from '../../errors.ts';

const tools = { setpriv: '/usr/bin/setpriv', unshare: '/usr/bin/unshare', sh: '/bin/sh' };
const rootPlan: QemuConfinement = { drop: { uid: 65534, gid: 65534 }, chroot: true, namespaces: 'plain', summary: '', warnings: [] };

test('QEMU names its sockets relative to its cwd and the migration socket inside its chroot', () => {
  const l = jailLayout('/run/emberd/sb_x', true, 35);
  assert.deepEqual(l, {
    dir: '/run/emberd/sb_x/vz',
    root: '/run/emberd/sb_x/vz/root',
    control: { host: '/run/emberd/sb_x/vz/control.sock', qemu: 'control.sock' },
    qmp: { host: '/run/emberd/sb_x/vz/qmp.sock', qemu: 'qmp.sock' },
    migrate: { host: '/run/emberd/sb_x/vz/root/migrate.sock', qemu: '/migrate.sock' },
  });
  assert.deepEqual(jailLayout('/r', false).migrate, { host: '/r/v0/migrate.sock', qemu: '/r/v0/migrate.sock' }, 'unchrooted, the host path');
});

test('every start in a run dir has its own jail dir, and the longest socket path fits the run dir budget', () => {
  assert.notEqual(jailLayout('/r', true, 1).dir, jailLayout('/r', true, 2).dir);
  const longest = Math.max(...[0, 46655, 46656 * 7 + 46655].map((n) => jailLayout('/', true, n).migrate.host.length));
  assert.equal(longest, '/vzzz/root/migrate.sock'.length);
  assert.ok('/sb_xxxxxxxxxxxxxxxxxxxx'.length + longest <= '/sb_xxxxxxxxxxxxxxxxxxxx/firecracker.vsock_1024'.length, 'within src/sandbox/run-dir.ts LONGEST_SUFFIX');
  assert.deepEqual(jailQemuArgs(rootPlan), ['-chroot', 'root']);
  assert.deepEqual(jailQemuArgs({ ...rootPlan, chroot: false }), []);
});

test('as root: cgroup first, then namespaces, then the uid change that keeps only CAP_SYS_CHROOT and re-arms PDEATHSIG', () => {
  assert.deepEqual(wrapperArgv(rootPlan, tools, '/cg/qemu-x/cgroup.procs'), [
    '/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', '/cg/qemu-x/cgroup.procs',
    '/usr/bin/unshare', '--pid', '--net', '--ipc', '--fork', '--kill-child', '--',
    '/usr/bin/setpriv', '--reuid', '65534', '--regid', '65534', '--clear-groups',
    '--bounding-set', '-all,+sys_chroot', '--inh-caps', '-all,+sys_chroot', '--ambient-caps', '+sys_chroot',
    '--no-new-privs', '--pdeathsig', 'KILL', '--',
  ]);
  assert.equal(wrapperArgv(rootPlan, tools).includes('/bin/sh'), false, 'no cgroup, no sh');
});

test('as a user: a user namespace around the others; off: nothing', () => {
  assert.deepEqual(wrapperArgv({ chroot: false, namespaces: 'user', summary: '', warnings: [] }, tools), ['/usr/bin/unshare', '--user', '--map-current-user', '--pid', '--net', '--ipc', '--fork', '--kill-child', '--']);
  assert.deepEqual(wrapperArgv({ chroot: false, summary: '', warnings: [] }, tools), []);
});

test('the jail: QEMU\'s dir is its own (0700), the chroot is empty, root\'s and read-only', { skip: process.getuid?.() !== 0 ? 'chown needs root' : false }, () => {
  const base = mkdtempSync(join(tmpdir(), 'emb-jail-'));
  try {
    const l = jailLayout(base, true);
    prepareJail(l, rootPlan);
    const dir = statSync(l.dir);
    assert.deepEqual([dir.uid, dir.gid, dir.mode & 0o777], [65534, 65534, 0o700]);
    const root = statSync(l.root);
    assert.deepEqual([root.uid, root.gid, root.mode & 0o777], [0, 0, 0o555]);
    assert.deepEqual(readdirSync(l.root), []);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('readability by QEMU\'s uid follows owner, group, other', () => {
  assert.equal(canRead({ mode: 0o644, uid: 0, gid: 0 }, 65534, 65534), true);
  assert.equal(canRead({ mode: 0o640, uid: 0, gid: 0 }, 65534, 65534), false);
  assert.equal(canRead({ mode: 0o640, uid: 0, gid: 65534 }, 65534, 65534), true);
  assert.equal(canRead({ mode: 0o004, uid: 65534, gid: 0 }, 65534, 65534), false, 'the owner bits decide for the owner');
});

test('an image QEMU\'s uid cannot read fails the boot with what to do', () => {
  const base = mkdtempSync(join(tmpdir(), 'emb-jail-'));
  try {
    const f = join(base, 'vmlinux');
    writeFileSync(f, 'x');
    chmodSync(f, 0o600);
    assert.throws(() => checkReadableBy([f], { uid: 65534, gid: 65534 }), (e) => isEmberdError(e, 'BOOT_FAILED') && /uid 65534:65534, which cannot read .*vmlinux \(mode 600/.test(e.message) && /chmod a\+r/.test(e.message));
    chmodSync(f, 0o644);
    checkReadableBy([f, join(base, 'missing')], { uid: 65534, gid: 65534 });
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('with a network: nsenter joins the sandbox netns (no new net namespace), and a private mount namespace gives QEMU a tun node of its own', () => {
  const argv = wrapperArgv(rootPlan, { ...tools, nsenter: '/usr/bin/nsenter' }, undefined, '/run/netns/emberd-ab12-sb_x');
  assert.deepEqual(argv.slice(0, 12), [
    '/usr/bin/nsenter', '--net=/run/netns/emberd-ab12-sb_x', '--',
    '/usr/bin/unshare', '--pid', '--ipc', '--mount', '--fork', '--kill-child', '--',
    '/bin/sh', '-c',
  ]);
  assert.equal(argv[12], TUN_NODE_SCRIPT);
  assert.equal(argv[13], '65534:65534');
  assert.equal(argv[14], '/usr/bin/setpriv', 'the uid change comes after the tun node is made');
  assert.equal(argv.includes('--net'), false);
});

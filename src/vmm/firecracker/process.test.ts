// How a Firecracker process is put into a sandbox's netns: the non-jailed argv and its nsenter
// wrapper (the same words QEMU's wrapper chain uses), and what the backend announces. Pure: the
// jailed path's --netns is in jailer.test.ts, a boot in a real netns in test/e2e-firecracker-egress.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { directCommand } from './process.ts';
import { FirecrackerBackend } from './firecracker-backend.ts';
import { wrapperArgv } from '../qemu/jail.ts';
import { planConfinement } from '../qemu/confinement.ts';
import { nsenterArgv } from '../netns.ts';
import { parseFirecrackerVersion } from './version.ts';

const network = { netns: 'emberd-ab12-sb_x', tap: 'tap0', mac: '02:eb:00:00:00:02' };
const host = { api: '/run/emberd/sb_x/firecracker.sock' };

test('without the jailer, a sandbox with a network runs Firecracker through nsenter --net=/run/netns/<ns>', () => {
  assert.deepEqual(directCommand({ id: 'sb_x', network }, host, '/usr/bin/nsenter'), {
    args: ['--api-sock', host.api, '--id', 'sb-x'],
    wrap: ['/usr/bin/nsenter', '--net=/run/netns/emberd-ab12-sb_x', '--'],
  });
  // No network: no wrapper at all (Firecracker stays in emberd's netns and gets no device).
  assert.deepEqual(directCommand({ id: 'sb_x' }, host), { args: ['--api-sock', host.api, '--id', 'sb-x'] });
});

test('the Firecracker and QEMU wrappers join the netns with the same words', () => {
  const qemu = wrapperArgv(planConfinement({ mode: 'off' }, { isRoot: true, uid: 0, usernsWorks: () => false, cgroups: { why: 'test' } }), { setpriv: 's', unshare: 'u', sh: '/bin/sh', nsenter: '/usr/bin/nsenter' }, undefined, '/run/netns/emberd-ab12-sb_x');
  assert.deepEqual(qemu, nsenterArgv('/run/netns/emberd-ab12-sb_x', '/usr/bin/nsenter'));
  assert.deepEqual(directCommand({ id: 'sb_x', network }, host, '/usr/bin/nsenter').wrap, qemu);
});

test('the backend announces network support; the tap owner is the jail uid, or emberd\'s own without the jailer', () => {
  const probe = { binary: '/usr/bin/firecracker', version: parseFirecrackerVersion('1.15.1')!, isDouble: false };
  const plain = new FirecrackerBackend({}, probe);
  assert.equal(plain.network, true);
  assert.deepEqual(plain.vmmUser, { uid: process.getuid!(), gid: process.getgid!() });
  const jailed = new FirecrackerBackend({ jailer: { binary: '/usr/bin/jailer', uid: 123, gid: 100, chrootBase: '/srv/jailer' } }, probe);
  assert.deepEqual(jailed.vmmUser, { uid: 123, gid: 100 });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planConfinement, type HostFacts } from './confinement.ts';
import { detectCgroups } from '../confine/cgroup-v2.ts';

const hybrid = detectCgroups('cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0', () => 'hugetlb', true);
const unified = detectCgroups('cgroup2 /sys/fs/cgroup cgroup2 rw 0 0', () => 'cpu memory pids', true);
const root: HostFacts = { isRoot: true, uid: 0, setpriv: '/usr/bin/setpriv', unshare: '/usr/bin/unshare', usernsWorks: () => assert.fail('not asked as root'), cgroups: hybrid };
const user: HostFacts = { isRoot: false, uid: 1000, setpriv: '/usr/bin/setpriv', unshare: '/usr/bin/unshare', usernsWorks: () => true, cgroups: detectCgroups('cgroup2 /sys/fs/cgroup cgroup2 rw 0 0', () => 'memory', false) };

test('root: an unprivileged uid (65534 by default), chroot, namespaces, and the cgroup the host allows', () => {
  const c = planConfinement({}, root);
  assert.deepEqual(c.drop, { uid: 65534, gid: 65534 });
  assert.equal(c.chroot, true);
  assert.equal(c.namespaces, 'plain');
  assert.equal(c.cgroups?.parent, '/sys/fs/cgroup/unified/emberd');
  assert.match(c.summary, /^uid 65534:65534 \(CAP_SYS_CHROOT only\), chroot into an empty dir, pid\/net\/ipc namespaces, seccomp/);
  assert.deepEqual(c.warnings, ['QEMU cgroup limits: cgroup v2 per VM under /sys/fs/cgroup/unified/emberd without limits (cgroup2 at /sys/fs/cgroup/unified offers hugetlb, not cpu, memory, pids).']);
  assert.deepEqual(planConfinement({ uid: 4000, gid: 4001 }, { ...root, cgroups: unified }).drop, { uid: 4000, gid: 4001 });
  assert.deepEqual(planConfinement({}, { ...root, cgroups: unified }).warnings, [], 'nothing missing, nothing to warn about');
});

test('root without util-linux: QEMU as root, and a warning that says so', () => {
  const c = planConfinement({}, { ...root, unshare: undefined });
  assert.equal(c.drop, undefined);
  assert.equal(c.chroot, false);
  assert.match(c.warnings[0]!, /unshare \(util-linux\) not found: QEMU runs as root/);
});

test('a user: QEMU as that user in its own user/pid/net/ipc namespaces, no chroot, no cgroup', () => {
  const c = planConfinement({ uid: 4000 }, user);
  assert.equal(c.drop, undefined, '--qemu-uid needs root');
  assert.equal(c.chroot, false);
  assert.equal(c.namespaces, 'user');
  assert.equal(c.cgroups, undefined);
  assert.match(c.summary, /^uid 1000 \(emberd's own\), user\/pid\/net\/ipc namespaces/);
  assert.match(c.warnings.join('\n'), /not root: QEMU runs as uid 1000/);
  const nouserns = planConfinement({}, { ...user, usernsWorks: () => false });
  assert.equal(nouserns.namespaces, undefined);
  assert.match(nouserns.warnings.join('\n'), /unprivileged user namespaces do not work here/);
});

test('off: nothing but seccomp, whoever emberd is', () => {
  for (const host of [root, user]) {
    const c = planConfinement({ mode: 'off', uid: 4000 }, host);
    assert.deepEqual([c.drop, c.chroot, c.namespaces, c.cgroups], [undefined, false, undefined, undefined]);
    assert.match(c.warnings[0]!, /confinement is off/);
  }
  assert.match(planConfinement({ mode: 'off' }, root).warnings[0]!, /escape from QEMU is host root/);
});

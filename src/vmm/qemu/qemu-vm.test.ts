import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qemuExit } from './qemu-vm.ts';

test('unshare 2.38 cannot pass SIGKILL on and exits 1 instead: that is QEMU killed by SIGKILL', () => {
  assert.deepEqual(qemuExit({ code: 1, signal: null }, 'console...\nunshare: sigprocmask unblock failed: Invalid argument\n'), { code: null, signal: 'SIGKILL' });
  assert.deepEqual(qemuExit({ code: 1, signal: null }, 'qemu-system-x86_64: some error\n'), { code: 1, signal: null });
  assert.deepEqual(qemuExit({ code: null, signal: 'SIGTERM' }, ''), { code: null, signal: 'SIGTERM' });
  assert.deepEqual(qemuExit({ code: 0, signal: null }, ''), { code: 0, signal: null });
});

// The QEMU backend against the shared backend conformance suite, on real VMs, and its own regressions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QemuBackend } from './qemu-backend.ts';
import { runBackendConformance } from '../conformance.ts';
import { AgentClient } from '../../agent/client.ts';
import { isEmberdError } from '../../errors.ts';
import { testBootSpec } from '../../../test/helpers/boot-spec.ts';

// Shared memory on: the conformance cases for it run whatever --shared-memory auto would pick here.
runBackendConformance('qemu', () => new QemuBackend({ sharedMemory: 'on' }));

test('--shared-memory auto shares only where it weakens nothing: a read-only RAM file (QEMU 8.2+) or QEMU as emberd\'s own uid', () => {
  const auto = new QemuBackend();
  const readOnly = /\brom=/.test(execFileSync('/usr/bin/qemu-system-x86_64', ['-object', 'memory-backend-file,help'], { encoding: 'utf8' }));
  assert.equal(auto.useShared, readOnly || !auto.confinement.drop);
  assert.equal(typeof auto.snapshots.sharedMemoryFile, auto.useShared ? 'function' : 'undefined', 'no shared hooks when off');
  const off = new QemuBackend({ sharedMemory: 'off' });
  assert.deepEqual([off.useShared, off.snapshots.sharedMemoryFile, off.snapshots.prepareShared], [false, undefined, undefined]);
  assert.equal(new QemuBackend({ sharedMemory: 'on' }).useShared, true);
});

// A start whose QEMU died before it accepted a QMP connection left that connect attempt retrying;
// the next start in the same run dir (the launcher's cold-boot fallback after a failed restore)
// then had its QMP socket taken by a stale attempt and waited for a greeting that never came
// (seen in e2e-snapshots' corrupt-snapshot case). A QEMU refusing -smp 1000 dies before it makes
// its sockets, so each failed start surely leaves an attempt behind; five of them race the good
// start's own, which then loses nearly always.
test('a failed start\'s connect attempts do not take the sockets of the next start in the same run dir', { timeout: 180_000 }, async () => {
  const base = mkdtempSync(join(tmpdir(), 'emb-qemu-'));
  try {
    const backend = new QemuBackend();
    const runDir = join(base, 'sb');
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 5; i++) {
        await assert.rejects(backend.boot(testBootSpec('stale', runDir, { pack: 'shell', machine: { vcpus: 1000, memoryMib: 256 } })), (e) => isEmberdError(e, 'BOOT_FAILED'));
      }
      const vm = await backend.boot(testBootSpec('stale', runDir, { pack: 'shell', deadline: Date.now() + 30_000 }));
      try {
        await new AgentClient(vm.control).helloUntil(Date.now() + 30_000);
      } finally {
        await vm.stop(0);
      }
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

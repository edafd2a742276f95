import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { onlyChildOf, spawnVmm } from './vmm-process.ts';

test('wrappers run before the binary, extra fds become 3, 4, ...; a forking wrapper\'s child is found', async () => {
  const fd = openSync('/proc/self/cmdline', 'r');
  // sh -c '...' "$0"=wrapper: the wrapped "binary" is sh again, which forks a sleep and reports fd 3
  const proc = spawnVmm('/bin/sh', ['-c', 'readlink /proc/self/fd/3; sleep 30 & wait'], { wrap: ['/usr/bin/env', '-u', 'NOTHING'], extraFds: [fd] });
  closeSync(fd);
  const out = await new Promise<string>((resolve) => { let o = ''; proc.child.stdout!.on('data', (b: Buffer) => { o += b.toString(); if (o.includes('\n')) resolve(o); }); });
  try {
    assert.match(out, /cmdline/, 'fd 3 is the file handed over');
    // The child appears right after the fork; until the shell has reaped readlink, that one may be
    // the only child seen: wait for the sleep.
    let cmd = '';
    for (const end = Date.now() + 30_000; !/^sleep\0/.test(cmd) && Date.now() < end;) {
      const kid = onlyChildOf(proc.pid);
      try { cmd = kid ? readFileSync(`/proc/${kid}/cmdline`, 'utf8') : ''; } catch { cmd = ''; /* it just exited */ }
      if (!/^sleep\0/.test(cmd)) await new Promise((r) => setTimeout(r, 2));
    }
    assert.match(cmd, /^sleep\0/, 'the wrapped binary\'s child is found');
  } finally {
    proc.child.kill('SIGKILL');
    await proc.exited;
  }
  assert.equal(onlyChildOf(proc.pid), undefined, 'gone: no child');
});

// `npm test`: the TypeScript type check (tests included), the C unit tests of the guest, then every
// TypeScript test (unit tests next to the code, VM tests under test/), one file at a time: the VM
// tests share two cores.
import { spawnSync } from 'node:child_process';

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json']);
run('make', ['-s', '-C', 'guest', 'test']);
const only = process.argv.slice(2);
run(process.execPath, [
  '--test',
  '--test-reporter=spec',
  '--test-concurrency=1',
  '--test-timeout=300000',
  ...(only.length ? only : ['src/**/*.test.ts', 'test/**/*.test.ts']),
]);

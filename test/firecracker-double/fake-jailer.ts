// A stand-in for Firecracker's jailer, for the driver's jailed path on machines without a jailer
// binary (or KVM). It checks the argv the way the jailer parses it, lays out the chroot
// (<base>/<exec name>/<id>/root with /run and /dev, a copy of the exec file, the pid file
// <root>/<exec name>.pid, created exclusively) and, as with --new-pid-ns, starts the "exec file"
// as a separate process, writes its pid and exits 0.
//
// What it does NOT do, because it cannot without the real thing: chroot, drop to --uid/--gid,
// create device nodes or cgroups, enter a PID namespace. Instead it tells the test double
// (FC_DOUBLE_CHROOT) to resolve every path it is given relative to the jail root, as a chrooted
// Firecracker would: a host path sent by the driver then fails to open, so chroot-relative paths
// are checked for real. FAKE_JAILER_RECORD=FILE appends its argv as one JSON line.
import { spawn } from 'node:child_process';
import { appendFileSync, copyFileSync, mkdirSync, openSync, closeSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';

const argv = process.argv.slice(2);
if (process.env.FAKE_JAILER_RECORD) appendFileSync(process.env.FAKE_JAILER_RECORD, JSON.stringify(argv) + '\n');

const sep = argv.indexOf('--');
const own = sep < 0 ? argv : argv.slice(0, sep);
const fcArgs = sep < 0 ? [] : argv.slice(sep + 1);
const single = new Set(['--id', '--exec-file', '--uid', '--gid', '--chroot-base-dir', '--netns', '--cgroup-version', '--parent-cgroup']);
const multi = new Set(['--cgroup', '--resource-limit']);
const flags = new Set(['--daemonize', '--new-pid-ns']);
const v: Record<string, string> = {};
for (let i = 0; i < own.length; i++) {
  const a = own[i]!;
  if (single.has(a) || multi.has(a)) {
    const val = own[++i];
    if (val === undefined) fail(`Missing value for argument '${a}'`);
    if (single.has(a)) {
      if (a in v) fail(`argument ${a} given twice`);
      v[a] = val;
    } else if (a === '--cgroup' && !/^[a-z_]+\.[a-z_.]+=.+$/.test(val)) fail(`invalid cgroup ${val}`);
  } else if (!flags.has(a)) {
    fail(`Found argument '${a}' which wasn't expected`);
  } else {
    v[a] = 'true';
  }
}
for (const r of ['--id', '--exec-file', '--uid', '--gid']) if (!(r in v)) fail(`Missing mandatory argument ${r}`);
if (!/^[A-Za-z0-9-]{1,64}$/.test(v['--id']!)) fail(`Invalid instance ID: ${v['--id']}`);
if (!/^\d+$/.test(v['--uid']!) || !/^\d+$/.test(v['--gid']!)) fail('uid and gid must be numbers');
if (!v['--new-pid-ns']) fail('the fake jailer only implements --new-pid-ns (the driver\'s default)');
if (v['--cgroup-version'] && v['--cgroup-version'] !== '1' && v['--cgroup-version'] !== '2') fail('cgroup version must be 1 or 2');

const execName = basename(v['--exec-file']!);
const root = join(v['--chroot-base-dir'] ?? '/srv/jailer', execName, v['--id']!, 'root');
for (const d of ['run', 'dev/net']) mkdirSync(join(root, d), { recursive: true, mode: 0o700 });
copyFileSync(v['--exec-file']!, join(root, execName)); // the jailer copies, never links, the binary
let pidFd: number;
try {
  pidFd = openSync(join(root, `${execName}.pid`), 'wx'); // create_new, as the jailer does
} catch (e) {
  fail(`Failed to open file ${join(root, `${execName}.pid`)}: ${(e as Error).message}`);
}

const child = spawn(v['--exec-file']!, ['--id', v['--id']!, ...fcArgs], {
  stdio: ['ignore', 'inherit', 'inherit'],
  env: { ...process.env, FC_DOUBLE_CHROOT: root, FC_DOUBLE_NO_PARENT_WATCH: '1' },
  detached: false,
});
child.once('spawn', () => {
  writeSync(pidFd, String(child.pid));
  closeSync(pidFd);
  child.unref();
  process.exit(0); // like the jailer after clone(CLONE_NEWPID): Firecracker is on its own now
});
child.once('error', (e) => fail(`exec failed: ${e.message}`));

function fail(msg: string): never {
  process.stderr.write(`Jailer error: ${msg}\n`);
  process.exit(1);
}

// A stand-in for Firecracker's jailer, for the driver's jailed path on machines without a jailer
// binary (or KVM). It checks the argv the way the jailer parses it, lays out the chroot
// (<base>/<exec name>/<id>/root with /run and /dev, a copy of the exec file, the pid file
// <root>/<exec name>.pid, created exclusively) and, as with --new-pid-ns, starts the "exec file"
// as a separate process, writes its pid and exits 0. With --netns PATH it checks, as the jailer's
// open + setns(CLONE_NEWNET) would, that PATH is a network namespace handle, and starts the exec
// file in that namespace (through `nsenter --net=PATH`, which execs in place: the pid written is
// the exec file's).
//
// What it does NOT do, because it cannot without the real thing: chroot, drop to --uid/--gid,
// create device nodes or cgroups, enter a PID namespace. Instead it tells the test double
// (FC_DOUBLE_CHROOT) to resolve every path it is given relative to the jail root, as a chrooted
// Firecracker would: a host path sent by the driver then fails to open, so chroot-relative paths
// are checked for real. FAKE_JAILER_RECORD=FILE appends its argv as one JSON line.
import { spawn } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, openSync, closeSync, statfsSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';

/** statfs f_type of a namespace handle such as /run/netns/NAME (include/uapi/linux/magic.h) */
const NSFS_MAGIC = 0x6e736673;
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

// The jailer joins the netns before anything else of the jail (env.rs run()): a bad handle fails it.
const netns = v['--netns'];
if (netns !== undefined) {
  try { closeSync(openSync(netns, 'r')); } catch (e) { fail(`Failed to open file ${netns}: ${(e as Error).message}`); }
  if (statfsSync(netns).type !== NSFS_MAGIC) fail('Failed to join network namespace: netns: Invalid argument (os error 22)');
}
const nsenter = ['/usr/bin/nsenter', '/bin/nsenter'].find((p) => existsSync(p));
if (netns !== undefined && !nsenter) fail('the fake jailer needs nsenter (util-linux) for --netns');

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

const exec = [v['--exec-file']!, '--id', v['--id']!, ...fcArgs];
const command = netns !== undefined ? [nsenter!, `--net=${netns}`, '--', ...exec] : exec;
const child = spawn(command[0]!, command.slice(1), {
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

// What every language pack's root tree is made with (the packs' recipes, in targets/, compose
// these): merged-/usr extraction, busybox applets, a CA bundle, pruning, emberd's base files, and
// the reproducible zstd squashfs.

import { chmod, lstat, mkdir, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { extractDeb } from './apt.ts';
import { lexists, run, walk } from './util.ts';

const MERGED_USR: [string, string][] = [
  ['bin', 'usr/bin'],
  ['sbin', 'usr/sbin'],
  ['lib', 'usr/lib'],
  ['lib64', 'usr/lib64'],
];

async function mkdirMode(p: string, mode: number): Promise<void> {
  await mkdir(p, { recursive: true });
  await chmod(p, mode);
}

async function writeMode(p: string, data: string, mode = 0o644): Promise<void> {
  await mkdir(dirname(p), { recursive: true });
  await writeFile(p, data);
  await chmod(p, mode);
}

/** Merged-/usr skeleton: bin, sbin, lib, lib64 are symlinks into usr/. */
export async function makeSkeleton(tree: string): Promise<void> {
  await mkdirMode(tree, 0o755);
  await mkdirMode(join(tree, 'usr'), 0o755);
  for (const [link, target] of MERGED_USR) {
    await mkdirMode(join(tree, target), 0o755);
    await symlink(target, join(tree, link));
  }
}

/** Base filesystem every pack gets: mount points, tmp, root's home, minimal /etc. */
export async function addBaseFiles(tree: string, spec: { name: string; interpreter: readonly string[] }): Promise<void> {
  for (const d of ['dev', 'proc', 'sys', 'run', 'mnt', 'home', 'var', 'var/tmp', 'etc', 'etc/emberd']) {
    await mkdirMode(join(tree, d), 0o755);
  }
  await mkdirMode(join(tree, 'root'), 0o700);
  await mkdirMode(join(tree, 'tmp'), 0o1777);
  await chmod(join(tree, 'var/tmp'), 0o1777);
  await writeMode(join(tree, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  await writeMode(join(tree, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  await writeMode(join(tree, 'etc/shadow'), 'root:*:0:0:99999:7:::\n', 0o640);
  await writeMode(join(tree, 'etc/hosts'), '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n');
  await writeMode(join(tree, 'etc/hostname'), 'sandbox\n');
  await writeMode(join(tree, 'etc/resolv.conf'), '');
  await writeMode(join(tree, 'etc/nsswitch.conf'), 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n');
  await writeMode(join(tree, 'etc/emberd/interpreter'), spec.interpreter.map((a) => `${a}\n`).join(''));
  await writeMode(join(tree, 'etc/emberd/pack'), `${spec.name}\n`);
}

/** Lists busybox applets by running the (static) binary on the host: "usr/bin/awk" etc. */
export async function busyboxApplets(busybox: string): Promise<string[]> {
  const { stdout } = await run(busybox, ['--list-full']);
  return stdout
    .toString('utf8')
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/**
 * Symlinks each applet to usr/bin/busybox (relative links). bin/X and sbin/X map to usr/bin/X and
 * usr/sbin/X (merged /usr). Paths that already exist (e.g. from a real package) are left alone.
 */
export async function installBusyboxApplets(tree: string): Promise<number> {
  const bb = join(tree, 'usr/bin/busybox');
  let n = 0;
  for (const full of await busyboxApplets(bb)) {
    const m = /^(?:usr\/)?(bin|sbin)\/([^/]+)$/.exec(full);
    if (m === null) continue; // e.g. "linuxrc"
    const dir = join(tree, 'usr', m[1] as string);
    const link = join(dir, m[2] as string);
    if (m[2] === 'busybox' || (await lexists(link))) continue;
    await symlink(relative(dir, bb), link);
    n++;
  }
  return n;
}

/** Removes documentation and packaging leftovers from any pack tree. */
export async function pruneCommon(tree: string): Promise<void> {
  const paths = [
    'usr/share/doc',
    'usr/share/doc-base',
    'usr/share/man',
    'usr/share/info',
    'usr/share/locale',
    'usr/share/lintian',
    'usr/share/bug',
    'usr/share/menu',
    'usr/share/applications',
    'usr/share/pixmaps',
    'usr/share/binfmts',
    'usr/share/initramfs-tools',
    'usr/lib/binfmt.d',
    'var/lib/dpkg',
    'var/lib/apt',
    'var/cache',
    'var/log',
    'etc/apt',
    'etc/dpkg',
  ];
  for (const p of paths) await rm(join(tree, p), { recursive: true, force: true });
}

/**
 * ca-certificates normally builds its bundle in postinst (update-ca-certificates, needs openssl +
 * debconf). Do it here: all Mozilla certs, sorted by name, concatenated. Points OpenSSL's default
 * paths (/usr/lib/ssl/cert.pem, /usr/lib/ssl/certs, used by Python's ssl) at it.
 */
export async function installCaBundle(tree: string): Promise<boolean> {
  const src = join(tree, 'usr/share/ca-certificates');
  if (!(await lexists(src))) return false;
  const files = (await walk(src)).filter((p) => p.endsWith('.crt')).sort();
  const parts: string[] = [];
  for (const f of files) {
    const t = await readFile(join(src, f), 'utf8');
    parts.push(t.endsWith('\n') ? t : `${t}\n`);
  }
  await writeMode(join(tree, 'etc/ssl/certs/ca-certificates.crt'), parts.join(''));
  await chmod(join(tree, 'etc/ssl'), 0o755);
  await chmod(join(tree, 'etc/ssl/certs'), 0o755);
  await mkdirMode(join(tree, 'usr/lib/ssl'), 0o755);
  if (!(await lexists(join(tree, 'usr/lib/ssl/cert.pem')))) await symlink('/etc/ssl/certs/ca-certificates.crt', join(tree, 'usr/lib/ssl/cert.pem'));
  if (!(await lexists(join(tree, 'usr/lib/ssl/certs')))) await symlink('/etc/ssl/certs', join(tree, 'usr/lib/ssl/certs'));
  await rm(src, { recursive: true, force: true });
  return true;
}

/** Extracts debs (in the given order) into a fresh merged-/usr tree. */
export async function assembleFromDebs(tree: string, debs: readonly string[]): Promise<void> {
  await makeSkeleton(tree);
  for (const deb of debs) await extractDeb(deb, tree);
  // Sanity: the skeleton symlinks must have survived extraction.
  for (const [link, target] of MERGED_USR) {
    const t = await readlink(join(tree, link)).catch(() => null);
    if (t !== target) throw new Error(`${link} in the pack tree is no longer a symlink to ${target}`);
  }
}

/** Tree size in bytes (regular files only; for progress notes). */
export async function treeBytes(tree: string): Promise<number> {
  let total = 0;
  const rec = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await rec(p);
      else if (e.isFile()) total += (await lstat(p)).size;
    }
  };
  await rec(tree);
  return total;
}

export interface SquashfsOptions {
  processors?: number;
}

/** Reproducible zstd squashfs of `tree` at `out` (overwritten). */
export async function makeSquashfs(tree: string, out: string, opts: SquashfsOptions = {}): Promise<void> {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C' };
  delete env['SOURCE_DATE_EPOCH']; // mksquashfs refuses -mkfs-time/-all-time together with it
  await run(
    'mksquashfs',
    [
      tree,
      out,
      '-comp',
      'zstd',
      '-noappend',
      '-reproducible',
      '-mkfs-time',
      '0',
      '-all-time',
      '0',
      '-all-root',
      '-no-xattrs',
      '-no-progress',
      '-quiet',
      ...(opts.processors !== undefined ? ['-processors', String(opts.processors)] : []),
    ],
    { env },
  );
}

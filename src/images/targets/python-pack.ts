// Target `python`: CPython with its whole standard library from Debian bookworm, busybox for
// /bin/sh and the usual tools, bash, a CA bundle, deterministic bytecode; no test suites, GUI or
// packaging tooling. Its recipe is also the base of ./python-data-pack.ts.

import { rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { addBaseFiles, installBusyboxApplets, installCaBundle, pruneCommon } from '../packs.ts';
import { lexists, run } from '../util.ts';
import { BASH_PACKAGE, installBash } from './login-shell.ts';
import type { PackSpec } from './pack.ts';

export const PYTHON_VERSION = '3.11';

/** The python pack's apt roots, which python-data extends. */
export const PYTHON_ROOTS: readonly string[] = [`python${PYTHON_VERSION}`, `libpython${PYTHON_VERSION}-stdlib`, 'busybox-static', BASH_PACKAGE];

export const PYTHON_PACK: PackSpec = {
  name: 'python',
  interpreter: ['python3', '-c'],
  roots: PYTHON_ROOTS,
  extras: ['ca-certificates'],
  makeRoot: (tree, detail) => makePythonRoot(tree, detail, PYTHON_PACK),
};

/**
 * The python pack's root recipe for `spec`; `pruneMore` runs before the common pruning and the
 * bytecode is compiled for the stdlib and `compileDirs` (e.g. usr/lib/python3/dist-packages).
 */
export async function makePythonRoot(
  tree: string,
  detail: (text: string) => void,
  spec: Pick<PackSpec, 'name' | 'interpreter'>,
  more: {
    pruneMore?: (tree: string, detail: (text: string) => void) => Promise<void>;
    compileDirs?: readonly string[];
    /** last, with the tree complete (e.g. caches made by running the pack's python) */
    finish?: (tree: string, detail: (text: string) => void) => Promise<void>;
  } = {},
): Promise<void> {
  await installCaBundle(tree);
  await addPythonLinks(tree);
  await installBash(tree);
  detail(`busybox: ${await installBusyboxApplets(tree)} applets`);
  await prunePython(tree);
  await more.pruneMore?.(tree, detail);
  await pruneCommon(tree);
  await addBaseFiles(tree, spec);
  detail('compiling bytecode');
  await compilePython(tree, [`usr/lib/python${PYTHON_VERSION}`, ...(more.compileDirs ?? [])]);
  await more.finish?.(tree, detail);
}

/** Python-specific pruning: test suites, GUI/dev tooling, glibc iconv modules. */
async function prunePython(tree: string): Promise<void> {
  const lib = `usr/lib/python${PYTHON_VERSION}`;
  for (const p of ['test', 'idlelib', 'tkinter', 'turtledemo', 'ensurepip', 'lib2to3/tests', 'distutils/tests', 'unittest/test', 'ctypes/test', 'sqlite3/test']) {
    await rm(join(tree, lib, p), { recursive: true, force: true });
  }
  // Python's codecs are its own; glibc's gconv modules (8 MB) only serve iconv(3).
  await rm(join(tree, 'usr/lib/x86_64-linux-gnu/gconv'), { recursive: true, force: true });
  // update-ca-certificates needs openssl + run-parts (bundle is built here instead); sitecustomize only tries apport (and
  // is an absolute symlink into /etc that would resolve on the build host while compiling).
  for (const p of [
    `usr/lib/python${PYTHON_VERSION}/sitecustomize.py`,
    `etc/python${PYTHON_VERSION}/sitecustomize.py`,
    'usr/sbin/update-ca-certificates',
    'etc/ca-certificates',
  ]) {
    await rm(join(tree, p), { recursive: true, force: true });
  }
}


/**
 * How to run the pack's own python on the build host: through the pack's ld.so and libraries, so
 * no chroot or root is needed; nothing of the host's python is read.
 */
export function pythonHostCommand(tree: string, args: readonly string[]): { cmd: string; args: string[]; env: NodeJS.ProcessEnv } {
  return {
    cmd: join(tree, 'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'),
    args: ['--library-path', join(tree, 'usr/lib/x86_64-linux-gnu'), join(tree, `usr/bin/python${PYTHON_VERSION}`), ...args],
    env: {
      PATH: '/usr/bin:/bin',
      LC_ALL: 'C.UTF-8',
      PYTHONHOME: join(tree, 'usr'),
      PYTHONHASHSEED: '0',
      PYTHONDONTWRITEBYTECODE: '1',
      PYTHONNOUSERSITE: '1',
      SOURCE_DATE_EPOCH: '0',
    },
  };
}

/**
 * Byte-compiles `dirs` (relative to the tree) with the pack's own interpreter. Reproducible:
 * unchecked-hash pycs (no mtimes, and Python never stats the .py to revalidate), fixed hash seed,
 * single process, -f and no bytecode writes for the modules compileall itself imports (their
 * in-memory refcounts would otherwise vary the output).
 */
async function compilePython(tree: string, dirs: readonly string[]): Promise<void> {
  const { cmd, args, env } = pythonHostCommand(tree, [
    '-S',
    '-m',
    'compileall',
    '-q',
    '-f',
    '-j',
    '1',
    '--invalidation-mode',
    'unchecked-hash',
    '-s',
    tree,
    '-p',
    '/',
    '-x',
    '/(test|tests)/',
    ...dirs.map((d) => join(tree, d)),
  ]);
  await run(cmd, args, { env });
}

/** Python-specific symlinks that Debian's python3 (not python3.11) package would provide. */
async function addPythonLinks(tree: string): Promise<void> {
  const link = join(tree, 'usr/bin/python3');
  if (!(await lexists(link))) await symlink(`python${PYTHON_VERSION}`, link);
  const py = join(tree, 'usr/bin/python');
  if (!(await lexists(py))) await symlink('python3', py);
}


// bash in every pack that has a shell: what `bash -l -c CMD` (E2B's way to run a command) needs.
// /bin/sh stays busybox (smaller and faster to start); bash is there for scripts that ask for it.
// A login shell reads /etc/profile, which emberd writes: it keeps the exec's PATH (the agent sets
// one; an `env` PATH is the caller's choice) and reads /etc/profile.d/*.sh. The tools such scripts
// call (env, which, the coreutils) are busybox applets every pack already has.

import { chmod, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { lexists } from '../util.ts';

/** The agent's PATH (guest/src/spawn.c), for a login shell that starts without one. */
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const PROFILE = `# /etc/profile: read by login shells (bash -l, sh -l). Written by emberd's image builder.
if [ -z "\${PATH-}" ]; then
  PATH=${DEFAULT_PATH}
fi
export PATH
if [ "\${PS1-}" ]; then
  if [ "\${BASH-}" ] && [ "$BASH" != /bin/sh ]; then
    [ -f /etc/bash.bashrc ] && . /etc/bash.bashrc
  else
    PS1='# '
  fi
fi
if [ -d /etc/profile.d ]; then
  for i in /etc/profile.d/*.sh; do
    [ -r "$i" ] && . "$i"
  done
  unset i
fi
`;

/** Interactive shells only (bash reads it for non-login interactive shells; /etc/profile for login ones). */
export const BASH_BASHRC = `# /etc/bash.bashrc: interactive bash shells. Written by emberd's image builder.
[ -z "\${PS1-}" ] && return
shopt -s checkwinsize
PS1='\\u@\\h:\\w\\$ '
`;

export const SHELLS = '/bin/sh\n/usr/bin/sh\n/bin/bash\n/usr/bin/bash\n';

/**
 * Debian's bash as the packs install it: `bash` (needs the pack's libc) or, for a pack without
 * one, `bash-static` (linked as usr/bin/bash).
 */
export const BASH_PACKAGE = 'bash';
export const BASH_STATIC_PACKAGE = 'bash-static';

/**
 * After the packages are extracted: usr/bin/bash (a link to bash-static in a libc-free pack), the
 * shell's /etc files, and bash's extras out (bashbug, clear_console, skeleton dotfiles).
 */
export async function installBash(tree: string): Promise<void> {
  const bash = join(tree, 'usr/bin/bash');
  if (!(await lexists(bash))) {
    if (!(await lexists(join(tree, 'usr/bin/bash-static')))) throw new Error('neither bash nor bash-static is in the pack tree');
    await symlink('bash-static', bash);
  }
  for (const p of ['usr/bin/bashbug', 'usr/bin/clear_console', 'etc/skel', 'usr/share/debianutils', 'usr/share/bash-completion']) {
    await rm(join(tree, p), { recursive: true, force: true });
  }
  await writeEtc(tree, 'etc/profile', PROFILE);
  await writeEtc(tree, 'etc/bash.bashrc', BASH_BASHRC);
  await writeEtc(tree, 'etc/shells', SHELLS);
  await mkdir(join(tree, 'etc/profile.d'), { recursive: true });
  await chmod(join(tree, 'etc/profile.d'), 0o755);
}

async function writeEtc(tree: string, rel: string, text: string): Promise<void> {
  const p = join(tree, rel);
  await mkdir(dirname(p), { recursive: true });
  await chmod(dirname(p), 0o755);
  await rm(p, { force: true });
  await writeFile(p, text);
  await chmod(p, 0o644);
}

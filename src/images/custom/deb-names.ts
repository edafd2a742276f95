// Checks a spec's Debian package names against the host's apt lists before resolving them, so that
// a typo is a clear "unknown package" (exit 2) rather than an apt solver error.

import { run } from '../util.ts';
import { aptOptions } from '../apt.ts';

export interface DebNameProblem {
  name: string;
  why: 'unknown' | 'virtual';
}

/** `apt-cache policy` of every name at once: unknown names are absent, virtual ones have no candidate. */
export async function checkDebNames(names: readonly string[]): Promise<DebNameProblem[]> {
  if (names.length === 0) return [];
  const { stdout } = await run('apt-cache', [...aptOptions(), 'policy', ...names], { env: { ...process.env, LC_ALL: 'C' } });
  const candidate = new Map<string, boolean>();
  let current: string | undefined;
  for (const line of stdout.toString('utf8').split('\n')) {
    const head = /^(\S+):$/.exec(line);
    if (head !== null) {
      current = head[1] as string;
      candidate.set(current, false);
      continue;
    }
    const c = /^\s+Candidate: (.+)$/.exec(line);
    if (c !== null && current !== undefined) candidate.set(current, c[1] !== '(none)');
  }
  const problems: DebNameProblem[] = [];
  for (const n of names) {
    const has = candidate.get(n);
    if (has === undefined) problems.push({ name: n, why: 'unknown' });
    else if (!has) problems.push({ name: n, why: 'virtual' });
  }
  return problems;
}

/** One line per problem, saying what to do. */
export function describeDebProblems(problems: readonly DebNameProblem[]): string[] {
  return problems.map((p) =>
    p.why === 'unknown'
      ? `packages: "${p.name}" is not a Debian bookworm package this host's apt knows (check the name with \`apt-cache search ${p.name}\`; if it is right, run \`apt-get update\`)`
      : `packages: "${p.name}" has no installable version (a virtual package? name one that provides it: \`apt-cache showpkg ${p.name}\` lists them under "Reverse Provides")`,
  );
}

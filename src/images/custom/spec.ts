// The pack spec of `emberd packs build SPEC`: a small YAML (or JSON, which is YAML) file, parsed
// and checked here before anything is built. Every problem is reported at once, each with its
// place in the file and how to fix it (CustomPackError PACK_SPEC_INVALID / PACK_NAME_INVALID).
//
//   name: hello-tools            # the pack's name: [a-z0-9-]{1,32}, not a built-in pack's
//   base: shell                  # a built-in pack to start from
//   description: GNU hello       # optional, one line
//   packages: [hello]            # optional Debian bookworm packages (with their dependencies)
//   files:                       # optional: host path (relative to this file) -> pack path
//     - { src: greet.sh, dest: /usr/local/bin/greet, mode: "0755" }
//   env: { GREETING: hi }        # optional: every exec of the pack's sandboxes inherits these
//   interpreter: [sh, -c]        # optional: argv prefix of `code` execs (default: the base's)

import { readFile, stat } from 'node:fs/promises';
import { dirname, posix, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { CustomPackError } from './errors.ts';
import { builtInPackNames, checkCustomPackName } from './names.ts';

export interface SpecFile {
  /** absolute host path (a file or a directory, copied with its contents) */
  src: string;
  /** absolute, normalized path inside the pack */
  dest: string;
  /** permission bits for a file; unset: 0755 if the host file is executable by its owner, else 0644 */
  mode?: number;
}

export interface CustomPackSpec {
  /** the spec file (absolute) */
  file: string;
  name: string;
  base: string;
  description?: string;
  /** Debian package names, sorted, without duplicates */
  packages: string[];
  files: SpecFile[];
  env: Record<string, string>;
  /** unset: the base pack's */
  interpreter?: string[];
}

export const SPEC_KEYS = ['name', 'base', 'description', 'packages', 'files', 'env', 'interpreter'] as const;
const FILE_KEYS = ['src', 'dest', 'mode'] as const;

const DEB_NAME_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MODE_RE = /^0?[0-7]{3}$/;
/** Pack paths a spec may not write: mount points the guest covers, and emberd's own files. */
const RESERVED_DESTS = ['/proc', '/sys', '/dev', '/run', '/etc/emberd'];

const word = z.string().min(1).refine((w) => !/[\0\n]/.test(w), 'an interpreter word cannot hold a newline or a NUL');

const fileSchema = z.strictObject({
  src: z.string({ error: 'src is required: the host path to copy (relative to the spec file)' }).min(1),
  dest: z.string({ error: 'dest is required: the absolute path inside the pack, e.g. /usr/local/bin/tool' }).min(1),
  mode: z
    .string({ error: 'write the mode as a quoted octal string, e.g. mode: "0755" (YAML reads 0755 unquoted as the number 755)' })
    .regex(MODE_RE, 'mode must be 3 octal digits with an optional leading 0, e.g. "0755" or "644"')
    .optional(),
});

const specSchema = z.strictObject({
  name: z.string({ error: 'name is required: the pack\'s name, e.g. name: my-tools' }),
  base: z.string({ error: `base is required: the built-in pack to start from (${builtInPackNames().join(', ')})` }),
  description: z
    .string({ error: 'description must be a string' })
    .max(200, 'description must be at most 200 characters')
    .refine((d) => !d.includes('\n'), 'description must be one line')
    .optional(),
  packages: z
    .array(
      z.string({ error: 'each package is a Debian package name (a string)' }).regex(DEB_NAME_RE, 'not a Debian package name (lowercase letters, digits, + - .), e.g. hello'),
      { error: 'packages must be a list of Debian package names, e.g. packages: [hello]' },
    )
    .optional(),
  files: z.array(fileSchema, { error: 'files must be a list of { src, dest, mode } entries' }).optional(),
  env: z
    .record(
      z.string().regex(ENV_NAME_RE, 'an environment variable name is letters, digits and _ (not starting with a digit)'),
      z.string({ error: 'quote the value: environment values are strings (e.g. DEBUG: "1")' }).refine((v) => !v.includes('\0'), 'a value cannot hold a NUL'),
      { error: 'env must be a mapping of NAME: value' },
    )
    .optional(),
  interpreter: z
    .union([z.array(word).min(1, 'interpreter needs at least one word, e.g. [sh, -c]'), z.string().refine((s) => s.trim() !== '', 'interpreter cannot be empty')], {
      error: 'interpreter is the argv prefix of `code` execs: a list like [python3, -c] or a string like "python3 -c"',
    })
    .optional(),
});

/** "files[0].mode" from a zod path. */
function where(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : `${s === '' ? '' : '.'}${String(p)}`;
  return s;
}

function issueText(iss: z.core.$ZodIssue): string {
  const at = where(iss.path);
  if (iss.code === 'unrecognized_keys') {
    const known = iss.path.length === 0 ? SPEC_KEYS : FILE_KEYS;
    return iss.keys
      .map((k) => `${at === '' ? '' : `${at}: `}unknown key "${k}" (known keys: ${known.join(', ')})`)
      .join('\n');
  }
  if (at === '' && iss.code === 'invalid_type') return 'the spec must be a mapping of keys (name, base, ...)';
  if (iss.code === 'invalid_key') return `${at}: "${String(iss.path.at(-1))}" is not a variable name (letters, digits and _, not starting with a digit)`;
  return `${at}: ${iss.message}`;
}

function invalid(file: string, problems: string[]): CustomPackError {
  return new CustomPackError('PACK_SPEC_INVALID', `${file}:\n${problems.map((p) => `  ${p.replaceAll('\n', '\n  ')}`).join('\n')}`);
}

/** `/usr//local/./bin/` -> `/usr/local/bin`; null when not absolute or with `..`. */
export function normalizePackPath(p: string): string | null {
  if (!p.startsWith('/') || p.split('/').includes('..') || p.includes('\0')) return null;
  const n = posix.normalize(p).replace(/\/+$/, '');
  return n === '' ? '/' : n;
}

/** files[]: dests inside the pack and not reserved, srcs that exist; appends to `problems`. */
async function checkFiles(entries: unknown[], dir: string, problems: string[]): Promise<SpecFile[]> {
  const files: SpecFile[] = [];
  const dests = new Set<string>();
  for (const [i, e] of entries.entries()) {
    const f = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
    const at = `files[${i}]`;
    const mode = typeof f['mode'] === 'string' && MODE_RE.test(f['mode']) ? parseInt(f['mode'], 8) : undefined;
    let dest: string | null = null;
    if (typeof f['dest'] === 'string') {
      dest = normalizePackPath(f['dest']);
      if (dest === null) {
        problems.push(`${at}.dest: "${f['dest']}" must be an absolute path inside the pack without "..", e.g. /usr/local/bin/tool`);
      } else if (dest === '/' || RESERVED_DESTS.some((r) => dest === r || dest?.startsWith(`${r}/`))) {
        problems.push(`${at}.dest: ${dest} is reserved (${RESERVED_DESTS.join(', ')} belong to the guest and emberd; the interpreter is set with interpreter:)`);
      } else if (dests.has(dest)) {
        problems.push(`${at}.dest: ${dest} is the dest of an earlier entry too`);
      } else {
        dests.add(dest);
      }
    }
    if (typeof f['src'] !== 'string' || f['src'] === '') continue;
    const src = resolve(dir, f['src']);
    const st = await stat(src).catch(() => null);
    if (st === null) {
      problems.push(`${at}.src: ${src} does not exist (a relative src is taken from the spec's directory, ${dir})`);
    } else if (!st.isFile() && !st.isDirectory()) {
      problems.push(`${at}.src: ${src} is neither a file nor a directory`);
    } else if (st.isDirectory() && f['mode'] !== undefined) {
      problems.push(`${at}.mode: ${src} is a directory: mode applies to a file (a directory's files get 0755 if executable by their owner, else 0644)`);
    }
    if (dest !== null) files.push({ src, dest, ...(mode !== undefined && { mode }) });
  }
  return files;
}

/**
 * Parses and checks a spec's text. Host paths (files[].src) are taken relative to `file`'s
 * directory and must exist. Throws CustomPackError listing every problem.
 */
export async function parseSpec(text: string, file: string): Promise<CustomPackSpec> {
  file = resolve(file);
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) throw invalid(file, doc.errors.map((e) => `not valid YAML/JSON: ${e.message.trim()}`));
  const raw: unknown = doc.toJS();
  const parsed = specSchema.safeParse(raw);
  const problems = parsed.success ? [] : parsed.error.issues.map(issueText);
  // The checks below also run on a spec with type errors, so that one pass reports everything.
  const r = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  if (typeof r['name'] === 'string') {
    try {
      checkCustomPackName(r['name'], 'name');
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  const bases = builtInPackNames();
  if (typeof r['base'] === 'string' && !bases.includes(r['base'])) {
    problems.push(`base "${r['base']}" is not a built-in pack: use one of ${bases.join(', ')}`);
  }
  const files = Array.isArray(r['files']) ? await checkFiles(r['files'], dirname(file), problems) : [];
  if (!parsed.success || problems.length > 0) throw invalid(file, problems);
  const s = parsed.data;

  const interpreter = typeof s.interpreter === 'string' ? s.interpreter.trim().split(/\s+/) : s.interpreter;
  return {
    file,
    name: s.name,
    base: s.base,
    ...(s.description !== undefined && { description: s.description }),
    packages: [...new Set(s.packages ?? [])].sort(),
    files,
    env: s.env ?? {},
    ...(interpreter !== undefined && { interpreter }),
  };
}

/** Reads and parses a spec file. */
export async function loadSpec(path: string): Promise<CustomPackSpec> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new CustomPackError('PACK_SPEC_INVALID', `cannot read the spec ${resolve(path)}: ${(e as Error).message}`, { cause: e });
  }
  return parseSpec(text, path);
}

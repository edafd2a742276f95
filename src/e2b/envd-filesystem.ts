// envd's filesystem.Filesystem service (Connect-RPC) on the manager's file operations; MakeDir
// and Move, which the manager has no call for, run mkdir and mv in the guest. Watching a
// directory is not supported (Unimplemented).
import { posix } from 'node:path';
import { Code, ConnectError, type ServiceImpl } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { Filesystem, FileType, type EntryInfoSchema } from './gen/filesystem/filesystem_pb.js';
import type { FileStat } from '../sandbox/files.ts';
import type { SandboxManager } from '../sandbox/manager.ts';
import { EmberdError, isEmberdError } from '../errors.ts';
import { connectErrors } from './connect-errors.ts';
import { envdSandbox } from './envd-process.ts';
import { HOME, type E2bRegistry } from './registry.ts';

type EntryInit = MessageInitShape<typeof EntryInfoSchema>;

/** A path as envd takes it: relative ones start at the user's home. */
export function resolvePath(path: string): string {
  if (!path) throw new EmberdError('INVALID_PATH', 'the path is empty; give an absolute path, or one relative to /home/user');
  return posix.resolve(HOME, path);
}

const TYPES: Record<FileStat['type'], FileType> = { file: FileType.FILE, dir: FileType.DIRECTORY, symlink: FileType.SYMLINK, other: FileType.UNSPECIFIED };

/** "0755" on a directory -> "drwxr-xr-x", as Go's FileMode.String() prints it. */
function permissions(s: FileStat): string {
  const bits = parseInt(s.mode, 8);
  const rwx = ['r', 'w', 'x'];
  let out = s.type === 'dir' ? 'd' : s.type === 'symlink' ? 'L' : s.type === 'other' ? '?' : '-';
  for (let i = 8; i >= 0; i--) out += bits & (1 << i) ? rwx[(8 - i) % 3] : '-';
  return out;
}

/** emberd runs every exec as root, so root owns what the E2B API shows. */
export function entryOf(s: FileStat): EntryInit {
  return {
    name: s.name, type: TYPES[s.type], path: s.path, size: BigInt(s.size), mode: parseInt(s.mode, 8), permissions: permissions(s),
    owner: 'root', group: 'root', modifiedTime: timestampFromDate(new Date(s.mtime)),
  };
}

const EXISTS = 17;

/** Runs a small shell script in the guest; non-zero exits become file errors. */
async function sh(manager: SandboxManager, id: string, script: string, args: string[]): Promise<number> {
  const r = await manager.exec(id, { argv: ['/bin/sh', '-c', script, 'sh', ...args] });
  if (r.exitCode === 0 || r.exitCode === EXISTS) return r.exitCode;
  const err = r.stderr.toString().trim();
  if (/No such file/i.test(err)) throw new EmberdError('FILE_NOT_FOUND', `${err}; check the path`);
  if (/Permission denied/i.test(err)) throw new EmberdError('PERMISSION_DENIED', err);
  if (/Not a directory/i.test(err)) throw new EmberdError('NOT_A_DIRECTORY', err);
  throw new EmberdError('FILE_OPERATION_FAILED', err || `exit status ${r.exitCode}`);
}

async function listDeep(manager: SandboxManager, id: string, path: string, depth: number): Promise<FileStat[]> {
  const entries = await manager.listDir(id, path);
  if (depth <= 1) return entries;
  const nested = await Promise.all(entries.filter((e) => e.type === 'dir').map((e) => listDeep(manager, id, e.path, depth - 1)));
  return [...entries, ...nested.flat()];
}

export function filesystemService(reg: E2bRegistry): ServiceImpl<typeof Filesystem> {
  const m = reg.manager;
  return {
    async stat(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      return connectErrors(async () => ({ entry: entryOf(await m.statPath(sb.id, resolvePath(req.path))) }));
    },

    async listDir(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      return connectErrors(async () => {
        const path = resolvePath(req.path);
        const st = await m.statPath(sb.id, path);
        if (st.type !== 'dir') throw new EmberdError('NOT_A_DIRECTORY', `${path} is not a directory; list a directory`);
        return { entries: (await listDeep(m, sb.id, path, Math.max(1, req.depth || 1))).map(entryOf) };
      });
    },

    async makeDir(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      return connectErrors(async () => {
        const path = resolvePath(req.path);
        const code = await sh(m, sb.id, `[ -e "$1" ] && exit ${EXISTS}; mkdir -p -- "$1"`, [path]);
        if (code === EXISTS) throw new ConnectError(`${path} already exists`, Code.AlreadyExists);
        return { entry: entryOf(await m.statPath(sb.id, path)) };
      });
    },

    async move(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      return connectErrors(async () => {
        const [from, to] = [resolvePath(req.source), resolvePath(req.destination)];
        await sh(m, sb.id, 'mkdir -p -- "$(dirname -- "$2")" && mv -f -- "$1" "$2"', [from, to]);
        return { entry: entryOf(await m.statPath(sb.id, to)) };
      });
    },

    async remove(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      return connectErrors(async () => {
        // As envd (os.RemoveAll): removing what is not there is not an error.
        await m.deletePath(sb.id, resolvePath(req.path), true).catch((e: unknown) => { if (!isEmberdError(e, 'FILE_NOT_FOUND')) throw e; });
        return {};
      });
    },

    // eslint-disable-next-line require-yield
    async *watchDir() {
      throw new ConnectError('watching directories is not supported by emberd\'s E2B API', Code.Unimplemented);
    },
    async createWatcher() {
      throw new ConnectError('watching directories is not supported by emberd\'s E2B API', Code.Unimplemented);
    },
    async getWatcherEvents() {
      throw new ConnectError('watching directories is not supported by emberd\'s E2B API', Code.Unimplemented);
    },
    async removeWatcher() {
      throw new ConnectError('watching directories is not supported by emberd\'s E2B API', Code.Unimplemented);
    },
  };
}

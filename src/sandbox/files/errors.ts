// From a failed guest tool run to a stable error code: the scripts' own exit codes first, then the
// busybox tools' words on stderr (they are the only detail the tools give).
import type { ExitInfo } from '../../agent/client.ts';
import { EmberdError, type ErrorCode } from '../../errors.ts';
import { X_IS_DIR, X_NOT_DIR } from './scripts.ts';

/** Maps a failed tool run onto a stable code; the tool's own words go into the message. */
export function fileError(path: string, exit: Pick<ExitInfo, 'exitCode' | 'timedOut'>, stderr: string, op: string): EmberdError {
  const said = stderr.trim().split('\n').slice(-3).join('; ').slice(0, 500);
  const detail = said ? ` (${said})` : '';
  if (exit.timedOut) return new EmberdError('AGENT_TIMEOUT', `${op} ${path} did not finish in time and was stopped${detail}`);
  const is = (re: RegExp) => re.test(stderr);
  let code: ErrorCode;
  let msg: string;
  if (exit.exitCode === X_IS_DIR || is(/Is a directory/)) {
    code = 'IS_A_DIRECTORY';
    msg = `${path} is a directory; ${op === 'download' ? 'download a directory with format=tar' : op === 'upload' ? 'give the path of the file itself, or upload a tar with format=tar' : 'use a directory operation'}`;
  } else if (exit.exitCode === X_NOT_DIR || is(/Not a directory/)) {
    code = 'NOT_A_DIRECTORY';
    msg = `${path}, or one of its parents, is not a directory`;
  } else if (is(/No such file or directory/)) {
    code = 'FILE_NOT_FOUND';
    msg = `${path} does not exist in the sandbox`;
  } else if (is(/Directory not empty/)) {
    code = 'DIRECTORY_NOT_EMPTY';
    msg = `${path} is a directory that is not empty; pass recursive=true to delete it with everything in it`;
  } else if (is(/No space left on device|Disk quota exceeded/)) {
    code = 'NO_SPACE';
    msg = `the sandbox's filesystem is full while writing ${path}; delete files in the sandbox or write less`;
  } else if (is(/File name too long/)) {
    code = 'INVALID_PATH';
    msg = `${path} has a name longer than the sandbox's filesystem allows (255 bytes per name)`;
  } else if (is(/Permission denied|Operation not permitted|Read-only file system|nonexistent directory/)) {
    // ("nonexistent directory" is ash refusing to create a file in an existing directory whose
    // filesystem cannot hold new files, such as /proc: our scripts create missing parents first.)
    code = 'PERMISSION_DENIED';
    msg = `${op} ${path} is not permitted in the sandbox`;
  } else if (op.startsWith('tar') && is(/tar: /)) {
    code = 'INVALID_TAR';
    msg = `the tar stream for ${path} could not be extracted; send an uncompressed POSIX/ustar or GNU tar`;
  } else {
    code = 'FILE_OPERATION_FAILED';
    msg = `${op} ${path} failed in the sandbox with status ${exit.exitCode}`;
  }
  return new EmberdError(code, msg + detail);
}

// emberd/deepagents: a LangChain deepagents `BaseSandbox` over one Sandbox the caller owns; the
// base class builds ls, read, write, edit, grep and glob on execute, uploadFiles and
// downloadFiles. Tested against deepagents 1.14.1 (docs/sdk.md).
import { BaseSandbox, type ExecuteResponse, type FileDownloadResponse, type FileOperationError, type FileUploadResponse } from 'deepagents';
import { EmberdError } from '../client.ts';
import type { Sandbox } from '../sandbox.ts';

export interface EmberdSandboxOptions {
  /** Per command (default: the daemon's --exec-timeout). */
  timeoutMs?: number;
  /** Working directory of commands and the base of relative paths (default /root). */
  cwd?: string;
}

/** The daemon's codes for what deepagents can name; anything else is thrown. */
const FILE_ERRORS: Record<string, FileOperationError> = {
  FILE_NOT_FOUND: 'file_not_found',
  PERMISSION_DENIED: 'permission_denied',
  IS_A_DIRECTORY: 'is_directory',
  INVALID_PATH: 'invalid_path',
  NOT_A_DIRECTORY: 'invalid_path',
};

export class EmberdSandbox extends BaseSandbox {
  readonly id: string;
  readonly sandbox: Sandbox;
  private readonly opts: EmberdSandboxOptions;

  constructor(sandbox: Sandbox, opts: EmberdSandboxOptions = {}) {
    super();
    this.sandbox = sandbox;
    this.id = sandbox.id;
    this.opts = opts;
  }

  /** deepagents wants stdout and stderr as one text, interleaved as written: stderr is joined to stdout in the guest. */
  async execute(command: string): Promise<ExecuteResponse> {
    const r = await this.sandbox.commands.run(`exec 2>&1\n${command}`, { cwd: this.opts.cwd ?? '/root', timeoutMs: this.opts.timeoutMs });
    const note = r.timedOut ? `\n[emberd: timed out after ${r.durationMs} ms; the command was killed]` : '';
    return { output: r.stdout + r.stderr + note, exitCode: r.exitCode, truncated: r.truncated };
  }

  async uploadFiles(files: Array<[string, Uint8Array]>): Promise<FileUploadResponse[]> {
    const out: FileUploadResponse[] = [];
    for (const [path, content] of files) {
      out.push({ path, error: await fileError(() => this.sandbox.files.write(this.abs(path), content)) });
    }
    return out;
  }

  async downloadFiles(paths: string[]): Promise<FileDownloadResponse[]> {
    const out: FileDownloadResponse[] = [];
    for (const path of paths) {
      let content: Uint8Array | null = null;
      const error = await fileError(async () => { content = await this.sandbox.files.read(this.abs(path), { format: 'bytes' }); });
      out.push({ path, content, error });
    }
    return out;
  }

  private abs(path: string): string {
    return path.startsWith('/') ? path : `${(this.opts.cwd ?? '/root').replace(/\/$/, '')}/${path}`;
  }
}

/** Per-file failures are answers (partial success); a daemon that is down is not. */
async function fileError(op: () => Promise<unknown>): Promise<FileOperationError | null> {
  try {
    await op();
    return null;
  } catch (e) {
    const mapped = e instanceof EmberdError ? FILE_ERRORS[e.code] : undefined;
    if (mapped) return mapped;
    throw e;
  }
}

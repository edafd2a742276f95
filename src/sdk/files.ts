// sb.files: the sandbox's filesystem (absolute paths; docs/api.md, "Files"), as text, bytes or
// streams.
import type { Readable } from 'node:stream';
import { EmberdError, type EmberdClient, type FileStat, type UploadData } from './client.ts';

export class Files {
  private readonly client: EmberdClient;
  private readonly sandboxId: string;

  constructor(client: EmberdClient, sandboxId: string) {
    this.client = client;
    this.sandboxId = sandboxId;
  }

  /** Writes the whole file (parents created, an existing file replaced atomically); text is UTF-8. */
  write(path: string, data: UploadData, opts: { mode?: string | number } = {}): Promise<{ path: string; size: number }> {
    return this.client.uploadFile(this.sandboxId, path, data, opts);
  }

  /** The file as text (UTF-8; invalid bytes become U+FFFD), bytes, or a Node stream. */
  read(path: string, opts?: { format?: 'text' }): Promise<string>;
  read(path: string, opts: { format: 'bytes' }): Promise<Uint8Array>;
  read(path: string, opts: { format: 'stream' }): Promise<Readable>;
  async read(path: string, opts: { format?: 'text' | 'bytes' | 'stream' } = {}): Promise<string | Uint8Array | Readable> {
    const stream = await this.client.downloadFile(this.sandboxId, path);
    if (opts.format === 'stream') return stream;
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    const bytes = Buffer.concat(chunks);
    return opts.format === 'bytes' ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length) : bytes.toString('utf8');
  }

  /** The entries of a directory (dotfiles included, sorted by name, not recursive). */
  list(path: string): Promise<FileStat[]> {
    return this.client.list(this.sandboxId, path);
  }

  stat(path: string): Promise<FileStat> {
    return this.client.stat(this.sandboxId, path);
  }

  /** false when the path (or a parent) does not exist; other failures throw. */
  async exists(path: string): Promise<boolean> {
    try {
      await this.client.stat(this.sandboxId, path);
      return true;
    } catch (e) {
      if (e instanceof EmberdError && e.code === 'FILE_NOT_FOUND') return false;
      throw e;
    }
  }

  /** Deletes a file, a symlink or an empty directory; `recursive` deletes a directory with its contents. */
  remove(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    return this.client.deleteFile(this.sandboxId, path, opts);
  }
}

// Moving a QEMU migration stream between a confined QEMU and a zstd file without QEMU starting
// anything (seccomp spawn=deny; inside the chroot there is no /bin/sh for `exec:` URIs anyway):
//  - save: emberd listens on a Unix socket inside QEMU's chroot, QMP `migrate unix:/migrate.sock`,
//    and the accepted connection becomes the stdin of `zstd -1` writing the file;
//  - restore: QEMU starts with `-incoming fd:6`; fd 6 is a socketpair whose other end becomes the
//    stdout of `zstd -dc` reading the file.
// Either way the bytes go from zstd to QEMU or back directly, never through Node, and zstd runs
// as emberd, so QEMU needs no access to the snapshot file.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { EmberdError } from '../../errors.ts';
import type { JailPath } from './jail.ts';
import type { QmpClient } from './qmp.ts';

/** Runs the stopped VM's migration into `file` (zstd -1). Resolves once zstd has written all of it. */
export async function migrateToFile(qmp: QmpClient, sock: JailPath, owner: { uid: number; gid: number } | undefined, file: string): Promise<void> {
  rmSync(sock.host, { force: true });
  // pauseOnConnect: Node must not read from the connection it hands to zstd.
  const server = createServer({ pauseOnConnect: true });
  let zstd: ChildProcess | undefined;
  try {
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(sock.host, resolve); });
    chmodSync(sock.host, 0o600);
    if (owner) chownSync(sock.host, owner.uid, owner.gid);
    const written = new Promise<void>((resolve, reject) => {
      server.once('connection', (conn: Socket) => {
        server.close(); // one connection only
        zstd = spawn('zstd', ['-q', '-1', '-f', '-o', file], { stdio: [conn, 'ignore', 'pipe'] });
        conn.destroy(); // zstd holds its own copy of the fd
        resolve(exitOk(zstd, `zstd writing ${file}`));
      });
    });
    written.catch(() => {});
    await qmp.execute('migrate', { uri: `unix:${sock.qemu}` });
    for (;;) {
      const s = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
      if (s.status === 'completed') break;
      if (s.status === 'failed' || s.status === 'cancelled') throw new EmberdError('INTERNAL', `QEMU could not save the VM: ${s['error-desc'] ?? s.status}`);
      await delay(20);
    }
    await written;
  } catch (e) {
    zstd?.kill('SIGKILL');
    throw e;
  } finally {
    server.close();
    rmSync(sock.host, { force: true });
  }
}

/** A running `zstd -dc file` writing into `target` (QEMU's fd 6, whose Node end is closed here). */
export interface StreamSource { done: Promise<void>; kill(): void }

export function decompressInto(target: Socket, file: string): StreamSource {
  const zstd = spawn('zstd', ['-dcq', file], { stdio: ['ignore', target, 'pipe'] });
  target.destroy(); // QEMU sees EOF once zstd exits, not when emberd lets go
  const done = exitOk(zstd, `zstd reading ${file}`);
  done.catch(() => {});
  return { done, kill: () => { if (zstd.exitCode === null && zstd.signalCode === null) zstd.kill('SIGKILL'); } };
}

function exitOk(p: ChildProcess, what: string): Promise<void> {
  let stderr = '';
  p.stderr?.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 2000) stderr += d; });
  return new Promise((resolve, reject) => {
    p.once('error', (e) => reject(new EmberdError('INTERNAL', `${what}: ${e.message} (is zstd installed?)`)));
    p.once('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new EmberdError('INTERNAL', `${what} failed (${signal ?? `exit code ${code}`}): ${stderr.trim()}`));
    });
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

// Starts a real emberd process for end-to-end tests: its own port, its own short run dir.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { EmberdClient } from '../../src/sdk/client.ts';

const MAIN = fileURLToPath(new URL('../../src/daemon/main.ts', import.meta.url));

export interface TestDaemon {
  url: string;
  addr: string;
  /** A client of this daemon (with its token when auth is on). */
  client: EmberdClient;
  /** The bearer token, when the daemon runs with auth on. */
  token: string | undefined;
  proc: ChildProcess;
  runDir: string;
  /** Everything the daemon wrote to stderr so far. */
  log(): string;
  /** SIGTERM, wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export async function startDaemon(extraArgs: string[] = []): Promise<TestDaemon> {
  const port = await freePort();
  const runDir = mkdtempSync('/tmp/emb-');
  const addr = `127.0.0.1:${port}`;
  // Its own state dir (the token file), never the user's.
  const stateDir = join(runDir, 'state');
  const proc = spawn(process.execPath, [MAIN, '--addr', addr, '--run-dir', runDir, '--state-dir', stateDir, ...extraArgs], { stdio: ['ignore', 'inherit', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`emberd did not start within 30 s:\n${stderr}`)), 30_000);
    const check = () => { if (stderr.includes('listening on')) { clearTimeout(timer); resolve(); } };
    proc.stderr!.on('data', check);
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`emberd exited with ${code} at start:\n${stderr}`)); });
  });
  const tokenFile = extraArgs.includes('--auth-token-file') ? extraArgs[extraArgs.indexOf('--auth-token-file') + 1]! : join(stateDir, 'token');
  const token = existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : undefined;
  return {
    url: `http://${addr}`,
    addr,
    token,
    client: new EmberdClient(addr, { token: token ?? null }),
    proc,
    runDir,
    log: () => stderr,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const code = await exited;
      rmSync(runDir, { recursive: true, force: true });
      return code;
    },
  };
}

/** Raw HTTP for tests that must see exact status codes and bodies. */
export async function http(d: TestDaemon, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}) {
  const res = await fetch(d.url + path, { method, body, headers });
  const text = await res.text();
  let json: any;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
  return { status: res.status, json, text, headers: res.headers };
}

export function processExists(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/** Polls until `fn` returns true or the timeout passes. */
export async function eventually(fn: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not hold within ${timeoutMs} ms`);
}

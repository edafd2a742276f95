// Starts a real emberd process for end-to-end tests: its own port, its own short run dir. Every
// answer a test daemon gives is checked against its /openapi.json (response-check.ts): inside the
// daemon, whoever asked (response-check-preload.ts), and again in this process for fetch (http()
// below, d.client, a test's own fetch), where a mismatch fails the request itself. stop() fails
// on any mismatch, in case a test expected that request to fail anyway.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { EmberdClient } from '../../src/sdk/client.ts';
import { NdjsonLines, ResponseChecker, type Expectation } from './response-check.ts';

const MAIN = fileURLToPath(new URL('../../src/daemon/main.ts', import.meta.url));
const CHECK_PRELOAD = new URL('./response-check-preload.ts', import.meta.url).href;

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
  /** SIGTERM, wait for exit; returns the exit code. Throws if an answer did not match /openapi.json. */
  stop(): Promise<number | null>;
  /** Answers that did not match /openapi.json so far (route, status, the ajv error). */
  mismatches: string[];
}

// ---- every answer checked against /openapi.json ----

const realFetch = globalThis.fetch;
/** origin -> the checks of the daemon listening there */
const checked = new Map<string, { checker: ResponseChecker; mismatches: string[] }>();
const checkers = new Map<string, ResponseChecker>(); // one per document text: all daemons of a run serve the same

globalThis.fetch = async function checkedFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  const res = await realFetch(input, init);
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  const target = checked.get(new URL(url).origin);
  if (!target) return res;
  const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
  const fail = (m: string) => { target.mismatches.push(m); return new Error(`response does not match /openapi.json: ${m}`); };
  let e: Expectation;
  try {
    e = target.checker.expect(method, url, res.status, res.headers.get('content-type'));
  } catch (err) {
    await res.body?.cancel();
    throw fail((err as Error).message);
  }
  if (!e.body || !res.body) return res;
  const body = e.body;
  const rebuilt = (b: ConstructorParameters<typeof Response>[0]) => new Response(b, { status: res.status, statusText: res.statusText, headers: res.headers });
  if (body.kind === 'json') { // bounded answers: read whole, so a mismatch fails the call itself
    const text = await res.text();
    let value: unknown;
    try { value = JSON.parse(text); } catch { throw fail(`${e.route} ${e.status}: the body is not JSON: ${text.slice(0, 200)}`); }
    const m = target.checker.check(e, value);
    if (m) throw fail(m);
    return rebuilt(text);
  }
  if (body.kind === 'opaque') return res;
  // NDJSON: each line checked as it passes, without buffering (the exec's pacing follows the test).
  const lines = new NdjsonLines((line) => {
    let value: unknown;
    try { value = JSON.parse(line); } catch { throw fail(`${e.route} ${e.status}: a line is not JSON: ${line.slice(0, 200)}`); }
    const m = target.checker.check(e, value);
    if (m) throw fail(m);
  });
  return rebuilt(res.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) { lines.push(chunk); controller.enqueue(chunk); },
    flush() { const rest = lines.end(); if (rest) throw fail(`${e.route} ${e.status}: the stream ends inside a line: ${rest.slice(0, 200)}`); },
  })));
} as typeof fetch;

async function checkerFor(url: string, token: string | undefined): Promise<ResponseChecker> {
  const res = await realFetch(`${url}/openapi.json`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (res.status !== 200) throw new Error(`GET /openapi.json answered ${res.status}: ${await res.text()}`);
  const text = await res.text();
  let c = checkers.get(text);
  if (!c) { c = new ResponseChecker(JSON.parse(text)); checkers.set(text, c); }
  return c;
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
  // Outside the run dir, which the daemon cleans at start.
  const mismatchFile = `${runDir}.openapi-mismatches`;
  const proc = spawn(process.execPath, ['--import', CHECK_PRELOAD, MAIN, '--addr', addr, '--run-dir', runDir, '--state-dir', stateDir, ...extraArgs], {
    stdio: ['ignore', 'inherit', 'pipe'],
    env: { ...process.env, EMBERD_TEST_RESPONSE_CHECK: mismatchFile },
  });
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL'); // a daemon that never listened is not left running (its VMs die with it: PDEATHSIG)
      rmSync(runDir, { recursive: true, force: true });
      reject(new Error(`emberd did not start within 30 s:\n${stderr}`));
    }, 30_000);
    const check = () => { if (stderr.includes('listening on')) { clearTimeout(timer); resolve(); } };
    proc.stderr!.on('data', check);
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`emberd exited with ${code} at start:\n${stderr}`)); });
  });
  const tokenFile = extraArgs.includes('--auth-token-file') ? extraArgs[extraArgs.indexOf('--auth-token-file') + 1]! : join(stateDir, 'token');
  const token = existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : undefined;
  const url = `http://${addr}`;
  const mismatches: string[] = [];
  checked.set(url, { checker: await checkerFor(url, token), mismatches });
  return {
    mismatches,
    url,
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
      checked.delete(url);
      if (existsSync(mismatchFile)) {
        for (const m of readFileSync(mismatchFile, 'utf8').split('\n')) if (m && !mismatches.includes(m)) mismatches.push(m);
        rmSync(mismatchFile, { force: true });
      }
      if (mismatches.length) throw new Error(`emberd at ${addr} gave ${mismatches.length} answers that do not match /openapi.json:\n${mismatches.join('\n')}`);
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

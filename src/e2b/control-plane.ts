// E2B's control plane (api.e2b.app) on the manager: create, connect, info, list, kill, timeout,
// pause and resume of sandboxes, both the /v2 paths of e2b >= 2.46 and the older unversioned ones.
// Templates are packs; the E2B state of each sandbox (metadata, token) is the registry's. Each
// route parses, then makes one manager call.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SandboxManager } from '../sandbox/manager.ts';
import { EmberdError, isEmberdError } from '../errors.ts';
import { readJson, sendError, sendJson, stringMap } from './http.ts';
import { egressOfE2b } from './network.ts';
import { ENVD_VERSION, HOME, type E2bRegistry, type E2bSandbox } from './registry.ts';

/** E2B's default lifetime when a create names none (the SDK always sends one). */
const DEFAULT_TIMEOUT_S = 300;

/** The pack a template id names: E2B's two well-known templates, else the pack of that name. */
export function packOf(templateID: string, packs: string[]): string {
  if (templateID === 'base') return packs.includes('python') ? 'python' : packs.includes('shell') ? 'shell' : packs[0] ?? 'shell';
  if (templateID === 'code-interpreter-v1') return 'python-data';
  return templateID;
}

function seconds(v: unknown, field: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new EmberdError('INVALID_REQUEST', `${field} must be a whole number of seconds`);
  return v;
}

function notFound(id: string): EmberdError {
  return new EmberdError('SANDBOX_NOT_FOUND', `sandbox ${id} is not running on this daemon (it ended, or was not created through /e2b)`);
}

/**
 * The create's answer. The traffic token is the access token too: @e2b/code-interpreter sends
 * only that one (E2B-Traffic-Access-Token) with its context calls, so every code-interpreter
 * request can be checked.
 */
function created(e: E2bSandbox, domain: string): Record<string, unknown> {
  return { sandboxID: e.id, templateID: e.templateID, clientID: e.clientID, envdVersion: ENVD_VERSION, envdAccessToken: e.token, trafficAccessToken: e.token, domain };
}

/**
 * The sandbox domain the SDK builds `getHost(port)` from (`{port}-{id}.{domain}`): `localhost`
 * with the port the client reached the daemon on, so the name is one browsers and curl resolve to
 * loopback and the daemon routes to the port (docs/network.md, "Ports").
 */
function domainOf(req: IncomingMessage): string {
  const port = /:(\d{1,5})$/.exec(req.headers.host ?? '')?.[1];
  return port ? `localhost:${port}` : 'localhost';
}

/** E2B's two states: a sandbox being paused is reported paused, one being resumed running. */
function stateOf(manager: SandboxManager, id: string): 'running' | 'paused' {
  const s = manager.get(id).state;
  return s === 'paused' || s === 'pausing' ? 'paused' : 'running';
}

function info(manager: SandboxManager, e: E2bSandbox): Record<string, unknown> {
  const sb = manager.get(e.id);
  const v = sb.view();
  const state = stateOf(manager, e.id);
  return {
    sandboxID: e.id, templateID: e.templateID, clientID: e.clientID, alias: e.templateID, startedAt: e.startedAt.toISOString(),
    // A paused one ends when its retention does; no deadline: a far date keeps the SDK's Date parsing happy.
    endAt: (state === 'paused' ? v.paused?.expires_at : v.expires_at) ?? '9999-12-31T23:59:59.000Z',
    cpuCount: v.vcpus, memoryMB: v.memory_mib, diskSizeMB: v.disk_mib ?? 0, metadata: e.metadata, state,
    envdVersion: ENVD_VERSION, domain: null, volumeMounts: [],
    lifecycle: { onTimeout: sb.onTimeout === 'pause' ? 'pause' : 'kill', autoResume: sb.autoResume },
    allowInternetAccess: e.network.allowInternetAccess, ...(e.network.network && { network: e.network.network }),
  };
}

/** E2B's lifecycle options of a create as the manager's onTimeout and autoResume. */
function lifecycleOf(body: Record<string, unknown>): { onTimeout: 'destroy' | 'pause'; autoResume: boolean } {
  if (body.autoPause !== undefined && typeof body.autoPause !== 'boolean') throw new EmberdError('INVALID_REQUEST', 'autoPause must be true or false');
  // emberd always saves memory: a filesystem-only pause (one that reboots at resume) it cannot make.
  if (body.autoPauseMemory === false) throw new EmberdError('INVALID_REQUEST', 'emberd cannot make a filesystem-only pause (onTimeout keepMemory: false); it always keeps memory: leave keepMemory unset');
  const ar = body.autoResume;
  if (ar !== undefined && ar !== null && (typeof ar !== 'object' || typeof (ar as { enabled?: unknown }).enabled !== 'boolean')) {
    throw new EmberdError('INVALID_REQUEST', 'autoResume must be {"enabled": true|false}');
  }
  // E2B's default is no auto-resume (emberd's own API defaults to it): traffic to a paused sandbox then fails.
  return { onTimeout: body.autoPause === true ? 'pause' : 'destroy', autoResume: (ar as { enabled?: boolean } | undefined)?.enabled === true };
}

/** `metadata=k%3Dv%26...` (the SDK URL-encodes pairs, then the whole) as a map. */
function metadataFilter(q: URLSearchParams): Record<string, string> {
  const raw = q.get('metadata');
  if (!raw) return {};
  return Object.fromEntries([...new URLSearchParams(raw)].map(([k, v]) => [decodeURIComponent(k), decodeURIComponent(v)]));
}

export async function handleControlPlane(reg: E2bRegistry, req: IncomingMessage, res: ServerResponse, path: string, q: URLSearchParams, maxBody: number): Promise<void> {
  const m = reg.manager;
  const method = req.method ?? 'GET';
  const p = path.replace(/^\/v2(?=\/sandboxes)/, '');
  let match: RegExpExecArray | null;

  if (p === '/sandboxes' && method === 'POST') {
    const body = await readJson(req, maxBody);
    const templateID = typeof body.templateID === 'string' && body.templateID ? body.templateID : 'base';
    const metadata = stringMap(body.metadata, 'metadata');
    const env = stringMap(body.envVars, 'envVars');
    const timeoutS = seconds(body.timeout, 'timeout') ?? DEFAULT_TIMEOUT_S;
    const { egress, asked } = egressOfE2b(body);
    const sb = await m.create({ pack: packOf(templateID, m.packNames()), env, timeoutS, ...lifecycleOf(body), ...(egress && { network: egress }) });
    try {
      // E2B's templates work in /home/user (emberd's packs have no such directory) and mark the
      // sandbox in /run/e2b, as envd does.
      const r = await m.exec(sb.id, { argv: ['/bin/sh', '-c', 'mkdir -p "$1" /run/e2b && echo true > /run/e2b/.E2B_SANDBOX && echo "$2" > /run/e2b/.E2B_SANDBOX_ID', 'sh', HOME, sb.id] });
      if (r.exitCode !== 0) throw new EmberdError('BOOT_FAILED', `preparing the sandbox for E2B failed: ${r.stderr.toString().slice(0, 500)}`);
    } catch (err) {
      await m.destroy(sb.id).catch(() => {});
      throw err;
    }
    sendJson(res, 201, created(reg.add(sb, templateID, metadata, asked), domainOf(req)));
    return;
  }

  if (p === '/sandboxes' && method === 'GET') {
    const states = q.getAll('state').flatMap((s) => s.split(','));
    const want = metadataFilter(q);
    const all = reg.list().filter((e) => Object.entries(want).every(([k, v]) => e.metadata[k] === v) && (!states.length || states.includes(stateOf(m, e.id))));
    const limit = Math.max(1, Math.min(1000, Number(q.get('limit')) || 100));
    const start = Number(q.get('nextToken') ?? 0) || 0;
    const page = all.slice(start, start + limit);
    const headers: Record<string, string> = start + limit < all.length ? { 'x-next-token': String(start + limit) } : {};
    sendJson(res, 200, page.map((e) => info(m, e)), headers);
    return;
  }

  if ((match = /^\/sandboxes\/([^/]+)$/.exec(p))) {
    const id = decodeURIComponent(match[1]!);
    const e = reg.get(id);
    if (method === 'GET') {
      if (!e) throw notFound(id);
      sendJson(res, 200, info(m, e));
      return;
    }
    if (method === 'DELETE') {
      if (!e) throw notFound(id);
      await m.destroy(id);
      reg.drop(id);
      res.writeHead(204).end();
      return;
    }
  }

  if ((match = /^\/sandboxes\/([^/]+)\/(timeout|connect|pause|resume|metrics|refreshes)$/.exec(p))) {
    const id = decodeURIComponent(match[1]!);
    const op = match[2]!;
    const e = reg.get(id);
    if (!e) throw notFound(id);
    if (op === 'metrics' && method === 'GET') { sendJson(res, 200, []); return; }
    if (method !== 'POST') throw new EmberdError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
    const body = await readJson(req, maxBody);
    if (op === 'pause') { await pause(m, id, body, res); return; }
    const timeoutS = seconds(body.timeout, 'timeout') ?? (op === 'refreshes' ? seconds(body.duration, 'duration') : undefined);
    if (op === 'connect' || op === 'resume') {
      // E2B: connect resumes a paused sandbox (201) or keeps a running one alive (200); the
      // deprecated /resume refuses a running one (409).
      if (stateOf(m, id) === 'paused') {
        if (body.memory === false) throw new EmberdError('INVALID_REQUEST', 'emberd cannot resume from disk only (onResume: "reboot"); it always restores memory: leave onResume unset');
        await m.resume(id, { timeoutS });
        sendJson(res, 201, created(e, domainOf(req)));
        return;
      }
      if (op === 'resume') throw new EmberdError('SANDBOX_NOT_READY', `sandbox ${id} is already running; connect to it with Sandbox.connect()`);
      if (timeoutS !== undefined) await m.setTimeout(id, timeoutS);
      sendJson(res, 200, created(e, domainOf(req)));
      return;
    }
    if (op === 'timeout' && timeoutS === undefined) throw new EmberdError('INVALID_REQUEST', 'timeout (seconds) is required');
    if (timeoutS !== undefined) await m.setTimeout(id, timeoutS);
    res.writeHead(204).end();
    return;
  }

  throw new EmberdError('ROUTE_NOT_FOUND', `no E2B API route ${method} ${path}; emberd serves the sandbox routes of E2B's API (docs/e2b.md)`);
}

/**
 * POST /sandboxes/{id}/pause: 204 paused, 409 already paused (the SDK's `false`). A refusal
 * because something runs in the foreground is 400, not emberd's 409, which the SDK would read as
 * "already paused".
 */
async function pause(m: SandboxManager, id: string, body: Record<string, unknown>, res: ServerResponse): Promise<void> {
  if (body.memory === false) throw new EmberdError('INVALID_REQUEST', 'emberd cannot make a filesystem-only pause (keepMemory: false); it always keeps memory: leave keepMemory unset');
  if (stateOf(m, id) === 'paused') { sendJson(res, 409, { code: 409, message: `sandbox ${id} is already paused; resume it with Sandbox.connect()` }); return; }
  try {
    await m.pause(id);
  } catch (err) {
    if (!isEmberdError(err, 'SANDBOX_BUSY')) throw err;
    sendJson(res, 400, { code: 400, emberd_code: err.code, message: `${err.message}. E2B commands started without stdin: true (and files in transfer) cannot be saved; a background command started with stdin: true can` });
    return;
  }
  res.writeHead(204).end();
}

export async function controlPlane(reg: E2bRegistry, req: IncomingMessage, res: ServerResponse, path: string, q: URLSearchParams, maxBody: number): Promise<void> {
  try {
    await handleControlPlane(reg, req, res, path, q, maxBody);
  } catch (e) {
    // The SDK's kill/connect/timeout read "not found" from {code: 404}; the rest by status.
    sendError(res, e);
  }
}

// E2B's control plane (api.e2b.app) on the manager: create, connect, info, list, kill and
// timeout of sandboxes, both the /v2 paths of e2b >= 2.46 and the older unversioned ones.
// Templates are packs; the E2B state of each sandbox (metadata, token) is the registry's.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SandboxManager } from '../sandbox/manager.ts';
import { EmberdError } from '../errors.ts';
import { readJson, sendError, sendJson, stringMap } from './http.ts';
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
function created(e: E2bSandbox): Record<string, unknown> {
  return { sandboxID: e.id, templateID: e.templateID, clientID: e.clientID, envdVersion: ENVD_VERSION, envdAccessToken: e.token, trafficAccessToken: e.token, domain: null };
}

function info(manager: SandboxManager, e: E2bSandbox): Record<string, unknown> {
  const v = manager.get(e.id).view();
  return {
    sandboxID: e.id, templateID: e.templateID, clientID: e.clientID, alias: e.templateID, startedAt: e.startedAt.toISOString(),
    // No deadline: E2B has no such thing; a far date keeps the SDK's Date parsing happy.
    endAt: v.expires_at ?? '9999-12-31T23:59:59.000Z',
    cpuCount: v.vcpus, memoryMB: v.memory_mib, diskSizeMB: v.disk_mib ?? 0, metadata: e.metadata, state: 'running',
    envdVersion: ENVD_VERSION, domain: null, volumeMounts: [],
  };
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
    if (body.autoPause === true) throw new EmberdError('INVALID_REQUEST', 'emberd cannot pause sandboxes (lifecycle onTimeout: "pause"); leave it at "kill"');
    const sb = await m.create({ pack: packOf(templateID, m.packNames()), env, timeoutS });
    try {
      // E2B's templates work in /home/user (emberd's packs have no such directory) and mark the
      // sandbox in /run/e2b, as envd does.
      const r = await m.exec(sb.id, { argv: ['/bin/sh', '-c', 'mkdir -p "$1" /run/e2b && echo true > /run/e2b/.E2B_SANDBOX && echo "$2" > /run/e2b/.E2B_SANDBOX_ID', 'sh', HOME, sb.id] });
      if (r.exitCode !== 0) throw new EmberdError('BOOT_FAILED', `preparing the sandbox for E2B failed: ${r.stderr.toString().slice(0, 500)}`);
    } catch (err) {
      await m.destroy(sb.id).catch(() => {});
      throw err;
    }
    sendJson(res, 201, created(reg.add(sb, templateID, metadata)));
    return;
  }

  if (p === '/sandboxes' && method === 'GET') {
    const states = q.getAll('state').flatMap((s) => s.split(','));
    const want = metadataFilter(q);
    let all = reg.list().filter((e) => Object.entries(want).every(([k, v]) => e.metadata[k] === v));
    if (states.length && !states.includes('running')) all = []; // nothing is ever paused
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
    if (op === 'pause') throw new EmberdError('INVALID_REQUEST', 'emberd cannot pause sandboxes; kill it, or extend its life with setTimeout');
    const body = await readJson(req, maxBody);
    const timeoutS = seconds(body.timeout, 'timeout') ?? (op === 'refreshes' ? seconds(body.duration, 'duration') : undefined);
    if (op === 'timeout' && timeoutS === undefined) throw new EmberdError('INVALID_REQUEST', 'timeout (seconds) is required');
    if (timeoutS !== undefined) await m.setTimeout(id, timeoutS);
    if (op === 'connect' || op === 'resume') sendJson(res, op === 'resume' ? 201 : 200, created(e));
    else res.writeHead(204).end();
    return;
  }

  throw new EmberdError('ROUTE_NOT_FOUND', `no E2B API route ${method} ${path}; emberd serves the sandbox routes of E2B's API (docs/e2b.md)`);
}

export async function controlPlane(reg: E2bRegistry, req: IncomingMessage, res: ServerResponse, path: string, q: URLSearchParams, maxBody: number): Promise<void> {
  try {
    await handleControlPlane(reg, req, res, path, q, maxBody);
  } catch (e) {
    // The SDK's kill/connect/timeout read "not found" from {code: 404}; the rest by status.
    sendError(res, e);
  }
}

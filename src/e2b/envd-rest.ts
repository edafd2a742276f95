// envd's REST side: GET /files (download), POST /files (upload: multipart `file` parts, or
// application/octet-stream), GET /health. Requests name their sandbox by E2b-Sandbox-Id and carry
// X-Access-Token, or (uploadUrl()/downloadUrl(), which carry neither) a signature made with the
// sandbox's token, matched here against the live sandboxes' tokens.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { EmberdError } from '../errors.ts';
import { sendError, sendJson } from './http.ts';
import { resolvePath } from './envd-filesystem.ts';
import { boundaryOf, readMultipart } from './multipart.ts';
import type { E2bRegistry, E2bSandbox } from './registry.ts';

/** E2B's signature: v1_ + base64(sha256("path:operation:user:token[:expiration]")), unpadded. */
export function fileSignature(path: string, operation: 'read' | 'write', user: string, token: string, expiration?: string): string {
  const raw = expiration ? `${path}:${operation}:${user}:${token}:${expiration}` : `${path}:${operation}:${user}:${token}`;
  return `v1_${createHash('sha256').update(raw).digest('base64').replace(/=+$/, '')}`;
}

/** The sandbox of a /files or /health request, by headers or by signature. */
function sandboxOf(reg: E2bRegistry, req: IncomingMessage, q: URLSearchParams, operation: 'read' | 'write'): E2bSandbox {
  const signature = q.get('signature');
  if (signature && req.headers['x-access-token'] === undefined) {
    const path = q.get('path') ?? '';
    const exp = q.get('signature_expiration') ?? undefined;
    if (exp !== undefined && Number(exp) * 1000 < Date.now()) throw new EmberdError('UNAUTHORIZED', 'the signed URL has expired; make a new one with uploadUrl()/downloadUrl()');
    const e = reg.bySignature(signature, (token) => fileSignature(path, operation, q.get('username') ?? '', token, exp));
    if (!e) throw new EmberdError('UNAUTHORIZED', 'the URL\'s signature matches no running sandbox (wrong path, operation or user, or the sandbox ended)');
    return e;
  }
  const h = (n: string) => { const v = req.headers[n]; return Array.isArray(v) ? v[0] : v; };
  return reg.authorize(h('e2b-sandbox-id'), h('x-access-token'));
}

async function upload(reg: E2bRegistry, e: E2bSandbox, req: IncomingMessage, res: ServerResponse, q: URLSearchParams): Promise<void> {
  const m = reg.manager;
  const type = (req.headers['content-type'] ?? '').toLowerCase();
  const written: { name: string; type: 'file'; path: string }[] = [];
  const put = async (path: string, source: Readable) => {
    const r = await m.writeFile(e.id, path, source);
    written.push({ name: posix.basename(r.path), type: 'file', path: r.path });
  };
  if (type.startsWith('multipart/form-data')) {
    const boundary = boundaryOf(req.headers['content-type']!);
    if (!boundary) throw new EmberdError('INVALID_REQUEST', 'the multipart Content-Type has no boundary');
    const one = q.get('path');
    await readMultipart(req as AsyncIterable<Buffer>, boundary, async (part) => {
      if (part.name !== 'file') { part.body.resume(); await finished(part.body); return; }
      // One part with ?path= goes there; several (writeFiles) each name their own path.
      const path = one && !written.length ? one : part.filename;
      if (!path) throw new EmberdError('INVALID_REQUEST', 'a "file" part has no filename and the request no path; give one or the other');
      await put(resolvePath(path), part.body);
    });
    if (!written.length) throw new EmberdError('INVALID_REQUEST', 'the multipart body has no "file" part');
  } else {
    const path = q.get('path');
    if (!path) throw new EmberdError('INVALID_REQUEST', 'path is required for an application/octet-stream upload');
    if ((req.headers['content-encoding'] ?? 'identity') !== 'identity') throw new EmberdError('UNSUPPORTED_MEDIA_TYPE', 'compressed uploads are not supported; send the file without gzip');
    await put(resolvePath(path), req);
  }
  sendJson(res, 200, written);
}

async function download(reg: E2bRegistry, e: E2bSandbox, req: IncomingMessage, res: ServerResponse, q: URLSearchParams): Promise<void> {
  const path = q.get('path');
  if (!path) throw new EmberdError('INVALID_REQUEST', 'path is required');
  const abort = new AbortController();
  res.once('close', () => abort.abort());
  const stream = await reg.manager.readFile(e.id, resolvePath(path), abort.signal);
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-disposition': `attachment; filename=${JSON.stringify(posix.basename(path))}` });
  await pipeline(stream, res).catch(() => { res.destroy(); });
  void req;
}

export async function envdRest(reg: E2bRegistry, req: IncomingMessage, res: ServerResponse, path: string, q: URLSearchParams): Promise<void> {
  try {
    if (path === '/health') {
      const id = req.headers['e2b-sandbox-id'];
      // 502 for a sandbox that is gone is how E2B's proxy says it (Sandbox.isRunning reads it).
      if (typeof id !== 'string' || !reg.get(id)) { sendJson(res, 502, { code: 502, message: `sandbox ${String(id)} is not running` }); return; }
      // A paused one is not running either, unless traffic resumes it (lifecycle autoResume), as at E2B.
      const sb = reg.manager.get(id);
      if (sb.state === 'paused' || sb.state === 'pausing') {
        if (!sb.autoResume) { sendJson(res, 502, { code: 502, message: `sandbox ${id} is paused; resume it with Sandbox.connect()` }); return; }
        await reg.manager.resume(id);
      }
      res.writeHead(204).end();
      return;
    }
    if (path === '/files' && req.method === 'GET') { await download(reg, sandboxOf(reg, req, q, 'read'), req, res, q); return; }
    if (path === '/files' && req.method === 'POST') { await upload(reg, sandboxOf(reg, req, q, 'write'), req, res, q); return; }
    throw new EmberdError('ROUTE_NOT_FOUND', `no envd route ${req.method} ${path}`);
  } catch (e) {
    sendError(res, e);
  }
}

// The E2B-compatible API on the daemon (docs/e2b.md): E2B_API_URL=<daemon>/e2b is the control
// plane, E2B_SANDBOX_URL=<daemon>/e2b/sbx all per-sandbox traffic, routed by the E2b-Sandbox-Id and
// E2b-Sandbox-Port headers: 49983 is envd (Connect-RPC process and filesystem services, REST
// /files and /health), 49999 the code interpreter. Plus /files with a signature, where
// uploadUrl()/downloadUrl() point (they drop the path prefix).
//
// These requests are taken over in an onRequest hook, after the daemon's own hooks (auth) and
// before fastify parses anything: envd's bodies are Connect envelopes, multipart and raw file
// bytes, answered in E2B's shapes. They are not fastify routes, so they are not in emberd's
// OpenAPI document (which describes emberd's API, not E2B's).
import type { FastifyInstance } from 'fastify';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import type { SandboxManager } from '../sandbox/manager.ts';
import { EmberdError } from '../errors.ts';
import { tokenMatches } from '../daemon/auth.ts';
import { Process } from './gen/process/process_pb.js';
import { Filesystem } from './gen/filesystem/filesystem_pb.js';
import { processService } from './envd-process.ts';
import { filesystemService } from './envd-filesystem.ts';
import { envdRest } from './envd-rest.ts';
import { codeInterpreter } from './code-interpreter.ts';
import { controlPlane } from './control-plane.ts';
import { sendError } from './http.ts';
import { CODE_INTERPRETER_PORT, E2bRegistry } from './registry.ts';

const PREFIX = '/e2b';
const SANDBOX_PREFIX = '/e2b/sbx';
/** The largest control-plane or code-interpreter JSON body. */
const MAX_BODY = 1 << 20;

/**
 * Whether a request URL is one of the E2B surfaces: the daemon's bearer-token hook leaves them to
 * their own checks (the API key on the control plane, each sandbox's access token on the rest,
 * the signature on signed /files URLs).
 */
export function isE2bRequest(rawUrl: string): boolean {
  const path = rawUrl.split('?')[0]!;
  return path === PREFIX || path.startsWith(`${PREFIX}/`) || (path === '/files' && /[?&]signature=/.test(rawUrl));
}

export interface E2bRouteOptions {
  /** The daemon's token when auth is on: the control plane then wants it as the API key (X-API-KEY). */
  apiKey?: string;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export function registerE2bRoutes(app: FastifyInstance, manager: SandboxManager, opts: E2bRouteOptions = {}): void {
  const reg = new E2bRegistry(manager);
  app.addHook('onClose', async () => { reg.close(); });
  const rpc = connectNodeAdapter({
    routes(router) {
      router.service(Process, processService(reg));
      router.service(Filesystem, filesystemService(reg));
    },
    requestPathPrefix: SANDBOX_PREFIX,
    fallback: (req, res) => sendError(res as ServerResponse, new EmberdError('ROUTE_NOT_FOUND', `no envd service method ${req.method} ${req.url?.split('?')[0]}`)),
  });

  const dispatch = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://e2b.local');
    const path = url.pathname;
    if (path === SANDBOX_PREFIX || path.startsWith(`${SANDBOX_PREFIX}/`)) {
      const sub = path.slice(SANDBOX_PREFIX.length) || '/';
      if (req.headers['e2b-sandbox-port'] === String(CODE_INTERPRETER_PORT)) return codeInterpreter(reg, req, res, sub);
      if (sub === '/files' || sub === '/health') return envdRest(reg, req, res, sub, url.searchParams);
      rpc(req, res);
      return;
    }
    if (path === '/files') return envdRest(reg, req, res, path, url.searchParams);
    if (opts.apiKey !== undefined && !tokenMatches(opts.apiKey, header(req, 'x-api-key'))) {
      return sendError(res, new EmberdError('UNAUTHORIZED', 'this daemon runs with auth on: use its token as the E2B API key (E2B_API_KEY=$(cat <token file>), the file the daemon names at start)'));
    }
    return controlPlane(reg, req, res, path.slice(PREFIX.length) || '/', url.searchParams, MAX_BODY);
  };

  app.addHook('onRequest', async (req, reply) => {
    if (!isE2bRequest(req.raw.url ?? '')) return;
    reply.hijack();
    reply.raw.setHeader('x-request-id', String(req.id));
    dispatch(req.raw, reply.raw).catch((e: unknown) => sendError(reply.raw, e));
  });
}

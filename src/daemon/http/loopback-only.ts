// Without auth (only allowed on loopback, config.ts) the daemon trusts whoever can connect. A web
// page can connect too: by rebinding its own name to 127.0.0.1 (its requests then carry that name
// as Host) or by posting from the browser to 127.0.0.1 (they carry its Origin). So such a daemon
// serves only requests that name a loopback host and, when they carry an Origin, come from a
// loopback page; with auth on the token decides instead. (docs/security.md)
import type { FastifyReply, FastifyRequest } from 'fastify';
import { EmberdError } from '../../errors.ts';

/** localhost, *.localhost, 127.0.0.0/8, ::1; with or without a port. */
const LOOPBACK_HOST = /^(?:(?:[a-z0-9_-]+\.)*localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d{1,5})?$/i;

export function isLoopbackHost(host: string): boolean {
  return LOOPBACK_HOST.test(host);
}

/** `host` (with or without a port) is loopback or one of the `extra` names. */
function allowedHost(host: string, extra: string[]): boolean {
  return isLoopbackHost(host) || extra.includes(host.replace(/:\d{1,5}$/, '').toLowerCase());
}

/**
 * The onRequest hook; `extra`: names the daemon is also reached by (EMBERD_MCP_ALLOWED_HOSTS).
 * /mcp is left to its own check, which answers in JSON-RPC and applies with auth on too.
 */
export function requireLoopbackRequest(extra: string[]) {
  return async (req: FastifyRequest, _reply: FastifyReply): Promise<void> => check(req, extra);
}

function check(req: FastifyRequest, extra: string[]): void {
  if (req.url === '/mcp' || req.url.startsWith('/mcp?')) return;
  const host = req.headers.host ?? '';
  if (!allowedHost(host, extra)) {
    throw new EmberdError('HOST_NOT_ALLOWED', `this daemon runs without auth and answers only requests for a loopback host (localhost, 127.0.0.1), not "${host.slice(0, 100)}"; use http://127.0.0.1:PORT, or start it with --auth on`);
  }
  const origin = req.headers.origin;
  if (origin !== undefined) {
    let originHost = '';
    try { originHost = new URL(origin).host; } catch { /* "null" and the like: not loopback */ }
    if (!allowedHost(originHost, extra)) {
      throw new EmberdError('ORIGIN_NOT_ALLOWED', `this daemon runs without auth and refuses requests from web pages outside this host (Origin ${origin.slice(0, 100)}); serve the page from localhost, or start emberd with --auth on`);
    }
  }
}

// /mcp on the daemon: MCP over Streamable HTTP, both protocol eras (2026-07-28 per-request and the
// 2025 stateless fallback) from one server factory (createMcpHandler). The daemon's auth hook has
// run before this (the route is like any other); here the Host and Origin headers are checked
// against DNS rebinding: a web page on another name that resolves to 127.0.0.1 must not reach it.
//
// The tools go through the HTTP client against this daemon itself, at the address the request
// came in on, with the daemon's token: the same code path as `emberd mcp`, so the API's
// validation, error codes and limits are the MCP tools' too, at the cost of one loopback hop
// per call (nothing beside a VM exec).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { createMcpHandler, localhostAllowedHostnames, validateHostHeader, validateOriginHeader } from '@modelcontextprotocol/server';
import { toNodeHandler } from '@modelcontextprotocol/node';
import { EmberdClient } from '../sdk/client.ts';
import { createEmberdMcpServer } from './tools.ts';

export interface McpRouteOptions {
  /** The daemon's bearer token (auth on): the tools' client sends it to the daemon. */
  authToken?: string;
  /** Host names (and Origin host names) accepted besides loopback; default EMBERD_MCP_ALLOWED_HOSTS. */
  allowedHosts?: string[];
}

/** Comma-separated host names from EMBERD_MCP_ALLOWED_HOSTS (for a daemon reached by a name). */
export function allowedHostsFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env.EMBERD_MCP_ALLOWED_HOSTS ?? '').split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);
}

export function registerMcpRoutes(app: FastifyInstance, opts: McpRouteOptions = {}): void {
  const allowed = [...localhostAllowedHostnames(), ...(opts.allowedHosts ?? allowedHostsFromEnv())];
  // Set on each request before the factory runs; the address is this server's, so it is the same
  // for every request on one interface and any of them reaches it.
  let self = '';
  const handler = createMcpHandler(() => createEmberdMcpServer(new EmberdClient(self, { token: opts.authToken ?? null })));
  const serve = toNodeHandler(handler);
  app.addHook('onClose', async () => { await handler.close(); });

  const route = async (req: FastifyRequest, reply: FastifyReply) => {
    reply.hijack(); // the MCP handler writes the Node response itself
    reply.raw.setHeader('x-request-id', String(req.id));
    const refused = refusal(req, allowed);
    if (refused) {
      reply.raw.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: refused } }));
      return;
    }
    if (depth(req.body) > MAX_NESTING) {
      // The SDK's message schemas recurse per level: thousands of levels overflow its stack (a 500).
      reply.raw.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32600, message: `Invalid Request: JSON nested deeper than ${MAX_NESTING} levels` } }));
      return;
    }
    self = selfUrl(req);
    await serve(req.raw, reply.raw, req.body);
  };
  // GET and DELETE are the 2025 session operations: the stateless handler answers them 405.
  for (const method of ['POST', 'GET', 'DELETE'] as const) app.route({ method, url: '/mcp', handler: route });
}

/** Deeper than any tool call's arguments need; far below what overflows the stack. */
const MAX_NESTING = 64;

/** How deeply arrays and objects nest in a parsed JSON value (iterative: the value may be deep). */
function depth(value: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (d + 1 > max) max = d + 1;
    if (max > MAX_NESTING) return max;
    for (const child of Object.values(v)) stack.push([child, d + 1]);
  }
  return max;
}

/** Why a request is refused (a Host or Origin not allowed), or undefined. */
function refusal(req: FastifyRequest, allowed: string[]): string | undefined {
  const fix = 'the MCP endpoint answers loopback names only (localhost, 127.0.0.1, [::1]); to reach it by another name, start emberd with EMBERD_MCP_ALLOWED_HOSTS=name[,name...]';
  const host = validateHostHeader(req.headers.host, allowed);
  if (!host.ok) return `Host header ${JSON.stringify(req.headers.host ?? '')} refused (DNS rebinding protection): ${fix}`;
  const origin = req.headers.origin;
  if (origin !== undefined && !validateOriginHeader(origin, allowed).ok) return `Origin ${JSON.stringify(origin)} refused (DNS rebinding protection): ${fix}`;
  return undefined;
}

function selfUrl(req: FastifyRequest): string {
  const addr = req.socket.localAddress ?? '127.0.0.1';
  const host = addr.startsWith('::ffff:') ? addr.slice(7) : addr;
  return `http://${host.includes(':') ? `[${host}]` : host}:${req.socket.localPort}`;
}

// /sandboxes/{id}/ports/{port}/*: HTTP and WebSockets proxied to an exposed port of the sandbox
// (docs/network.md, "Ports"). Each request gets its own connection to the guest (a channel of the
// control stream, port-channel.ts), so node:http's client does the HTTP on it: the rest of the
// path and the query go to the server, hop-by-hop headers do not, bodies stream both ways under
// the channel's flow control. A WebSocket (any Upgrade) is a byte tunnel once its request head is
// rewritten. Everything emberd can refuse (auth, no such sandbox or port, nothing listening) is
// refused before, as its usual JSON error.
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { EmberdError, isEmberdError } from '../../errors.ts';
import type { SandboxManager } from '../../sandbox/manager.ts';
import type { PortConnection } from '../../agent/port-channel.ts';
import { parsePort } from './port-routes.ts';
import { isPortHostRequest } from './port-host.ts';

type ProxyParams = { Params: { id: string; port: string; '*': string } };

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];

/** RFC 9110 7.6.1 hop-by-hop headers, never forwarded (an Upgrade's own are put back for a tunnel). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** The headers a Connection header names: hop-by-hop too (RFC 9110 7.6.1), whichever side sent it. */
function namedHopByHop(connection: string | string[] | undefined): Set<string> {
  return new Set(String(connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
}

export interface PortProxyOptions {
  /** Auth is on: the client's Authorization header is the daemon's token, never the sandbox's business. */
  stripAuthorization: boolean;
}

export function registerPortProxy(app: FastifyInstance, manager: SandboxManager, o: PortProxyOptions): void {
  void app.register(async (scope) => {
    // The body is the server's business: it streams through unparsed, whatever its size or type.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
    scope.route<ProxyParams>({
      method: METHODS,
      url: '/sandboxes/:id/ports/:port/*',
      // A WebSocket is taken here, before @fastify/websocket's handler would answer it itself.
      preHandler: async (req, reply) => {
        if (req.headers.upgrade === undefined) return;
        const conn = await manager.connectPort(req.params.id, parsePort(req.params.port), { expose: isPortHostRequest(req.raw) });
        reply.hijack();
        tunnel(req, conn, o);
      },
      handler: async (req, reply) => {
        const conn = await manager.connectPort(req.params.id, parsePort(req.params.port), { expose: isPortHostRequest(req.raw) });
        reply.hijack();
        forward(req, reply, conn, o);
      },
    });
  });
}

/** What follows /sandboxes/{id}/ports/{port} in the raw URL (path and query), always starting with /. */
function upstreamPath(req: FastifyRequest): string {
  const m = /^\/sandboxes\/[^/?]+\/ports\/[^/?]+(\/[^]*)$/.exec(req.raw.url ?? '');
  return m ? m[1]! : '/';
}

function prefixOf(req: FastifyRequest<ProxyParams>): string {
  return `/sandboxes/${req.params.id}/ports/${req.params.port}`;
}

/** The client's headers for the server: hop-by-hop ones dropped, Host the server's own, X-Forwarded-* added. */
function upstreamHeaders(req: FastifyRequest<ProxyParams>, port: number, o: PortProxyOptions): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const listed = namedHopByHop(req.headers.connection);
  for (const [k, v] of Object.entries(req.headers as IncomingHttpHeaders)) {
    if (v === undefined || HOP_BY_HOP.has(k) || listed.has(k) || k === 'host') continue;
    if (k === 'authorization' && o.stripAuthorization) continue;
    out[k] = v;
  }
  out.host = `127.0.0.1:${port}`;
  out['x-forwarded-host'] = req.headers.host ?? '';
  out['x-forwarded-proto'] = req.protocol;
  if (!isPortHostRequest(req.raw)) out['x-forwarded-prefix'] = prefixOf(req);
  const xff = req.headers['x-forwarded-for'];
  out['x-forwarded-for'] = [xff, req.ip].filter(Boolean).join(', ');
  return out;
}

function forward(req: FastifyRequest<ProxyParams>, reply: FastifyReply, conn: PortConnection, o: PortProxyOptions): void {
  const res = reply.raw;
  const upstream = httpRequest({
    createConnection: () => conn as unknown as ReturnType<typeof import('node:net').createConnection>,
    method: req.method,
    path: upstreamPath(req),
    headers: upstreamHeaders(req, conn.port, o),
    setHost: false,
  });
  const fail = (e: Error) => {
    conn.destroy();
    if (res.headersSent) { res.destroy(); return; }
    const err = isEmberdError(e) ? e : new EmberdError('PORT_CONNECT_FAILED', `the server on port ${conn.port} in the sandbox ended the connection before answering (${e.message})`);
    res.writeHead(err.status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(err.toJSON()));
  };
  upstream.on('error', fail);
  upstream.on('response', (up: IncomingMessage) => {
    const headers: string[] = [];
    const listed = namedHopByHop(up.headers.connection);
    for (let i = 0; i < up.rawHeaders.length; i += 2) {
      const k = up.rawHeaders[i]!.toLowerCase();
      if (!HOP_BY_HOP.has(k) && !listed.has(k)) headers.push(up.rawHeaders[i]!, up.rawHeaders[i + 1]!);
    }
    res.writeHead(up.statusCode ?? 502, up.statusMessage, headers);
    up.pipe(res);
    up.on('error', () => res.destroy());
  });
  // The client went away: so does the connection to the server.
  res.on('close', () => { if (!res.writableFinished) upstream.destroy(); conn.destroy(); });
  req.raw.pipe(upstream);
}

/** An Upgrade (a WebSocket): the rewritten request head, then bytes both ways until either side ends. */
function tunnel(req: FastifyRequest<ProxyParams>, conn: PortConnection, o: PortProxyOptions): void {
  const socket = req.raw.socket as Duplex;
  const headers = upstreamHeaders(req, conn.port, o);
  headers.connection = 'Upgrade';
  headers.upgrade = String(req.headers.upgrade);
  let head = `${req.method} ${upstreamPath(req)} HTTP/1.1\r\n`;
  for (const [k, v] of Object.entries(headers)) for (const one of [v].flat()) head += `${k}: ${one}\r\n`;
  conn.write(`${head}\r\n`);
  // Bytes the client sent after its head, which the HTTP parser read along (@fastify/websocket's kWsHead).
  const early = Object.getOwnPropertySymbols(req.raw).find((s) => s.description === 'ws-head');
  const rest = early ? (req.raw as unknown as Record<symbol, Buffer | undefined>)[early] : undefined;
  if (rest?.length) conn.write(rest);
  socket.on('error', () => conn.destroy());
  conn.on('error', () => socket.destroy());
  socket.on('close', () => conn.destroy());
  conn.on('close', () => socket.destroy());
  socket.pipe(conn);
  conn.pipe(socket);
}

// Ports by host name (docs/network.md, "Ports"): `http://8000-sb_xxx.localhost:7777/p` is
// `/sandboxes/sb_xxx/ports/8000/p`, the shape E2B's `getHost(port)` builds, and a way to give an app
// the root of a host (links that start with / work, unlike under a path prefix). Browsers and curl
// resolve every *.localhost name to loopback themselves. Only *.localhost is taken: any other
// name of that shape may belong to someone else's site (a rebinding page must not reach a sandbox).
import type { IncomingMessage } from 'node:http';

const HOST_NAMED = /^(\d{1,5})-(sb_[0-9a-z]{1,64})\.localhost(?::\d{1,5})?$/i;
const ROUTED = Symbol('emberd.port-host');

/** Fastify's rewriteUrl: a request for a port's host name goes to that port's proxied path. */
export function rewritePortHost(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const m = HOST_NAMED.exec(req.headers.host ?? '');
  if (!m || !url.startsWith('/')) return url;
  (req as unknown as Record<symbol, boolean>)[ROUTED] = true;
  return `/sandboxes/${m[2]!.toLowerCase()}/ports/${m[1]}${url}`;
}

/** The request came by a port's host name (no path prefix to tell the server about; exposed on first use). */
export function isPortHostRequest(req: IncomingMessage): boolean {
  return (req as unknown as Record<symbol, boolean>)[ROUTED] === true;
}

// /sandboxes/{id}/ports: expose, list and close ports of a sandbox (docs/network.md, "Ports").
// The proxied traffic itself is port-proxy.ts's.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { EmberdError } from '../../errors.ts';
import type { SandboxManager } from '../../sandbox/manager.ts';
import type { PortView } from '../../sandbox/ports.ts';
import { exposePortBody } from './schemas.ts';
import { parseBody } from './parse.ts';
import type { PortAnswer, PortList } from './responses.ts';

type IdParams = { Params: { id: string } };
type PortParams = { Params: { id: string; port: string } };

/** The {port} of a path. */
export function parsePort(raw: string): number {
  const n = /^\d{1,5}$/.test(raw) ? Number(raw) : NaN;
  if (!(n >= 1 && n <= 65535)) throw new EmberdError('INVALID_REQUEST', `"${raw.slice(0, 32)}" in the path is not a TCP port; use 1-65535, e.g. /sandboxes/{id}/ports/8000/`);
  return n;
}

export function registerPortRoutes(app: FastifyInstance, manager: SandboxManager, o: { authOn: boolean }): void {
  app.post<IdParams>('/sandboxes/:id/ports', async (req, reply) => {
    const body = parseBody(exposePortBody, req.body, 'send {"port": 8000}, optionally with "tcp": true');
    const { view, created } = await manager.openPort(req.params.id, body.port, { tcp: body.tcp ?? !o.authOn });
    return reply.status(created ? 201 : 200).send(answer(req, view) satisfies PortAnswer);
  });

  app.get<IdParams>('/sandboxes/:id/ports', async (req): Promise<PortList> => ({ ports: manager.listPorts(req.params.id).map((v) => answer(req, v)) }));

  app.get<PortParams>('/sandboxes/:id/ports/:port', async (req): Promise<PortAnswer> => answer(req, manager.getPort(req.params.id, parsePort(req.params.port))));

  app.delete<PortParams>('/sandboxes/:id/ports/:port', async (req, reply) => {
    await manager.closePort(req.params.id, parsePort(req.params.port));
    return reply.status(204).send();
  });
}

/** The view with the proxied path as a URL on the address the client used. */
function answer(req: FastifyRequest, v: PortView): PortAnswer {
  return { ...v, url: `${req.protocol}://${req.headers.host ?? req.host}${v.path}` };
}

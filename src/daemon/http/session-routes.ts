// /sandboxes/{id}/sessions routes (docs/api.md, "Sessions"): list and delete, one manager call
// each. Running code in a session is the exec route's `"session"` field (manager.runInSession).
import type { FastifyInstance } from 'fastify';
import type { SandboxManager } from '../../sandbox/manager.ts';
import type { SessionList } from './responses.ts';

type IdParams = { Params: { id: string } };
type SessionParams = { Params: { id: string; name: string } };

export function registerSessionRoutes(app: FastifyInstance, manager: SandboxManager): void {
  app.get<IdParams>('/sandboxes/:id/sessions', async (req): Promise<SessionList> => ({
    sessions: manager.listSessions(req.params.id).map((s) => ({
      name: s.name,
      created_at: s.createdAt.toISOString(),
      last_used_at: s.lastUsedAt.toISOString(),
      execs: s.execs,
    })),
  }));

  app.delete<SessionParams>('/sandboxes/:id/sessions/:name', async (req, reply) => {
    await manager.deleteSession(req.params.id, req.params.name);
    return reply.status(204).send();
  });
}

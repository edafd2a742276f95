// /sandboxes/{id}/sessions routes (docs/api.md, "Sessions"): list and delete. Running code in a
// session is the exec route's `"session"` field, which calls runInSession (src/sandbox/sessions.ts).
import type { FastifyInstance } from 'fastify';
import { EmberdError } from '../../errors.ts';
import type { SandboxManager } from '../../sandbox/manager.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { SESSION_PACK } from '../../sandbox/sessions.ts';

type IdParams = { Params: { id: string } };
type SessionParams = { Params: { id: string; name: string } };

function withSessions(manager: SandboxManager, id: string): Sandbox {
  const sb = manager.get(id);
  if (!sb.sessions.supported) {
    throw new EmberdError('SESSIONS_UNSUPPORTED', `sandbox ${sb.id} runs the "${sb.pack}" language pack, which has no sessions; they need the "${SESSION_PACK}" pack`);
  }
  return sb;
}

export function registerSessionRoutes(app: FastifyInstance, manager: SandboxManager): void {
  app.get<IdParams>('/sandboxes/:id/sessions', async (req) => ({
    sessions: withSessions(manager, req.params.id).sessions.list().map((s) => ({
      name: s.name,
      created_at: s.createdAt.toISOString(),
      last_used_at: s.lastUsedAt.toISOString(),
      execs: s.execs,
    })),
  }));

  app.delete<SessionParams>('/sandboxes/:id/sessions/:name', async (req, reply) => {
    await withSessions(manager, req.params.id).sessions.delete(req.params.name);
    return reply.status(204).send();
  });
}

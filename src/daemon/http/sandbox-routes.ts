// /sandboxes routes: parse -> one manager call -> shape the answer. Shapes are the v1 API (docs/api.md).
import type { FastifyInstance } from 'fastify';
import type { SandboxManager } from '../../sandbox/manager.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createSandboxBody, sandboxTimeoutBody } from './schemas.ts';
import { parseBody } from './parse.ts';
import type { SandboxDetails, SandboxList, SandboxSummary } from './responses.ts';

type IdParams = { Params: { id: string } };

export function registerSandboxRoutes(app: FastifyInstance, manager: SandboxManager): void {
  app.post('/sandboxes', async (req, reply) => {
    const body = parseBody(createSandboxBody, req.body);
    const sb = await manager.create({
      pack: body?.language_pack,
      timeoutS: body?.timeout_s,
      vcpus: body?.vcpus,
      memoryMib: body?.memory_mib,
      diskMib: body?.disk_mib,
      pidsMax: body?.pids_max,
      env: body?.env,
      network: body?.network && { allow: body.network.allow, rateMbit: body.network.rate_mbit },
    });
    return reply.status(201).send(summary(sb) satisfies SandboxSummary);
  });

  app.post<IdParams>('/sandboxes/:id/timeout', async (req): Promise<SandboxSummary> => {
    const body = parseBody(sandboxTimeoutBody, req.body);
    return summary(await manager.setTimeout(req.params.id, body.timeout_s));
  });

  app.get('/sandboxes', async (): Promise<SandboxList> => ({ sandboxes: manager.list().map(summary) }));

  app.get<IdParams>('/sandboxes/:id', async (req): Promise<SandboxDetails> => {
    const sb = await manager.inspect(req.params.id);
    return { ...sb.view(), boot_log_tail: sb.consoleTail(4096) };
  });

  app.delete<IdParams>('/sandboxes/:id', async (req, reply) => {
    await manager.destroy(req.params.id);
    return reply.status(204).send();
  });
}

function summary(sb: Sandbox): SandboxSummary {
  const v = sb.view();
  return {
    id: v.id, state: v.state, language_pack: v.language_pack, backend: v.backend, created_at: v.created_at, boot_ms: v.boot_ms, boot_mode: v.boot_mode,
    vcpus: v.vcpus, memory_mib: v.memory_mib, disk_mib: v.disk_mib, pids_max: v.pids_max, env: v.env, expires_at: v.expires_at, timeout_s: v.timeout_s,
  };
}

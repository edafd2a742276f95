// /sandboxes routes: parse -> one manager call -> shape the answer. Shapes are the v1 API (docs/api.md).
import type { FastifyInstance } from 'fastify';
import type { SandboxManager } from '../../sandbox/manager.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createSandboxBody, forkBody, resumeBody, sandboxTimeoutBody } from './schemas.ts';
import { parseBody } from './parse.ts';
import type { ForkAnswer, SandboxDetails, SandboxList, SandboxSummary } from './responses.ts';

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
      onTimeout: body?.on_timeout,
      autoResume: body?.auto_resume,
      network: body?.network && { allow: body.network.allow, rateMbit: body.network.rate_mbit },
    });
    return reply.status(201).send(summary(sb) satisfies SandboxSummary);
  });

  app.post<IdParams>('/sandboxes/:id/timeout', async (req): Promise<SandboxSummary> => {
    const body = parseBody(sandboxTimeoutBody, req.body);
    return summary(await manager.setTimeout(req.params.id, body.timeout_s));
  });

  app.post<IdParams>('/sandboxes/:id/pause', async (req): Promise<SandboxSummary> => summary(await manager.pause(req.params.id)));

  app.post<IdParams>('/sandboxes/:id/resume', async (req): Promise<SandboxSummary> => {
    const body = parseBody(resumeBody, req.body);
    return summary(await manager.resume(req.params.id, { timeoutS: body?.timeout_s }));
  });

  app.post<IdParams>('/sandboxes/:id/fork', async (req, reply) => {
    const body = parseBody(forkBody, req.body);
    const forks = await manager.fork(req.params.id, body?.count ?? 1);
    return reply.status(201).send({ sandboxes: forks.map(summary) } satisfies ForkAnswer);
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
    on_timeout: v.on_timeout, auto_resume: v.auto_resume, paused: v.paused, forked_from: v.forked_from,
  };
}

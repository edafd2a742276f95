// /sandboxes routes: parse -> manager call -> shape the answer. Shapes are the v1 API (docs/api.md).
import type { FastifyInstance } from 'fastify';
import type { SandboxManager } from '../../sandbox/manager.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { EmberdError } from '../../errors.ts';
import { createSandboxBody, execBody } from './schemas.ts';
import { parseBody } from './parse.ts';

type IdParams = { Params: { id: string } };

export function registerSandboxRoutes(app: FastifyInstance, manager: SandboxManager): void {
  app.post('/sandboxes', async (req, reply) => {
    const body = parseBody(createSandboxBody, req.body);
    const sb = await manager.create(body?.language_pack);
    return reply.status(201).send(summary(sb));
  });

  app.get('/sandboxes', async () => ({ sandboxes: manager.list().map(summary) }));

  app.get<IdParams>('/sandboxes/:id', async (req) => {
    const sb = manager.get(req.params.id);
    return { ...sb.view(), boot_log_tail: sb.consoleTail(4096) };
  });

  app.post<IdParams>('/sandboxes/:id/exec', async (req) => {
    manager.get(req.params.id); // 400/404 before looking at the body
    const body = parseBody(execBody, req.body);
    const max = manager.config.exec.maxTimeoutMs;
    if (body.timeout_ms !== undefined && body.timeout_ms > max) {
      throw new EmberdError('INVALID_REQUEST', `timeout_ms ${body.timeout_ms} is above this daemon's maximum of ${max}; ask for less or start emberd with a higher --exec-max-timeout`);
    }
    const r = await manager.exec(req.params.id, {
      code: body.code,
      argv: body.argv,
      env: body.env,
      cwd: body.cwd,
      stdin: body.stdin === undefined ? undefined : Buffer.from(body.stdin, 'utf8'),
      timeoutMs: body.timeout_ms,
    });
    return {
      stdout: r.stdout.toString('utf8'),
      stderr: r.stderr.toString('utf8'),
      exit_code: r.exitCode,
      duration_ms: Math.round(r.durationUs / 1000),
      timed_out: r.timedOut,
      truncated: r.truncated,
    };
  });

  app.delete<IdParams>('/sandboxes/:id', async (req, reply) => {
    await manager.destroy(req.params.id);
    return reply.status(204).send();
  });
}

function summary(sb: Sandbox) {
  const v = sb.view();
  return { id: v.id, state: v.state, language_pack: v.language_pack, backend: v.backend, created_at: v.created_at, boot_ms: v.boot_ms };
}

// Exec and background-process routes: parse -> one manager call -> shape the answer (docs/api.md).
import { constants } from 'node:os';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { EmberdError } from '../../errors.ts';
import type { ExecParams, SandboxManager } from '../../sandbox/manager.ts';
import { parseBody, parseQuery } from './parse.ts';
import { execBody, processOutputQuery, processSignalBody, processStdinBody, processWaitQuery, type ExecBody } from './schemas.ts';
import { encodeOutput, execEventLines, type OutputEncoding } from './output.ts';
import type { BackgroundStarted, ExecAnswer, ProcessAnswer, ProcessList, ProcessOutputAnswer, SessionExecAnswer } from './responses.ts';

type IdParams = { Params: { id: string } };
type ProcParams = { Params: { id: string; pid: string } };

export function registerExecRoutes(app: FastifyInstance, manager: SandboxManager): void {
  app.post<IdParams>('/sandboxes/:id/exec', async (req, reply) => {
    const { id } = req.params;
    const body = parseBody(execBody, req.body);
    const enc: OutputEncoding = body.output_encoding ?? 'utf8';
    const streamed = wantsNdjson(req.headers.accept);
    if (body.session !== undefined) {
      const cell = { code: body.code!, stdin: stdinOf(body), timeoutMs: body.timeout_ms };
      if (streamed) {
        const events = manager.streamInSession(id, body.session, cell);
        reply.raw.once('close', () => events.destroy()); // a client that goes away interrupts the cell
        await events.started; // what keeps the cell from running is answered as an error
        return sendEvents(reply, events, enc);
      }
      const r = await manager.runInSession(id, body.session, cell);
      return { ...execAnswer(r, enc), value: r.value, session_reset: r.sessionReset, results: r.results } satisfies SessionExecAnswer;
    }
    if (body.background) {
      const p = await manager.startProcess(id, execParams(body));
      return reply.status(202).send({ process_id: p.id, state: 'running' } satisfies BackgroundStarted);
    }
    if (streamed) {
      const events = await manager.execStream(id, execParams(body));
      reply.raw.once('close', () => events.destroy()); // a client that goes away kills the process
      return sendEvents(reply, events, enc);
    }
    return execAnswer(await manager.exec(id, execParams(body)), enc);
  });

  app.get<IdParams>('/sandboxes/:id/processes', async (req): Promise<ProcessList> => ({
    processes: manager.listProcesses(req.params.id).map((p) => p.view()),
  }));

  app.get<ProcParams>('/sandboxes/:id/processes/:pid', async (req): Promise<ProcessAnswer> => manager.getProcess(req.params.id, req.params.pid).view());

  app.get<ProcParams>('/sandboxes/:id/processes/:pid/output', async (req): Promise<ProcessOutputAnswer> => {
    const q = parseQuery(processOutputQuery, req.query);
    const o = manager.readProcessOutput(req.params.id, req.params.pid, { stream: q.stream, offset: q.offset, maxBytes: q.max_bytes });
    return { data: encodeOutput(o.data, q.output_encoding), next_offset: o.nextOffset, eof: o.eof, truncated: o.truncated };
  });

  app.post<ProcParams>('/sandboxes/:id/processes/:pid/stdin', async (req, reply) => {
    const body = parseBody(processStdinBody, req.body ?? {});
    const data = body.data_base64 !== undefined ? Buffer.from(body.data_base64, 'base64') : body.data !== undefined ? Buffer.from(body.data, 'utf8') : undefined;
    await manager.writeProcessStdin(req.params.id, req.params.pid, data, body.eof ?? false);
    return reply.status(204).send();
  });

  app.post<ProcParams>('/sandboxes/:id/processes/:pid/signal', async (req, reply) => {
    const { signal } = parseBody(processSignalBody, req.body);
    manager.signalProcess(req.params.id, req.params.pid, signalNumber(signal));
    return reply.status(204).send();
  });

  app.get<ProcParams>('/sandboxes/:id/processes/:pid/wait', async (req): Promise<ProcessAnswer> => {
    const q = parseQuery(processWaitQuery, req.query);
    return (await manager.waitProcess(req.params.id, req.params.pid, q.timeout_ms)).view();
  });

  app.delete<ProcParams>('/sandboxes/:id/processes/:pid', async (req, reply) => {
    await manager.removeProcess(req.params.id, req.params.pid);
    return reply.status(204).send();
  });
}

/** A stream of ExecEvents as NDJSON lines. */
function sendEvents(reply: FastifyReply, events: Readable, enc: OutputEncoding) {
  return reply.header('content-type', 'application/x-ndjson; charset=utf-8').header('cache-control', 'no-store').send(events.pipe(execEventLines(enc)));
}

/** The v1 exec answer (the seed's four fields first). */
function execAnswer(r: { stdout: Buffer; stderr: Buffer; exitCode: number; durationUs: number; timedOut: boolean; truncated: boolean }, enc: OutputEncoding): ExecAnswer {
  return {
    stdout: encodeOutput(r.stdout, enc),
    stderr: encodeOutput(r.stderr, enc),
    exit_code: r.exitCode,
    duration_ms: Math.round(r.durationUs / 1000),
    timed_out: r.timedOut,
    truncated: r.truncated,
  };
}

function stdinOf(body: ExecBody): Buffer | undefined {
  if (body.stdin_base64 !== undefined) return Buffer.from(body.stdin_base64, 'base64');
  return body.stdin !== undefined ? Buffer.from(body.stdin, 'utf8') : undefined;
}

function execParams(body: ExecBody): ExecParams {
  return { code: body.code, argv: body.argv, env: body.env, cwd: body.cwd, stdin: stdinOf(body), timeoutMs: body.timeout_ms };
}

function wantsNdjson(accept: string | undefined): boolean {
  return !!accept && /application\/x-ndjson/i.test(accept);
}

export function signalNumber(s: number | string): number {
  if (typeof s === 'number') return s;
  const name = (s.startsWith('SIG') ? s : `SIG${s}`) as keyof typeof constants.signals;
  const n = constants.signals[name];
  if (n === undefined) throw new EmberdError('INVALID_REQUEST', `unknown signal "${s}"; use a name such as SIGTERM or SIGKILL, or a number`);
  return n;
}

// Exec and background-process routes: parse -> manager call -> shape the answer (docs/api.md).
import { constants } from 'node:os';
import { PassThrough } from 'node:stream';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ExecHandle } from '../../agent/client.ts';
import { EmberdError, isEmberdError } from '../../errors.ts';
import type { ExecParams, SandboxManager } from '../../sandbox/manager.ts';
import { parseBody } from './parse.ts';
import { execBody, processOutputQuery, processSignalBody, processStdinBody, processWaitQuery, type ExecBody } from './schemas.ts';
import { ChunkEncoder, encodeOutput, type OutputEncoding } from './output.ts';
import { runInSession } from '../../sandbox/sessions.ts';

type IdParams = { Params: { id: string } };
type ProcParams = { Params: { id: string; pid: string } };

export function registerExecRoutes(app: FastifyInstance, manager: SandboxManager): void {
  app.post<IdParams>('/sandboxes/:id/exec', async (req, reply) => {
    manager.get(req.params.id); // 400/404 before looking at the body
    const body = parseBody(execBody, req.body);
    const params = execParams(manager, body);
    const enc: OutputEncoding = body.output_encoding ?? 'utf8';
    if (body.session !== undefined) {
      if (wantsNdjson(req.headers.accept)) throw new EmberdError('INVALID_REQUEST', 'session cells are not streamed; drop the Accept: application/x-ndjson header');
      const r = await runInSession(manager.get(req.params.id), body.session, body.code!, {
        timeoutMs: params.timeoutMs ?? manager.config.exec.defaultTimeoutMs,
        outputCap: manager.config.exec.outputCap,
        stdin: params.stdin,
      });
      return { ...execAnswer(r, enc), value: r.value, session_reset: r.sessionReset };
    }
    if (body.background) {
      const p = manager.startProcess(req.params.id, params);
      return reply.status(202).send({ process_id: p.id, state: 'running' });
    }
    if (wantsNdjson(req.headers.accept)) return streamExec(manager, req.params.id, params, enc, reply);
    return execAnswer(await manager.exec(req.params.id, params), enc);
  });

  app.get<IdParams>('/sandboxes/:id/processes', async (req) => ({
    processes: manager.get(req.params.id).processes.list().map((p) => p.view()),
  }));

  app.get<ProcParams>('/sandboxes/:id/processes/:pid', async (req) => findProcess(manager, req.params).view());

  app.get<ProcParams>('/sandboxes/:id/processes/:pid/output', async (req) => {
    const p = findProcess(manager, req.params);
    const q = parseBody(processOutputQuery, req.query);
    const log = p.out[q.stream];
    const data = log.read(q.offset, q.max_bytes);
    const next = Math.min(q.offset, log.length) + data.length;
    return { data: encodeOutput(data, q.output_encoding), next_offset: next, eof: !p.running && next >= log.length, truncated: p.view().truncated };
  });

  app.post<ProcParams>('/sandboxes/:id/processes/:pid/stdin', async (req, reply) => {
    const p = findProcess(manager, req.params);
    const body = parseBody(processStdinBody, req.body ?? {});
    if (!p.running) throw new EmberdError('PROCESS_EXITED', `process ${p.id} has exited; it reads no more input`);
    const data = body.data_base64 !== undefined ? Buffer.from(body.data_base64, 'base64') : body.data !== undefined ? Buffer.from(body.data, 'utf8') : undefined;
    if (data?.length) await p.handle.writeStdin(data);
    if (body.eof) p.handle.closeStdin();
    return reply.status(204).send();
  });

  app.post<ProcParams>('/sandboxes/:id/processes/:pid/signal', async (req, reply) => {
    const p = findProcess(manager, req.params);
    const { signal } = parseBody(processSignalBody, req.body);
    p.handle.signal(signalNumber(signal));
    return reply.status(204).send();
  });

  app.get<ProcParams>('/sandboxes/:id/processes/:pid/wait', async (req) => {
    const p = findProcess(manager, req.params);
    const q = parseBody(processWaitQuery, req.query);
    await p.wait(q.timeout_ms);
    return p.view();
  });

  app.delete<ProcParams>('/sandboxes/:id/processes/:pid', async (req, reply) => {
    const sb = manager.get(req.params.id);
    await sb.processes.remove(req.params.pid);
    return reply.status(204).send();
  });
}

/** The v1 exec answer (the seed's four fields first). */
function execAnswer(r: { stdout: Buffer; stderr: Buffer; exitCode: number; durationUs: number; timedOut: boolean; truncated: boolean }, enc: OutputEncoding) {
  return {
    stdout: encodeOutput(r.stdout, enc),
    stderr: encodeOutput(r.stderr, enc),
    exit_code: r.exitCode,
    duration_ms: Math.round(r.durationUs / 1000),
    timed_out: r.timedOut,
    truncated: r.truncated,
  };
}

function findProcess(manager: SandboxManager, p: { id: string; pid: string }) {
  return manager.get(p.id).processes.get(p.pid);
}

function execParams(manager: SandboxManager, body: ExecBody): ExecParams {
  const max = manager.config.exec.maxTimeoutMs;
  if (body.timeout_ms !== undefined && body.timeout_ms > max) {
    throw new EmberdError('INVALID_REQUEST', `timeout_ms ${body.timeout_ms} is above this daemon's maximum of ${max}; ask for less or start emberd with a higher --exec-max-timeout`);
  }
  return {
    code: body.code,
    argv: body.argv,
    env: body.env,
    cwd: body.cwd,
    stdin: body.stdin_base64 !== undefined ? Buffer.from(body.stdin_base64, 'base64') : body.stdin !== undefined ? Buffer.from(body.stdin, 'utf8') : undefined,
    timeoutMs: body.timeout_ms,
  };
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

/**
 * NDJSON streaming: one event per output chunk, then the exit event. Output credit goes back to
 * the guest only once the client has taken the bytes, so a slow reader slows the process; a client
 * that goes away kills it.
 */
function streamExec(manager: SandboxManager, id: string, params: ExecParams, enc: OutputEncoding, reply: FastifyReply) {
  const out = new PassThrough();
  const encoders = { stdout: new ChunkEncoder(enc), stderr: new ChunkEncoder(enc) };
  let handle: ExecHandle | undefined;
  let owed = 0; // credit waiting for the client to drain
  let finished = false;
  const emit = (event: object) => out.write(`${JSON.stringify(event)}\n`);
  out.on('drain', () => { handle?.grant(owed); owed = 0; });
  const onChunk = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
    const data = encoders[stream].write(chunk);
    const flowing = data.length === 0 || emit({ type: stream, data });
    if (flowing && owed === 0) handle?.grant(chunk.length);
    else owed += chunk.length;
  };
  handle = manager.execStreaming(id, params, { manualCredit: true, onStdout: onChunk('stdout'), onStderr: onChunk('stderr') });
  reply.raw.on('close', () => { if (!finished) handle?.signal(9); });
  handle.exited.then(
    (e) => {
      for (const s of ['stdout', 'stderr'] as const) {
        const rest = encoders[s].end();
        if (rest) emit({ type: s, data: rest });
      }
      emit({ type: 'exit', exit_code: e.exitCode, duration_ms: Math.round(e.durationUs / 1000), timed_out: e.timedOut, truncated: e.truncated });
    },
    (err: unknown) => {
      const e = isEmberdError(err) ? err : new EmberdError('INTERNAL', (err as Error).message);
      emit({ type: 'error', code: e.code, message: e.message });
    },
  ).finally(() => { finished = true; out.end(); });
  return reply.header('content-type', 'application/x-ndjson; charset=utf-8').header('cache-control', 'no-store').send(out);
}

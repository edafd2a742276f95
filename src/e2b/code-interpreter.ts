// The code interpreter (@e2b/code-interpreter, port 49999) on python sessions: a context is a
// session, runCode is a streamed cell answered as NDJSON lines ({"type": "stdout"|"stderr"|
// "result"|"error"|"number_of_executions"|"end_of_execution"}). The traceback of an uncaught
// exception comes on the session's stderr; it is held back from the stdout/stderr lines and
// answered as the `error` {name, value, traceback}.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { EmberdError, isEmberdError } from '../errors.ts';
import type { ExecEvent } from '../sandbox/exec-stream.ts';
import type { ResultBundle } from '../sandbox/sessions.ts';
import { readJson, sendError, sendJson, stringMap } from './http.ts';
import { HOME, type CodeContext, type E2bRegistry, type E2bSandbox } from './registry.ts';

const DEFAULT_CONTEXT = 'default';
const TRACEBACK = 'Traceback (most recent call last):';

/** Jupyter MIME types -> the fields @e2b/code-interpreter's Result reads. */
const MIME: Record<string, string> = {
  'text/plain': 'text', 'text/html': 'html', 'text/markdown': 'markdown', 'image/svg+xml': 'svg', 'image/png': 'png', 'image/jpeg': 'jpeg',
  'application/pdf': 'pdf', 'text/latex': 'latex', 'application/json': 'json', 'application/javascript': 'javascript',
};

export function resultLine(b: ResultBundle): Record<string, unknown> {
  const out: Record<string, unknown> = { type: 'result', is_main_result: b.is_main_result };
  for (const [k, v] of Object.entries(b)) if (k !== 'is_main_result') out[MIME[k] ?? k] = v;
  return out;
}

/** The last line of a Python traceback, "ZeroDivisionError: division by zero", as {name, value}. */
export function parseTraceback(tb: string): { name: string; value: string; traceback: string } {
  const last = tb.trimEnd().split('\n').filter((l) => l && !l.startsWith(' ')).pop() ?? '';
  const i = last.indexOf(': ');
  return { name: i < 0 ? last : last.slice(0, i), value: i < 0 ? '' : last.slice(i + 2), traceback: tb.trimEnd() };
}

const py = (v: unknown) => JSON.stringify(JSON.stringify(v)); // a Python str literal of JSON text

/** Context state the registry does not keep: which sessions were set up (cwd), cells run. */
const prepared = new WeakMap<E2bSandbox, Map<string, number>>();

async function prepare(reg: E2bRegistry, sb: E2bSandbox, ctx: CodeContext): Promise<void> {
  let m = prepared.get(sb);
  if (!m) prepared.set(sb, (m = new Map()));
  if (m.has(ctx.id)) return;
  await cell(reg, sb, ctx.id, `import os as _e2b_os; _e2b_os.makedirs(${JSON.stringify(ctx.cwd)}, exist_ok=True); _e2b_os.chdir(${JSON.stringify(ctx.cwd)}); del _e2b_os`);
  m.set(ctx.id, 0);
}

async function cell(reg: E2bRegistry, sb: E2bSandbox, name: string, code: string): Promise<void> {
  const r = await reg.manager.runInSession(sb.id, name, { code });
  if (r.exitCode !== 0) throw new EmberdError('SESSION_START_FAILED', `setting up context ${name} failed: ${r.stderr.toString().slice(-500)}`);
}

function contextOf(sb: E2bSandbox, id: string | undefined): CodeContext {
  if (!id || id === DEFAULT_CONTEXT) {
    let c = sb.contexts.get(DEFAULT_CONTEXT);
    if (!c) sb.contexts.set(DEFAULT_CONTEXT, (c = { id: DEFAULT_CONTEXT, language: 'python', cwd: HOME }));
    return c;
  }
  const c = sb.contexts.get(id);
  if (!c) throw new EmberdError('SESSION_NOT_FOUND', `context ${id} does not exist in sandbox ${sb.id}; create one with createCodeContext()`);
  return c;
}

function checkLanguage(language: unknown): void {
  if (language !== undefined && language !== null && language !== 'python') {
    throw new EmberdError('INVALID_REQUEST', `language ${JSON.stringify(language)} is not supported by emberd's code interpreter; only python is (run other languages with commands.run)`);
  }
}

async function execute(reg: E2bRegistry, sb: E2bSandbox, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readJson(req, 16 << 20);
  if (typeof body.code !== 'string') throw new EmberdError('INVALID_REQUEST', 'code (a string) is required');
  checkLanguage(body.language);
  const ctx = contextOf(sb, typeof body.context_id === 'string' ? body.context_id : undefined);
  const envs = stringMap(body.env_vars, 'env_vars');
  await prepare(reg, sb, ctx);
  // env_vars hold for this execution only: set before, restored after.
  if (Object.keys(envs).length) {
    await cell(reg, sb, ctx.id, `import os as _e2b_os, json as _e2b_json; _e2b_env = _e2b_json.loads(${py(envs)}); _e2b_saved = {k: _e2b_os.environ.get(k) for k in _e2b_env}; _e2b_os.environ.update(_e2b_env)`);
  }
  // The SDK bounds a cell by its own timeout (300 s by default) and goes away at it, which
  // interrupts the cell; the daemon's longest exec timeout is only the backstop.
  const stream = reg.manager.streamInSession(sb.id, ctx.id, { code: body.code, timeoutMs: reg.manager.config.exec.maxTimeoutMs });
  try {
    await stream.started;
  } catch (e) {
    stream.destroy();
    throw e;
  }
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.once('close', () => { if (!stream.readableEnded) stream.destroy(); });
  const line = (o: unknown) => { if (!res.destroyed) res.write(`${JSON.stringify(o)}\n`); };
  let held = ''; // stderr from a "Traceback" line on, until the cell's end says whether it failed
  for await (const ev of stream as AsyncIterable<ExecEvent>) {
    if (ev.type === 'stdout') line({ type: 'stdout', text: ev.data.toString() });
    else if (ev.type === 'stderr') {
      const text = held + ev.data.toString();
      const at = held ? 0 : text.indexOf(TRACEBACK);
      if (at < 0) line({ type: 'stderr', text });
      else {
        if (at > 0) line({ type: 'stderr', text: text.slice(0, at) });
        held = text.slice(at);
      }
    } else if (ev.type === 'result') line(resultLine(ev.bundle));
    else if (ev.type === 'exit') {
      if (held && ev.exit.exitCode !== 0) line({ type: 'error', ...parseTraceback(held) });
      else if (held) line({ type: 'stderr', text: held });
      else if (ev.exit.timedOut) line({ type: 'error', name: 'TimeoutError', value: 'the cell ran past its timeout and was interrupted', traceback: '' });
      const m = prepared.get(sb)!;
      m.set(ctx.id, (m.get(ctx.id) ?? 0) + 1);
      line({ type: 'number_of_executions', execution_count: m.get(ctx.id) });
    } else if (ev.type === 'error') line({ type: 'error', name: ev.error.code, value: ev.error.message, traceback: '' });
  }
  if (Object.keys(envs).length) {
    await cell(reg, sb, ctx.id, `import os as _e2b_os\nfor _k, _v in _e2b_saved.items():\n    _e2b_os.environ.pop(_k, None) if _v is None else _e2b_os.environ.__setitem__(_k, _v)\ndel _e2b_saved, _e2b_env`).catch(() => {});
  }
  line({ type: 'end_of_execution' });
  res.end();
}

export async function codeInterpreter(reg: E2bRegistry, req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
  const method = req.method ?? 'GET';
  try {
    const h = (n: string) => { const v = req.headers[n]; return Array.isArray(v) ? v[0] : v; };
    // runCode sends X-Access-Token; the context calls only the traffic token (the same token here).
    const sb = reg.authorize(h('e2b-sandbox-id'), h('x-access-token') ?? h('e2b-traffic-access-token'));
    let match: RegExpExecArray | null;
    if (path === '/execute' && method === 'POST') { await execute(reg, sb, req, res); return; }
    if (path === '/contexts' && method === 'POST') {
      const body = await readJson(req, 1 << 20);
      checkLanguage(body.language);
      const ctx: CodeContext = { id: `ctx-${randomBytes(8).toString('hex')}`, language: 'python', cwd: typeof body.cwd === 'string' && body.cwd ? body.cwd : HOME };
      sb.contexts.set(ctx.id, ctx);
      await prepare(reg, sb, ctx);
      sendJson(res, 200, ctx);
      return;
    }
    if (path === '/contexts' && method === 'GET') { contextOf(sb, undefined); sendJson(res, 200, [...sb.contexts.values()]); return; }
    if ((match = /^\/contexts\/([^/]+)(\/restart)?$/.exec(path))) {
      const ctx = contextOf(sb, decodeURIComponent(match[1]!));
      if (method === 'DELETE' && !match[2]) {
        await reg.manager.deleteSession(sb.id, ctx.id).catch((e) => { if (!isEmberdError(e, 'SESSION_NOT_FOUND')) throw e; });
        sb.contexts.delete(ctx.id);
        prepared.get(sb)?.delete(ctx.id);
        res.writeHead(204).end();
        return;
      }
      if (method === 'POST' && match[2]) {
        await reg.manager.deleteSession(sb.id, ctx.id).catch((e) => { if (!isEmberdError(e, 'SESSION_NOT_FOUND')) throw e; });
        prepared.get(sb)?.delete(ctx.id);
        await prepare(reg, sb, ctx);
        res.writeHead(204).end();
        return;
      }
    }
    throw new EmberdError('ROUTE_NOT_FOUND', `no code interpreter route ${method} ${path}`);
  } catch (e) {
    sendError(res, e);
  }
}

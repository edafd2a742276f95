// envd's process.Process service (Connect-RPC) on the E2B process table: Start and Connect stream
// a process's events (start, data, end, keepalives in silence), the rest act on a running one.
// A StartRequest with `pty` (sandbox.pty.create) runs on a guest pseudo-terminal: its output is
// `pty` data, SendInput's `pty` input is keystrokes, Update resizes it.
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { Process, Signal, type ProcessSelector, type ProcessEventSchema } from './gen/process/process_pb.js';
import { EmberdError } from '../errors.ts';
import { connectErrors, toConnectError } from './connect-errors.ts';
import { HOME, type E2bRegistry, type E2bSandbox } from './registry.ts';
import type { E2bProcess, Follower } from './process-table.ts';

type EventInit = MessageInitShape<typeof ProcessEventSchema>;
const KEEPALIVE_MS = 30_000;

/** The sandbox of an envd request, by its E2b-Sandbox-Id and X-Access-Token headers. */
export function envdSandbox(reg: E2bRegistry, ctx: HandlerContext): E2bSandbox {
  try {
    return reg.authorize(ctx.requestHeader.get('e2b-sandbox-id') ?? undefined, ctx.requestHeader.get('x-access-token') ?? undefined);
  } catch (e) {
    throw toConnectError(e);
  }
}

function select(sb: E2bSandbox, sel: ProcessSelector | undefined): E2bProcess {
  const s = sel?.selector;
  const p = s?.case === 'pid' ? sb.procs.find({ pid: s.value }) : s?.case === 'tag' ? sb.procs.find({ tag: s.value }) : undefined;
  if (!p) throw new ConnectError(`process ${s?.case === 'tag' ? `with tag ${s.value}` : String(s?.value ?? '(none)')} is not running in sandbox ${sb.id}; list them with commands.list()`, Code.NotFound);
  return p;
}

async function* events(p: E2bProcess, f: Follower, signal: AbortSignal): AsyncGenerator<{ event: EventInit }> {
  const onAbort = () => f.close(); // the client went away: stop following (the process runs on)
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    yield { event: { event: { case: 'start', value: { pid: p.pid } } } };
    for await (const ev of f.events(KEEPALIVE_MS)) {
      if (!ev) yield { event: { event: { case: 'keepalive', value: {} } } };
      else if (ev.kind === 'end') yield { event: { event: { case: 'end', value: ev.end } } };
      else yield { event: { event: { case: 'data', value: { output: { case: ev.kind, value: ev.data } } } } };
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    f.close();
  }
}

const SIGNALS: Partial<Record<Signal, number>> = { [Signal.SIGKILL]: 9, [Signal.SIGTERM]: 15 };

export function processService(reg: E2bRegistry): ServiceImpl<typeof Process> {
  const maxTimeoutMs = () => reg.manager.config.exec.maxTimeoutMs;
  return {
    async *start(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      const size = req.pty ? { rows: req.pty.size?.rows || 24, cols: req.pty.size?.cols || 80 } : undefined;
      if (!req.process?.cmd) throw new ConnectError('process.cmd is required', Code.InvalidArgument);
      // The command's deadline (commands.run timeoutMs, Connect-Timeout-Ms) bounds the exec too.
      const deadline = ctx.timeoutMs();
      const timeoutMs = Math.min(deadline && deadline > 0 ? deadline : maxTimeoutMs(), maxTimeoutMs());
      let p: E2bProcess;
      try {
        p = await sb.procs.start(
          { cmd: req.process.cmd, args: req.process.args, envs: req.process.envs, cwd: req.process.cwd ?? HOME },
          { tag: req.tag, stdin: req.stdin ?? false, timeoutMs, pty: size },
        );
      } catch (e) {
        throw toConnectError(e);
      }
      yield* events(p, p.follow(), ctx.signal);
    },

    async *connect(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      const p = select(sb, req.process);
      yield* events(p, p.follow(), ctx.signal);
    },

    async list(_req, ctx) {
      const sb = envdSandbox(reg, ctx);
      return {
        processes: sb.procs.list().map((p) => ({ pid: p.pid, tag: p.tag, config: { cmd: p.config.cmd, args: p.config.args, envs: p.config.envs, cwd: p.config.cwd } })),
      };
    },

    async sendInput(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      const p = select(sb, req.process);
      const input = req.input?.input;
      const data = Buffer.from(input?.value ?? new Uint8Array());
      await connectErrors(() => (input?.case === 'pty' ? p.writePty(data) : p.writeStdin(data)));
      return {};
    },

    async closeStdin(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      const p = select(sb, req.process);
      await connectErrors(() => p.writeStdin(Buffer.alloc(0), true));
      return {};
    },

    async sendSignal(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      const p = select(sb, req.process);
      const signo = SIGNALS[req.signal];
      if (!signo) throw toConnectError(new EmberdError('INVALID_REQUEST', `signal ${Signal[req.signal] ?? req.signal} is not one envd sends; use SIGNAL_SIGKILL or SIGNAL_SIGTERM`));
      p.signal(signo);
      return {};
    },

    async update(req, ctx) {
      const sb = envdSandbox(reg, ctx);
      const p = select(sb, req.process);
      const size = req.pty?.size;
      if (!size) throw new ConnectError('Update only resizes a PTY: send pty.size {rows, cols}', Code.InvalidArgument);
      await connectErrors(async () => p.resize(size.rows, size.cols));
      return {};
    },

    async streamInput() {
      throw new ConnectError('StreamInput is not supported by emberd\'s E2B API; use SendInput', Code.Unimplemented);
    },
  };
}

// Node streams over a guest exec's stdin and stdout, coupled to the protocol's flow control, so
// that neither direction buffers a whole file on the host: an upload writes the next chunk only
// once the guest granted credit for it, and a download grants the guest credit only once the
// consumer took the bytes. Nothing here knows about files; callers map failures onto codes.
import type { Readable } from 'node:stream';
import type { AgentClient, ExecHandle, ExitInfo } from '../../agent/client.ts';
import { PacedReadable } from '../../agent/paced-readable.ts';

/** Keeps the first `cap` bytes of a stream of chunks (stderr of our tools: small). */
export class Capped {
  private readonly parts: Buffer[] = [];
  private n = 0;
  truncated = false;
  private readonly cap: number;
  constructor(cap: number) { this.cap = cap; }
  push(b: Buffer): void {
    const room = this.cap - this.n;
    if (b.length > room) this.truncated = true;
    if (room <= 0) return;
    const part = b.length > room ? b.subarray(0, room) : b;
    this.parts.push(part);
    this.n += part.length;
  }
  buffer(): Buffer { return Buffer.concat(this.parts); }
  toString(): string { return this.buffer().toString('utf8'); }
}

export const STDERR_CAP = 16 * 1024;

/**
 * Output credit granted to a download's guest process on top of the protocol's initial 256 KiB, so
 * that up to 1 MiB is in flight: the guest keeps sending while the daemon is busy or descheduled
 * (about +25% download throughput under TCG on a loaded host). Memory per download stays bounded:
 * this plus the stream's high-water mark (DOWNLOAD_BUFFER): 2 MiB.
 */
const EXTRA_DOWNLOAD_CREDIT = 768 * 1024;

/** A download's stream buffer: credit goes back to the guest only while less than this is queued. */
const DOWNLOAD_BUFFER = 1 << 20;

/** The exec's outcome without rejecting: a transport failure is carried as `error`. */
type Outcome = { exit: ExitInfo; error?: undefined } | { exit?: undefined; error: Error };
const outcome = (h: ExecHandle): Promise<Outcome> => h.exited.then((exit) => ({ exit }), (error: Error) => ({ error }));

/** What to run, and for how long at most (guest-side). */
export interface ExecSpec {
  argv: string[];
  timeoutMs: number;
}

/**
 * Runs `spec` and hands its stdout out as a stream, with credit granted as the consumer reads
 * (PacedReadable: a slow reader slows the guest process, and destroying the stream kills it).
 * Waits for the first bytes or the end before resolving, so a failure before any output rejects
 * with `failed(exit, stderr)` (or the transport's error); a failure later destroys the stream with
 * it. `signal` stops the process while no byte has come yet; afterwards, destroying the stream does.
 */
export function streamFromExec(agent: AgentClient, spec: ExecSpec, failed: (exit: ExitInfo, stderr: string) => Error, signal?: AbortSignal): Promise<Readable> {
  const stream = new PacedReadable({ highWaterMark: DOWNLOAD_BUFFER });
  const err = new Capped(STDERR_CAP);
  return new Promise<Readable>((resolve, reject) => {
    let started = false;
    const start = () => { if (!started) { started = true; resolve(stream); } };
    let h: ExecHandle;
    try {
      h = agent.exec({ argv: spec.argv, timeoutMs: spec.timeoutMs }, {
        manualCredit: true,
        onStdout: (b) => { stream.deliver(b, b.length); start(); },
        // stderr is small and kept, so its credit goes back at once
        onStderr: (b) => { err.push(b); h.grant(b.length); },
      });
    } catch (e) {
      reject(e);
      return;
    }
    stream.handle = h;
    h.grant(EXTRA_DOWNLOAD_CREDIT);
    const abort = () => { if (!started) h.signal(9); };
    signal?.addEventListener('abort', abort, { once: true });
    if (signal?.aborted) abort();
    void outcome(h).then((r) => {
      signal?.removeEventListener('abort', abort);
      const failure = r.error ?? (r.exit.exitCode !== 0 || r.exit.timedOut ? failed(r.exit, err.toString()) : undefined);
      if (!failure) {
        stream.push(null);
        start();
      } else if (!started) {
        started = true;
        stream.destroy();
        reject(failure);
      } else {
        stream.destroy(failure);
      }
    });
  });
}

export interface ExecInput {
  /** Bytes accepted; one more and the transfer stops with `tooLarge()`. */
  maxBytes: number;
  tooLarge: () => Error;
  /** Runs after a stopped transfer's exec ended, before the error is thrown (removes a temporary file). */
  cleanup?: () => Promise<void>;
}

export interface ExecInputResult {
  /** Bytes taken from the source and sent. */
  bytes: number;
  exit: ExitInfo;
  stderr: string;
  /** The process ended before it had read everything (its status should say why). */
  exitedEarly: boolean;
}

/**
 * The upload writer: runs `spec` with stdin open and writes `source` to it one chunk at a time.
 * Each write waits for the guest's credit, and the next chunk is only read from `source` after
 * that, so a slow guest slows the sender. More than maxBytes, or a failing source: the process is
 * killed, `cleanup` runs once it ended, and the error is thrown. A transport failure rejects.
 * `source` is never destroyed here: the caller may still answer on the connection it belongs to.
 */
export async function streamIntoExec(agent: AgentClient, spec: ExecSpec, source: Readable, o: ExecInput): Promise<ExecInputResult> {
  const err = new Capped(STDERR_CAP);
  const h = agent.exec(
    { argv: spec.argv, stdinOpen: true, timeoutMs: spec.timeoutMs },
    { onStderr: (b) => err.push(b) },
  );
  const ended = outcome(h);
  let bytes = 0;
  let exitedEarly = false;
  try {
    for await (const raw of source.iterator({ destroyOnReturn: false })) {
      const chunk = typeof raw === 'string' ? Buffer.from(raw) : raw as Buffer;
      bytes += chunk.length;
      if (bytes > o.maxBytes) throw o.tooLarge();
      const r = await Promise.race([h.writeStdin(chunk).then(() => undefined), ended]);
      if (r) { exitedEarly = true; break; } // the tool stopped before reading everything: its status says why
    }
    if (!exitedEarly) h.closeStdin();
  } catch (e) {
    h.signal(9);
    await ended;
    await o.cleanup?.();
    throw e;
  }
  const r = await ended;
  if (r.error) throw r.error;
  return { bytes, exit: r.exit, stderr: err.toString(), exitedEarly };
}

// A streamed session cell (`Accept: application/x-ndjson` with `"session"`): the cell's output and
// rich results as ExecEvents while it runs, then its exit with the value. Destroying the stream
// (the client went away) abandons a queued cell and interrupts a running one. Unlike an exec's
// stream it does not pace the guest (a session's output shares one long-running exec); what it
// holds is bounded by the cell's output cap.
import { Readable } from 'node:stream';
import { EmberdError, isEmberdError } from '../errors.ts';
import type { ExecEvent } from './exec-stream.ts';
import type { SessionListener, SessionResult } from './sessions.ts';

export class SessionEventStream extends Readable {
  /** Resolves once the cell runs; rejects with what kept it from running (answer that as an error). */
  readonly started: Promise<void>;
  private readonly abort = new AbortController();

  /** `run` runs the cell with these hooks (SessionRegistry.run with listener and signal). */
  constructor(run: (hooks: { listener: SessionListener; signal: AbortSignal }) => Promise<SessionResult>) {
    super({ objectMode: true });
    let started!: () => void;
    let failed!: (e: unknown) => void;
    this.started = new Promise<void>((res, rej) => { started = res; failed = rej; });
    this.started.catch(() => {});
    const emit = (e: ExecEvent) => { if (!this.destroyed) this.push(e); };
    const listener: SessionListener = {
      started,
      stdout: (data) => emit({ type: 'stdout', data }),
      stderr: (data) => emit({ type: 'stderr', data }),
      result: (bundle) => emit({ type: 'result', bundle }),
    };
    run({ listener, signal: this.abort.signal }).then(
      (r) => {
        started();
        emit({
          type: 'exit',
          exit: { exitCode: r.exitCode, signal: 0, timedOut: r.timedOut, truncated: r.truncated, durationUs: r.durationUs, fastPath: false },
          session: { value: r.value, sessionReset: r.sessionReset },
        });
        if (!this.destroyed) this.push(null);
      },
      (err: unknown) => {
        failed(err);
        emit({ type: 'error', error: isEmberdError(err) ? err : new EmberdError('INTERNAL', (err as Error).message) });
        if (!this.destroyed) this.push(null);
      },
    );
  }

  override _read(): void {}

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.abort.abort();
    cb(err);
  }
}

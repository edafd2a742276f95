// A streamed exec (`Accept: application/x-ndjson`): its output and its end as a stream of events,
// read at the consumer's pace (PacedReadable), so a slow client slows the guest process and a
// client that goes away (destroy) kills it. The HTTP layer only turns events into lines.
import type { AgentClient, ExecRequest, ExitInfo } from '../agent/client.ts';
import { PacedReadable } from '../agent/paced-readable.ts';
import { EmberdError, isEmberdError } from '../errors.ts';
import type { ResultBundle } from './sessions.ts';

/** What a streamed exec emits; `result` and the exit's `session` come from session cells only. */
export type ExecEvent =
  | { type: 'stdout'; data: Buffer }
  | { type: 'stderr'; data: Buffer }
  | { type: 'result'; bundle: ResultBundle }
  | { type: 'exit'; exit: ExitInfo; session?: { value: string | null; sessionReset: boolean } }
  | { type: 'error'; error: EmberdError };

/** Events waiting for the consumer; each holds at most one output frame of credit (64 KiB). */
const EVENTS_BUFFERED = 4;

export class ExecEventStream extends PacedReadable {
  constructor(agent: AgentClient, req: ExecRequest) {
    super({ objectMode: true, highWaterMark: EVENTS_BUFFERED });
    const handle = agent.exec(req, {
      manualCredit: true,
      onStdout: (data) => this.deliver({ type: 'stdout', data } satisfies ExecEvent, data.length),
      onStderr: (data) => this.deliver({ type: 'stderr', data } satisfies ExecEvent, data.length),
    });
    this.handle = handle;
    handle.exited.then(
      (exit) => this.finishWith({ type: 'exit', exit }),
      (err: unknown) => this.finishWith({ type: 'error', error: isEmberdError(err) ? err : new EmberdError('INTERNAL', (err as Error).message) }),
    );
  }

  private finishWith(last: ExecEvent): void {
    if (this.destroyed) return;
    this.push(last);
    this.push(null);
  }
}

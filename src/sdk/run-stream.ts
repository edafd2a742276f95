// A streamed exec (NDJSON events) gathered into one answer, handing each event to the caller's
// callbacks as it comes: what runCode and commands.run do when given onStdout/onStderr/onResult
// or an AbortSignal.
import { EmberdError, type ExecEvent, type ResultBundle } from './client.ts';

export interface StreamCallbacks {
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  onResult?: (result: ResultBundle) => void;
}

export interface GatheredRun {
  stdout: string;
  stderr: string;
  /** 1 after an uncaught exception (traceback on stderr): an answer, not an error. */
  exitCode: number;
  durationMs: number;
  timedOut: boolean;
  /** Output past the daemon's --exec-output-cap was dropped. */
  truncated: boolean;
  /** Rich outputs of a session cell (display(), matplotlib figures, the final expression), MIME bundles. */
  results: ResultBundle[];
  /** repr() of a session cell's final expression; null otherwise. */
  value: string | null;
  /** The session's interpreter ended (its state is lost; the next run starts a new one). */
  sessionReset: boolean;
}

/** Consumes `events` to the end; an `error` event (or a stream cut before its exit) throws EmberdError. */
export async function gatherRun(events: AsyncIterable<ExecEvent>, cb: StreamCallbacks): Promise<GatheredRun> {
  let stdout = '';
  let stderr = '';
  const results: ResultBundle[] = [];
  for await (const e of events) {
    switch (e.type) {
      case 'stdout': stdout += e.data; cb.onStdout?.(e.data); break;
      case 'stderr': stderr += e.data; cb.onStderr?.(e.data); break;
      case 'result': {
        const { type: _type, ...bundle } = e;
        results.push(bundle as ResultBundle);
        cb.onResult?.(bundle as ResultBundle);
        break;
      }
      case 'error': throw new EmberdError(0, e.code, e.message);
      case 'exit':
        return {
          stdout, stderr, results,
          exitCode: e.exit_code, durationMs: e.duration_ms, timedOut: e.timed_out, truncated: e.truncated,
          value: e.value ?? null, sessionReset: e.session_reset ?? false,
        };
    }
  }
  throw new EmberdError(0, 'PROTOCOL_ERROR', 'the exec stream ended without an exit event (the daemon stopped or the connection broke); run it again');
}

// How output bytes appear in JSON: UTF-8 text (invalid bytes become U+FFFD) or exact base64; and
// streamed execs as NDJSON lines.
import { Transform } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { ExecEvent } from '../../sandbox/exec-stream.ts';

export type OutputEncoding = 'utf8' | 'base64';

export function encodeOutput(b: Buffer, enc: OutputEncoding): string {
  return enc === 'base64' ? b.toString('base64') : b.toString('utf8');
}

/** For streams: never splits a UTF-8 character across two events. */
export class ChunkEncoder {
  private readonly decoder: StringDecoder | undefined;
  constructor(enc: OutputEncoding) {
    this.decoder = enc === 'utf8' ? new StringDecoder('utf8') : undefined;
  }

  write(b: Buffer): string {
    return this.decoder ? this.decoder.write(b) : b.toString('base64');
  }

  end(): string {
    return this.decoder ? this.decoder.end() : '';
  }
}

/**
 * Streamed exec events -> NDJSON lines: `{"type":"stdout"|"stderr","data"}` per chunk,
 * `{"type":"result",...bundle}` per rich output of a session cell, then one `{"type":"exit",...}`
 * (with `value` and `session_reset` for a session cell) or `{"type":"error","code","message"}`.
 * One event buffered on each side, so the exec's pacing (PacedReadable) follows the client.
 */
export function execEventLines(enc: OutputEncoding): Transform {
  const encoders = { stdout: new ChunkEncoder(enc), stderr: new ChunkEncoder(enc) };
  const line = (event: object) => `${JSON.stringify(event)}\n`;
  return new Transform({
    writableObjectMode: true,
    writableHighWaterMark: 1,
    transform(e: ExecEvent, _enc, done) {
      if (e.type === 'stdout' || e.type === 'stderr') {
        const data = encoders[e.type].write(e.data);
        done(null, data ? line({ type: e.type, data }) : undefined);
        return;
      }
      if (e.type === 'result') { // bundles hold MIME keys only (sessions.ts), and "type" comes last anyway
        done(null, line({ ...e.bundle, type: 'result' }));
        return;
      }
      let out = '';
      for (const s of ['stdout', 'stderr'] as const) {
        const rest = encoders[s].end();
        if (rest) out += line({ type: s, data: rest });
      }
      out += line(lastEvent(e));
      done(null, out);
    },
  });
}

function lastEvent(e: Extract<ExecEvent, { type: 'exit' | 'error' }>): object {
  if (e.type === 'error') return { type: 'error', code: e.error.code, message: e.error.message };
  const x = e.exit;
  const exit = { type: 'exit', exit_code: x.exitCode, duration_ms: Math.round(x.durationUs / 1000), timed_out: x.timedOut, truncated: x.truncated };
  return e.session ? { ...exit, value: e.session.value, session_reset: e.session.sessionReset } : exit;
}

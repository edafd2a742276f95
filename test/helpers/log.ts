// A logger whose lines tests can read: the same pino logger the daemon uses, writing JSON objects
// into an array instead of stderr.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Logger } from '../../src/log.ts';

export interface CapturedLog {
  log: Logger;
  /** Every line so far, parsed. */
  lines(): Record<string, unknown>[];
}

export function captureLog(level = 'debug'): CapturedLog {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level, formatters: { level: (label) => ({ level: label }) } }, sink), lines: () => lines };
}

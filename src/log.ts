// Structured logs (pino): JSON lines when stderr is not a terminal (journald, files, log
// shippers), one readable line each when it is. Components take a Logger and make children that
// carry their context: every line about a sandbox has `sandbox`, every request line `req_id`.
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  level: LogLevel;
  /** Where lines go; default stderr. */
  fd?: number;
  /** Readable lines instead of JSON; default: whether `fd` is a terminal. */
  pretty?: boolean;
}

export function createLogger(o: LoggerOptions): Logger {
  const fd = o.fd ?? 2;
  const readable = o.pretty ?? (fd === 2 ? process.stderr.isTTY === true : false);
  // Synchronous writes: a line written just before exit (a fatal error) is never lost.
  const dest = readable
    ? pretty({ destination: fd, sync: true, colorize: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,name' })
    : pino.destination({ fd, sync: true });
  return pino({
    name: 'emberd',
    level: o.level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) }, // "warn", not 40: read by people and by jq
  }, dest);
}

/** A logger that writes nothing (library use, unit tests). */
export const silentLogger: Logger = pino({ level: 'silent' });

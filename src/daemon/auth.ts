// Bearer-token authentication (docs/security.md): a 256-bit random token kept in a file only its
// owner can read, created on first use; every request must carry `Authorization: Bearer <token>`.
// The comparison is constant-time (of SHA-256 digests, so the length leaks nothing either).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, constants, fstatSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { EmberdError } from '../errors.ts';
import { ConfigError } from './config.ts';

const TOKEN_BYTES = 32;
const TOKEN_SHAPE = /^[0-9a-f]{64}$/;

/**
 * The token in `path`, created (mode 0600, in a 0700 directory) when the file does not exist. A
 * file that others can read, or that does not hold a token, is refused: say how to fix it.
 */
export function loadOrCreateToken(path: string): { token: string; created: boolean } {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    const token = randomBytes(TOKEN_BYTES).toString('hex');
    try { writeSync(fd, `${token}\n`); } finally { closeSync(fd); }
    return { token, created: true };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new ConfigError(`cannot create the token file ${path}: ${(e as Error).message}`);
  }
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    if (st.mode & 0o077) throw new ConfigError(`token file ${path} can be read by other users (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 ${path}`);
    if (process.getuid && st.uid !== process.getuid()) throw new ConfigError(`token file ${path} belongs to uid ${st.uid}, not to the user emberd runs as`);
    const token = readFileSync(fd, 'utf8').trim();
    if (!TOKEN_SHAPE.test(token)) throw new ConfigError(`token file ${path} does not hold a token (64 hex digits); delete it and emberd makes a new one`);
    return { token, created: false };
  } finally {
    closeSync(fd);
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Whether `token` is the daemon's token (constant time), for surfaces that carry it elsewhere. */
export function tokenMatches(token: string, given: string | undefined): boolean {
  return given !== undefined && timingSafeEqual(digest(given), digest(token));
}

/**
 * A Fastify onRequest hook that answers 401 UNAUTHORIZED unless the request carries `token`.
 * `exempt` requests are left to their own checks (the E2B surfaces: E2B's SDKs send the daemon's
 * token as their API key, and per-sandbox access tokens, never a bearer token).
 */
export function requireToken(token: string, tokenFile: string, exempt: (url: string) => boolean = () => false) {
  const expected = digest(token);
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (exempt(req.raw.url ?? '')) return;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (m && timingSafeEqual(digest(m[1]!), expected)) return;
    void reply.header('www-authenticate', 'Bearer realm="emberd"');
    throw new EmberdError('UNAUTHORIZED', m
      ? `the bearer token is not this daemon's; use the one in ${tokenFile} (emberctl and the SDK read it, or EMBERD_TOKEN)`
      : `this daemon requires a token: send Authorization: Bearer <token>; the token is in ${tokenFile} (emberctl and the SDK read it, or EMBERD_TOKEN)`);
  };
}

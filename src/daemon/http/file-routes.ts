// /sandboxes/{id}/files routes (docs/api.md, "Files"): parse the query, hand the raw request
// stream or the sandbox's file stream to src/sandbox/files.ts, shape the answer. They live in an
// encapsulated plugin scope whose only content-type parser passes the request stream through
// unread, so an upload is never buffered, whatever its Content-Type.
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { EmberdError } from '../../errors.ts';
import type { SandboxManager } from '../../sandbox/manager.ts';
import { SandboxFiles } from '../../sandbox/files.ts';

export const DEFAULT_MAX_UPLOAD = 1 << 30;

type IdParams = { Params: { id: string } };

const path = z.string().optional(); // checked by normalizePath: a missing or bad path is INVALID_PATH
const bool = z.enum(['true', 'false', '1', '0']).optional();
export const putQuery = z.strictObject({ path, mode: z.string().optional(), format: z.enum(['tar']).optional() });
export const getQuery = z.strictObject({ path, format: z.enum(['tar']).optional() });
export const pathQuery = z.strictObject({ path });
export const deleteQuery = z.strictObject({ path, recursive: bool });

function query<S extends z.ZodType>(schema: S, q: unknown): z.infer<S> {
  const r = schema.safeParse(q);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message));
  throw new EmberdError('INVALID_REQUEST', `invalid query string: ${problems.join('; ')}; the parameters are path, and mode and format=tar for PUT, format=tar for GET, recursive=true for DELETE`);
}

export function registerFileRoutes(app: FastifyInstance, manager: SandboxManager): void {
  const maxUpload = manager.config.files?.maxUploadBytes ?? DEFAULT_MAX_UPLOAD;

  const filesOf = (id: string): SandboxFiles => {
    const { exec } = manager.config;
    return new SandboxFiles(manager.readyAgent(id), {
      timeoutMs: exec.defaultTimeoutMs,
      transferTimeoutMs: exec.maxTimeoutMs,
      outputCap: exec.outputCap,
    });
  };

  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { bodyLimit: maxUpload }, (_req, payload, done) => done(null, payload));

    scope.put<IdParams>('/sandboxes/:id/files', { bodyLimit: maxUpload }, async (req, reply) => {
      try {
        const files = filesOf(req.params.id);
        const q = query(putQuery, req.query);
        if (q.format === 'tar' && q.mode !== undefined) throw new EmberdError('INVALID_REQUEST', 'mode applies to a single file; a tar carries the modes of its entries');
        const declared = Number(req.headers['content-length']);
        if (declared > maxUpload) throw tooLarge(maxUpload);
        // No body at all (no Content-Type, no length): Fastify skips the parser; that is an empty file.
        const body = req.body instanceof Readable ? req.body : Readable.from([]);
        const r = q.format === 'tar'
          ? await files.writeTar(q.path ?? '', body, { maxBytes: maxUpload })
          : await files.writeFile(q.path ?? '', body, { maxBytes: maxUpload, mode: q.mode });
        return reply.status(201).send(r);
      } catch (e) {
        lingerIfUnread(req, reply);
        throw e;
      }
    });

    // No automatic HEAD route: Fastify would run the download and drain the whole file to answer it.
    scope.get<IdParams>('/sandboxes/:id/files', { exposeHeadRoute: false }, async (req, reply) => {
      const files = filesOf(req.params.id);
      const q = query(getQuery, req.query);
      const tar = q.format === 'tar';
      // A client that leaves before the first byte (a FIFO that never writes) still ends the read.
      const gone = new AbortController();
      reply.raw.once('close', () => { if (!reply.raw.writableFinished) gone.abort(); });
      const o = { signal: gone.signal };
      const stream = tar ? await files.readTar(q.path ?? '', o) : await files.readFile(q.path ?? '', o);
      return reply.header('content-type', tar ? 'application/x-tar' : 'application/octet-stream').send(stream);
    });

    scope.get<IdParams>('/sandboxes/:id/files/stat', async (req) => {
      const files = filesOf(req.params.id);
      return files.stat(query(pathQuery, req.query).path ?? '');
    });

    scope.get<IdParams>('/sandboxes/:id/files/list', async (req) => {
      const files = filesOf(req.params.id);
      return { entries: await files.list(query(pathQuery, req.query).path ?? '') };
    });

    scope.delete<IdParams>('/sandboxes/:id/files', async (req, reply) => {
      const files = filesOf(req.params.id);
      const q = query(deleteQuery, req.query);
      await files.delete(q.path ?? '', q.recursive === 'true' || q.recursive === '1');
      return reply.status(204).send();
    });
  });
}

function tooLarge(max: number): EmberdError {
  return new EmberdError('FILE_TOO_LARGE', `the upload is larger than this daemon accepts (${max} bytes); send less, or start emberd with a higher --max-upload`);
}

/** How long the rest of a refused upload is read and discarded before the connection is cut. */
const LINGER_MS = 3000;

/**
 * An error answered before the whole body was read (413, a path error, the guest tool stopped): the
 * rest of the body is read and discarded for up to LINGER_MS, then the connection is cut. Closing at
 * once would make the kernel reset a connection with unread data, and a client still sending could
 * then lose the answer (EPIPE/ECONNRESET instead of the 413); reading everything could take long.
 */
function lingerIfUnread(req: FastifyRequest, reply: FastifyReply): void {
  const raw = req.raw;
  if (raw.complete) return;
  reply.raw.once('finish', () => {
    if (raw.complete) return;
    const timer = setTimeout(() => { if (!raw.complete) raw.socket?.destroy(); }, LINGER_MS);
    const done = () => clearTimeout(timer);
    raw.once('end', done);
    raw.once('close', done);
    raw.resume();
  });
}

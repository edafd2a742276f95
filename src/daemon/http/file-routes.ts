// /sandboxes/{id}/files routes (docs/api.md, "Files"): parse the query, make one manager call with
// the raw request stream (uploads) or send the stream it answers (downloads). They live in an
// encapsulated plugin scope whose only content-type parser passes the request stream through
// unread, so an upload is never buffered, whatever its Content-Type.
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { EmberdError } from '../../errors.ts';
import type { SandboxManager } from '../../sandbox/manager.ts';
import { parseQuery } from './parse.ts';
import type { FileList, FileStatAnswer, FileWritten } from './responses.ts';
import { FILE_QUERY_HINT, deleteFileQuery, getFileQuery, pathQuery, putFileQuery } from './schemas.ts';

type IdParams = { Params: { id: string } };

export function registerFileRoutes(app: FastifyInstance, manager: SandboxManager): void {
  const maxUpload = manager.config.maxUploadBytes;
  const query = <S extends Parameters<typeof parseQuery>[0]>(schema: S, q: unknown) => parseQuery(schema, q, FILE_QUERY_HINT);

  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { bodyLimit: maxUpload }, (_req, payload, done) => done(null, payload));

    scope.put<IdParams>('/sandboxes/:id/files', { bodyLimit: maxUpload }, async (req, reply) => {
      try {
        const q = query(putFileQuery, req.query);
        if (q.format === 'tar' && q.mode !== undefined) throw new EmberdError('INVALID_REQUEST', 'mode applies to a single file; a tar carries the modes of its entries');
        const declared = Number(req.headers['content-length']);
        if (declared > maxUpload) throw tooLarge(maxUpload);
        // No body at all (no Content-Type, no length): Fastify skips the parser; that is an empty file.
        const body = req.body instanceof Readable ? req.body : Readable.from([]);
        const r = q.format === 'tar'
          ? await manager.writeTar(req.params.id, q.path ?? '', body)
          : await manager.writeFile(req.params.id, q.path ?? '', body, q.mode);
        return reply.status(201).send(r satisfies FileWritten);
      } catch (e) {
        lingerIfUnread(req, reply);
        throw e;
      }
    });

    // No automatic HEAD route: Fastify would run the download and drain the whole file to answer it.
    scope.get<IdParams>('/sandboxes/:id/files', { exposeHeadRoute: false }, async (req, reply) => {
      const q = query(getFileQuery, req.query);
      const tar = q.format === 'tar';
      // A client that leaves before the first byte (a FIFO that never writes) still ends the read.
      const gone = new AbortController();
      reply.raw.once('close', () => { if (!reply.raw.writableFinished) gone.abort(); });
      const stream = tar
        ? await manager.readTar(req.params.id, q.path ?? '', gone.signal)
        : await manager.readFile(req.params.id, q.path ?? '', gone.signal);
      return reply.header('content-type', tar ? 'application/x-tar' : 'application/octet-stream').send(stream);
    });

    scope.get<IdParams>('/sandboxes/:id/files/stat', async (req): Promise<FileStatAnswer> => manager.statPath(req.params.id, query(pathQuery, req.query).path ?? ''));

    scope.get<IdParams>('/sandboxes/:id/files/list', async (req): Promise<FileList> => ({
      entries: await manager.listDir(req.params.id, query(pathQuery, req.query).path ?? ''),
    }));

    scope.delete<IdParams>('/sandboxes/:id/files', async (req, reply) => {
      const q = query(deleteFileQuery, req.query);
      await manager.deletePath(req.params.id, q.path ?? '', q.recursive);
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

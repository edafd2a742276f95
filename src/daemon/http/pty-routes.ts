// GET /sandboxes/{id}/pty: an interactive terminal over a WebSocket (docs/api.md, "PTY"). Binary
// messages are terminal bytes both ways; text messages are JSON control. Everything that can be
// refused (auth, a bad query, a sandbox that does not exist or is not ready) is refused before the
// upgrade, as emberd's usual JSON error.
import websocket from '@fastify/websocket';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { EmberdError, isEmberdError } from '../../errors.ts';
import type { SandboxManager } from '../../sandbox/manager.ts';
import { PTY_MAX_SIZE, type PtySession } from '../../sandbox/pty.ts';
import { parseQuery, parseInput } from './parse.ts';

export const ptyQuery = z.strictObject({
  rows: z.coerce.number().int().min(1).max(PTY_MAX_SIZE).default(24),
  cols: z.coerce.number().int().min(1).max(PTY_MAX_SIZE).default(80),
  cmd: z.string().min(1).optional().describe('a shell command (run with /bin/sh -c) instead of the login shell'),
  cwd: z.string().min(1).optional(),
});

const resizeMessage = z.strictObject({
  type: z.literal('resize'),
  rows: z.number().int().min(1).max(PTY_MAX_SIZE),
  cols: z.number().int().min(1).max(PTY_MAX_SIZE),
});

/** The largest message a client may send (keystrokes and pastes; bigger pastes: split them). */
const MAX_MESSAGE = 1 << 20;
/** Keystrokes accepted but not yet handed to the guest: past this the socket stops being read. */
const MAX_PENDING_INPUT = 1 << 20;

type IdParams = { Params: { id: string } };
const opened = new WeakMap<FastifyRequest, PtySession>();

export function registerPtyRoutes(app: FastifyInstance, manager: SandboxManager): void {
  void app.register(websocket, { options: { maxPayload: MAX_MESSAGE } });
  void app.register(async (scope) => {
    scope.route<IdParams>({
      method: 'GET',
      url: '/sandboxes/:id/pty',
      // Runs before the upgrade: a throw here is an HTTP answer, and no socket is accepted.
      preValidation: async (req) => {
        if (!req.ws) {
          throw new EmberdError('INVALID_REQUEST', 'GET /sandboxes/{id}/pty speaks WebSocket only: connect with a WebSocket client (Upgrade: websocket), e.g. `emberctl shell ID`');
        }
        const q = parseQuery(ptyQuery, req.query);
        const pty = await manager.openPty(req.params.id, {
          rows: q.rows,
          cols: q.cols,
          argv: q.cmd === undefined ? undefined : ['/bin/sh', '-c', q.cmd],
          cwd: q.cwd,
        });
        opened.set(req, pty);
        // If the upgrade never completes, the terminal must not outlive the request.
        req.raw.socket.once('close', () => { if (!pty.ended) pty.kill(); });
      },
      handler: async () => {
        throw new EmberdError('INVALID_REQUEST', 'GET /sandboxes/{id}/pty speaks WebSocket only: connect with a WebSocket client (Upgrade: websocket)');
      },
      wsHandler: (socket, req) => {
        const pty = opened.get(req);
        if (!pty) { socket.close(1011, 'no terminal'); return; }
        bridge(socket, pty);
      },
    });
  });
}

function sendJson(socket: WebSocket, value: unknown): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(value));
}

/** Terminal <-> socket, with credit: output is granted back once ws has written it out. */
function bridge(socket: WebSocket, pty: PtySession): void {
  let pendingInput = 0;
  pty.onData((chunk) => {
    if (socket.readyState !== socket.OPEN) return;
    socket.send(chunk, { binary: true }, (err) => { if (!err) pty.consumed(chunk.length); });
  });
  socket.on('message', (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    if (isBinary) {
      pendingInput += buf.length;
      if (pendingInput > MAX_PENDING_INPUT) socket.pause();
      void pty.write(buf).then(() => {
        pendingInput -= buf.length;
        if (pendingInput <= MAX_PENDING_INPUT && socket.isPaused) socket.resume();
      });
      return;
    }
    try {
      let msg: unknown;
      try { msg = JSON.parse(buf.toString('utf8')); } catch { throw new EmberdError('INVALID_JSON', 'a text message must be JSON control such as {"type":"resize","rows":40,"cols":120}; send keystrokes as binary messages'); }
      const r = parseInput(resizeMessage, msg, 'body', 'the only control message is {"type":"resize","rows":N,"cols":N}');
      pty.resize(r.rows, r.cols);
    } catch (e) {
      const err = isEmberdError(e) ? e : new EmberdError('INTERNAL', String(e));
      sendJson(socket, { type: 'error', code: err.code, message: err.message });
    }
  });
  // Closing the socket ends the terminal: the guest kills its whole session.
  socket.on('close', () => { if (!pty.ended) pty.kill(); });
  pty.exited.then(
    (x) => {
      sendJson(socket, { type: 'exit', exit_code: x.exitCode, signal: x.signal });
      socket.close(1000, 'exited');
    },
    (e: unknown) => {
      const err = isEmberdError(e) ? e : new EmberdError('INTERNAL', String(e));
      sendJson(socket, { type: 'error', code: err.code, message: err.message });
      socket.close(1011, err.code);
    },
  );
}

// Opens the byte stream that leads to a guest's control channel: a plain Unix socket (QEMU's
// chardev), or Firecracker's hybrid vsock (a Unix socket plus the CONNECT/OK exchange).
import { createConnection, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { EmberdError } from '../errors.ts';

const RETRYABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN', 'ECONNRESET', 'EPIPE']);

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ path });
    s.once('connect', () => { s.removeListener('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

/** Retries `attempt` with backoff until it succeeds or `deadline` (epoch ms) passes. */
async function withRetry<T>(what: string, deadline: number, attempt: () => Promise<T>): Promise<T> {
  let delay = 5;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      return await attempt();
    } catch (e) {
      last = e;
      const code = (e as NodeJS.ErrnoException).code;
      if (code && !RETRYABLE.has(code) && code !== 'VSOCK_NO_LISTENER') throw e;
    }
    await sleep(Math.min(delay, Math.max(0, deadline - Date.now())));
    delay = Math.min(delay * 2, 100);
  }
  throw new EmberdError('BOOT_TIMEOUT', `${what} did not accept a connection in time (last error: ${(last as Error)?.message ?? 'none'})`);
}

export function connectUnix(path: string, deadline: number): Promise<Socket> {
  return withRetry(`control socket ${path}`, deadline, () => connectOnce(path));
}

/**
 * Firecracker hybrid vsock: write `CONNECT <port>\n` in one write, expect `OK <hostport>\n`.
 * EOF instead of OK means no guest listener yet, which is retried until the deadline.
 */
export function connectHybridVsock(udsPath: string, port: number, deadline: number): Promise<Socket> {
  return withRetry(`vsock port ${port} via ${udsPath}`, deadline, async () => {
    const s = await connectOnce(udsPath);
    try {
      s.write(`CONNECT ${port}\n`);
      const line = await readLine(s, Math.max(1, deadline - Date.now()));
      if (!/^OK \d+$/.test(line)) throw Object.assign(new Error(`unexpected vsock reply ${JSON.stringify(line)}`), { code: 'EPROTO' });
      return s;
    } catch (e) {
      s.destroy();
      throw e;
    }
  });
}

/** Reads one `\n`-terminated line and pushes any bytes after it back into the stream. */
function readLine(s: Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err: Error | null, line?: string) => {
      clearTimeout(timer);
      s.removeListener('data', onData);
      s.removeListener('end', onEnd);
      s.removeListener('error', onErr);
      s.pause();
      if (err) reject(err); else resolve(line!);
    };
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf(0x0a);
      if (nl >= 0) {
        const rest = buf.subarray(nl + 1);
        done(null, buf.subarray(0, nl).toString('latin1'));
        if (rest.length > 0) s.unshift(rest); // after done() paused the stream: not re-emitted to us
      } else if (buf.length > 64) {
        done(Object.assign(new Error('vsock handshake line too long'), { code: 'EPROTO' }));
      }
    };
    const onEnd = () => done(Object.assign(new Error('no guest listener yet (EOF)'), { code: 'VSOCK_NO_LISTENER' }));
    const onErr = (e: Error) => done(e);
    const timer = setTimeout(() => done(Object.assign(new Error('vsock handshake timed out'), { code: 'ETIMEDOUT' })), timeoutMs);
    s.on('data', onData);
    s.once('end', onEnd);
    s.once('error', onErr);
  });
}

// Minimal QMP client: greeting, qmp_capabilities, then one command at a time.
import type { Socket } from 'node:net';
import { EmberdError } from '../../errors.ts';

export class QmpClient {
  private readonly sock: Socket;
  private buf = '';
  private pending: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  private greeted: Promise<void>;
  private closed = false;

  private constructor(sock: Socket) {
    this.sock = sock;
    let onGreeting!: () => void;
    this.greeted = new Promise((r) => { onGreeting = r; });
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (!line) continue;
        let msg: Record<string, unknown>;
        try { msg = JSON.parse(line); } catch { continue; }
        if ('QMP' in msg) onGreeting();
        else if ('return' in msg) this.pending.shift()?.resolve(msg.return);
        else if ('error' in msg) {
          const err = msg.error as { class?: string; desc?: string };
          this.pending.shift()?.reject(new Error(`QMP ${err.class}: ${err.desc}`));
        }
        // events ("event" key) are ignored for now
      }
    });
    const fail = () => {
      this.closed = true;
      for (const p of this.pending) p.reject(new EmberdError('VMM_EXITED', 'the QMP connection closed'));
      this.pending = [];
    };
    sock.on('close', fail);
    sock.on('error', fail);
  }

  /** Takes over a connected QMP socket: waits for the greeting and negotiates capabilities. */
  static async attach(sock: Socket, timeoutMs: number): Promise<QmpClient> {
    const c = new QmpClient(sock);
    await withTimeout(c.greeted, timeoutMs, 'QMP greeting');
    await c.execute('qmp_capabilities', undefined, timeoutMs);
    return c;
  }

  execute(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
    if (this.closed) return Promise.reject(new EmberdError('VMM_EXITED', 'the QMP connection is closed'));
    const p = new Promise<unknown>((resolve, reject) => this.pending.push({ resolve, reject }));
    this.sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    return withTimeout(p, timeoutMs, `QMP ${command}`);
  }

  close(): void {
    this.sock.destroy();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => { t = setTimeout(() => reject(new EmberdError('AGENT_TIMEOUT', `${what} did not answer within ${ms} ms`)), ms); }),
  ]);
}

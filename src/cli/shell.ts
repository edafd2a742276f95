// `emberctl shell ID`: the sandbox's terminal (GET /sandboxes/{id}/pty, docs/api.md "PTY") in the
// user's terminal: raw mode while it runs, the window size sent on every SIGWINCH, the shell's
// exit status as ours. Piped stdin works too (keystrokes as they come; its end closes nothing).
import WebSocket from 'ws';
import { EmberdApiError } from '../sdk/client.ts';

export interface ShellOptions {
  baseUrl: string;
  token: string | undefined;
  id: string;
  cmd?: string;
}

/** Runs the terminal to its end; resolves with the exit status to exit with. */
export function runShell(o: ShellOptions): Promise<number> {
  const stdin = process.stdin;
  const stdout = process.stdout;
  const size = () => ({ rows: stdout.rows || 24, cols: stdout.columns || 80 });
  const q = new URLSearchParams({ rows: String(size().rows), cols: String(size().cols), ...(o.cmd ? { cmd: o.cmd } : {}) });
  const url = `${o.baseUrl.replace(/^http/, 'ws')}/sandboxes/${encodeURIComponent(o.id)}/pty?${q}`;
  const ws = new WebSocket(url, { headers: o.token ? { authorization: `Bearer ${o.token}` } : {} });
  return new Promise((resolve, reject) => {
    let status: number | undefined;
    let failure: string | undefined;
    let raw = false;
    const onInput = (b: Buffer) => ws.send(b, { binary: true });
    const onResize = () => ws.send(JSON.stringify({ type: 'resize', ...size() }));
    const restore = () => {
      stdin.off('data', onInput);
      stdout.off('resize', onResize);
      if (raw) stdin.setRawMode(false);
      stdin.pause();
    };
    ws.on('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c; });
      res.on('end', () => {
        try {
          const e = (JSON.parse(text) as { error: { code: string; message: string } }).error;
          reject(new EmberdApiError(res.statusCode ?? 0, e.code, e.message));
        } catch {
          reject(new Error(`the daemon refused the terminal: HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
        }
      });
    });
    ws.on('error', (e) => { restore(); reject(new Error(`cannot open the terminal at ${url}: ${e.message}`)); });
    ws.on('open', () => {
      if (stdin.isTTY) { stdin.setRawMode(true); raw = true; }
      stdin.on('data', onInput);
      stdin.resume();
      stdout.on('resize', onResize); // Node turns SIGWINCH into this
    });
    ws.on('message', (data: Buffer, binary: boolean) => {
      if (binary) {
        // A slow terminal holds the socket, so the daemon (and the guest) wait too.
        if (!stdout.write(data)) { ws.pause(); stdout.once('drain', () => ws.resume()); }
        return;
      }
      const msg = JSON.parse(data.toString('utf8')) as { type: string; exit_code?: number; code?: string; message?: string };
      if (msg.type === 'exit') status = msg.exit_code;
      else if (msg.type === 'error') failure = `${msg.code}: ${msg.message}`;
    });
    ws.on('close', () => {
      restore();
      if (failure) process.stderr.write(`\r\nemberctl: ${failure}\n`);
      resolve(status ?? 1);
    });
  });
}

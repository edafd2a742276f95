// Step progress on stderr: on a TTY one live line per step (spinner + elapsed + detail), finished
// steps stay as a line each; otherwise plain "start"/"done in Ns" lines (CI logs).

export interface Progress {
  /** Runs `fn` as a named step. `detail` updates the live line (TTY) or prints a line (plain). */
  step<T>(label: string, fn: (detail: (text: string) => void) => Promise<T>): Promise<T>;
  /** A step whose outputs are up to date. */
  skip(label: string, why: string): void;
  info(text: string): void;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

export function createProgress(stream: NodeJS.WriteStream = process.stderr, tty: boolean = stream.isTTY === true): Progress {
  return tty ? new TtyProgress(stream) : new PlainProgress(stream);
}

export class PlainProgress implements Progress {
  readonly out: { write(s: string): unknown };
  constructor(out: { write(s: string): unknown }) {
    this.out = out;
  }
  async step<T>(label: string, fn: (detail: (text: string) => void) => Promise<T>): Promise<T> {
    const t0 = performance.now();
    this.out.write(`images: ${label} ...\n`);
    try {
      const r = await fn((text) => this.out.write(`images: ${label}: ${text}\n`));
      this.out.write(`images: ${label}: done in ${secs(performance.now() - t0)}\n`);
      return r;
    } catch (e) {
      this.out.write(`images: ${label}: FAILED after ${secs(performance.now() - t0)}\n`);
      throw e;
    }
  }
  skip(label: string, why: string): void {
    this.out.write(`images: ${label}: ${why}\n`);
  }
  info(text: string): void {
    this.out.write(`images: ${text}\n`);
  }
}

export class TtyProgress implements Progress {
  readonly out: NodeJS.WriteStream;
  constructor(out: NodeJS.WriteStream) {
    this.out = out;
  }
  private fit(s: string): string {
    const c = this.out.columns;
    const cols = typeof c === 'number' && c >= 40 ? c : 100;
    return s.length > cols - 1 ? `${s.slice(0, cols - 2)}…` : s;
  }
  async step<T>(label: string, fn: (detail: (text: string) => void) => Promise<T>): Promise<T> {
    const t0 = performance.now();
    let frame = 0;
    let detail = '';
    const draw = (): void => {
      const f = FRAMES[frame++ % FRAMES.length] ?? '*';
      this.out.write(`\r\x1b[K${this.fit(`${f} ${label}  ${secs(performance.now() - t0)}${detail ? `  ${detail}` : ''}`)}`);
    };
    draw();
    const timer = setInterval(draw, 100);
    timer.unref();
    try {
      const r = await fn((text) => {
        detail = text;
        draw();
      });
      clearInterval(timer);
      this.out.write(`\r\x1b[K✓ ${label}  ${secs(performance.now() - t0)}${detail ? `  ${detail}` : ''}\n`);
      return r;
    } catch (e) {
      clearInterval(timer);
      this.out.write(`\r\x1b[K✗ ${label}  ${secs(performance.now() - t0)}\n`);
      throw e;
    }
  }
  skip(label: string, why: string): void {
    this.out.write(`\r\x1b[K· ${label}  ${why}\n`);
  }
  info(text: string): void {
    this.out.write(`\r\x1b[K${text}\n`);
  }
}

/** Discards everything (tests, library use). */
export const silentProgress: Progress = {
  step: (_label, fn) => fn(() => {}),
  skip: () => {},
  info: () => {},
};

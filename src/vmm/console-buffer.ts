// Keeps the last N bytes a guest wrote to its serial console: enough to explain a failed boot,
// never an unbounded log.
export class ConsoleBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  private readonly limit: number;
  constructor(limit = 64 * 1024) {
    this.limit = limit;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size - this.chunks[0]!.length >= this.limit) this.size -= this.chunks.shift()!.length;
  }

  tail(maxBytes = this.limit): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - Math.min(maxBytes, this.limit))).toString('utf8');
  }
}

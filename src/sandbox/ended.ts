// A bounded memory of sandboxes that ended, so that a later request for one can say what happened
// ("expired at ...", "deleted at ...") in its 404 instead of only "does not exist".

export interface Ending {
  reason: 'expired' | 'deleted';
  at: Date;
  /** For an expiry: the timeout_s it had. */
  timeoutS?: number;
}

export class EndedSandboxes {
  private readonly ended = new Map<string, Ending>();
  private readonly max: number;

  constructor(max = 4096) {
    this.max = max;
  }

  record(id: string, e: Ending): void {
    this.ended.delete(id);
    this.ended.set(id, e);
    if (this.ended.size > this.max) this.ended.delete(this.ended.keys().next().value!); // the oldest
  }

  get(id: string): Ending | undefined {
    return this.ended.get(id);
  }

  /** The 404 message's explanation for `id`, if it is remembered. */
  explain(id: string): string | undefined {
    const e = this.ended.get(id);
    if (!e) return undefined;
    return e.reason === 'expired'
      ? `sandbox ${id} expired at ${e.at.toISOString()} (its timeout_s was ${e.timeoutS}) and was destroyed; create a new one, and extend a sandbox's life with POST /sandboxes/{id}/timeout`
      : `sandbox ${id} was deleted at ${e.at.toISOString()}`;
  }
}

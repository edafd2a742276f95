// What the E2B layer keeps per sandbox beside the manager's own state: the template it was asked
// as, its metadata, its envd access token, its processes (E2B numbers them) and its code
// contexts. Kept by sandbox id and dropped as soon as the manager no longer has the sandbox
// (deleted, expired, shut down): every lookup checks, and a sweep catches the rest.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { SandboxManager } from '../sandbox/manager.ts';
import type { Sandbox } from '../sandbox/sandbox.ts';
import { EmberdError, isEmberdError } from '../errors.ts';
import { E2bProcessTable } from './process-table.ts';
import type { E2bNetworkAsked } from './network.ts';

/** The envd version emberd answers as: >= 0.4.0 (no forced user), 0.5.2 (closeStdin), 0.5.7 (octet-stream uploads). */
export const ENVD_VERSION = '0.5.7';
/** envd's and the code interpreter's ports, as the SDKs send them in E2b-Sandbox-Port. */
export const ENVD_PORT = 49983;
export const CODE_INTERPRETER_PORT = 49999;
/** Where a relative path and a command without cwd start, as in E2B's templates. */
export const HOME = '/home/user';

export interface CodeContext { id: string; language: string; cwd: string }

export interface E2bSandbox {
  id: string;
  templateID: string;
  clientID: string;
  token: string;
  metadata: Record<string, string>;
  /** The create's egress options, as asked (getInfo answers them back). */
  network: E2bNetworkAsked;
  startedAt: Date;
  procs: E2bProcessTable;
  /** context id -> context; the id is the python session's name. */
  contexts: Map<string, CodeContext>;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

export class E2bRegistry {
  private readonly byId = new Map<string, E2bSandbox>();
  private readonly sweep: NodeJS.Timeout;
  readonly manager: SandboxManager;

  constructor(manager: SandboxManager) {
    this.manager = manager;
    this.sweep = setInterval(() => this.prune(), 10_000);
    this.sweep.unref();
  }

  close(): void {
    clearInterval(this.sweep);
  }

  add(sb: Sandbox, templateID: string, metadata: Record<string, string>, network: E2bNetworkAsked = { allowInternetAccess: null }): E2bSandbox {
    const e: E2bSandbox = {
      id: sb.id, templateID, clientID: 'emberd', token: `ea_${randomBytes(24).toString('hex')}`, metadata, network, startedAt: new Date(),
      procs: new E2bProcessTable(this.manager, sb.id), contexts: new Map(),
    };
    this.byId.set(sb.id, e);
    return e;
  }

  /** The E2B state of a live sandbox, or undefined (dropped if the manager no longer has it). */
  get(id: string): E2bSandbox | undefined {
    const e = this.byId.get(id);
    if (!e) return undefined;
    if (!this.live(id)) { this.drop(id); return undefined; }
    return e;
  }

  /** Every live E2B sandbox. */
  list(): E2bSandbox[] {
    this.prune();
    return [...this.byId.values()];
  }

  /** Whether `token` is the sandbox's access token (constant time). */
  tokenMatches(e: E2bSandbox, token: string | undefined): boolean {
    return token !== undefined && timingSafeEqual(digest(token), digest(e.token));
  }

  /** The live sandbox whose token, with `sign`, gives `signature` (uploadUrl/downloadUrl carry no id). */
  bySignature(signature: string, sign: (token: string) => string): E2bSandbox | undefined {
    const want = digest(signature);
    return this.list().find((e) => timingSafeEqual(digest(sign(e.token)), want));
  }

  /**
   * The sandbox a per-sandbox request names (E2b-Sandbox-Id), if `token` (X-Access-Token) is its
   * access token: SANDBOX_NOT_FOUND or UNAUTHORIZED otherwise.
   */
  authorize(id: string | undefined, token: string | undefined): E2bSandbox {
    if (!id) throw new EmberdError('INVALID_REQUEST', 'the request names no sandbox: send the E2b-Sandbox-Id header (the E2B SDK does when E2B_SANDBOX_URL points at emberd\'s /e2b/sbx)');
    const e = this.get(id);
    if (!e) throw new EmberdError('SANDBOX_NOT_FOUND', `sandbox ${id} is not running on this daemon (it ended, or was not created through /e2b); create one with Sandbox.create()`);
    if (!this.tokenMatches(e, token)) throw new EmberdError('UNAUTHORIZED', `the X-Access-Token is missing or is not sandbox ${id}'s; use the envdAccessToken the create or connect answered`);
    return e;
  }

  drop(id: string): void {
    const e = this.byId.get(id);
    if (!e) return;
    this.byId.delete(id);
    e.procs.close();
  }

  private live(id: string): boolean {
    try {
      const s = this.manager.get(id).state;
      return s === 'ready' || s === 'creating' || s === 'pausing' || s === 'paused' || s === 'resuming';
    } catch (err) {
      if (isEmberdError(err, 'SANDBOX_NOT_FOUND')) return false;
      throw err;
    }
  }

  private prune(): void {
    for (const id of [...this.byId.keys()]) if (!this.live(id)) this.drop(id);
  }
}

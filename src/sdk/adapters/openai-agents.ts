// emberd/openai-agents: the OpenAI Agents JS `shellTool`, its commands run in one Sandbox the
// caller owns instead of on the host. Tested against @openai/agents 0.20.0 (docs/sdk.md).
import { shellTool, type Shell, type ShellAction, type ShellResult, type ShellTool } from '@openai/agents';
import type { Sandbox } from '../sandbox.ts';

export interface EmberdShellOptions {
  /** Working directory of every command (default: the guest's, /root). */
  cwd?: string;
  /** Used when the model's action gives no timeoutMs (default: the daemon's --exec-timeout). */
  timeoutMs?: number;
}

/** A `Shell`: each command of an action runs with `bash -l -c`, in order, in the sandbox. */
export class EmberdShell implements Shell {
  readonly sandbox: Sandbox;
  private readonly opts: EmberdShellOptions;

  constructor(sandbox: Sandbox, opts: EmberdShellOptions = {}) {
    this.sandbox = sandbox;
    this.opts = opts;
  }

  async run(action: ShellAction): Promise<ShellResult> {
    const output: ShellResult['output'] = [];
    const max = action.maxOutputLength;
    for (const command of action.commands) {
      const r = await this.sandbox.commands.run(command, { cwd: this.opts.cwd, timeoutMs: action.timeoutMs ?? this.opts.timeoutMs });
      output.push({
        stdout: max === undefined ? r.stdout : r.stdout.slice(0, max),
        stderr: max === undefined ? r.stderr : r.stderr.slice(0, max),
        outcome: r.timedOut ? { type: 'timeout' } : { type: 'exit', exitCode: r.exitCode },
      });
      if (r.timedOut) break; // what follows a timed-out command usually depends on it
    }
    return { output, ...(max === undefined ? {} : { maxOutputLength: max }) };
  }
}

/** shellTool's own options for a local shell (its option type is not exported). */
export interface ShellToolOptions {
  name?: string;
  needsApproval?: boolean | ShellTool['needsApproval'];
  onApproval?: ShellTool['onApproval'];
}

/** `shellTool({ shell: new EmberdShell(sandbox) })`, with shellTool's own options (name, needsApproval, ...). */
export function emberdShellTool(sandbox: Sandbox, opts: EmberdShellOptions & ShellToolOptions = {}): ShellTool {
  const { cwd, timeoutMs, ...toolOpts } = opts;
  return shellTool({ ...toolOpts, shell: new EmberdShell(sandbox, { cwd, timeoutMs }) });
}

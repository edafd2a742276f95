// emberd/ai: Vercel AI SDK tools (`tool({ inputSchema, execute })`) backed by one Sandbox the
// caller owns, so state survives between calls and nothing leaks: run_code, run_command,
// read_file, write_file. Tested against ai 7.0.173 (docs/sdk.md).
import { jsonSchema, tool, type Tool } from 'ai';
import type { ResultBundle } from '../client.ts';
import type { Sandbox } from '../sandbox.ts';

export interface EmberdToolsOptions {
  /** run_code runs in this persistent session (python packs), so variables survive between calls. */
  session?: string;
  /** Per call (default: the daemon's --exec-timeout). */
  timeoutMs?: number;
}

/** What run_code answers; images of its results go to the model as image content, not base64 text. */
export interface RunCodeToolOutput {
  stdout: string;
  stderr: string;
  exitCode: number;
  timedOut: boolean;
  truncated: boolean;
  value: string | null;
  /** Each rich output: its text/plain, and the MIME types it carried. */
  results: { text: string | null; mimeTypes: string[] }[];
  images: { mediaType: string; base64: string }[];
}

/** A type, not an interface, so it is a `ToolSet` (an index signature) for generateText's `tools`. */
export type EmberdTools = {
  run_code: Tool<{ code: string }, RunCodeToolOutput>;
  run_command: Tool<{ command: string; cwd?: string }, { stdout: string; stderr: string; exitCode: number; timedOut: boolean; truncated: boolean }>;
  read_file: Tool<{ path: string }, { path: string; content: string }>;
  write_file: Tool<{ path: string; content: string }, { path: string; size: number }>;
};

const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];

export function emberdTools(sandbox: Sandbox, opts: EmberdToolsOptions = {}): EmberdTools {
  const where = `the ${sandbox.pack} sandbox ${sandbox.id} (an isolated Linux microVM without network)`;
  return {
    run_code: tool({
      description: `Run code with the ${sandbox.pack} pack's interpreter in ${where}.${opts.session ? ' State (variables, imports) persists between calls; the final expression\'s repr is `value`.' : ''} A non-zero exitCode is a normal result.`,
      inputSchema: jsonSchema<{ code: string }>({
        type: 'object', properties: { code: { type: 'string', description: 'source code to run' } }, required: ['code'], additionalProperties: false,
      }),
      execute: async ({ code }, { abortSignal }): Promise<RunCodeToolOutput> => {
        const r = await sandbox.runCode(code, { session: opts.session, timeoutMs: opts.timeoutMs, signal: abortSignal });
        return {
          stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode, timedOut: r.timedOut, truncated: r.truncated, value: r.value,
          results: r.results.map((b) => ({ text: typeof b['text/plain'] === 'string' ? b['text/plain'] : null, mimeTypes: mimeTypes(b) })),
          images: r.results.flatMap((b) => IMAGE_TYPES.filter((t) => typeof b[t] === 'string').map((t) => ({ mediaType: t, base64: b[t] as string }))),
        };
      },
      toModelOutput: ({ output }) => {
        const { images, ...text } = output;
        return {
          type: 'content',
          value: [{ type: 'text', text: JSON.stringify(text) }, ...images.map((i) => ({ type: 'file' as const, mediaType: i.mediaType, data: { type: 'data' as const, data: i.base64 } }))],
        };
      },
    }),
    run_command: tool({
      description: `Run a bash command line in ${where}. A non-zero exitCode is a normal result.`,
      inputSchema: jsonSchema<{ command: string; cwd?: string }>({
        type: 'object',
        properties: { command: { type: 'string', description: 'run with bash -l -c' }, cwd: { type: 'string', description: 'absolute working directory' } },
        required: ['command'], additionalProperties: false,
      }),
      execute: async ({ command, cwd }, { abortSignal }) => {
        const r = await sandbox.commands.run(command, { cwd, timeoutMs: opts.timeoutMs, signal: abortSignal });
        return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode, timedOut: r.timedOut, truncated: r.truncated };
      },
    }),
    read_file: tool({
      description: `Read a text file (absolute path) in ${where}.`,
      inputSchema: jsonSchema<{ path: string }>({
        type: 'object', properties: { path: { type: 'string', description: 'absolute path' } }, required: ['path'], additionalProperties: false,
      }),
      execute: async ({ path }) => ({ path, content: await sandbox.files.read(path) }),
    }),
    write_file: tool({
      description: `Write a text file (absolute path; parent directories are created, an existing file is replaced) in ${where}.`,
      inputSchema: jsonSchema<{ path: string; content: string }>({
        type: 'object', properties: { path: { type: 'string', description: 'absolute path' }, content: { type: 'string' } },
        required: ['path', 'content'], additionalProperties: false,
      }),
      execute: async ({ path, content }) => sandbox.files.write(path, content),
    }),
  };
}

function mimeTypes(b: ResultBundle): string[] {
  return Object.keys(b).filter((k) => k.includes('/'));
}

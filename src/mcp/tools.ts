// emberd's MCP tools, defined once for both transports (stdio: `emberd mcp`; Streamable HTTP:
// /mcp on the daemon). Every tool calls the daemon's HTTP API through the SDK client, so both
// transports have the daemon's validation, errors and auth. State lives in the sandbox, named by
// an explicit sandbox_id (the 2026-07-28 revision has no session to keep it in).
import { McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { EmberdApiError, type EmberdClient, type SandboxSummary } from '../sdk/client.ts';
import { VERSION } from '../version.ts';
import { clip, errorResult, execResult, okResult, type ExecAnswer } from './results.ts';

/** What the tools use of the client (a test may hand in another implementation). */
export type EmberdApi = Pick<EmberdClient, 'createSandbox' | 'exec' | 'uploadFile' | 'downloadFile' | 'list' | 'listSandboxes' | 'deleteSandbox' | 'pauseSandbox' | 'resumeSandbox' | 'forkSandbox' | 'exposePort'>;

/** Default per-stream output shown to the model; the daemon's own cap (8 MiB) is far above it. */
export const DEFAULT_MAX_OUTPUT_CHARS = 20_000;
/** read_file: default and largest bytes read. */
export const DEFAULT_MAX_READ_BYTES = 256 * 1024;
export const MAX_READ_BYTES = 8 << 20;

const sandboxId = z.string().min(1).describe('The sandbox to use: the id create_sandbox (or run_code) returned, such as "sb_k3v9x0q2m1c8d7f6a5b4"');
const env = z.record(z.string(), z.string()).describe('Environment variables for this run');
const timeoutMs = z.number().int().positive().describe('Kill the run after this many milliseconds (default: the daemon\'s --exec-timeout, 60000)');
const maxOutputChars = z.number().int().min(100).max(1 << 22).describe(`Characters of stdout and of stderr shown (default ${DEFAULT_MAX_OUTPUT_CHARS}); longer output keeps its head and tail and says how much was omitted`);

/** A fresh MCP server with every tool, answering as emberd of this version. */
export function createEmberdMcpServer(api: EmberdApi): McpServer {
  const server = new McpServer(
    { name: 'emberd', title: 'emberd microVM sandboxes', version: VERSION },
    { instructions: 'Run code and commands in isolated microVM sandboxes. A sandbox keeps files, installed packages and sessions between calls: keep the sandbox_id that create_sandbox or run_code returns and pass it to later calls; destroy_sandbox when done (sandboxes also expire after their timeout).' },
  );

  server.registerTool('create_sandbox', {
    title: 'Create a sandbox',
    description: 'Boot a new isolated microVM sandbox and return its sandbox_id. Pass that id to every other tool to work in the same machine; files and state persist until destroy_sandbox or its timeout.',
    inputSchema: z.object({
      language_pack: z.string().optional().describe('Language pack: python, python-data (numpy, pandas, matplotlib), node, shell, or a custom one (default: the daemon\'s --default-pack)'),
      timeout_s: z.number().int().min(0).optional().describe('Seconds until the sandbox is destroyed (default: the daemon\'s --sandbox-timeout, 3600)'),
      vcpus: z.number().int().min(1).optional(),
      memory_mib: z.number().int().min(128).optional(),
      env: env.optional().describe('Variables every command in the sandbox inherits'),
      on_timeout: z.enum(['destroy', 'pause']).optional().describe('What its timeout does: destroy it (default), or pause it (kept on disk, resumed by the next call on it)'),
      auto_resume: z.boolean().optional().describe('A call on it while it is paused resumes it first (default true); false: such calls fail with SANDBOX_PAUSED until resume_sandbox'),
    }),
  }, async (args) => {
    try {
      const sb = await api.createSandbox(args);
      return okResult(`Created sandbox ${sb.id} (${sb.language_pack}).\nsandbox_id: ${sb.id}\nPass this sandbox_id to run_code, run_command, write_file, read_file and list_files; ${expiry(sb)}.`, { sandbox_id: sb.id, sandbox: sb });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('run_code', {
    title: 'Run code',
    description: 'Run source code with the sandbox\'s interpreter (python3 -c, node -e, sh -c by pack). Without sandbox_id a new sandbox is created and its sandbox_id returned: pass it on later calls to keep files and state. With session (python packs), the code runs in a persistent interpreter (variables survive between calls, the last expression\'s value is returned, and matplotlib figures and other rich outputs come back as images). A non-zero exit_code is a normal result.',
    inputSchema: z.object({
      code: z.string().describe('The source code'),
      sandbox_id: sandboxId.optional().describe('The sandbox to run in; omit to create one (its id is returned: keep it)'),
      language_pack: z.string().optional().describe('Pack of the sandbox created when sandbox_id is omitted (default: the daemon\'s); ignored with sandbox_id'),
      session: z.string().optional().describe('Name of a persistent interpreter, such as "main" (python packs): state survives between calls, rich outputs (charts) are returned'),
      stdin: z.string().optional(),
      env: env.optional(),
      timeout_ms: timeoutMs.optional(),
      max_output_chars: maxOutputChars.optional(),
    }),
  }, async (args) => {
    let id = args.sandbox_id;
    let note: string | undefined;
    if (!id) {
      try {
        const sb = await api.createSandbox(args.language_pack ? { language_pack: args.language_pack } : {});
        id = sb.id;
        note = `Created sandbox ${sb.id} (${sb.language_pack}) for this call. sandbox_id: ${sb.id}. Pass sandbox_id "${sb.id}" on later calls to keep its state; ${expiry(sb)}.`;
      } catch (e) {
        return errorResult(e, 'creating a sandbox for run_code');
      }
    }
    try {
      const r = (await api.exec(id, { code: args.code, session: args.session, stdin: args.stdin, env: args.env, timeout_ms: args.timeout_ms })) as ExecAnswer;
      return execResult(r, args.max_output_chars ?? DEFAULT_MAX_OUTPUT_CHARS, { sandbox_id: id, ...(note ? { created: true, note } : {}) });
    } catch (e) {
      // The sandbox made for this call stays: say its id, so it is used or destroyed, not leaked.
      return errorResult(e, note ? `sandbox ${id} was created for this call and is still running: pass sandbox_id "${id}" to retry, or destroy_sandbox it` : undefined);
    }
  });

  server.registerTool('run_command', {
    title: 'Run a command',
    description: 'Run a program in a sandbox: argv (no shell), or command, a shell command line run with `bash -l -c` (pipes, redirects, globs; the login shell\'s PATH). A non-zero exit_code is a normal result.',
    inputSchema: z.object({
      sandbox_id: sandboxId,
      command: z.string().optional().describe('A shell command line, run with bash -l -c'),
      argv: z.array(z.string()).min(1).optional().describe('Program and arguments, run without a shell'),
      cwd: z.string().optional().describe('Working directory (default /root)'),
      stdin: z.string().optional(),
      env: env.optional(),
      timeout_ms: timeoutMs.optional(),
      max_output_chars: maxOutputChars.optional(),
    }),
  }, async (args) => {
    if ((args.command === undefined) === (args.argv === undefined)) {
      return errorResult(new EmberdApiError(400, 'INVALID_REQUEST', 'give exactly one of command (a shell command line) or argv (a program and its arguments)'));
    }
    try {
      const argv = args.argv ?? ['bash', '-l', '-c', args.command!];
      const r = (await api.exec(args.sandbox_id, { argv, cwd: args.cwd, stdin: args.stdin, env: args.env, timeout_ms: args.timeout_ms })) as ExecAnswer;
      return execResult(r, args.max_output_chars ?? DEFAULT_MAX_OUTPUT_CHARS, { sandbox_id: args.sandbox_id });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('write_file', {
    title: 'Write a file',
    description: 'Write a file in a sandbox (parent directories are created; an existing file is replaced atomically).',
    inputSchema: z.object({
      sandbox_id: sandboxId,
      path: z.string().describe('Absolute path in the sandbox, such as /root/data.csv'),
      content: z.string().describe('The file\'s content: text, or base64 with encoding "base64"'),
      encoding: z.enum(['utf8', 'base64']).optional().describe('How content is given (default utf8)'),
      mode: z.string().regex(/^[0-7]{3,4}$/).optional().describe('Octal permission bits, such as "0755"'),
    }),
  }, async (args) => {
    try {
      const data = args.encoding === 'base64' ? Buffer.from(args.content, 'base64') : args.content;
      const r = await api.uploadFile(args.sandbox_id, args.path, data, { mode: args.mode });
      return okResult(`Wrote ${r.size} bytes to ${r.path} in sandbox ${args.sandbox_id}.`, { sandbox_id: args.sandbox_id, path: r.path, size: r.size });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('read_file', {
    title: 'Read a file',
    description: 'Read a file from a sandbox: text as text, PNG and JPEG images as image content, other binary data as base64. Long files are cut at max_bytes and say so.',
    annotations: { readOnlyHint: true },
    inputSchema: z.object({
      sandbox_id: sandboxId,
      path: z.string().describe('Absolute path in the sandbox'),
      max_bytes: z.number().int().min(1).max(MAX_READ_BYTES).optional().describe(`Read at most this many bytes (default ${DEFAULT_MAX_READ_BYTES}, at most ${MAX_READ_BYTES})`),
    }),
  }, async (args) => {
    const max = args.max_bytes ?? DEFAULT_MAX_READ_BYTES;
    try {
      const { bytes, truncated } = await readAtMost(await api.downloadFile(args.sandbox_id, args.path), max);
      const base = { sandbox_id: args.sandbox_id, path: args.path, bytes_read: bytes.length, truncated };
      const image = imageType(bytes);
      if (image) {
        if (truncated) return okResult(`${args.path} is a ${image} image larger than max_bytes (${max}); read it again with a larger max_bytes (at most ${MAX_READ_BYTES}).`, { ...base, mime_type: image, encoding: null });
        return okResult(`${args.path}: ${image} image, ${bytes.length} bytes (sent as image content).`, { ...base, mime_type: image, encoding: 'base64' }, [{ type: 'image', data: bytes.toString('base64'), mimeType: image }]);
      }
      const cut = truncated ? `\n[truncated: only the first ${max} bytes were read; pass a larger max_bytes (at most ${MAX_READ_BYTES}) or read a part with run_command (head, tail, sed -n)]` : '';
      const text = utf8(bytes);
      if (text !== undefined) return okResult(`${text}${cut}`, { ...base, encoding: 'utf8', content: text });
      const b64 = bytes.toString('base64');
      return okResult(`${args.path} is binary (${bytes.length} bytes read); base64:\n${b64}${cut}`, { ...base, encoding: 'base64', content: b64 });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('list_files', {
    title: 'List a directory',
    description: 'List the entries of a directory in a sandbox (name, type, size, mode, mtime), not recursive.',
    annotations: { readOnlyHint: true },
    inputSchema: z.object({
      sandbox_id: sandboxId,
      path: z.string().optional().describe('Absolute directory path (default /root)'),
    }),
  }, async (args) => {
    const path = args.path ?? '/root';
    try {
      const entries = await api.list(args.sandbox_id, path);
      const lines = entries.map((e) => `${e.type === 'dir' ? 'd' : e.type === 'symlink' ? 'l' : e.type === 'file' ? '-' : '?'} ${e.mode} ${String(e.size).padStart(10)} ${e.mtime} ${e.name}${e.type === 'dir' ? '/' : ''}`);
      return okResult(`${path}: ${entries.length} entries${lines.length ? `\n${clip(lines.join('\n'), DEFAULT_MAX_OUTPUT_CHARS).text}` : ''}`, { sandbox_id: args.sandbox_id, path, entries });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('list_sandboxes', {
    title: 'List sandboxes',
    description: 'List the sandboxes of this emberd daemon: id, state (ready, paused, ...), language pack, when each expires.',
    annotations: { readOnlyHint: true },
    inputSchema: z.object({}),
  }, async () => {
    try {
      const sandboxes = await api.listSandboxes();
      const lines = sandboxes.map((s) => `${s.id} ${s.state} ${s.language_pack} ${s.vcpus} vCPU ${s.memory_mib} MiB, ${s.paused ? `paused, deleted ${s.paused.expires_at ?? 'never'}` : s.expires_at ? `expires ${s.expires_at}` : 'no deadline'}${s.forked_from ? `, forked from ${s.forked_from}` : ''}`);
      return okResult(sandboxes.length ? `${sandboxes.length} sandboxes:\n${lines.join('\n')}` : 'No sandboxes.', { sandboxes });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('pause_sandbox', {
    title: 'Pause a sandbox',
    description: 'Pause a sandbox: its whole state (files, installed packages, session variables, background processes) is saved to disk and its VM stops, using no CPU or memory. It keeps its sandbox_id; run_code, run_command and the file tools resume it transparently (or call resume_sandbox). Fails with SANDBOX_BUSY while a call is still running in it.',
    annotations: { destructiveHint: false, idempotentHint: true },
    inputSchema: z.object({ sandbox_id: sandboxId }),
  }, async (args) => {
    try {
      const sb = await api.pauseSandbox(args.sandbox_id);
      const p = sb.paused;
      const kept = p ? `${(p.bytes / 1048576).toFixed(1)} MiB on disk, paused in ${p.pause_ms} ms; ${p.expires_at ? `kept until ${p.expires_at}, then deleted` : 'kept until destroy_sandbox'}` : `state ${sb.state}`;
      return okResult(`Paused sandbox ${sb.id}: ${kept}.\nPass sandbox_id "${sb.id}" to any tool to resume it where it stopped.`, { sandbox_id: sb.id, sandbox: sb });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('resume_sandbox', {
    title: 'Resume a sandbox',
    description: 'Resume a paused sandbox: it runs again exactly as it was paused (files, session variables, background processes). A running sandbox is left as is. Optionally give it a new lifetime.',
    annotations: { destructiveHint: false, idempotentHint: true },
    inputSchema: z.object({
      sandbox_id: sandboxId,
      timeout_s: z.number().int().min(0).optional().describe('Seconds from now until the sandbox is destroyed (default: the lifetime it had)'),
    }),
  }, async (args) => {
    try {
      const sb = await api.resumeSandbox(args.sandbox_id, { timeout_s: args.timeout_s });
      return okResult(`Sandbox ${sb.id} is ${sb.state === 'ready' ? 'running' : sb.state}; ${expiry(sb)}.`, { sandbox_id: sb.id, sandbox: sb });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('fork_sandbox', {
    title: 'Fork a sandbox',
    annotations: { destructiveHint: false, idempotentHint: false },
    description: 'Copy a sandbox as it is now into count new sandboxes (files, installed packages, session variables, background processes), to try several approaches from the same state. Each fork has its own sandbox_id and is independent afterwards; the original keeps running. Returns the new sandbox_ids: destroy_sandbox each when done.',
    inputSchema: z.object({
      sandbox_id: sandboxId.describe('The sandbox to copy'),
      count: z.number().int().min(1).max(16).optional().describe('How many copies (default 1, at most 16)'),
    }),
  }, async (args) => {
    try {
      const forks = await api.forkSandbox(args.sandbox_id, { count: args.count });
      const ids = forks.map((f) => f.id);
      return okResult(`Forked sandbox ${args.sandbox_id} into ${ids.length} new sandbox${ids.length === 1 ? '' : 'es'}:\n${ids.map((i) => `sandbox_id: ${i}`).join('\n')}\nEach starts from ${args.sandbox_id}'s state and is independent; ${forks[0] ? expiry(forks[0]) : ''}.`, { sandbox_id: args.sandbox_id, sandbox_ids: ids, sandboxes: forks });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('expose_port', {
    title: 'Expose a port',
    description: 'Make a server running in a sandbox (a web app, a dev server, an API listening on 127.0.0.1 or 0.0.0.0 at this port) reachable from the host: returns the http:// URL where the server\'s / is served (HTTP and WebSockets; paths under it go to the server), for the user or a browser. Start the server in the background first so that the command returns, e.g. run_command "setsid python3 -m http.server 8000 </dev/null >/dev/null 2>&1 &". The server need not be up yet; exposing a port again returns the same URL.',
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true },
    inputSchema: z.object({
      sandbox_id: sandboxId,
      port: z.number().int().min(1).max(65535).describe('The TCP port the server listens on inside the sandbox, such as 8000'),
    }),
  }, async (args) => {
    try {
      const p = await api.exposePort(args.sandbox_id, args.port);
      return okResult(`Port ${p.port} of sandbox ${args.sandbox_id} is at ${p.url}\nurl: ${p.url}\nRequests to it answer 502 PORT_NOT_LISTENING while nothing listens on port ${p.port} in the sandbox (start the server in the background first). The daemon's own authentication applies to the URL.`, { sandbox_id: args.sandbox_id, port: p.port, url: p.url, host: p.host });
    } catch (e) {
      return errorResult(e);
    }
  });

  server.registerTool('destroy_sandbox', {
    title: 'Destroy a sandbox',
    description: 'Destroy a sandbox: its VM ends and every file in it is gone.',
    annotations: { destructiveHint: true, idempotentHint: false },
    inputSchema: z.object({ sandbox_id: sandboxId }),
  }, async (args) => {
    try {
      await api.deleteSandbox(args.sandbox_id);
      return okResult(`Destroyed sandbox ${args.sandbox_id}.`, { sandbox_id: args.sandbox_id, destroyed: true });
    } catch (e) {
      return errorResult(e);
    }
  });

  return server;
}

function expiry(sb: SandboxSummary): string {
  return sb.expires_at ? `it is destroyed at ${sb.expires_at} (after ${sb.timeout_s} s) unless destroy_sandbox ends it first` : 'it has no deadline: destroy_sandbox it when done';
}

/** The first `max` bytes of a download, and whether there was more (the rest is not fetched). */
async function readAtMost(stream: NodeJS.ReadableStream & { destroy(): void }, max: number): Promise<{ bytes: Buffer; truncated: boolean }> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of stream) {
      const b = c as Buffer;
      chunks.push(b);
      n += b.length;
      if (n > max) return { bytes: Buffer.concat(chunks).subarray(0, max), truncated: true };
    }
    return { bytes: Buffer.concat(chunks), truncated: false };
  } finally {
    stream.destroy();
  }
}

function imageType(b: Buffer): 'image/png' | 'image/jpeg' | undefined {
  if (b.length >= 8 && b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'image/png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  return undefined;
}

/** The bytes as text when they are UTF-8 (a character cut by max_bytes at the end is allowed). */
function utf8(b: Buffer): string | undefined {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b, { stream: true });
  } catch {
    return undefined;
  }
}

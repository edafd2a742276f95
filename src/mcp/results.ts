// How emberd answers become MCP tool results: a readable text for the model, structuredContent for
// programs, images as MCP image content, truncation said in both, and emberd errors as tool
// errors carrying emberd's code. A non-zero exit status is a result, never an error.
import type { CallToolResult } from '@modelcontextprotocol/server';
import { EmberdApiError } from '../sdk/client.ts';

type Content = CallToolResult['content'][number];

/** MIME types an MCP host shows as pictures; everything else stays text. */
const IMAGE_TYPES = ['image/png', 'image/jpeg'] as const;

/** The exec answer of the HTTP API, session fields included (docs/api.md). */
export interface ExecAnswer {
  stdout: string;
  stderr: string;
  exit_code: number;
  duration_ms: number;
  timed_out: boolean;
  truncated: boolean;
  value?: string | null;
  session_reset?: boolean;
  results?: Record<string, unknown>[];
}

/**
 * Keeps the head and the tail of a long text (a traceback is at the end, the context at the
 * start) and says how much was cut; the model's context is the limit here, not the daemon's cap.
 */
export function clip(text: string, max: number): { text: string; omitted: number } {
  if (text.length <= max) return { text, omitted: 0 };
  const head = Math.ceil(max / 2);
  const tail = max - head;
  const omitted = text.length - max;
  return { text: `${text.slice(0, head)}\n[... ${omitted} characters omitted ...]\n${tail ? text.slice(-tail) : ''}`, omitted };
}

/**
 * One exec answer as a tool result. `extra` goes first in structuredContent and its `note` (the
 * sandbox a run_code created) first in the text, so an agent cannot miss the id it must keep.
 */
export function execResult(r: ExecAnswer, maxChars: number, extra: { sandbox_id: string; note?: string; created?: boolean }): CallToolResult {
  const out = clip(r.stdout, maxChars);
  const err = clip(r.stderr, maxChars);
  const truncation: string[] = [];
  if (r.truncated) truncation.push('the daemon kept only the first --exec-output-cap bytes of output (the rest was discarded in the sandbox)');
  if (out.omitted) truncation.push(`${out.omitted} characters of stdout omitted here (raise max_output_chars, or write the output to a file and read_file it)`);
  if (err.omitted) truncation.push(`${err.omitted} characters of stderr omitted here (raise max_output_chars)`);

  const images: Content[] = [];
  const results = (r.results ?? []).map((bundle) => {
    const shown: Record<string, unknown> = {};
    for (const [mime, data] of Object.entries(bundle)) {
      if ((IMAGE_TYPES as readonly string[]).includes(mime) && typeof data === 'string') {
        images.push({ type: 'image', data, mimeType: mime });
        shown[mime] = `(${Math.floor((data.length * 3) / 4)} bytes, sent as image content ${images.length})`;
      } else {
        shown[mime] = data;
      }
    }
    return shown;
  });

  const { note, ...ids } = extra;
  const lines: string[] = [];
  if (note) lines.push(note, '');
  const flags = [r.timed_out ? 'timed out' : '', r.session_reset ? 'the session was reset (its interpreter died; the next call starts a new one)' : ''].filter(Boolean);
  lines.push(`exit_code: ${r.exit_code} (${r.duration_ms} ms)${flags.length ? `; ${flags.join('; ')}` : ''}`);
  if (out.text) lines.push('--- stdout ---', out.text.replace(/\n$/, ''));
  if (err.text) lines.push('--- stderr ---', err.text.replace(/\n$/, ''));
  for (const [i, b] of results.entries()) {
    const plain = typeof b['text/plain'] === 'string' ? b['text/plain'] : undefined;
    const kinds = Object.keys(b).filter((k) => k !== 'is_main_result' && k !== 'text/plain');
    if (b.is_main_result && plain !== undefined) continue; // the value, below
    lines.push(`--- result ${i + 1}${kinds.length ? ` (${kinds.join(', ')})` : ''} ---`, plain ?? '');
  }
  if (r.value !== undefined && r.value !== null) lines.push('--- value ---', clip(r.value, maxChars).text);
  if (truncation.length) lines.push(`[output truncated: ${truncation.join('; ')}]`);

  return {
    content: [{ type: 'text', text: lines.join('\n') }, ...images],
    structuredContent: {
      ...ids,
      exit_code: r.exit_code,
      stdout: out.text,
      stderr: err.text,
      duration_ms: r.duration_ms,
      timed_out: r.timed_out,
      truncated: truncation.length > 0,
      truncation: truncation.length ? { daemon_output_cap: r.truncated, stdout_omitted_chars: out.omitted, stderr_omitted_chars: err.omitted, detail: truncation.join('; ') } : null,
      ...(r.value !== undefined ? { value: r.value } : {}),
      ...(r.session_reset !== undefined ? { session_reset: r.session_reset } : {}),
      ...(r.results ? { results } : {}),
    },
  };
}

/** A plain success: the text the model reads and the same facts for programs. */
export function okResult(text: string, structured: Record<string, unknown>, more: Content[] = []): CallToolResult {
  return { content: [{ type: 'text', text }, ...more], structuredContent: structured };
}

/** Where the daemon is started from: said in every "no daemon" error. */
export const START_HINT = 'start the daemon first (`emberd`, or bin/emberd in the emberd repository; `emberd mcp` never starts one), then retry';

/**
 * A failure as a tool error (isError) with emberd's code, so the model can read what to do and a
 * program can match on `structuredContent.error.code`. Anything not from the daemon is INTERNAL.
 */
export function errorResult(e: unknown, context?: string): CallToolResult {
  const code = e instanceof EmberdApiError ? e.code : 'INTERNAL';
  let message = e instanceof Error ? e.message : String(e);
  if (code === 'DAEMON_UNREACHABLE') message = `${message}; ${START_HINT}`;
  if (context) message = `${message} (${context})`;
  return {
    isError: true,
    content: [{ type: 'text', text: `${code}: ${message}` }],
    structuredContent: { error: { code, message } },
  };
}

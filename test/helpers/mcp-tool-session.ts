// The tool session an agent host has with emberd's MCP server, run by the official MCP client over
// any transport and either protocol era: run_code makes a python-data sandbox and answers a
// matplotlib chart as image content, files go in and out (text, an image, truncation), a
// non-zero exit is a result, emberd errors are tool errors with the code, create_sandbox and
// destroy_sandbox leave nothing behind.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import type { Client } from '@modelcontextprotocol/client';
import { VERSION } from '../../src/version.ts';

/** python-data imports take seconds under software emulation: no test here waits on time. */
const SLOW = { timeout: 600_000 };
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export const TOOL_NAMES = ['create_sandbox', 'destroy_sandbox', 'expose_port', 'fork_sandbox', 'list_files', 'list_sandboxes', 'pause_sandbox', 'read_file', 'resume_sandbox', 'run_code', 'run_command', 'write_file'];

type Content = { type: string; text?: string; data?: string; mimeType?: string };
export interface ToolAnswer { content: Content[]; structuredContent?: any; isError?: boolean }

export async function call(c: Client, name: string, args: Record<string, unknown>): Promise<ToolAnswer> {
  return (await c.callTool({ name, arguments: args }, SLOW)) as ToolAnswer;
}

export const text = (r: ToolAnswer) => r.content.filter((x) => x.type === 'text').map((x) => x.text).join('\n');
const images = (r: ToolAnswer) => r.content.filter((x) => x.type === 'image');

/** An answer that is not a tool error (a non-zero exit status included). */
export function ok(r: ToolAnswer, what: string): any {
  assert.ok(!r.isError, `${what}: ${text(r)}`);
  return r.structuredContent;
}

/** A tool error carrying emberd's code in the text and in structuredContent. */
export function toolError(r: ToolAnswer, code: string): void {
  assert.equal(r.isError, true, `expected a tool error, got: ${text(r)}`);
  assert.equal(r.structuredContent?.error?.code, code, text(r));
  assert.match(text(r), new RegExp(`^${code}: `));
}

export async function checkServer(c: Client, era: 'legacy' | 'auto'): Promise<void> {
  assert.deepEqual(c.getServerVersion()?.name, 'emberd');
  assert.equal(c.getServerVersion()?.version, VERSION, 'the MCP server reports the daemon\'s version');
  const negotiated = c.getNegotiatedProtocolVersion();
  if (era === 'auto') assert.equal(negotiated, '2026-07-28');
  else assert.ok(negotiated && negotiated < '2026-07-28', `legacy era negotiated ${negotiated}`);
  const tools = (await c.listTools()).tools;
  assert.deepEqual(tools.map((t) => t.name).sort(), TOOL_NAMES);
  const runCode = tools.find((t) => t.name === 'run_code')!;
  assert.ok((runCode.inputSchema.required as string[]).includes('code'));
  assert.ok(!(runCode.inputSchema.required as string[]).includes('sandbox_id'), 'run_code works without a sandbox_id');
}

/** The whole session; every sandbox it makes is destroyed by it (checked by list_sandboxes). */
export async function toolSession(c: Client): Promise<void> {
  // run_code without a sandbox makes one and says its id first, in the text and structured.
  const chart = await call(c, 'run_code', {
    language_pack: 'python-data',
    session: 'main',
    code: 'import matplotlib.pyplot as plt\nx = 6 * 7\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title("squares")\nplt.show()\nx',
  });
  const s = ok(chart, 'run_code with a chart');
  const id: string = s.sandbox_id;
  assert.match(id, /^sb_[a-z0-9]{20}$/);
  assert.equal(s.created, true);
  assert.ok(text(chart).startsWith(`Created sandbox ${id}`), text(chart));
  assert.deepEqual([s.exit_code, s.value, s.truncated], [0, '42', false]);
  const [img, ...more] = images(chart);
  assert.equal(more.length, 0, 'one figure, one image');
  assert.equal(img!.mimeType, 'image/png');
  const png = Buffer.from(img!.data!, 'base64');
  assert.ok(png.subarray(0, 8).equals(PNG), 'the image content is a PNG');
  assert.ok(png.length > 1000);

  try {
    // The session keeps state between calls in the same sandbox.
    const again = ok(await call(c, 'run_code', { sandbox_id: id, session: 'main', code: 'x + 1' }), 'session state');
    assert.deepEqual([again.value, again.created], ['43', undefined]);

    // Files: text round trip, an image read as image content, truncation said in both forms.
    const wrote = ok(await call(c, 'write_file', { sandbox_id: id, path: '/root/mcp/notes.txt', content: 'héllo\nworld\n' }), 'write_file');
    assert.deepEqual([wrote.path, wrote.size], ['/root/mcp/notes.txt', 13]);
    const read = await call(c, 'read_file', { sandbox_id: id, path: '/root/mcp/notes.txt' });
    assert.deepEqual([text(read), ok(read, 'read_file').encoding, read.structuredContent.truncated], ['héllo\nworld\n', 'utf8', false]);
    const cut = await call(c, 'read_file', { sandbox_id: id, path: '/root/mcp/notes.txt', max_bytes: 3 });
    assert.deepEqual([ok(cut, 'read_file max_bytes').content, cut.structuredContent.truncated], ['hé', true]);
    assert.match(text(cut), /truncated: only the first 3 bytes/);
    ok(await call(c, 'write_file', { sandbox_id: id, path: '/root/mcp/chart.png', content: png.toString('base64'), encoding: 'base64' }), 'write_file base64');
    const back = await call(c, 'read_file', { sandbox_id: id, path: '/root/mcp/chart.png' });
    assert.equal(ok(back, 'read_file png').mime_type, 'image/png');
    assert.ok(Buffer.from(images(back)[0]!.data!, 'base64').equals(png), 'the PNG comes back byte for byte as image content');
    const listed = ok(await call(c, 'list_files', { sandbox_id: id, path: '/root/mcp' }), 'list_files');
    assert.deepEqual(listed.entries.map((e: { name: string }) => e.name), ['chart.png', 'notes.txt']);

    // A failing program is a result: its status, stdout and stderr.
    const failed = await call(c, 'run_command', { sandbox_id: id, command: 'echo out; echo err >&2; exit 3' });
    assert.deepEqual(pick(ok(failed, 'a non-zero exit'), 'exit_code', 'stdout', 'stderr'), { exit_code: 3, stdout: 'out\n', stderr: 'err\n' });
    assert.match(text(failed), /^exit_code: 3 /);
    assert.equal(ok(await call(c, 'run_command', { sandbox_id: id, argv: ['false'] }), 'argv').exit_code, 1);
    const login = ok(await call(c, 'run_command', { sandbox_id: id, command: 'echo $0 "$PWD"', cwd: '/tmp' }), 'bash -l -c');
    assert.equal(login.stdout, 'bash /tmp\n');

    // Output longer than max_output_chars: head and tail kept, the cut said in text and structured.
    const long = await call(c, 'run_command', { sandbox_id: id, command: 'printf "%05000d" 0', max_output_chars: 1000 });
    const l = ok(long, 'long output');
    assert.deepEqual([l.truncated, l.truncation.stdout_omitted_chars, l.truncation.daemon_output_cap], [true, 4000, false]);
    assert.match(text(long), /\[\.\.\. 4000 characters omitted \.\.\.\]/);
    assert.match(text(long), /\[output truncated: 4000 characters of stdout omitted/);

    // emberd's errors are tool errors with its code.
    toolError(await call(c, 'read_file', { sandbox_id: id, path: '/root/mcp/missing.txt' }), 'FILE_NOT_FOUND');
    toolError(await call(c, 'run_command', { sandbox_id: 'sb_doesnotexist000000', argv: ['true'] }), 'SANDBOX_NOT_FOUND');
    toolError(await call(c, 'run_command', { sandbox_id: id }), 'INVALID_REQUEST');
    toolError(await call(c, 'run_code', { language_pack: 'no-such-pack', code: '1' }), 'UNKNOWN_LANGUAGE_PACK');

    // create_sandbox: the id is returned; run_code there uses its pack's interpreter (sh -c).
    const made = ok(await call(c, 'create_sandbox', { language_pack: 'shell', timeout_s: 600 }), 'create_sandbox');
    assert.match(made.sandbox_id, /^sb_/);
    assert.equal(made.sandbox.timeout_s, 600);
    assert.match(text(await call(c, 'create_sandbox', { vcpus: 1000 })), /^INVALID_REQUEST: /);
    try {
      const sh = ok(await call(c, 'run_code', { sandbox_id: made.sandbox_id, code: 'echo "$((6*7))"' }), 'run_code in shell');
      assert.equal(sh.stdout, '42\n');
      toolError(await call(c, 'run_code', { sandbox_id: made.sandbox_id, session: 'main', code: '1' }), 'SESSIONS_UNSUPPORTED');
      const all = ok(await call(c, 'list_sandboxes', {}), 'list_sandboxes').sandboxes.map((x: { id: string }) => x.id).sort();
      assert.deepEqual(all, [id, made.sandbox_id].sort());
    } finally {
      ok(await call(c, 'destroy_sandbox', { sandbox_id: made.sandbox_id }), 'destroy_sandbox');
    }
  } finally {
    ok(await call(c, 'destroy_sandbox', { sandbox_id: id }), 'destroy_sandbox');
  }
  toolError(await call(c, 'destroy_sandbox', { sandbox_id: id }), 'SANDBOX_NOT_FOUND');
  const left = await call(c, 'list_sandboxes', {});
  assert.deepEqual(ok(left, 'list_sandboxes').sandboxes, []);
  assert.equal(text(left), 'No sandboxes.');
}

function pick(o: Record<string, unknown>, ...keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, o[k]]));
}

/** QEMU processes of the daemon with this run dir (each runs in its sandbox's dir there). */
export function vmsUnder(runDir: string): string[] {
  let out = '';
  try { out = execFileSync('pgrep', ['-a', 'qemu-system'], { encoding: 'utf8' }); } catch { /* none: pgrep exits 1 */ }
  return out.split('\n').filter(Boolean).filter((line) => {
    let cwd = '';
    try { cwd = readlinkSync(`/proc/${line.split(' ')[0]}/cwd`); } catch { /* exited meanwhile */ }
    return cwd.startsWith(`${runDir}/`) || line.includes(runDir);
  });
}

// Exec answers and errors as MCP tool results, without a daemon: what the model reads and what a
// program gets must say the same (truncation, images, codes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EmberdApiError } from '../sdk/client.ts';
import { clip, errorResult, execResult, type ExecAnswer } from './results.ts';

const answer = (o: Partial<ExecAnswer> = {}): ExecAnswer => ({ stdout: '', stderr: '', exit_code: 0, duration_ms: 5, timed_out: false, truncated: false, ...o });
const textOf = (r: ReturnType<typeof execResult>) => (r.content[0] as { text: string }).text;

test('clip keeps the head and the tail and counts what it dropped', () => {
  assert.deepEqual(clip('abcdef', 6), { text: 'abcdef', omitted: 0 });
  const c = clip('0123456789', 4);
  assert.equal(c.omitted, 6);
  assert.equal(c.text, '01\n[... 6 characters omitted ...]\n89');
});

test('a non-zero exit is a result with its status first; nothing says truncated when nothing was', () => {
  const r = execResult(answer({ stdout: 'out\n', stderr: 'err\n', exit_code: 3 }), 100, { sandbox_id: 'sb_x' });
  assert.equal(r.isError, undefined);
  assert.equal(textOf(r), 'exit_code: 3 (5 ms)\n--- stdout ---\nout\n--- stderr ---\nerr');
  assert.deepEqual(r.structuredContent, { sandbox_id: 'sb_x', exit_code: 3, stdout: 'out\n', stderr: 'err\n', duration_ms: 5, timed_out: false, truncated: false, truncation: null });
});

test('truncation by the daemon and here is said in the text and in structuredContent', () => {
  const r = execResult(answer({ stdout: 'x'.repeat(300), truncated: true }), 100, { sandbox_id: 'sb_x' });
  const s = r.structuredContent as { truncated: boolean; truncation: Record<string, unknown> };
  assert.equal(s.truncated, true);
  assert.deepEqual([s.truncation.daemon_output_cap, s.truncation.stdout_omitted_chars, s.truncation.stderr_omitted_chars], [true, 200, 0]);
  assert.match(textOf(r), /\[output truncated: the daemon kept only the first --exec-output-cap bytes.*; 200 characters of stdout omitted here/);
});

test('images in rich results become image content; their data is not repeated in structuredContent', () => {
  const png = Buffer.from('89504e470d0a1a0a00', 'hex').toString('base64');
  const r = execResult(answer({
    value: '42',
    results: [{ 'image/png': png, 'text/plain': '<Figure>', is_main_result: false }, { 'text/plain': '42', is_main_result: true }],
  }), 100, { sandbox_id: 'sb_x', created: true, note: 'Created sandbox sb_x.' });
  assert.deepEqual(r.content.slice(1), [{ type: 'image', data: png, mimeType: 'image/png' }]);
  assert.ok(textOf(r).startsWith('Created sandbox sb_x.\n\nexit_code: 0'));
  assert.match(textOf(r), /--- result 1 \(image\/png\) ---\n<Figure>\n--- value ---\n42$/);
  const s = r.structuredContent as { created: boolean; note?: string; results: Record<string, unknown>[] };
  assert.equal(s.created, true);
  assert.equal(s.note, undefined, 'the note is for the text');
  assert.equal(s.results[0]!['image/png'], '(9 bytes, sent as image content 1)');
});

test('errors carry emberd\'s code; a missing daemon says how to start one; anything else is INTERNAL', () => {
  const e = errorResult(new EmberdApiError(404, 'SANDBOX_NOT_FOUND', 'no such sandbox'));
  assert.deepEqual(e, { isError: true, content: [{ type: 'text', text: 'SANDBOX_NOT_FOUND: no such sandbox' }], structuredContent: { error: { code: 'SANDBOX_NOT_FOUND', message: 'no such sandbox' } } });
  assert.match((errorResult(new EmberdApiError(0, 'DAEMON_UNREACHABLE', 'cannot reach')).content[0] as { text: string }).text, /^DAEMON_UNREACHABLE: cannot reach; start the daemon first/);
  assert.equal((errorResult(new Error('boom'), 'while x').structuredContent as { error: { code: string; message: string } }).error.message, 'boom (while x)');
  assert.equal((errorResult(new Error('boom')).structuredContent as { error: { code: string } }).error.code, 'INTERNAL');
});

// The framework adapters against each framework's own npm package (ai 7.0.173, @openai/agents
// 0.20.0, deepagents 1.14.1) and one real sandbox: tools called directly and through the
// framework's own loop with its offline test model (ai/test's MockLanguageModelV4, agents'
// ScriptedModel); no model is called.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateText, isStepCount, type Tool } from 'ai';
import { MockLanguageModelV4 } from 'ai/test';
import { Agent, Runner } from '@openai/agents';
import { ScriptedModel, assistantMessage } from '@openai/agents/testing';
import { BaseSandbox } from 'deepagents';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';
import { Sandbox, EmberdError } from '../src/sdk/index.ts';
import { emberdTools } from '../src/sdk/adapters/ai.ts';
import { EmberdShell, emberdShellTool } from '../src/sdk/adapters/openai-agents.ts';
import { EmberdSandbox } from '../src/sdk/adapters/deepagents.ts';

let d: TestDaemon;
let sb: Sandbox;

before(async () => {
  d = await startDaemon(['--pool-size', '0', '--snapshots', 'off']);
  sb = await Sandbox.create({ url: d.addr, token: null, pack: 'python' });
});
after(async () => {
  await sb?.kill();
  assert.equal(await d.stop(), 0, d.log());
});

/** Calls a tool's execute as the AI SDK does (it may answer a value, a promise or an async iterable: these answer promises). */
async function call<I, O>(t: Tool<I, O>, input: I): Promise<O> {
  return (await t.execute!(input, { toolCallId: 't1', messages: [], context: {} })) as O;
}
/** A 2x1 PNG, so a cell's display() answers an image/png bundle. */
const PNG_CELL = [
  'import base64',
  'class Img:',
  '    def _repr_png_(self):',
  "        return base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAYAAAD0In+KAAAAEUlEQVR4nGP4z8DwH4QZYAwAhBkH+ZXvZPMAAAAASUVORK5CYII=')",
  'display(Img())',
].join('\n');

test('ai: run_code keeps session state and answers the value; a failing cell is a result', async () => {
  const tools = emberdTools(sb, { session: 'ai' });
  const first = await call(tools.run_code, { code: 'x = 6 * 7' });
  assert.equal(first.exitCode, 0, first.stderr);
  const r = await call(tools.run_code, { code: 'print("hi")\nx' });
  assert.equal(r.stdout, 'hi\n');
  assert.equal(r.value, '42');
  assert.deepEqual(r.results, [{ text: '42', mimeTypes: ['text/plain'] }]);
  const bad = await call(tools.run_code, { code: '1/0' });
  assert.equal(bad.exitCode, 1);
  assert.match(bad.stderr, /ZeroDivisionError/);
});

test('ai: run_command, write_file and read_file; a missing file is a tool error with the daemon\'s code', async () => {
  const tools = emberdTools(sb);
  const c = await call(tools.run_command, { command: 'echo "$0" $(pwd); exit 3', cwd: '/tmp' });
  assert.deepEqual({ stdout: c.stdout, exitCode: c.exitCode, timedOut: c.timedOut }, { stdout: 'bash /tmp\n', exitCode: 3, timedOut: false });
  assert.deepEqual(await call(tools.write_file, { path: '/root/ai/note.txt', content: 'héllo\n' }), { path: '/root/ai/note.txt', size: 7 });
  assert.deepEqual(await call(tools.read_file, { path: '/root/ai/note.txt' }), { path: '/root/ai/note.txt', content: 'héllo\n' });
  await assert.rejects(call(tools.read_file, { path: '/root/ai/none' }), (e: unknown) => e instanceof EmberdError && e.code === 'FILE_NOT_FOUND');
});

test('ai: through generateText with the SDK\'s mock model, the tool runs and its image reaches the next step as a file part', async () => {
  const usage = { inputTokens: { total: 1, noCache: 1, cacheRead: 0, cacheWrite: 0 }, outputTokens: { total: 1, text: 1, reasoning: 0 } };
  const model = new MockLanguageModelV4({
    doGenerate: [
      { content: [{ type: 'tool-call', toolCallId: 'c1', toolName: 'run_code', input: JSON.stringify({ code: PNG_CELL }) }], finishReason: { unified: 'tool-calls', raw: 'tool_calls' }, usage, warnings: [] },
      { content: [{ type: 'text', text: 'a picture' }], finishReason: { unified: 'stop', raw: 'stop' }, usage, warnings: [] },
    ],
  });
  const r = await generateText({ model, tools: emberdTools(sb, { session: 'ai' }), prompt: 'draw', stopWhen: isStepCount(2) });
  assert.equal(r.text, 'a picture');
  const out = r.steps[0]!.toolResults[0]!.output as { exitCode: number; images: { mediaType: string; base64: string }[] };
  assert.equal(out.exitCode, 0);
  assert.deepEqual(out.images.map((i) => i.mediaType), ['image/png']);
  assert.equal(Buffer.from(out.images[0]!.base64, 'base64').subarray(1, 4).toString(), 'PNG');
  // what the model is sent back: text without the base64, and the image as a file part
  const toolMsg = model.doGenerateCalls[1]!.prompt.find((m) => m.role === 'tool')!;
  const part = (toolMsg.content as { type: string; output?: { type: string; value: { type: string; mediaType?: string; text?: string }[] } }[]).find((p) => p.type === 'tool-result')!;
  assert.equal(part.output!.type, 'content');
  assert.deepEqual(part.output!.value.map((v) => v.mediaType ?? v.type), ['text', 'image/png']);
  assert.ok(!part.output!.value[0]!.text!.includes(out.images[0]!.base64), 'no base64 in the text part');
});

test('openai-agents: shellTool backed by the sandbox runs each command; exit codes, stderr, timeout and maxOutputLength', async () => {
  const t = emberdShellTool(sb, { cwd: '/tmp' });
  assert.equal(t.type, 'shell');
  assert.equal(t.name, 'shell');
  assert.ok('shell' in t && t.shell instanceof EmberdShell);
  const r = await t.shell.run({ commands: ['echo out; echo err >&2; pwd', 'exit 3'] });
  assert.deepEqual(r.output, [
    { stdout: 'out\n/tmp\n', stderr: 'err\n', outcome: { type: 'exit', exitCode: 0 } },
    { stdout: '', stderr: '', outcome: { type: 'exit', exitCode: 3 } },
  ]);
  const cut = await t.shell.run({ commands: ['printf 0123456789'], maxOutputLength: 4 });
  assert.deepEqual({ stdout: cut.output[0]!.stdout, max: cut.maxOutputLength }, { stdout: '0123', max: 4 });
  const slow = await t.shell.run({ commands: ['sleep 30', 'echo never'], timeoutMs: 300 });
  assert.deepEqual(slow.output.map((o) => o.outcome), [{ type: 'timeout' }], 'a timed-out command ends the action');
});

test('openai-agents: a Runner with the SDK\'s ScriptedModel executes the shell call in the sandbox', async () => {
  const model = new ScriptedModel([
    [{ type: 'shell_call', callId: 'call_1', status: 'completed', action: { commands: ['cat /proc/sys/kernel/hostname'] } }],
    [assistantMessage('done')],
  ]);
  const agent = new Agent({ name: 'ops', model, tools: [emberdShellTool(sb)] });
  const result = await new Runner({ tracingDisabled: true }).run(agent, 'what is the hostname?');
  assert.equal(result.finalOutput, 'done');
  const raw = result.newItems.map((i) => i.rawItem as { type: string; output?: unknown }).find((i) => i.type === 'shell_call_output');
  assert.deepEqual(raw?.output, [{ stdout: `${sb.id.replace('_', '-')}\n`, stderr: '', outcome: { type: 'exit', exitCode: 0 } }]);
  model.assertComplete();
});

test('deepagents: EmberdSandbox is a BaseSandbox; execute joins stderr to stdout in order', async () => {
  const ds = new EmberdSandbox(sb);
  assert.ok(ds instanceof BaseSandbox);
  assert.equal(ds.id, sb.id);
  assert.deepEqual(await ds.execute('echo one; echo two >&2; echo three; pwd; exit 4'), { output: 'one\ntwo\nthree\n/root\n', exitCode: 4, truncated: false });
  const syntax = await ds.execute('if then');
  assert.notEqual(syntax.exitCode, 0);
  assert.match(syntax.output, /syntax error/);
});

test('deepagents: uploadFiles and downloadFiles answer per file (partial success with deepagents\' error names)', async () => {
  const ds = new EmberdSandbox(sb);
  const bytes = new Uint8Array([0, 1, 2, 255]);
  assert.deepEqual(await ds.uploadFiles([['/root/da/a.bin', bytes], ['rel.txt', new TextEncoder().encode('r')], ['/proc/emberd-x', bytes]]), [
    { path: '/root/da/a.bin', error: null },
    { path: 'rel.txt', error: null },
    { path: '/proc/emberd-x', error: 'permission_denied' },
  ]);
  const got = await ds.downloadFiles(['/root/da/a.bin', '/root/rel.txt', '/root/da/none', '/root/da']);
  assert.deepEqual(got.map((g) => [g.path, g.content && Buffer.from(g.content).toString('hex'), g.error]), [
    ['/root/da/a.bin', '000102ff', null],
    ['/root/rel.txt', '72', null],
    ['/root/da/none', null, 'file_not_found'],
    ['/root/da', null, 'is_directory'],
  ]);
});

test('deepagents: the base class\'s write, read, edit, ls, grep and glob work through the sandbox', async () => {
  const ds = new EmberdSandbox(sb);
  assert.equal((await ds.write('/root/dx/main.py', 'a = 1\nneedle = 2\n')).error, undefined);
  const read = await ds.read('/root/dx/main.py');
  assert.equal(read.error, undefined);
  assert.match(String(read.content), /needle = 2/);
  assert.equal((await ds.edit('/root/dx/main.py', 'needle = 2', 'needle = 3')).error, undefined);
  const raw = await ds.readRaw('/root/dx/main.py');
  assert.equal(raw.data?.content, 'a = 1\nneedle = 3\n');
  const ls = await ds.ls('/root/dx');
  assert.deepEqual(ls.files?.map((f) => [f.path, f.is_dir]), [['/root/dx/main.py', false]]);
  const grep = await ds.grep('needle', '/root/dx');
  assert.deepEqual(grep.matches?.map((m) => [m.path, m.line, m.text]), [['/root/dx/main.py', 2, 'needle = 3']]);
  const glob = await ds.glob('*.py', '/root/dx');
  assert.deepEqual(glob.files?.map((f) => f.path), ['main.py']);
});

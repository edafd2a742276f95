// `emberd mcp` (stdio) as agent hosts start it: the command and arguments `emberd mcp config`
// prints, spawned by the official MCP client's stdio transport against a real daemon with real
// VMs, in both protocol eras; the MCP Inspector's --cli lists its tools; with no daemon it says so
// on stderr and its tools fail with DAEMON_UNREACHABLE and how to start one. One daemon.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { startDaemon, freePort, processExists, eventually, type TestDaemon } from './helpers/daemon.ts';
import { TOOL_NAMES, call, checkServer, text, toolError, toolSession, vmsUnder } from './helpers/mcp-tool-session.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const NODE = join(ROOT, 'node_modules/.bin/node');
const MAIN = join(ROOT, 'src/daemon/main.ts');
const INSPECTOR = join(ROOT, 'node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js');

let d: TestDaemon;
before(async () => { d = await startDaemon(['--snapshots', 'off', '--pool-size', '0']); });
after(async () => {
  const runDir = d.runDir;
  assert.deepEqual(await d.client.listSandboxes(), [], 'no sandbox left');
  assert.equal(await d.stop(), 0, d.log());
  assert.deepEqual(vmsUnder(runDir), [], 'no VM of this daemon left');
});

/** The stdio server entry of the Claude Desktop config `emberd mcp config --addr` prints. */
function printedConfig(addr: string): { command: string; args: string[]; env?: Record<string, string>; out: string } {
  const out = execFileSync(NODE, [MAIN, 'mcp', 'config', '--addr', addr], { encoding: 'utf8' });
  const json = /## Claude Desktop[^\n]*\n(?:##[^\n]*\n)*(\{[\s\S]*?\n\})\n/.exec(out);
  assert.ok(json, out);
  return { ...JSON.parse(json[1]!).mcpServers.emberd, out };
}

/** A client of `emberd mcp` started as a host would start it; stderr kept for the assertions. */
async function connect(era: 'legacy' | 'auto', addr = d.addr): Promise<{ c: Client; transport: StdioClientTransport; stderr: () => string }> {
  const cfg = printedConfig(addr);
  const transport = new StdioClientTransport({ command: cfg.command, args: cfg.args, env: cfg.env, stderr: 'pipe', cwd: '/' });
  let stderr = '';
  (transport.stderr as PassThrough).on('data', (b: Buffer) => { stderr += b.toString(); });
  const c = new Client({ name: 'emberd-test', version: '1.0.0' }, { versionNegotiation: { mode: era } });
  await c.connect(transport);
  return { c, transport, stderr: () => stderr };
}

test('emberd mcp config: absolute paths to the pinned node and the daemon\'s entry, for Claude Desktop, Claude Code and Cursor, and the HTTP URL', () => {
  const cfg = printedConfig('127.0.0.1:7788');
  assert.ok(isAbsolute(cfg.command) && existsSync(cfg.command), cfg.command);
  assert.equal(execFileSync(cfg.command, ['--version'], { encoding: 'utf8' }).trim(), process.version, 'the repository\'s pinned node');
  assert.deepEqual(cfg.args, [MAIN, 'mcp']);
  assert.deepEqual(cfg.env, { EMBERD_ADDR: '127.0.0.1:7788' });
  assert.ok(cfg.out.includes(`claude mcp add emberd -e EMBERD_ADDR=127.0.0.1:7788 -- ${cfg.command} ${MAIN} mcp\n`), cfg.out);
  assert.match(cfg.out, /## Cursor: ~\/\.cursor\/mcp\.json/);
  assert.ok(cfg.out.includes('claude mcp add --transport http emberd http://127.0.0.1:7788/mcp\n'), cfg.out);
});

for (const era of ['legacy', 'auto'] as const) {
  test(`stdio, ${era === 'auto' ? '2026-07-28 (negotiated with mode auto)' : 'the 2025 revision (the client\'s default)'}: a whole tool session; the server exits when the host closes it`, async () => {
    const { c, transport, stderr } = await connect(era);
    const pid = transport.pid!;
    try {
      await checkServer(c, era);
      await toolSession(c);
    } finally {
      await c.close();
    }
    await eventually(() => !processExists(pid), 10_000, 'emberd mcp exits once its stdin is closed');
    assert.equal(stderr(), '', 'nothing to say when the daemon answers and versions match');
  });
}

test('no daemon: stderr says so and how to start one; tools fail with DAEMON_UNREACHABLE; nothing is started', async () => {
  const addr = `127.0.0.1:${await freePort()}`;
  const { c, stderr } = await connect('legacy', addr);
  try {
    assert.deepEqual((await c.listTools()).tools.map((t) => t.name).sort(), TOOL_NAMES, 'the tools are listed all the same');
    const r = await call(c, 'list_sandboxes', {});
    toolError(r, 'DAEMON_UNREACHABLE');
    assert.match(text(r), new RegExp(`cannot reach emberd at http://${addr}.*start the daemon first \\(\`emberd\``));
    toolError(await call(c, 'run_code', { code: 'print(1)' }), 'DAEMON_UNREACHABLE');
    await eventually(() => stderr().includes('DAEMON_UNREACHABLE'), 10_000, 'the stderr message');
    assert.match(stderr(), /^emberd mcp: DAEMON_UNREACHABLE: cannot reach emberd at .*; start the daemon first .*Tool calls fail until it answers\n$/);
    assert.ok(!(await fetch(`http://${addr}/`).then(() => true, () => false)), 'emberd mcp started no daemon');
  } finally {
    await c.close();
  }
});

test('bad arguments: usage on stderr and exit 2', async () => {
  for (const args of [['--nope'], ['frobnicate']]) {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const p = execFile(NODE, [MAIN, 'mcp', ...args], (err, _out, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? null : 0, stderr }));
      p.stdin?.end();
    });
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, /usage: emberd mcp/);
  }
});

test('the MCP Inspector\'s --cli lists the tools of `emberd mcp` (JSON output)', async () => {
  // Its own HOME: the Inspector keeps a catalog and client config there.
  const home = mkdtempSync('/tmp/emb-insp-');
  try {
    const out = await new Promise<string>((resolve, reject) => {
      execFile(NODE, [INSPECTOR, '--cli', '--format', 'json', '--method', 'tools/list', '-e', `EMBERD_ADDR=${d.addr}`, '--', NODE, MAIN, 'mcp'],
        { env: { PATH: process.env.PATH!, HOME: home }, timeout: 120_000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)));
    });
    const listed = (JSON.parse(out) as { result: { tools: { name: string; inputSchema: { properties: Record<string, unknown> } }[] } }).result;
    assert.deepEqual(listed.tools.map((t) => t.name).sort(), TOOL_NAMES);
    assert.ok('sandbox_id' in listed.tools.find((t) => t.name === 'run_command')!.inputSchema.properties);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

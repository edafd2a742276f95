// `emberd mcp`: the MCP server on stdio, for agent hosts that start their tools as a process. It
// is a client of the daemon that is already running (found as emberctl finds it: --addr or
// EMBERD_ADDR, the token from EMBERD_TOKEN or the token file) and never starts one: when none
// answers it says so on stderr and each tool call fails with DAEMON_UNREACHABLE and how to start
// it, so the host keeps the server and the agent can tell its user what to do.
// `emberd mcp config`: the configuration to paste into agent hosts.
import { parseArgs } from 'node:util';
import { serveStdio } from '@modelcontextprotocol/server/stdio';
import { EmberdApiError, EmberdClient } from '../sdk/client.ts';
import { VERSION } from '../version.ts';
import { hostConfigText } from './host-config.ts';
import { START_HINT } from './results.ts';
import { createEmberdMcpServer } from './tools.ts';

export const MCP_USAGE = `usage: emberd mcp [--addr HOST:PORT] [--token-file PATH]   MCP server on stdio for the running daemon
       emberd mcp config [--addr HOST:PORT] [--token-file PATH]   configuration for Claude Desktop, Claude Code, Cursor
(docs/mcp.md; the daemon itself serves MCP over Streamable HTTP at /mcp)`;

export async function runMcpCommand(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { addr: { type: 'string' }, 'token-file': { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    process.stderr.write(`emberd mcp: ${(e as Error).message}\n${MCP_USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) { process.stdout.write(`${MCP_USAGE}\n`); return 0; }
  if (positionals[0] === 'config' && positionals.length === 1) {
    process.stdout.write(hostConfigText({ addr: values.addr, tokenFile: values['token-file'] }));
    return 0;
  }
  if (positionals.length) {
    process.stderr.write(`emberd mcp: unknown command ${positionals.join(' ')}\n${MCP_USAGE}\n`);
    return 2;
  }

  let client: EmberdClient;
  try {
    client = new EmberdClient(values.addr ?? process.env.EMBERD_ADDR ?? '127.0.0.1:7777', { tokenFile: values['token-file'] });
  } catch (e) {
    process.stderr.write(`emberd mcp: ${(e as Error).message}\n`);
    return 2;
  }
  // stdout is the protocol: everything for people goes to stderr.
  void checkDaemon(client);
  const handle = serveStdio(() => createEmberdMcpServer(client), { onerror: (e) => process.stderr.write(`emberd mcp: ${e.message}\n`) });
  // The host ends the server by closing stdin (or with a signal); then there is nothing to keep.
  await new Promise<void>((resolve) => {
    process.stdin.once('end', resolve);
    process.stdin.once('close', resolve);
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await handle.close();
  return 0;
}

/** Says on stderr, once at start, when no daemon answers, the token is refused or versions differ. */
async function checkDaemon(client: EmberdClient): Promise<void> {
  try {
    const info = await client.info();
    if (info.version !== VERSION) process.stderr.write(`emberd mcp: warning: the daemon at ${client.baseUrl} is emberd ${String(info.version)}, this MCP server is ${VERSION}; restart one of them so they match\n`);
  } catch (e) {
    const code = e instanceof EmberdApiError ? e.code : 'INTERNAL';
    const hint = code === 'DAEMON_UNREACHABLE' ? `; ${START_HINT}. Tool calls fail until it answers` : '';
    process.stderr.write(`emberd mcp: ${code}: ${(e as Error).message}${hint}\n`);
  }
}

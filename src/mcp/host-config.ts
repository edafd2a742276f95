// `emberd mcp config`: what to paste into the common agent hosts, with absolute paths (hosts start
// servers with a bare environment: no PATH to find `emberd`, `node` or `npx` in, no cwd to be
// relative to) and the repository's pinned Node, which runs the TypeScript sources directly.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defaultTokenFile } from '../state-dir.ts';

export interface HostConfigOptions {
  /** The daemon's address as given to `emberd mcp config --addr`; default 127.0.0.1:7777. */
  addr?: string;
  tokenFile?: string;
}

/** The pinned node binary and the daemon's entry point, absolute. */
export function serverCommand(): { command: string; args: string[] } {
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  let node = `${repo}node_modules/.bin/node`;
  try { node = realpathSync(node); } catch { node = process.execPath; }
  return { command: node, args: [`${repo}src/daemon/main.ts`, 'mcp'] };
}

export function hostConfigText(o: HostConfigOptions = {}): string {
  const { command, args } = serverCommand();
  const addr = o.addr ?? '127.0.0.1:7777';
  const env: Record<string, string> = {};
  if (o.addr) env.EMBERD_ADDR = o.addr;
  if (o.tokenFile) env.EMBERD_TOKEN_FILE = o.tokenFile;
  const stdio = { command, args, ...(Object.keys(env).length ? { env } : {}) };
  const url = `${/^https?:\/\//.test(addr) ? addr.replace(/\/$/, '') : `http://${addr}`}/mcp`;
  const tokenFile = o.tokenFile ?? defaultTokenFile();
  const json = (v: unknown) => JSON.stringify(v, null, 2);
  const envFlags = Object.entries(env).map(([k, v]) => `-e ${k}=${shellQuote(v)} `).join('');

  return `# emberd MCP server (stdio): talks to the running daemon at ${addr}; it starts none.
# Start the daemon first: ${command} ${args[0]}   (or bin/emberd)

## Claude Desktop: claude_desktop_config.json
##   (macOS ~/Library/Application Support/Claude/, Windows %APPDATA%\\Claude\\, Linux ~/.config/Claude/)
${json({ mcpServers: { emberd: stdio } })}

## Claude Code
claude mcp add emberd ${envFlags}-- ${[command, ...args].map(shellQuote).join(' ')}

## Cursor: ~/.cursor/mcp.json (or .cursor/mcp.json in a project)
${json({ mcpServers: { emberd: stdio } })}

## Streamable HTTP instead of stdio: the daemon itself serves ${url}
##   (Host and Origin must be loopback names unless the daemon has EMBERD_MCP_ALLOWED_HOSTS)
# Claude Code, auth off (the default on loopback):
claude mcp add --transport http emberd ${url}
# Claude Code, the daemon run with --auth on (the token is in ${tokenFile}):
claude mcp add --transport http emberd ${url} --header "Authorization: Bearer $(cat ${shellQuote(tokenFile)})"
# Cursor (drop "headers" when auth is off):
${json({ mcpServers: { emberd: { url, headers: { Authorization: `Bearer <the token in ${tokenFile}>` } } } })}
# Claude Desktop's config file takes stdio servers only.
`;
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_\/.:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

// Hosts the egress tests make for themselves, and nothing else is ever reached: each a network
// namespace with a veth to the host (documentation addresses) running python's http.server that
// answers a known word; and a DNS server on 127.0.0.1 that knows the names a test gives it.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { buildResponse, parseQuery } from '../../src/sandbox/egress/dns-codec.ts';

export interface TestHost {
  ns: string;
  veth: string;
  /** The host side's address and the namespace's, in one /30. */
  host: string;
  peer: string;
  /** More addresses of the namespace, routed to it from the host. */
  extra?: string[];
  /** What its server answers. */
  word: string;
}

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });

/** Why the test cannot make its hosts here: one of `prefixes` (e.g. '198.51.100.') is in use already. */
export function testNetsInUse(prefixes: string[]): string | undefined {
  try {
    const routes = sh('ip', ['-4', 'route', 'show', 'table', 'all']) + sh('ip', ['-4', 'addr']);
    const hit = prefixes.find((n) => routes.includes(n));
    return hit ? `the host already uses ${hit}0/24, which this test creates its hosts in` : undefined;
  } catch (e) { return `ip: ${(e as Error).message}`; }
}

/** Makes the host and starts its server on `port`; the server process is the caller's to kill. */
export function makeTestHost(h: TestHost, port: number): ChildProcess {
  sh('ip', ['netns', 'add', h.ns]);
  sh('ip', ['link', 'add', h.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
  sh('ip', ['addr', 'add', `${h.host}/30`, 'dev', h.veth]);
  sh('ip', ['link', 'set', h.veth, 'up']);
  sh('ip', ['-n', h.ns, 'addr', 'add', `${h.peer}/30`, 'dev', 'eth0']);
  for (const a of h.extra ?? []) {
    sh('ip', ['-n', h.ns, 'addr', 'add', `${a}/32`, 'dev', 'eth0']);
    sh('ip', ['route', 'add', `${a}/32`, 'dev', h.veth]);
  }
  sh('ip', ['-n', h.ns, 'link', 'set', 'eth0', 'up']);
  sh('ip', ['-n', h.ns, 'link', 'set', 'lo', 'up']);
  sh('ip', ['-n', h.ns, 'route', 'add', 'default', 'via', h.host]);
  const server = `
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = b${JSON.stringify(h.word)}
        self.send_response(200); self.send_header('content-length', str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', ${port}), H).serve_forever()
`;
  return spawn('ip', ['netns', 'exec', h.ns, '/usr/bin/python3', '-c', server], { stdio: 'ignore' });
}

export function removeTestHost(h: TestHost): void {
  try { execFileSync('ip', ['netns', 'del', h.ns], { stdio: 'ignore' }); } catch { /* not made */ }
  try { execFileSync('ip', ['link', 'del', h.veth], { stdio: 'ignore' }); } catch { /* gone with its peer */ }
}

/** A DNS server on 127.0.0.1 answering A queries for `names` (NXDOMAIN otherwise); `asked` lists every name asked. */
export async function testDnsServer(names: Record<string, string>): Promise<{ socket: Socket; asked: string[]; addr: string }> {
  const socket = createSocket('udp4');
  const asked: string[] = [];
  socket.on('message', (m, r) => {
    const q = parseQuery(m);
    asked.push(q.question.name);
    const a = names[q.question.name];
    socket.send(buildResponse(q, a ? 0 : 3, a && q.question.type === 1 ? [{ addr: a, ttl: 300 }] : []), r.port, r.address);
  });
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  return { socket, asked, addr: `127.0.0.1:${socket.address().port}` };
}

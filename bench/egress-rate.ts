// Egress bandwidth under `rate_mbit` (docs/network.md "Egress"): a test host this program makes (a
// network namespace with a veth, 198.51.100.10, python's http.server serving N bytes; nothing else
// is ever reached), and sandboxes allowed to it with rate_mbit R and without a limit, each timing a
// download of SIZE MiB from inside the guest (python's urllib). Needs root (netns, nft).
// `node bench/egress-rate.ts [rate_mbit=8] [size_mib=4]`. Prints figures; asserts nothing.
import { execFileSync, spawn } from 'node:child_process';
import { startDaemon, http } from '../test/helpers/daemon.ts';
import { egressUnavailable } from '../src/sandbox/egress/host-net.ts';

const RATE = Number(process.argv[2] ?? 8);
const SIZE = Number(process.argv[3] ?? 4) << 20;
const why = egressUnavailable();
if (why) { console.log(`egress-rate: cannot run here (${why})`); process.exit(0); }

const NS = `embench-${process.pid % 10000}`;
const VETH = `ebr${process.pid % 10000}`;
const HOST = '198.51.100.9';
const PEER = '198.51.100.10';
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });
sh('ip', ['netns', 'add', NS]);
const server = (() => {
  sh('ip', ['link', 'add', VETH, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS]);
  sh('ip', ['addr', 'add', `${HOST}/30`, 'dev', VETH]);
  sh('ip', ['link', 'set', VETH, 'up']);
  sh('ip', ['-n', NS, 'addr', 'add', `${PEER}/30`, 'dev', 'eth0']);
  sh('ip', ['-n', NS, 'link', 'set', 'eth0', 'up']);
  sh('ip', ['-n', NS, 'route', 'add', 'default', 'via', HOST]);
  const code = `
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = ${SIZE}
        self.send_response(200); self.send_header('content-length', str(n)); self.end_headers()
        chunk = b'x' * 65536
        while n > 0:
            self.wfile.write(chunk[:min(n, 65536)]); n -= 65536
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', 8080), H).serve_forever()`;
  return spawn('ip', ['netns', 'exec', NS, 'python3', '-c', code], { stdio: 'ignore' });
})();

const d = await startDaemon(['--pool-size', '0', '--snapshots', 'off', '--egress-dns', '127.0.0.1:9']);
const post = (path: string, body: unknown) => http(d, 'POST', path, JSON.stringify(body), { 'content-type': 'application/json' });
const download = `
import time, urllib.request
for i in range(100):
    try:
        urllib.request.urlopen('http://${PEER}:8080/', timeout=5).read(1); break
    except Exception: time.sleep(0.1)
t = time.monotonic(); n = len(urllib.request.urlopen('http://${PEER}:8080/', timeout=120).read()); dt = time.monotonic() - t
print(n, dt)`;
try {
  for (const rate of [RATE, undefined]) {
    const c = await post('/sandboxes', { network: { allow: [`${PEER}/32`], ...(rate && { rate_mbit: rate }) } });
    if (c.status !== 201) throw new Error(c.text);
    const r = await post(`/sandboxes/${c.json.id}/exec`, { code: download, timeout_ms: 180_000 });
    const [n, dt] = String(r.json.stdout).trim().split(' ').map(Number) as [number, number];
    console.log(`rate_mbit ${String(rate ?? 'none').padEnd(5)} ${n} bytes in ${dt.toFixed(2)} s = ${((n * 8) / dt / 1e6).toFixed(1)} Mbit/s (timed in the guest)`);
    await http(d, 'DELETE', `/sandboxes/${c.json.id}`);
  }
} finally {
  await d.stop();
  server.kill('SIGKILL');
  try { sh('ip', ['netns', 'del', NS]); } catch { /* gone */ }
  try { sh('ip', ['link', 'del', VETH]); } catch { /* gone with its peer */ }
}

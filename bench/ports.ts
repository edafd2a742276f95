// Exposed ports (docs/network.md "Ports") against a direct loopback connection, side by side in
// one run: the same server (test/fixtures/port-server.py, python's http.server) on the host at
// 127.0.0.1, and in a sandbox reached through the daemon's path and through its TCP listener.
// Latency: sequential small GETs (keep-alive clients; through the path each request is a new
// channel to the guest). Throughput: one download and one upload of SIZE MiB each way.
// `node bench/ports.ts [requests=50] [size_mib=32]`. Prints figures; asserts nothing.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { startDaemon, http, freePort } from '../test/helpers/daemon.ts';
import { median, percentile, fmt } from './stats.ts';

const N = Number(process.argv[2] ?? 50);
const SIZE = Number(process.argv[3] ?? 32) << 20;
const SERVER = new URL('../test/fixtures/port-server.py', import.meta.url);

const hostPort = await freePort();
const direct = spawn('python3', [SERVER.pathname, String(hostPort)], { stdio: 'ignore' });
const d = await startDaemon(['--pool-size', '0']);
const post = (path: string, body: unknown) => http(d, 'POST', path, JSON.stringify(body), { 'content-type': 'application/json' });
let id = '';
try {
  id = (await post('/sandboxes', { language_pack: 'python' })).json.id;
  await http(d, 'PUT', `/sandboxes/${id}/files?path=/root/srv.py`, readFileSync(SERVER));
  await post(`/sandboxes/${id}/exec`, { argv: ['python3', '/root/srv.py', '8000'], background: true });
  const probe = `import socket,time\nfor i in range(300):\n    try:\n        socket.create_connection(('127.0.0.1', 8000), 1).close(); break\n    except OSError: time.sleep(0.05)`;
  await post(`/sandboxes/${id}/exec`, { code: probe, timeout_ms: 60_000 });
  const port = (await post(`/sandboxes/${id}/ports`, { port: 8000, tcp: true })).json;
  const bases = {
    'direct loopback (host python)': `http://127.0.0.1:${hostPort}`,
    'daemon path /sandboxes/{id}/ports/8000/': `${d.url}${port.path.replace(/\/$/, '')}`,
    'TCP listener 127.0.0.1:N': `http://${port.host}`,
  };
  for (let i = 0; i < 100 && !(await fetch(`${bases['direct loopback (host python)']}/`).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 50));

  const lat: Record<string, number[]> = {};
  for (const name of Object.keys(bases)) lat[name] = [];
  for (let i = 0; i < N; i++) {
    for (const [name, base] of Object.entries(bases)) { // interleaved: load hits all three alike
      const t0 = performance.now();
      const r = await fetch(`${base}/small`);
      await r.arrayBuffer();
      lat[name]!.push(performance.now() - t0);
    }
  }
  console.log(`latency of GET /small (${N} each, interleaved):`);
  const base0 = median(lat['direct loopback (host python)']!);
  for (const [name, xs] of Object.entries(lat)) {
    console.log(`  ${name.padEnd(42)} median ${fmt(median(xs)).padStart(8)}  p90 ${fmt(percentile(xs, 90)).padStart(8)}  ${(median(xs) / base0).toFixed(1)}x direct`);
  }

  console.log(`throughput, ${SIZE >> 20} MiB each way:`);
  const upBody = Buffer.alloc(SIZE, 7);
  let directDown = 0;
  let directUp = 0;
  for (const [name, base] of Object.entries(bases)) {
    let t0 = performance.now();
    const got = (await (await fetch(`${base}/bytes?n=${SIZE}`)).arrayBuffer()).byteLength;
    const down = got / 1048576 / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    const up = await upload(`${base}/upload`, upBody);
    const upRate = up / 1048576 / ((performance.now() - t0) / 1000);
    if (!directDown) { directDown = down; directUp = upRate; }
    console.log(`  ${name.padEnd(42)} down ${down.toFixed(1).padStart(7)} MiB/s (${(down / directDown).toFixed(3)}x)  up ${upRate.toFixed(1).padStart(7)} MiB/s (${(upRate / directUp).toFixed(3)}x)`);
  }
  const final = (await http(d, 'GET', `/sandboxes/${id}/ports/8000`)).json;
  console.log(`port counters: ${final.connections_total} connections, ${final.bytes_in} bytes in, ${final.bytes_out} bytes out`);
} finally {
  if (id) await http(d, 'DELETE', `/sandboxes/${id}`);
  direct.kill();
  await d.stop();
}

/** POSTs `body`; the length the server hashed. */
function upload(url: string, body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-length': String(body.length) } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => parts.push(b));
      res.on('end', () => resolve((JSON.parse(Buffer.concat(parts).toString()) as { len: number }).len));
    });
    req.on('error', reject);
    req.end(body);
  });
}

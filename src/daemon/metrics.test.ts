// The metrics wiring without VMs: a SandboxManager on the host-agent backend (the real guest agent
// as a host process) feeding DaemonMetrics, served by the real HTTP server, scraped and parsed.
// Each case reads counters from a scrape, so what is checked is what Prometheus would see.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { DaemonMetrics, type MetricsSource } from './metrics.ts';
import { buildHttpServer } from './http/server.ts';
import type { DaemonInfo } from './http/info.ts';
import type { SandboxManager } from '../sandbox/manager.ts';
import type { Backend, BootSpec, VmHandle } from '../vmm/backend.ts';
import { HostAgentBackend } from '../vmm/host-agent/host-agent-backend.ts';
import { connectUnix } from '../agent/connect.ts';
import { testManagers } from '../../test/helpers/test-manager.ts';
import { eventually } from '../../test/helpers/daemon.ts';
import { checkFamilies, labelValues, parsePromText, valueOf, type Family } from '../../test/helpers/prom-text.ts';

const managers = testManagers('emb-metrics-');
writeFileSync(join(managers.base, 'interp'), 'sh\n-c\n');
process.env.EMBERD_INTERPRETER_FILE = join(managers.base, 'interp'); // `code` runs as sh -c

function serve(manager: SandboxManager, metrics: DaemonMetrics, auth?: { token: string; tokenFile: string }): FastifyInstance {
  return buildHttpServer(manager, { bodyLimit: 1 << 20, info: () => ({}) as DaemonInfo, metrics, auth });
}

async function scrape(app: FastifyInstance, headers: Record<string, string> = {}): Promise<Map<string, Family>> {
  const res = await app.inject({ method: 'GET', url: '/metrics', headers });
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  const families = parsePromText(res.body);
  checkFamilies(families, 'emberd_');
  return families;
}

const post = (app: FastifyInstance, url: string, body: unknown, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url, payload: JSON.stringify(body), headers });

test('creates, execs by outcome and VM ends by reason are counted; gauges follow the sandboxes', async () => {
  const metrics = new DaemonMetrics();
  const m = managers.make({ observer: metrics, sandboxes: { max: 4 } });
  const app = serve(m, metrics);

  const created = await post(app, '/sandboxes', {});
  assert.equal(created.statusCode, 201, created.body);
  const id = created.json().id as string;
  assert.equal((await post(app, '/sandboxes', { language_pack: 'cobol' })).statusCode, 400);
  assert.equal((await post(app, '/sandboxes', { vcpus: 8 })).statusCode, 400);

  const exec = async (body: object, accept?: string) => {
    const r = await post(app, `/sandboxes/${id}/exec`, body, accept ? { accept } : {});
    assert.equal(r.statusCode, 200, r.body);
    return r;
  };
  assert.equal((await exec({ code: 'true' })).json().exit_code, 0);
  assert.equal((await exec({ code: 'exit 3' })).json().exit_code, 3);
  assert.equal((await exec({ argv: ['sleep', '10'], timeout_ms: 200 })).json().timed_out, true);
  assert.match((await exec({ code: 'echo hi' }, 'application/x-ndjson')).body, /"exit_code":0/);
  // Refused before it runs (above --exec-max-timeout): no exec happened.
  assert.equal((await post(app, `/sandboxes/${id}/exec`, { code: 'true', timeout_ms: 10_000_000 })).statusCode, 400);

  let f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_sandboxes', { state: 'ready', pack: 'shell' }), 1);
  assert.equal(valueOf(f, 'emberd_sandboxes', { state: 'ready', pack: 'python' }), 0);
  assert.equal(valueOf(f, 'emberd_sandbox_create_duration_seconds_count', { boot_mode: 'cold', pack: 'shell' }), 1);
  assert.equal(valueOf(f, 'emberd_sandbox_create_failures_total', { code: 'UNKNOWN_LANGUAGE_PACK' }), 1);
  assert.equal(valueOf(f, 'emberd_sandbox_create_failures_total', { code: 'INVALID_REQUEST' }), 1);
  for (const [outcome, n] of [['ok', 2], ['nonzero_exit', 1], ['timeout', 1]] as const) {
    assert.equal(valueOf(f, 'emberd_execs_total', { kind: 'exec', outcome }), n, outcome);
    assert.equal(valueOf(f, 'emberd_exec_duration_seconds_count', { kind: 'exec', outcome }), n, outcome);
  }
  assert.equal(valueOf(f, 'emberd_execs_total', { kind: 'exec', outcome: 'error' }), undefined);
  // The timed-out exec's duration was recorded (its value is the guest's own measure: no timing is asserted).
  assert.ok(valueOf(f, 'emberd_exec_duration_seconds_sum', { kind: 'exec', outcome: 'timeout' })! > 0);

  // An exec whose VM dies under it ends in error; the VM counts as crashed.
  const sb = m.get(id);
  const marker = join(managers.base, 'exec-started');
  const running = post(app, `/sandboxes/${id}/exec`, { code: `touch ${marker}; sleep 30` }); // the host-agent "guest" runs on the host
  await eventually(() => existsSync(marker), 10_000, 'the exec started');
  const vm = sb.vm!;
  process.kill(vm.pid, 'SIGKILL');
  assert.equal((await running).statusCode, 502);
  await vm.exited; // the launcher's exit handler, registered first, has run
  await eventually(() => sb.state === 'failed', 10_000, 'the sandbox failed');
  f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_execs_total', { kind: 'exec', outcome: 'error' }), 1);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'crashed' }), 1);
  assert.equal(valueOf(f, 'emberd_sandboxes', { state: 'failed', pack: 'shell' }), 1);

  // DELETE, and a deadline passing.
  assert.equal((await app.inject({ method: 'DELETE', url: `/sandboxes/${id}` })).statusCode, 204);
  const second = (await post(app, '/sandboxes', { timeout_s: 1 })).json().id as string;
  const third = (await post(app, '/sandboxes', {})).json().id as string;
  assert.equal((await app.inject({ method: 'DELETE', url: `/sandboxes/${third}` })).statusCode, 204);
  await eventually(() => m.list().length === 0, 10_000, `sandbox ${second} expired`);
  f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'deleted' }), 1);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'expired' }), 1);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'crashed' }), 1);
  assert.equal(valueOf(f, 'emberd_sandbox_create_duration_seconds_count', { boot_mode: 'cold', pack: 'shell' }), 3);
  for (const state of ['creating', 'ready', 'destroying', 'failed']) assert.equal(valueOf(f, 'emberd_sandboxes', { state, pack: 'shell' }), 0, state);
  assert.equal(valueOf(f, 'emberd_sandboxes_limit'), 4);
  assert.equal(valueOf(f, 'emberd_pool_target_sandboxes', { pack: 'shell' }), 0);

  // HTTP: the route pattern, never the URL; a URL no route matches is "unmatched".
  assert.equal((await app.inject({ method: 'GET', url: '/no/such/route' })).statusCode, 404);
  assert.equal((await app.inject({ method: 'GET', url: `/sandboxes/${id}` })).statusCode, 404);
  f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_http_request_duration_seconds_count', { method: 'POST', route: '/sandboxes/:id/exec', status_code: '200' }), 4);
  assert.equal(valueOf(f, 'emberd_http_request_duration_seconds_count', { method: 'POST', route: '/sandboxes', status_code: '201' }), 3);
  assert.equal(valueOf(f, 'emberd_http_request_duration_seconds_count', { method: 'POST', route: '/sandboxes', status_code: '400' }), 2);
  assert.equal(valueOf(f, 'emberd_http_request_duration_seconds_count', { method: 'GET', route: '/sandboxes/:id', status_code: '404' }), 1);
  assert.equal(valueOf(f, 'emberd_http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status_code: '404' }), 1);
  assert.ok(valueOf(f, 'emberd_http_request_duration_seconds_count', { method: 'GET', route: '/metrics', status_code: '200' })! >= 3);
  assert.ok(valueOf(f, 'process_resident_memory_bytes')! > 0);
  assert.deepEqual(labelValues(f).filter((v) => /sb_/.test(v)), [], 'no label holds a sandbox id');
  await app.close();
});

test('the warm pool: a create from it is boot_mode pool, its gauges count ready sandboxes, a sandbox that fails its re-handshake is discarded, shutdown ends them all', async () => {
  const metrics = new DaemonMetrics({ processMetrics: false });
  const m = managers.make({ observer: metrics, sandboxes: { poolSize: 1 } });
  const app = serve(m, metrics);
  m.start();
  const ready = (pack: string) => m.status().pool?.[pack]?.ready === 1;
  await eventually(() => ready('shell') && ready('python'), 10_000, 'pool filled');
  let f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_pool_target_sandboxes', { pack: 'shell' }), 1);
  assert.equal(valueOf(f, 'emberd_pool_ready_sandboxes', { pack: 'shell' }), 1);
  assert.equal(valueOf(f, 'emberd_pool_ready_sandboxes', { pack: 'python' }), 1);
  assert.equal(valueOf(f, 'emberd_sandboxes', { state: 'ready', pack: 'shell' }), 0, 'pooled sandboxes are not in emberd_sandboxes');
  // The host-agent "guest" cannot apply pids_max: the pooled sandbox refuses its re-handshake and
  // is discarded, and the cold boot the create falls back to fails the same way.
  assert.equal((await post(app, '/sandboxes', { pids_max: 100 })).statusCode, 500);
  await eventually(() => ready('shell'), 10_000, 'pool refilled');
  f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'pool_discarded' }), 1);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'boot_failed' }), 1);
  assert.equal(valueOf(f, 'emberd_sandbox_create_failures_total', { code: 'BOOT_FAILED' }), 1);
  assert.equal((await post(app, '/sandboxes', {})).statusCode, 201);
  await eventually(() => ready('shell'), 10_000, 'pool refilled');
  f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_sandbox_create_duration_seconds_count', { boot_mode: 'pool', pack: 'shell' }), 1);
  assert.equal(valueOf(f, 'emberd_sandbox_create_duration_seconds_count', { boot_mode: 'cold', pack: 'shell' }), undefined, 'pool fills are not creates');
  assert.equal(valueOf(f, 'emberd_sandboxes', { state: 'ready', pack: 'shell' }), 1);
  assert.equal(valueOf(f, 'emberd_pool_ready_sandboxes', { pack: 'shell' }), 1);
  await m.shutdown();
  f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'shutdown' }), 3); // the taken one, and each pack's pooled one
  assert.equal(valueOf(f, 'process_resident_memory_bytes'), undefined, 'process metrics off');
  await app.close();
});

test('session cells count as kind session; a refused cell (a bad session name) counts as nothing', async () => {
  const metrics = new DaemonMetrics({ processMetrics: false });
  const m = managers.make({ observer: metrics, sandboxes: { defaultPack: 'python' } });
  const app = serve(m, metrics);
  const id = (await post(app, '/sandboxes', {})).json().id as string;
  const cell = (code: string, session = 'main') => post(app, `/sandboxes/${id}/exec`, { code, session });
  assert.equal((await cell('x = 6*7\nx')).json().value, '42');
  assert.equal((await cell('1/0')).json().exit_code, 1);
  assert.equal((await cell('x', 'no spaces allowed')).statusCode, 400);
  const f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_execs_total', { kind: 'session', outcome: 'ok' }), 1);
  assert.equal(valueOf(f, 'emberd_execs_total', { kind: 'session', outcome: 'nonzero_exit' }), 1);
  assert.equal(valueOf(f, 'emberd_execs_total', { kind: 'session', outcome: 'error' }), undefined);
  assert.equal(valueOf(f, 'emberd_sandbox_create_duration_seconds_count', { boot_mode: 'cold', pack: 'python' }), 1);
  await m.destroy(id);
  await app.close();
});

/** A "guest" that takes the control connection and never answers: a boot that times out. */
class SilentBackend implements Backend {
  readonly name = 'host-agent' as const;
  readonly info = new HostAgentBackend().info;
  async boot(spec: BootSpec): Promise<VmHandle> {
    mkdirSync(spec.runDir, { recursive: true });
    const path = join(spec.runDir, 's.sock');
    const server = createServer(() => {}).listen(path);
    const control = await connectUnix(path, spec.deadline);
    let done!: () => void;
    const exited = new Promise<void>((r) => { done = r; }).then(() => ({ code: 0, signal: null, reason: 'stopped' }));
    return {
      pid: process.pid, control, exited, consoleTail: () => '', resources: () => ({ pid: process.pid, paths: [path] }),
      stop: async () => { control.destroy(); server.close(); rmSync(path, { force: true }); done(); return exited; },
    };
  }
}

test('a boot that times out counts as a failed create and a boot_failed VM end', async () => {
  const metrics = new DaemonMetrics({ processMetrics: false });
  const m = managers.make({ observer: metrics, backend: new SilentBackend(), sandboxes: { bootTimeoutMs: 300 } });
  const app = serve(m, metrics);
  assert.equal((await post(app, '/sandboxes', {})).statusCode, 504);
  const f = await scrape(app);
  assert.equal(valueOf(f, 'emberd_sandbox_create_failures_total', { code: 'BOOT_TIMEOUT' }), 1);
  assert.equal(valueOf(f, 'emberd_vmm_exits_total', { reason: 'boot_failed' }), 1);
  assert.equal(valueOf(f, 'emberd_sandbox_create_duration_seconds_count', { boot_mode: 'cold', pack: 'shell' }), undefined);
  await app.close();
});

test('/metrics is under the daemon\'s auth; each DaemonMetrics counts only its own server', async () => {
  const token = 'a'.repeat(64);
  const [a, b] = [new DaemonMetrics({ processMetrics: false }), new DaemonMetrics({ processMetrics: false })];
  const m = managers.make();
  const appA = serve(m, a, { token, tokenFile: '/nonexistent/token' });
  const appB = serve(m, b);
  const denied = await appA.inject({ method: 'GET', url: '/metrics' });
  assert.equal(denied.statusCode, 401);
  assert.equal(denied.json().error.code, 'UNAUTHORIZED');
  for (let i = 0; i < 3; i++) await appB.inject({ method: 'GET', url: '/packs' });
  const fa = await scrape(appA, { authorization: `Bearer ${token}` });
  const fb = await scrape(appB);
  assert.equal(valueOf(fa, 'emberd_http_request_duration_seconds_count', { method: 'GET', route: '/metrics', status_code: '401' }), 1);
  assert.equal(valueOf(fa, 'emberd_http_request_duration_seconds_count', { method: 'GET', route: '/packs', status_code: '200' }), undefined);
  assert.equal(valueOf(fb, 'emberd_http_request_duration_seconds_count', { method: 'GET', route: '/packs', status_code: '200' }), 3);
  await Promise.all([appA.close(), appB.close()]);
});

test('golden snapshot gauges: ready or not and bytes per pack and shape, a state set; none when snapshots are off', async () => {
  const metrics = new DaemonMetrics({ processMetrics: false });
  let snapshots: ReturnType<MetricsSource['status']>['snapshots'] = {
    shell: { status: 'ready', key: 'k1', bytes: 5_000_000, build_ms: 900, error: null },
    'python@2x512': { status: 'building', key: 'k2', bytes: null, build_ms: null, error: null },
  };
  metrics.watch({
    list: () => [],
    packNames: () => ['shell', 'python'],
    status: () => ({ snapshots, pool: null, admission: { boots: { max: 2, running: 1, queued: 3 }, memory_reserve_mib: 0, host_available_mib: 1000 } }),
    config: { sandboxes: { poolSize: 0, machine: { vcpus: 1, memoryMib: 256 }, max: 8 } },
  });
  let f = parsePromText((await metrics.text()).body);
  checkFamilies(f, 'emberd_');
  assert.equal(valueOf(f, 'emberd_snapshot_ready', { pack: 'shell', shape: '1x256' }), 1);
  assert.equal(valueOf(f, 'emberd_snapshot_bytes', { pack: 'shell', shape: '1x256' }), 5_000_000);
  assert.equal(valueOf(f, 'emberd_snapshot_ready', { pack: 'python', shape: '2x512' }), 0);
  assert.equal(valueOf(f, 'emberd_snapshot_bytes', { pack: 'python', shape: '2x512' }), undefined);
  assert.equal(valueOf(f, 'emberd_snapshot_status', { pack: 'python', shape: '2x512', status: 'building' }), 1);
  assert.equal(valueOf(f, 'emberd_snapshot_status', { pack: 'python', shape: '2x512', status: 'ready' }), 0);
  assert.equal(valueOf(f, 'emberd_boots_queued'), 3);
  assert.equal(valueOf(f, 'emberd_boots_running'), 1);
  snapshots = null;
  f = parsePromText((await metrics.text()).body);
  assert.equal([...f.get('emberd_snapshot_ready')!.samples].length, 0);
});

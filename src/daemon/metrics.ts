// The daemon's Prometheus metrics (GET /metrics, docs/metrics.md), on prom-client. One Registry
// per daemon, never prom-client's global one, so that several daemons or servers in one process
// (tests) each count their own. Two kinds of metric: gauges that mirror state are read from the
// manager when scraped (collect callbacks: always current, nothing to keep in step), and
// counters and histograms are fed by the manager as things happen (SandboxObserver) and by the
// HTTP layer (observeRequest). No label ever holds a sandbox id: label sets stay bounded.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SandboxObserver, BootMode, ExecKind, ExecOutcome, VmEndReason } from '../sandbox/observer.ts';
import type { AdmissionView } from '../sandbox/manager.ts';
import type { PoolView } from '../sandbox/pool.ts';
import type { SandboxState } from '../sandbox/sandbox.ts';
import type { SnapshotView } from '../sandbox/snapshots.ts';
import type { MachineConfig } from '../vmm/backend.ts';
import { VERSION } from '../version.ts';
import type { EgressTotals } from '../sandbox/egress/egress.ts';

/** What the gauges read at each scrape: SandboxManager has all of it. */
export interface MetricsSource {
  list(): { state: SandboxState; pack: string }[];
  packNames(): string[];
  status(): { snapshots: Record<string, SnapshotView> | null; pool: Record<string, PoolView> | null; admission: AdmissionView };
  /** Egress counters summed over every sandbox with `network`, live and gone (undefined: no egress). */
  egressTotals?(): Promise<EgressTotals> | undefined;
  readonly config: { readonly sandboxes: { readonly poolSize: number; readonly machine: MachineConfig; readonly max: number } };
}

/** States a listed sandbox can be in ('gone' ones are no longer listed). */
const STATES: SandboxState[] = ['creating', 'ready', 'destroying', 'failed'];

// Buckets in seconds. Creates span a pool take (milliseconds) to a cold boot under TCG (tens of
// seconds); execs a forkserver run (milliseconds) to the longest --exec-max-timeout.
const CREATE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120];
const EXEC_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900];
const HTTP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export interface MetricsOptions {
  /** prom-client's process_* and nodejs_* metrics (default on). */
  processMetrics?: boolean;
}

export class DaemonMetrics implements SandboxObserver {
  readonly registry = new Registry();
  private source: MetricsSource | undefined;
  /** manager.status() read once per scrape (it reads /proc/meminfo), while text() runs. */
  private scrape: { status?: ReturnType<MetricsSource['status']> } | undefined;
  private readonly createDuration: Histogram<'boot_mode' | 'pack'>;
  private readonly createFailures: Counter<'code'>;
  private readonly execDuration: Histogram<'kind' | 'outcome'>;
  private readonly execs: Counter<'kind' | 'outcome'>;
  private readonly vmExits: Counter<'reason'>;
  private readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>;

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: 'emberd_build_info', help: 'Always 1; the emberd version as a label', labelNames: ['version'], registers }).set({ version: VERSION }, 1);

    this.createDuration = new Histogram({
      name: 'emberd_sandbox_create_duration_seconds', help: 'Successful creates, from the request to a ready sandbox (admission wait and boot included), by boot mode',
      labelNames: ['boot_mode', 'pack'], buckets: CREATE_BUCKETS, registers,
    });
    this.createFailures = new Counter({ name: 'emberd_sandbox_create_failures_total', help: 'Creates that failed or were refused, by error code', labelNames: ['code'], registers });
    this.execDuration = new Histogram({
      name: 'emberd_exec_duration_seconds', help: 'Execs and session cells, from acceptance to their end, by outcome (ok, nonzero_exit, timeout, error)',
      labelNames: ['kind', 'outcome'], buckets: EXEC_BUCKETS, registers,
    });
    this.execs = new Counter({ name: 'emberd_execs_total', help: 'Execs and session cells that ended, by outcome (ok, nonzero_exit, timeout, error)', labelNames: ['kind', 'outcome'], registers });
    this.vmExits = new Counter({ name: 'emberd_vmm_exits_total', help: 'VMM processes that exited, by why (deleted, expired, shutdown, crashed, agent_lost, boot_failed, pool_discarded, restore_failed, golden)', labelNames: ['reason'], registers });
    this.httpDuration = new Histogram({
      name: 'emberd_http_request_duration_seconds', help: 'HTTP requests answered, by method, route pattern and status code',
      labelNames: ['method', 'route', 'status_code'], buckets: HTTP_BUCKETS, registers,
    });

    const self = this;
    // Counters read at scrape time: the totals only grow (a gone sandbox's last counts are kept).
    const egressCounter = (name: string, help: string, labelNames: string[], set: (c: Counter<string>, t: EgressTotals) => void) => new Counter({
      name, help, labelNames, registers,
      async collect() {
        const t = await self.source?.egressTotals?.();
        if (!t) return;
        this.reset();
        set(this, t);
      },
    });
    egressCounter('emberd_egress_bytes_total', 'IP bytes of sandboxes with "network", by direction (out: sent by guests; in: replies to them)', ['direction'], (c, t) => {
      c.inc({ direction: 'out' }, t.bytesOut);
      c.inc({ direction: 'in' }, t.bytesIn);
    });
    egressCounter('emberd_egress_refused_connections_total', 'Connection attempts of sandboxes refused by their allowlist', [], (c, t) => c.inc(t.refused));
    egressCounter('emberd_egress_dns_queries_total', 'Queries the sandboxes\' resolvers answered or refused, by outcome', ['outcome'], (c, t) => {
      c.inc({ outcome: 'answered' }, t.dnsAnswered);
      c.inc({ outcome: 'refused' }, t.dnsRefused);
    });
    new Gauge({
      name: 'emberd_sandboxes', help: 'Sandboxes the daemon holds, by state and pack (warm pool ones are in emberd_pool_ready_sandboxes)', labelNames: ['state', 'pack'], registers,
      collect() {
        this.reset();
        const src = self.source;
        if (!src) return;
        const list = src.list();
        for (const pack of new Set([...src.packNames(), ...list.map((s) => s.pack)])) for (const state of STATES) this.set({ state, pack }, 0);
        for (const s of list) this.inc({ state: s.state, pack: s.pack });
      },
    });
    new Gauge({
      name: 'emberd_sandboxes_limit', help: 'Live sandboxes allowed at once (--max-sandboxes)', registers,
      collect() { if (self.source) this.set(self.source.config.sandboxes.max); },
    });
    this.poolGauge('emberd_pool_target_sandboxes', 'Ready sandboxes the warm pool keeps per pack (--pool-size)', () => this.source!.config.sandboxes.poolSize);
    this.poolGauge('emberd_pool_ready_sandboxes', 'Ready sandboxes waiting in the warm pool, by pack', (v) => v?.ready ?? 0);
    this.poolGauge('emberd_pool_filling_sandboxes', 'Warm pool sandboxes booting, by pack', (v) => v?.filling ?? 0);
    this.snapshotGauge('emberd_snapshot_ready', 'Whether the golden snapshot of a pack in a machine shape (VCPUSxMIB) is ready to restore from (1) or not (0)', (v) => [[{}, v.status === 'ready' ? 1 : 0]]);
    this.snapshotGauge('emberd_snapshot_bytes', 'Size of a ready golden snapshot', (v) => (v.bytes === null ? [] : [[{}, v.bytes]]));
    this.snapshotGauge('emberd_snapshot_status', 'Golden snapshot state, 1 for the current one (missing, building, ready, failed)', (v) =>
      (['missing', 'building', 'ready', 'failed'] as const).map((status) => [{ status }, v.status === status ? 1 : 0]), ['status']);
    const admission = (name: string, help: string, value: (a: AdmissionView) => number) => new Gauge({
      name, help, registers,
      collect() { if (self.source) this.set(value(self.status().admission)); },
    });
    admission('emberd_boot_slots', 'VMs that may boot at once (--max-concurrent-boots)', (a) => a.boots.max);
    admission('emberd_boots_running', 'VMs booting now (creates, pool fills, goldens)', (a) => a.boots.running);
    admission('emberd_boots_queued', 'Boots waiting for a slot', (a) => a.boots.queued);
  }

  /** The manager whose state the gauges show (it can only be made after this, as it takes the observer). */
  watch(source: MetricsSource): void {
    this.source = source;
  }

  /** The text exposition format, and its Content-Type. */
  async text(): Promise<{ body: string; contentType: string }> {
    this.scrape = {};
    try {
      return { body: await this.registry.metrics(), contentType: this.registry.contentType };
    } finally {
      this.scrape = undefined;
    }
  }

  // ---- SandboxObserver --------------------------------------------------------------------------

  sandboxCreated(bootMode: BootMode, pack: string, seconds: number): void {
    this.createDuration.observe({ boot_mode: bootMode, pack }, seconds);
  }

  createFailed(code: string): void {
    this.createFailures.inc({ code });
  }

  execDone(kind: ExecKind, outcome: ExecOutcome, seconds: number): void {
    this.execDuration.observe({ kind, outcome }, seconds);
    this.execs.inc({ kind, outcome });
  }

  vmEnded(reason: VmEndReason): void {
    this.vmExits.inc({ reason });
  }

  // ---- HTTP ---------------------------------------------------------------------------------------

  /** One answered request; `route` is the route's pattern (never the URL, which holds ids). */
  observeRequest(method: string, route: string, statusCode: number, seconds: number): void {
    this.httpDuration.observe({ method, route, status_code: String(statusCode) }, seconds);
  }

  // ---- internals ----------------------------------------------------------------------------------

  private status(): ReturnType<MetricsSource['status']> {
    if (!this.scrape) return this.source!.status();
    return (this.scrape.status ??= this.source!.status());
  }

  /** A per-pack gauge of the warm pool: every usable pack, 0 where the pool holds none (or is off). */
  private poolGauge(name: string, help: string, value: (v: PoolView | undefined) => number): void {
    const self = this;
    new Gauge({
      name, help, labelNames: ['pack'], registers: [this.registry],
      collect() {
        this.reset();
        const src = self.source;
        if (!src) return;
        const pool = self.status().pool ?? {};
        for (const pack of new Set([...src.packNames(), ...Object.keys(pool)])) this.set({ pack }, value(pool[pack]));
      },
    });
  }

  /** A gauge per golden snapshot, labelled by pack and shape; none when snapshots are off. */
  private snapshotGauge(name: string, help: string, values: (v: SnapshotView) => [Record<string, string>, number][], extra: string[] = []): void {
    const self = this;
    new Gauge({
      name, help, labelNames: ['pack', 'shape', ...extra], registers: [this.registry],
      collect() {
        this.reset();
        const src = self.source;
        if (!src) return;
        const { vcpus, memoryMib } = src.config.sandboxes.machine;
        for (const [golden, view] of Object.entries(self.status().snapshots ?? {})) {
          // goldenName(): the pack alone in the default shape, pack@VCPUSxMIB in another.
          const [pack, shape = `${vcpus}x${memoryMib}`] = golden.split('@') as [string, string?];
          for (const [labels, v] of values(view)) this.set({ pack, shape, ...labels }, v);
        }
      },
    });
  }
}

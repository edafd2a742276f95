// `emberctl test`: the full create -> inspect -> exec -> delete cycle against a live daemon.
import type { EmberdClient } from '../sdk/client.ts';
import { EmberdApiError } from '../sdk/client.ts';

interface Step { name: string; ok: boolean; ms: number; detail: string }

const PROBES: Record<string, { code: string; stdout: string }> = {
  python: { code: 'print(6*7)', stdout: '42\n' },
  shell: { code: 'echo $((6*7))', stdout: '42\n' },
};

export async function runSelfTest(client: EmberdClient, pack: string, asJson: boolean): Promise<boolean> {
  const steps: Step[] = [];
  const step = async (name: string, fn: () => Promise<string>) => {
    const t = performance.now();
    try {
      const detail = await fn();
      steps.push({ name, ok: true, ms: Math.round(performance.now() - t), detail });
      return true;
    } catch (e) {
      steps.push({ name, ok: false, ms: Math.round(performance.now() - t), detail: e instanceof EmberdApiError ? `${e.code}: ${e.message}` : (e as Error).message });
      return false;
    }
  };
  const probe = PROBES[pack] ?? PROBES.shell!;
  let id = '';
  if (await step('create', async () => { id = (await client.createSandbox({ language_pack: pack })).id; return id; })) {
    await step('inspect', async () => {
      const d = await client.getSandbox(id);
      if (d.state !== 'ready') throw new Error(`state is ${d.state}, expected ready`);
      return `state ready, ${d.backend}, vmm pid ${d.vmm_pid}`;
    });
    await step('exec', async () => {
      const r = await client.exec(id, { code: probe.code });
      if (r.stdout !== probe.stdout || r.exit_code !== 0) throw new Error(`got stdout ${JSON.stringify(r.stdout)} exit ${r.exit_code}, expected ${JSON.stringify(probe.stdout)} exit 0`);
      return `stdout ${JSON.stringify(r.stdout)}, exit 0, ${r.duration_ms} ms in the guest`;
    });
    await step('exec exit code', async () => {
      const r = await client.exec(id, { argv: ['sh', '-c', 'echo oops >&2; exit 3'] });
      if (r.exit_code !== 3 || r.stderr !== 'oops\n') throw new Error(`got exit ${r.exit_code} stderr ${JSON.stringify(r.stderr)}`);
      return 'exit 3 and stderr as expected';
    });
    await step('delete', async () => { await client.deleteSandbox(id); return 'deleted'; });
    await step('gone', async () => {
      try { await client.getSandbox(id); } catch (e) { if (e instanceof EmberdApiError && e.code === 'SANDBOX_NOT_FOUND') return '404 SANDBOX_NOT_FOUND'; throw e; }
      throw new Error('the sandbox still exists after DELETE');
    });
  }
  const ok = steps.every((s) => s.ok);
  if (asJson) console.log(JSON.stringify({ ok, steps }, null, 2));
  else {
    for (const s of steps) console.log(`${s.ok ? 'ok  ' : 'FAIL'} ${s.name.padEnd(15)} ${String(s.ms).padStart(6)} ms  ${s.detail}`);
    console.log(ok ? 'emberd works' : 'emberd self-test FAILED');
  }
  return ok;
}

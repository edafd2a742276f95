#!/usr/bin/env node
// emberctl: a command line for the emberd API, built on the SDK. Human output by default,
// --json for scripts.
import { createReadStream, createWriteStream, readFileSync, rmSync } from 'node:fs';
import { basename } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Command, Option } from 'commander';
import { EmberdApiError, EmberdClient, resolveToken } from '../sdk/client.ts';
import { VERSION } from '../version.ts';
import { runSelfTest } from './self-test.ts';
import { runShell } from './shell.ts';

const program = new Command('emberctl')
  .description('control an emberd daemon: create sandboxes, run code in them, delete them')
  .version(VERSION)
  .addOption(new Option('--addr <host:port>', 'daemon address').env('EMBERD_ADDR').default('127.0.0.1:7777'))
  .addOption(new Option('--token-file <path>', 'the daemon\'s bearer token file (default: the daemon\'s default; EMBERD_TOKEN gives the token itself)').env('EMBERD_TOKEN_FILE'))
  .option('--json', 'print JSON instead of text', false);

const client = () => {
  const o = program.opts<{ addr: string; tokenFile?: string }>();
  return new EmberdClient(o.addr, { tokenFile: o.tokenFile });
};
const json = () => program.opts<{ json: boolean }>().json;
/** KEY=VALUE words -> an env object (the value may hold more "="). */
const envOf = (words: string[]) => Object.fromEntries(words.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
const print = (value: unknown, human: () => string) => console.log(json() ? JSON.stringify(value, null, 2) : human());

program.command('create')
  .description('boot a new sandbox and print its id once it is ready')
  .option('--pack <name>', 'language pack (python, shell)')
  .option('--timeout <seconds>', 'destroy it after this long (default: the daemon\'s --sandbox-timeout)', (v) => Number(v))
  .option('--vcpus <n>', 'vCPUs (default: the daemon\'s --vcpus)', (v) => Number(v))
  .option('--memory <mib>', 'memory in MiB (default: the daemon\'s --memory)', (v) => Number(v))
  .option('--disk <mib>', 'writable disk in MiB (default: the daemon\'s --disk)', (v) => Number(v))
  .option('--pids-max <n>', 'processes + threads its execs may have (default: the daemon\'s --pids-max)', (v) => Number(v))
  .option('--env <KEY=VALUE>', 'a variable every exec inherits (repeatable)', (v, all: string[] = []) => [...all, v])
  .addOption(new Option('--on-timeout <action>', 'at the deadline, destroy it or pause it (default destroy)').choices(['destroy', 'pause']))
  .option('--no-auto-resume', 'calls on it while paused fail with SANDBOX_PAUSED instead of resuming it')
  .action(async (o: { pack?: string; timeout?: number; vcpus?: number; memory?: number; disk?: number; pidsMax?: number; env?: string[]; onTimeout?: 'destroy' | 'pause'; autoResume: boolean }) => {
    const sb = await client().createSandbox({
      language_pack: o.pack,
      timeout_s: o.timeout,
      vcpus: o.vcpus,
      memory_mib: o.memory,
      disk_mib: o.disk,
      pids_max: o.pidsMax,
      env: o.env ? envOf(o.env) : undefined,
      on_timeout: o.onTimeout,
      auto_resume: o.autoResume ? undefined : false,
    });
    print(sb, () => sb.id);
  });

program.command('pause')
  .description('save a sandbox whole to the daemon\'s disk and end its VM; prints its size on disk and how long it took')
  .argument('<id>', 'sandbox id')
  .action(async (id: string) => {
    const sb = await client().pauseSandbox(id);
    print(sb, () => `paused ${sb.id}: ${sb.paused ? `${(sb.paused.bytes / 1048576).toFixed(1)} MiB in ${sb.paused.pause_ms} ms, kept until ${sb.paused.expires_at ?? 'deleted'}` : sb.state}`);
  });

program.command('resume')
  .description('bring a paused sandbox back as it was (a running one is left as is)')
  .argument('<id>', 'sandbox id')
  .option('--timeout <seconds>', 'a new lifetime from now (default: the one it had)', (v) => Number(v))
  .action(async (id: string, o: { timeout?: number }) => {
    const sb = await client().resumeSandbox(id, { timeout_s: o.timeout });
    print(sb, () => `resumed ${sb.id} in ${sb.boot_ms ?? '-'} ms; expires ${sb.expires_at ?? 'never'}`);
  });

program.command('fork')
  .description('start new sandboxes from a sandbox\'s state now (the parent goes on); prints their ids, one a line')
  .argument('<id>', 'sandbox id')
  .option('--count <n>', 'how many (1-16)', (v) => Number(v), 1)
  .action(async (id: string, o: { count: number }) => {
    const forks = await client().forkSandbox(id, { count: o.count });
    print(forks, () => forks.map((f) => f.id).join('\n'));
  });

program.command('timeout')
  .description('reset a sandbox\'s deadline to now + SECONDS (0: none, if the daemon allows it); prints when it expires')
  .argument('<id>', 'sandbox id')
  .argument('<seconds>', 'seconds from now', (v) => Number(v))
  .action(async (id: string, seconds: number) => {
    const sb = await client().setTimeout(id, seconds);
    print(sb, () => sb.expires_at ?? 'no deadline');
  });

program.command('exec')
  .description('run code in a sandbox; "-" reads the code from stdin; exits with the code\'s status')
  .argument('<id>', 'sandbox id')
  .argument('<code>', 'code for the sandbox\'s interpreter, or - for stdin')
  .option('--timeout <ms>', 'timeout in milliseconds', (v) => Number(v))
  .option('--env <KEY=VALUE>', 'environment variable (repeatable)', (v, all: string[] = []) => [...all, v])
  .option('--cwd <dir>', 'working directory in the sandbox')
  .option('--session <name>', 'run in this persistent interpreter (python); prints the value of a final expression')
  .option('--stream', 'print output as it happens')
  .option('--background', 'start it in the background and print its process id')
  .action(async (id: string, code: string, o: { timeout?: number; env?: string[]; cwd?: string; session?: string; stream?: boolean; background?: boolean }) => {
    const src = code === '-' ? readFileSync(0, 'utf8') : code;
    const env = o.env ? envOf(o.env) : undefined;
    const opts = { code: src, timeout_ms: o.timeout, env, cwd: o.cwd, session: o.session };
    if (o.background) {
      const pid = await client().startProcess(id, opts);
      print({ process_id: pid }, () => pid);
      return;
    }
    if (o.stream) {
      for await (const ev of client().execStream(id, opts)) {
        if (json()) console.log(JSON.stringify(ev));
        else if (ev.type === 'stdout') process.stdout.write(ev.data);
        else if (ev.type === 'stderr') process.stderr.write(ev.data);
        else if (ev.type === 'error') throw new Error(`${ev.code}: ${ev.message}`);
        else if (ev.type === 'exit') process.exitCode = ev.exit_code;
      }
      return;
    }
    const r = await client().exec(id, opts);
    if (json()) console.log(JSON.stringify(r, null, 2));
    else {
      process.stdout.write(r.stdout);
      process.stderr.write(r.stderr);
      if (r.value !== undefined && r.value !== null) process.stdout.write(`${r.value}\n`);
      if (r.timed_out) process.stderr.write(`emberctl: timed out after ${r.duration_ms} ms\n`);
      if (r.truncated) process.stderr.write('emberctl: output was truncated\n');
      if (r.session_reset) process.stderr.write('emberctl: the session was reset (its state is lost)\n');
    }
    process.exitCode = r.exit_code;
  });

program.command('shell')
  .description('open an interactive terminal in a sandbox (a login shell, or --cmd); exits with its status')
  .argument('<id>', 'sandbox id')
  .option('--cmd <command>', 'run this shell command on the terminal instead of a login shell')
  .action(async (id: string, o: { cmd?: string }) => {
    const g = program.opts<{ tokenFile?: string }>();
    process.exitCode = await runShell({ baseUrl: client().baseUrl, token: resolveToken({ tokenFile: g.tokenFile }), id, cmd: o.cmd });
  });

program.command('ps')
  .description('list a sandbox\'s background processes')
  .argument('<id>', 'sandbox id')
  .action(async (id: string) => {
    const list = await client().listProcesses(id);
    print(list, () => list.length === 0 ? 'no background processes' : list.map((p) => `${p.process_id}  ${String(p.state).padEnd(8)} exit=${p.exit_code ?? '-'}  ${p.command}`).join('\n'));
  });

program.command('expose')
  .description('expose a TCP port of a sandbox through the daemon (the server need not listen yet); prints the URL that reaches it')
  .argument('<id>', 'sandbox id')
  .argument('<port>', 'the port the server listens on in the sandbox (1-65535)', (v) => Number(v))
  .option('--tcp', 'also open a plain TCP listener on 127.0.0.1 (no auth on it; the default when the daemon runs without auth)')
  .option('--no-tcp', 'the URL only, no TCP listener')
  .action(async (id: string, port: number, o: { tcp?: boolean }) => {
    const p = await client().exposePort(id, port, { tcp: o.tcp });
    print(p, () => p.url);
    if (!json() && p.host) console.error(`emberctl: plain TCP at ${p.host}`);
  });

program.command('ports')
  .description('list the exposed ports of a sandbox: URL, TCP listener, connections open and so far, bytes in and out')
  .argument('<id>', 'sandbox id')
  .action(async (id: string) => {
    const list = await client().listPorts(id);
    print(list, () => list.length === 0 ? 'no exposed ports' : [
      'PORT   TCP                  OPEN  TOTAL  IN        OUT       URL',
      ...list.map((p) => `${String(p.port).padEnd(7)}${(p.host ?? '-').padEnd(21)}${String(p.connections).padEnd(6)}${String(p.connections_total).padEnd(7)}${String(p.bytes_in).padEnd(10)}${String(p.bytes_out).padEnd(10)}${p.url}`),
    ].join('\n'));
  });

program.command('unexpose')
  .description('close an exposed port of a sandbox and every connection through it')
  .argument('<id>', 'sandbox id')
  .argument('<port>', 'the exposed port', (v) => Number(v))
  .action(async (id: string, port: number) => {
    await client().closePort(id, port);
    print({ port, closed: true }, () => `closed port ${port} of ${id}`);
  });

program.command('inspect')
  .description('show a sandbox\'s state, backend, VMM pid and boot log tail')
  .argument('<id>', 'sandbox id')
  .action(async (id: string) => {
    const d = await client().getSandbox(id);
    print(d, () => [
      `id:            ${d.id}`,
      `state:         ${d.state}`,
      `language pack: ${d.language_pack}`,
      `backend:       ${d.backend}`,
      `created:       ${d.created_at}`,
      `boot:          ${d.boot_ms ?? '-'} ms`,
      `expires:       ${d.expires_at ?? 'never'}`,
      `on timeout:    ${d.on_timeout}, auto-resume ${d.auto_resume ? 'on' : 'off'}`,
      ...(d.paused ? [`paused:        ${d.paused.paused_at}, ${d.paused.bytes} bytes on disk, kept until ${d.paused.expires_at ?? 'deleted'}`] : []),
      ...(d.forked_from ? [`forked from:   ${d.forked_from}`] : []),
      `vmm pid:       ${d.vmm_pid ?? '-'}`,
      `agent:         ${d.agent_version ?? '-'}`,
      ...(d.error ? [`error:         ${d.error.code}: ${d.error.message}`] : []),
      `boot log tail:`,
      d.boot_log_tail.trimEnd().split('\n').slice(-15).map((l) => `  ${l}`).join('\n'),
    ].join('\n'));
  });

program.command('ls')
  .description('list sandboxes')
  .action(async () => {
    const list = await client().listSandboxes();
    print(list, () => list.length === 0 ? 'no sandboxes' : [
      'ID                        STATE      PACK     CREATED                   EXPIRES',
      ...list.map((s) => `${s.id.padEnd(26)}${s.state.padEnd(11)}${s.language_pack.padEnd(9)}${s.created_at.padEnd(26)}${s.expires_at ?? 'never'}`),
    ].join('\n'));
  });

program.command('packs')
  .description('list the daemon\'s language packs: size, snapshot state, description (broken ones say why)')
  .action(async () => {
    const packs = await client().listPacks();
    print(packs, () => [
      'NAME            SIZE      SNAPSHOT   DESCRIPTION',
      ...packs.map((p) => `${p.name.padEnd(16)}${(p.size === null ? '-' : `${(p.size / 1048576).toFixed(1)}M`).padEnd(10)}${(p.snapshot?.status ?? '-').padEnd(11)}${p.error ? `BROKEN: ${p.error}` : p.description ?? ''}`),
    ].join('\n'));
  });

program.command('rm')
  .description('destroy a sandbox')
  .argument('<id...>', 'sandbox ids')
  .action(async (ids: string[]) => {
    for (const id of ids) await client().deleteSandbox(id);
    print({ deleted: ids }, () => ids.map((i) => `deleted ${i}`).join('\n'));
  });

program.command('upload')
  .description('stream a local file (or - for stdin) into a sandbox; parent directories are created')
  .argument('<id>', 'sandbox id')
  .argument('<local>', 'local file, or - for stdin')
  .argument('<remote>', 'absolute path in the sandbox (a directory with --tar)')
  .option('--mode <octal>', 'permission bits of the file, e.g. 0755 (default: kept when replacing, else 0644)')
  .option('--tar', 'the input is a tar stream: extract it into the directory <remote>', false)
  .action(async (id: string, local: string, remote: string, o: { mode?: string; tar: boolean }) => {
    const input = local === '-' ? process.stdin : createReadStream(local);
    const r = await client().uploadFile(id, remote, input, { mode: o.mode, format: o.tar ? 'tar' : undefined });
    print(r, () => `uploaded ${r.size} bytes to ${r.path}`);
  });

program.command('download')
  .description('stream a file (or with --tar a directory, as a tar) out of a sandbox')
  .argument('<id>', 'sandbox id')
  .argument('<remote>', 'absolute path in the sandbox')
  .argument('[local]', 'local file, or - for stdout (default: the remote name in the current directory, + .tar with --tar)')
  .option('--tar', 'download the directory <remote> as a tar stream', false)
  .action(async (id: string, remote: string, local: string | undefined, o: { tar: boolean }) => {
    const dest = local ?? `${basename(remote) || 'root'}${o.tar ? '.tar' : ''}`;
    const stream = await client().downloadFile(id, remote, { format: o.tar ? 'tar' : undefined });
    if (dest === '-') {
      await pipeline(stream, process.stdout);
      return;
    }
    try {
      await pipeline(stream, createWriteStream(dest));
    } catch (e) {
      rmSync(dest, { force: true }); // never leave a truncated copy that looks complete
      throw e;
    }
    if (!json()) console.error(`downloaded ${remote} to ${dest}`);
    else console.log(JSON.stringify({ path: remote, file: dest }));
  });

program.command('files')
  .description('list a directory in a sandbox')
  .argument('<id>', 'sandbox id')
  .argument('<dir>', 'absolute path of a directory in the sandbox')
  .action(async (id: string, dir: string) => {
    const entries = await client().list(id, dir);
    const kind = { file: '-', dir: 'd', symlink: 'l', other: '?' } as const;
    print(entries, () => entries.length === 0 ? `${dir} is empty` : entries.map((e) =>
      `${kind[e.type]} ${e.mode} ${String(e.size).padStart(12)}  ${e.mtime}  ${JSON.stringify(e.name).slice(1, -1)}${e.type === 'dir' ? '/' : ''}`).join('\n'));
  });

program.command('test')
  .description('check a daemon end to end: create -> inspect -> exec -> delete, with assertions')
  .option('--pack <name>', 'language pack', 'python')
  .action(async (o: { pack: string }) => {
    const ok = await runSelfTest(client(), o.pack, json());
    process.exitCode = ok ? 0 : 1;
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof EmberdApiError) {
    if (json()) console.error(JSON.stringify({ error: { code: e.code, message: e.message } }));
    else console.error(`emberctl: ${e.code}: ${e.message}`);
  } else {
    console.error(`emberctl: ${(e as Error).message}`);
  }
  process.exitCode = 1;
});

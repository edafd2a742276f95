// The Python SDK (sdk/python) against real daemons, with Debian's python3: its unittest suite
// (sdk/python/tests), then the package installed by pip into a fresh venv, offline, running the
// README's example. One daemon serves both runs (eight VM boots in all: the suite's shared python
// sandbox, its context-manager case, test_pause.py's sandbox and its two forks, test_ports.py's
// sandbox, the README twice);
// a second daemon with --auth on boots none.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon, type TestDaemon } from './helpers/daemon.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SDK = join(ROOT, 'sdk', 'python');
/** Debian's interpreter, not whatever python3 comes first on PATH (pyenv): the one CI has. */
const PYTHON = '/usr/bin/python3';
const NO_EXTRA_VMS = ['--pool-size', '0', '--snapshots', 'off'];
/** A small --max-upload, so the suite can see FILE_TOO_LARGE without sending a gigabyte. */
const MAX_UPLOAD = 2 * 1024 * 1024;

let d: TestDaemon;
let authed: TestDaemon;
const tmp = mkdtempSync(join(tmpdir(), 'emberd-sdk-python-'));
/** Where the --auth on daemon keeps its token: the default path of a user whose XDG_STATE_HOME is this. */
const authStateHome = join(tmp, 'auth-state');

before(async () => {
  d = await startDaemon(['--max-upload', String(MAX_UPLOAD), ...NO_EXTRA_VMS]);
  authed = await startDaemon(['--auth', 'on', '--auth-token-file', join(authStateHome, 'emberd', 'token'), ...NO_EXTRA_VMS]);
});

after(async () => {
  const codes = await Promise.all([d?.stop(), authed?.stop()]);
  rmSync(tmp, { recursive: true, force: true });
  assert.deepEqual(codes, [0, 0], `${d?.log()}\n${authed?.log()}`);
});

/**
 * The environment a user's shell would give python, minus anything that would change what the SDK
 * or pip discovers (a developer's EMBERD_*, PIP_* config, PYTHONPATH, a token in their state dir).
 */
function cleanEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^(EMBERD_|PIP_|PYTHON|VIRTUAL_ENV$|XDG_STATE_HOME$)/.test(k)) continue;
    env[k] = v;
  }
  return { ...env, XDG_STATE_HOME: join(tmp, 'user-state'), PIP_CONFIG_FILE: '/dev/null', PYTHONDONTWRITEBYTECODE: '1', ...extra };
}

/** Runs a program to its end (asynchronously: the daemons' logs are read by this process meanwhile). */
function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (b: Buffer) => { output += b.toString(); });
    p.stderr.on('data', (b: Buffer) => { output += b.toString(); });
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, output }));
  });
}

test('the unittest suite passes against a real daemon, every case run', async () => {
  const r = await run(PYTHON, ['-m', 'unittest', 'discover', '-s', 'sdk/python/tests', '-v'], cleanEnv({
    EMBERD_URL: d.url,
    EMBERD_TEST_AUTH_URL: authed.url,
    EMBERD_TEST_AUTH_STATE_HOME: authStateHome,
    EMBERD_TEST_MAX_UPLOAD: String(MAX_UPLOAD),
    PYTHONPATH: SDK,
  }));
  assert.equal(r.code, 0, `python3 -m unittest failed:\n${r.output}`);
  assert.match(r.output, /^Ran \d+ tests? in /m, r.output);
  assert.doesNotMatch(r.output, /skipped/, `every case must run here:\n${r.output}`);
  for (const file of ['test_auth', 'test_compat', 'test_errors', 'test_pause', 'test_ports', 'test_readme', 'test_sandbox']) assert.match(r.output, new RegExp(`\\(${file}\\.`), `${file}.py ran`);
  assert.deepEqual(await d.client.listSandboxes(), [], 'the suite killed every sandbox it made');
});

test('pip installs the package offline into a venv, and the README example runs with it', async () => {
  // A copy: building writes build/ and *.egg-info next to the sources.
  const src = join(tmp, 'src');
  cpSync(SDK, src, { recursive: true, filter: (p) => !/(^|\/)(build|dist|__pycache__|[^/]*\.egg-info)$/.test(p) });
  const venv = join(tmp, 'venv');
  const env = cleanEnv({});
  // Debian's setuptools and wheel build it (--system-site-packages, --no-build-isolation): no download.
  const mk = await run(PYTHON, ['-m', 'venv', '--system-site-packages', venv], env);
  assert.equal(mk.code, 0, `python3 -m venv (Debian's python3-venv) failed:\n${mk.output}`);
  const pip = await run(join(venv, 'bin', 'python'), ['-m', 'pip', 'install', '--no-index', '--no-build-isolation', src], env);
  assert.equal(pip.code, 0, `pip install failed (needs python3-setuptools and python3-wheel):\n${pip.output}`);
  assert.match(pip.output, /Successfully installed emberd-0\.1\.0/, pip.output);
  const r = await run(join(venv, 'bin', 'python'), ['-m', 'unittest', 'discover', '-s', 'sdk/python/tests', '-p', 'test_readme.py', '-v'], {
    ...env, EMBERD_URL: d.url, EMBERD_TEST_INSTALLED: '1',
  });
  assert.equal(r.code, 0, `the README example with the installed package failed:\n${r.output}`);
  assert.match(r.output, /^Ran 2 tests in /m, r.output);
  assert.deepEqual(await d.client.listSandboxes(), [], 'the example\'s with-block killed its sandbox');
});

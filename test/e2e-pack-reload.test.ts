// Packs reach a running daemon: a pack added to the images dir is listed by GET /packs and boots
// once the manifest changes (no restart); a pack broken on disk is listed with its reason after
// SIGHUP, refused with PACK_BROKEN, and the daemon keeps serving. The pack added here is a second
// name for the built shell pack: what is tested is the daemon's side, not a build.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { startDaemon, http, eventually } from './helpers/daemon.ts';
import { privateImagesDir } from './helpers/private-images.ts';
import { testImages } from './helpers/images.ts';

const images = privateImagesDir();
after(() => images.cleanup());
// The manifest is rewritten below: a copy of it, not the link to the built one.
const manifestPath = join(images.dir, 'manifest.json');
const manifestText = readFileSync(manifestPath, 'utf8');
unlinkSync(manifestPath);
writeFileSync(manifestPath, manifestText);

test('a pack added while the daemon runs is listed and boots; broken on disk, it is PACK_BROKEN after SIGHUP', async () => {
  const d = await startDaemon(['--images-dir', images.dir, '--pool-size', '0', '--snapshots', 'off']);
  try {
    const first = (await http(d, 'GET', '/packs')).json.packs as { name: string; size: number; sha256: string; interpreter: string[]; error: string | null }[];
    const shell = first.find((p) => p.name === 'shell')!;
    assert.deepEqual([shell.interpreter, shell.error, shell.size > 0, /^[0-9a-f]{64}$/.test(shell.sha256)], [['sh', '-c'], null, true, true]);

    // What `emberd packs build` leaves: packs/<name>.sqfs and .json, recorded in the manifest last.
    const built = testImages().packs.get('shell')!;
    const dir = join(images.dir, 'packs');
    symlinkSync(built.image, join(dir, 'tools.sqfs'));
    const meta = { ...JSON.parse(readFileSync(join(testImages().dir, 'packs', 'shell.json'), 'utf8')), name: 'tools', image: 'tools.sqfs', description: 'the shell pack under another name', custom: true };
    const json = Buffer.from(JSON.stringify(meta));
    writeFileSync(join(dir, 'tools.json'), json);
    const m = JSON.parse(manifestText);
    m.files['packs/tools.sqfs'] = m.files['packs/shell.sqfs'];
    m.files['packs/tools.json'] = { size: json.length, sha256: createHash('sha256').update(json).digest('hex') };
    writeFileSync(`${manifestPath}.tmp`, JSON.stringify(m, null, 2));
    copyFileSync(`${manifestPath}.tmp`, manifestPath);
    rmSync(`${manifestPath}.tmp`);

    await eventually(async () => (await http(d, 'GET', '/packs')).json.packs.some((p: { name: string }) => p.name === 'tools'), 30_000, 'the new pack listed');
    const tools = (await http(d, 'GET', '/packs')).json.packs.find((p: { name: string }) => p.name === 'tools');
    assert.deepEqual([tools.description, tools.custom, tools.error], ['the shell pack under another name', true, null]);
    assert.ok((await http(d, 'GET', '/')).json.language_packs.includes('tools'));
    const c = await http(d, 'POST', '/sandboxes', '{"language_pack":"tools"}');
    assert.equal(c.status, 201, c.text);
    assert.equal((await http(d, 'POST', `/sandboxes/${c.json.id}/exec`, '{"code":"echo $((6*7))"}')).json.stdout, '42\n');
    await http(d, 'DELETE', `/sandboxes/${c.json.id}`);

    unlinkSync(join(dir, 'tools.sqfs')); // broken on disk; the manifest still lists it
    d.proc.kill('SIGHUP');
    await eventually(async () => (await http(d, 'GET', '/packs')).json.packs.find((p: { name: string }) => p.name === 'tools')?.error !== null, 30_000, 'the pack reported broken');
    const broken = (await http(d, 'GET', '/packs')).json.packs.find((p: { name: string }) => p.name === 'tools');
    assert.match(broken.error, /tools\.sqfs is missing/);
    const refused = await http(d, 'POST', '/sandboxes', '{"language_pack":"tools"}');
    assert.equal(refused.status, 409);
    assert.equal(refused.json.error.code, 'PACK_BROKEN');
    const ok = await http(d, 'POST', '/sandboxes', '{"language_pack":"shell"}');
    assert.equal(ok.status, 201, 'the other packs still serve');
    await http(d, 'DELETE', `/sandboxes/${ok.json.id}`);
  } finally {
    assert.equal(await d.stop(), 0, d.log());
  }
});

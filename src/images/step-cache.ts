// The step cache: what makes a build step skippable and its outputs trustworthy.
//
// A step has a name (its record in manifest.json), inputs (everything its outputs depend on, the
// recipe version included; their hash is the step's key) and outputs (files in the images dir).
// A step is skipped when its record's key matches and every output is present with the recorded
// size and sha256. Otherwise its record is removed before it builds, its outputs are written
// under temp names, and only when all are finished are they renamed into place and the record
// written: an interrupted build never leaves something that looks done.

import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MANIFEST_FORMAT, MANIFEST_NAME, readManifest, sha256File, type Manifest } from './manifest.ts';
import type { Progress } from './progress.ts';
import { commitFile, sha256Hex, stableJson, tempName, writeFileAtomic } from './util.ts';

/** What a finished build writes into manifest.inputs (what went into the outputs). */
export type InputsRecord = (inputs: Manifest['inputs']) => void;

export interface Step {
  /** its record in manifest.steps: "kernel", "initramfs", "pack:<name>" */
  name: string;
  /** shown when skipped ("<label>: up to date"), and while building as "<label> (<doing>)" */
  label: string;
  doing: string;
  /** everything the outputs depend on; stable JSON, hashed into the key */
  inputs: unknown;
  /** files the step writes, relative to the images dir, in the order the manifest lists them */
  outputs: readonly string[];
  /** Writes every output to `tmp(rel)`; returns what to record in manifest.inputs. */
  build(tmp: (rel: string) => string, detail: (text: string) => void): Promise<InputsRecord>;
}

export interface StepOutcome {
  step: string;
  status: 'built' | 'cached';
  seconds: number;
}

/** The cache key of a step: sha256 of its inputs as stable JSON (object keys sorted). */
export function stepKey(inputs: unknown): string {
  return sha256Hex(stableJson(inputs));
}

export class StepCache {
  readonly manifest: Manifest;
  readonly outcomes: StepOutcome[] = [];
  private readonly dir: string;
  private readonly progress: Progress;
  private readonly force: boolean;

  private constructor(dir: string, manifest: Manifest, progress: Progress, force: boolean) {
    this.dir = dir;
    this.manifest = manifest;
    this.progress = progress;
    this.force = force;
  }

  /**
   * Opens the cache of an images dir the caller holds the lock of: removes temp outputs a killed
   * build left, reads manifest.json (an unreadable one is replaced). `force`: nothing is up to date.
   */
  static async open(dir: string, progress: Progress, force: boolean): Promise<StepCache> {
    await removeStaleTempFiles(dir);
    let manifest: Manifest;
    try {
      manifest = (await readManifest(dir)) ?? emptyManifest();
    } catch (e) {
      progress.info(`ignoring unreadable manifest: ${(e as Error).message}`);
      manifest = emptyManifest();
    }
    return new StepCache(dir, manifest, progress, force);
  }

  /** Skips the step if it is up to date, else builds it and records it. */
  async run(step: Step): Promise<void> {
    const t0 = performance.now();
    const key = stepKey(step.inputs);
    if (await this.upToDate(step.name, key)) {
      this.progress.skip(step.label, 'up to date');
      this.outcomes.push({ step: step.name, status: 'cached', seconds: (performance.now() - t0) / 1000 });
      return;
    }
    await this.forget(step.name);
    await this.progress.step(`${step.label} (${step.doing})`, async (detail) => {
      const tmps = new Map(step.outputs.map((rel) => [rel, tempName(join(this.dir, rel))]));
      try {
        for (const tmp of tmps.values()) await mkdir(dirname(tmp), { recursive: true });
        const record = await step.build((rel) => tmps.get(rel) ?? missingOutput(step, rel), detail);
        record(this.manifest.inputs);
        await this.commit(step.name, key, [...tmps]);
      } finally {
        for (const tmp of tmps.values()) await rm(tmp, { force: true });
      }
    });
    this.outcomes.push({ step: step.name, status: 'built', seconds: (performance.now() - t0) / 1000 });
  }

  private async upToDate(step: string, key: string): Promise<boolean> {
    if (this.force) return false;
    const rec = this.manifest.steps[step];
    if (rec === undefined || rec.key !== key) return false;
    // Full re-hash (~0.2 s for everything): a damaged output is rebuilt, not trusted.
    for (const f of rec.files) {
      const fr = this.manifest.files[f];
      if (fr === undefined) return false;
      try {
        if ((await stat(join(this.dir, f))).size !== fr.size) return false;
        if ((await sha256File(join(this.dir, f))) !== fr.sha256) return false;
      } catch {
        return false;
      }
    }
    return true;
  }

  private async forget(step: string): Promise<void> {
    const rec = this.manifest.steps[step];
    if (rec === undefined) return;
    for (const f of rec.files) delete this.manifest.files[f];
    delete this.manifest.steps[step];
    await this.save();
  }

  /** Moves finished temp files into place and records them under `step`. */
  private async commit(step: string, key: string, outputs: [rel: string, tmp: string][]): Promise<void> {
    for (const [rel, tmp] of outputs) {
      const size = (await stat(tmp)).size;
      const sha256 = await sha256File(tmp);
      await commitFile(tmp, join(this.dir, rel));
      this.manifest.files[rel] = { sha256, size };
    }
    this.manifest.steps[step] = { key, files: outputs.map(([rel]) => rel) };
    await this.save();
  }

  private async save(): Promise<void> {
    this.manifest.created = new Date().toISOString();
    await writeFileAtomic(join(this.dir, MANIFEST_NAME), `${JSON.stringify(this.manifest, null, 2)}\n`);
  }
}

function emptyManifest(): Manifest {
  return { format: MANIFEST_FORMAT, created: new Date().toISOString(), inputs: { packs: {} }, steps: {}, files: {} };
}

function missingOutput(step: Step, rel: string): never {
  throw new Error(`step ${step.name} writes ${rel}, which is not one of its outputs`);
}

/** Temp outputs (".name.tmp-<pid>-<rand>") left by a killed build; the caller holds the lock. */
async function removeStaleTempFiles(dir: string): Promise<void> {
  for (const sub of ['', 'kernel', 'packs']) {
    const names = await readdir(join(dir, sub)).catch(() => [] as string[]);
    for (const n of names) if (/^\..+\.tmp-\d+-[a-z0-9]+$/.test(n)) await rm(join(dir, sub, n), { force: true });
  }
}

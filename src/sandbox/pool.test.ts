// WarmPool's bounds with sandboxes that the test hands in when it chooses: the floor, growth with
// demand up to the ceiling, parallel fills capped, shrinking once demand is gone, shapes apart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WarmPool } from './pool.ts';
import type { Sandbox } from './sandbox.ts';
import { captureLog } from '../../test/helpers/log.ts';

interface Harness {
  pool: WarmPool;
  /** Fills asked for and not yet answered, oldest first. */
  pending: { key: string; done: (ok: boolean) => void }[];
  discarded: Sandbox[];
  made: Sandbox[];
  clock: { t: number };
  /** Lets every pending fill succeed and the pool settle. */
  finishAll(): Promise<void>;
  /** Closes the pool, letting the fills still running finish (close waits for them). */
  close(): Promise<void>;
}

function harness(bounds: { min: number; max: number; fillConcurrency: number }): Harness {
  const pending: Harness['pending'] = [];
  const discarded: Sandbox[] = [];
  const made: Sandbox[] = [];
  const clock = { t: 1_000_000 };
  const fill = (key: string) => new Promise<Sandbox>((resolve, reject) => {
    pending.push({ key, done: (ok) => {
      if (!ok) return reject(new Error('boot failed'));
      const sb = { state: 'ready', id: `${key}#${made.length}` } as unknown as Sandbox;
      made.push(sb);
      resolve(sb);
    } });
  });
  const discard = async (sb: Sandbox) => { discarded.push(sb); };
  const pool = new WarmPool({ ...bounds, windowMs: 30_000, refillDelayMs: 0 }, fill, discard, captureLog().log, () => clock.t);
  const settle = () => new Promise((r) => setImmediate(r));
  return {
    pool, pending, discarded, made, clock,
    async finishAll() {
      for (let i = 0; i < 1000 && pending.length; i++) { pending.shift()!.done(true); await settle(); }
      await settle();
    },
    async close() {
      const closing = pool.close();
      await this.finishAll();
      await closing;
    },
  };
}

test('the floor: a kept pack is filled to --pool-size and refilled after each take', async () => {
  const h = harness({ min: 2, max: 8, fillConcurrency: 4 });
  h.pool.keep('python');
  assert.equal(h.pending.length, 2);
  await h.finishAll();
  assert.deepEqual(h.pool.view().python, { size: 2, ready: 2, filling: 0 });
  assert.ok(h.pool.take('python'));
  assert.ok(h.pending.length >= 1, 'a take starts a refill');
  await h.close();
});

test('demand grows the pool to the creates of the window, never past --pool-max, and fills never run more than the cap at once', async () => {
  const h = harness({ min: 1, max: 4, fillConcurrency: 2 });
  h.pool.keep('python');
  await h.finishAll();
  for (let i = 0; i < 10; i++) {
    h.pool.take('python');
    assert.ok(h.pending.length <= 2, `at most 2 fills at once (saw ${h.pending.length})`);
  }
  assert.equal(h.pool.target('python'), 4);
  await h.finishAll();
  const v = h.pool.view().python!;
  assert.equal(v.ready, 4);
  assert.equal(v.size, 4);
  // More demand while full: still never more than the ceiling waiting or being made.
  h.pool.take('python');
  await h.finishAll();
  assert.ok(h.pool.view().python!.ready <= 4);
  await h.close();
});

test('once demand is older than the window the pool shrinks back to its floor, discarding the excess', async () => {
  const h = harness({ min: 1, max: 6, fillConcurrency: 6 });
  h.pool.keep('python');
  for (let i = 0; i < 5; i++) h.pool.take('python');
  await h.finishAll();
  assert.equal(h.pool.view().python!.ready, 5);
  h.clock.t += 31_000;
  h.pool.retarget();
  assert.equal(h.pool.view().python!.ready, 1);
  assert.equal(h.discarded.length, 4);
  assert.equal(h.pending.length, 0, 'no refill beyond the floor');
  await h.close();
});

test('a shape asked for only by demand has no floor: filled after a create, emptied after the window', async () => {
  const h = harness({ min: 1, max: 4, fillConcurrency: 4 });
  assert.equal(h.pool.take('python@2x512'), undefined);
  assert.equal(h.pending.length, 1);
  assert.equal(h.pending[0]!.key, 'python@2x512');
  await h.finishAll();
  assert.equal(h.pool.view()['python@2x512']!.ready, 1);
  h.clock.t += 31_000;
  h.pool.retarget();
  assert.equal(h.pool.view()['python@2x512']!.ready, 0);
  await h.close();
});

test('a fill that arrives after demand went is discarded; a failed fill is not retried by the periodic retarget at once', async () => {
  const h = harness({ min: 0, max: 4, fillConcurrency: 4 });
  h.pool.take('shell');
  h.pool.take('shell');
  assert.equal(h.pending.length, 2);
  h.clock.t += 31_000;
  await h.finishAll();
  assert.equal(h.pool.view().shell!.ready, 0);
  assert.equal(h.discarded.length, 2);
  h.pool.take('shell');
  h.pending.shift()!.done(false);
  await new Promise((r) => setImmediate(r));
  h.pool.retarget();
  assert.equal(h.pending.length, 0);
  await h.close();
});

test('close discards what waits and what arrives later; a dead waiting sandbox is never handed out', async () => {
  const h = harness({ min: 2, max: 2, fillConcurrency: 2 });
  h.pool.keep('python');
  h.pending.shift()!.done(true);
  await new Promise((r) => setImmediate(r));
  (h.made[0] as { state: string }).state = 'failed';
  assert.equal(h.pool.take('python'), undefined, 'the dead one is dropped, not handed out');
  assert.ok(h.discarded.includes(h.made[0]!));
  const closing = h.pool.close();
  await h.finishAll();
  await closing;
  assert.equal(h.pool.view().python!.ready, 0);
  assert.equal(h.discarded.length, h.made.length, 'every sandbox made was discarded');
});

test('a dropped shape (its pack removed) keeps nothing: waiting sandboxes are discarded, queued fills forgotten', async () => {
  const h = harness({ min: 2, max: 4, fillConcurrency: 1 });
  h.pool.keep('gone');
  h.pending.shift()!.done(true);
  await new Promise((r) => setImmediate(r));
  assert.equal(h.pool.view().gone!.ready, 1);
  h.pool.drop('gone');
  assert.equal(h.pool.view().gone, undefined);
  assert.equal(h.discarded.length, 1);
  await h.finishAll();
  assert.equal(h.pending.length, 0, 'the queued second fill never started');
  assert.equal(h.discarded.length, h.made.length, 'the fill that was running is discarded when it arrives');
  await h.close();
});

// BootSlots: how many boot at once, who goes next, and that a waiting create always gets an answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BootSlots } from './boot-slots.ts';
import { isEmberdError } from '../errors.ts';

test('at most max at once; a freed slot goes to the next create, creates before background work', async () => {
  const slots = new BootSlots(1);
  const first = await slots.acquire('create');
  const order: string[] = [];
  const bg = slots.acquire('background').then((s) => { order.push('background'); return s; });
  const c1 = slots.acquire('create').then((s) => { order.push('c1'); return s; });
  const c2 = slots.acquire('create').then((s) => { order.push('c2'); return s; });
  assert.deepEqual(slots.view(), { max: 1, running: 1, queued: 3 });
  first.release();
  (await c1).release();
  (await c2).release();
  (await bg).release();
  assert.deepEqual(order, ['c1', 'c2', 'background'], 'creates overtake background work, in arrival order');
  assert.deepEqual(slots.view(), { max: 1, running: 0, queued: 0 });
});

test('a create that waits past its deadline is TOO_BUSY with Retry-After, and leaves the line', async () => {
  const slots = new BootSlots(1);
  const held = await slots.acquire('create');
  await assert.rejects(slots.acquire('create', 50), (e) => isEmberdError(e, 'TOO_BUSY') && e.status === 503 && e.retryAfterS === 2);
  assert.equal(slots.view().queued, 0);
  held.release();
  (await slots.acquire('create', 50)).release();
});

test('an aborted wait (the sandbox was deleted) ends at once; release twice counts once', async () => {
  const slots = new BootSlots(1);
  const held = await slots.acquire('create');
  const ac = new AbortController();
  const waiting = slots.acquire('create', Infinity, ac.signal);
  ac.abort();
  await assert.rejects(waiting, (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND'));
  assert.equal(slots.view().queued, 0);
  held.release();
  held.release();
  assert.equal(slots.view().running, 0);
  await assert.rejects(slots.acquire('create', Infinity, ac.signal), (e) => isEmberdError(e, 'SANDBOX_NOT_FOUND'), 'already aborted');
});

/**
 * mmu_lock's lock break (mmu-lock.ts breakAsync): the re-acquiring writer is
 * queued as KVM's qrwlock queues it — an agent that arrives while it waits
 * does not take the lock before it, even with the lock free at that moment.
 * One real worker thread (lock.worker.mjs) as the later arrival.
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { waitAsync } from '../../src/layout/atomics.js';
import { DEFAULT_HOST } from '../../src/role/host.js';
import { ShadowVm } from '../../src/shadow/index.js';

const COORD = 0;

describe('mmu_lock lock break', () => {
  it('a vCPU that arrives while the breaking writer is queued waits behind it, then gets the lock', async () => {
    const vm = ShadowVm.create({ maxPages: 16, agents: 2, guestPages: 16, host: DEFAULT_HOST, prove: true });
    const log = new Int32Array(new SharedArrayBuffer(8));
    await vm.lock.lockAsync(COORD);
    // Queue the coordinator as breakAsync does, while it still holds the lock, so the worker arrives after it.
    Atomics.store(vm.h.lockQueuedWriter, 0, COORD + 1);
    const w = new Worker(new URL('./lock.worker.mjs', import.meta.url), { workerData: { handle: vm.handle, log: log.buffer } });
    const exited = new Promise<void>((r) => w.on('exit', () => r()));
    try {
      while (Atomics.load(log, 0) === 0) await waitAsync(log, 0, 0, 50);
      // The lock goes free, with the writer still queued: the worker must not take it.
      vm.lock.unlock(COORD);
      await new Promise((r) => setTimeout(r, 100));
      expect(Atomics.load(log, 1), 'the later arrival took the lock ahead of the queued writer').toBe(0);
      // The writer takes the lock, then leaves the queue (as breakAsync's finally does).
      await vm.lock.lockAsync(COORD);
      Atomics.store(vm.h.lockQueuedWriter, 0, 0);
      Atomics.notify(vm.h.lockQueuedWriter, 0);
      expect(Atomics.load(log, 1)).toBe(0);
      vm.lock.unlock(COORD);
      while (Atomics.load(log, 1) === 0) await waitAsync(log, 1, 0, 50);
      await exited;
      expect(vm.lock.holder()).toBe(-1);
    } finally {
      await w.terminate();
    }
  });

  it('the queued writer itself is not held back by its own queue entry (another coordinator task locking meanwhile)', () => {
    const vm = ShadowVm.create({ maxPages: 16, agents: 2, guestPages: 16, host: DEFAULT_HOST, prove: true });
    Atomics.store(vm.h.lockQueuedWriter, 0, COORD + 1);
    vm.lock.with(COORD, () => expect(vm.lock.holder()).toBe(COORD));
    Atomics.store(vm.h.lockQueuedWriter, 0, 0);
  });

  it('breakAsync hands the lock back and holds it again, with the queue cleared', async () => {
    const vm = ShadowVm.create({ maxPages: 16, agents: 2, guestPages: 16, host: DEFAULT_HOST, prove: true });
    await vm.lock.lockAsync(COORD);
    await vm.lock.breakAsync(COORD);
    expect(vm.lock.holder()).toBe(COORD);
    expect(Atomics.load(vm.h.lockQueuedWriter, 0)).toBe(0);
    vm.lock.unlock(COORD);
  });
});

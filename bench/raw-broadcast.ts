/**
 * The truly raw limit of a broadcast with acknowledgement: bare worker
 * threads that do nothing but block in `Atomics.wait` on their own word, and
 * on a new epoch add one to a shared acknowledgement counter (the last one
 * notifies). No run loop, no event loop turn, no request bits, no MMU: what
 * waking N threads and hearing back from all of them costs on this machine.
 *
 * The coordinator side mirrors the real protocol where it must (one store and
 * one notify per target, as the VM kicks each vCPU; an Atomics.waitAsync wait
 * so its event loop stays alive) and is as cheap as possible where it may
 * (one shared counter instead of one acknowledgement word per target).
 */
import { Worker } from 'node:worker_threads';
import { waitAsync } from '../src/layout/atomics.js';
import { allocate, bindRecord, defineLayout } from '../src/layout/layout.js';

const RAW_HEADER = defineLayout('raw-broadcast-header', {
  acks: {
    type: 'i32',
    doc: 'acknowledgements of the current epoch. The coordinator Atomics.store 0 before posting an epoch; each worker Atomics.add 1 after seeing it; the worker that brings it to `expected` Atomics.notify; the coordinator waits on it with Atomics.waitAsync.',
  },
  expected: { type: 'i32', doc: 'how many workers the current epoch targets. Coordinator Atomics.store before posting; workers Atomics.load after their add.' },
});

const RAW_WORKER = defineLayout('raw-broadcast-worker', {
  go: {
    type: 'i32',
    doc: 'the epoch posted to this worker (-1: exit). Coordinator Atomics.store then Atomics.notify (count 1); the worker Atomics.wait on it while it equals the last epoch it handled.',
  },
  pad: { type: 'u8', count: 60, doc: 'padding, never read or written: one 64-byte cache line per worker word (no false sharing between workers).' },
});

/** The whole worker: plain JavaScript (eval'd), so it runs the same from dist/ and under vitest. */
const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { go, acks, expected } = workerData;
let seen = 0;
for (;;) {
  Atomics.wait(go, 0, seen);
  const e = Atomics.load(go, 0);
  if (e === seen) continue;
  if (e < 0) break;
  seen = e;
  if (Atomics.add(acks, 0, 1) + 1 === Atomics.load(expected, 0)) Atomics.notify(acks, 0);
}
`;

const SLICE_MS = 25;

export class RawBroadcaster {
  private readonly head: { acks: Int32Array; expected: Int32Array };
  private readonly words: Int32Array[] = [];
  private readonly workers: Worker[] = [];
  private readonly exits: Promise<void>[] = [];
  private readonly workerBuffer: SharedArrayBuffer;
  private epoch = 0;
  private closed = false;

  constructor(readonly capacity: number) {
    this.head = bindRecord(RAW_HEADER, allocate(RAW_HEADER));
    this.workerBuffer = allocate(RAW_WORKER, capacity);
  }

  get size(): number {
    return this.workers.length;
  }

  /** Grow to at least `n` workers, each blocked in Atomics.wait once this resolves. */
  async ensure(n: number): Promise<void> {
    if (n > this.capacity) throw new RangeError(`raw broadcast: ${n} workers asked, capacity ${this.capacity}`);
    const online: Promise<void>[] = [];
    while (this.workers.length < n) {
      const { go } = bindRecord(RAW_WORKER, this.workerBuffer, this.workers.length);
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { go, acks: this.head.acks, expected: this.head.expected } });
      this.words.push(go);
      this.workers.push(w);
      this.exits.push(new Promise((resolve) => w.once('exit', () => resolve())));
      online.push(
        new Promise((resolve, reject) => {
          w.once('online', () => resolve());
          w.once('error', reject);
        }),
      );
    }
    await Promise.all(online);
  }

  /** Post a new epoch to workers 0..n-1 and resolve once all n acknowledged it. */
  async broadcast(n: number, deadlineMs = 60_000): Promise<void> {
    if (this.closed) throw new Error('raw broadcast: closed');
    if (n > this.workers.length) throw new RangeError(`raw broadcast: ${n} targets, ${this.workers.length} workers (call ensure first)`);
    const { acks, expected } = this.head;
    // The previous epoch is fully acknowledged, so no worker touches acks now.
    Atomics.store(acks, 0, 0);
    Atomics.store(expected, 0, n);
    const e = ++this.epoch;
    for (let i = 0; i < n; i++) {
      const go = this.words[i]!;
      Atomics.store(go, 0, e);
      Atomics.notify(go, 0, 1);
    }
    const deadline = performance.now() + deadlineMs;
    for (;;) {
      const v = Atomics.load(acks, 0);
      if (v >= n) return;
      const remaining = deadline - performance.now();
      if (remaining <= 0) throw new Error(`raw broadcast: ${v} of ${n} acknowledgements before the deadline`);
      await waitAsync(acks, 0, v, Math.min(remaining, SLICE_MS));
    }
  }

  /** Acknowledgements of the last broadcast (for verification). */
  lastAcks(): number {
    return Atomics.load(this.head.acks, 0);
  }

  /** Let every worker leave its loop and wait for the threads to exit. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const go of this.words) {
      Atomics.store(go, 0, -1);
      Atomics.notify(go, 0);
    }
    await Promise.all(this.exits);
  }
}

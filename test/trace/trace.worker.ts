/**
 * A trace writer on a real thread for threads.test.ts: binds its ring,
 * waits for the start word (so every writer runs at once), then writes
 * `count` events whose arguments check each other — a0 = sequence number,
 * a1 = 3·a0, a2 = a0 xor 0x5555, a3 = writer id — alternating kvmmmu
 * instants with guest spans. With `batch`, writers take turns through the
 * turn word: writer `id` writes `batch` events when the turn is its own,
 * then hands the turn to the next writer (a shared-memory handshake, so the
 * interleaving is forced, not hoped for).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { EV, Tracer, type TraceRingsHandle } from '../../src/trace/index.js';

export interface TraceWorkerData {
  readonly rings: TraceRingsHandle;
  readonly track: number | 'coordinator';
  readonly id: number;
  readonly count: number;
  /** Take turns in batches of this many events (see above); 0 = run freely. */
  readonly batch: number;
  readonly writers: number;
  /** [0]: start word, set to 1 and notified by the test; [1]: whose turn it is. */
  readonly control: SharedArrayBuffer;
}

const d = workerData as TraceWorkerData;
const control = new Int32Array(d.control);
const tracer = Tracer.attach(d.rings, d.track);
Atomics.wait(control, 0, 0);
const write = (i: number): void => {
  if (i % 2 === 0) tracer.instant(EV.GET_PAGE, i, 3 * i, i ^ 0x5555, d.id);
  else tracer.span(EV.GUEST, tracer.now(), tracer.now(), i, 3 * i, i ^ 0x5555, d.id);
};
if (d.batch === 0) {
  for (let i = 0; i < d.count; i++) write(i);
} else {
  for (let i = 0; i < d.count; ) {
    for (let t = Atomics.load(control, 1); t !== d.id; t = Atomics.load(control, 1)) Atomics.wait(control, 1, t);
    for (const end = Math.min(d.count, i + d.batch); i < end; i++) write(i);
    Atomics.store(control, 1, (d.id + 1) % d.writers);
    Atomics.notify(control, 1);
  }
}
parentPort!.postMessage('done');

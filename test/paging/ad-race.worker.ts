/**
 * One racing vCPU for ad-race.test.ts: each round, after the coordinator
 * opens it, walk every shared address (writes for half of them) and OR this
 * worker's marker bit into each leaf, as a guest OS editing its tables
 * would; then report. Thin by design: the walker is the library's.
 *
 * Control words (Int32Array over workerData.control):
 *   [0] round the coordinator opened (coordinator stores + notifies; workers wait on it)
 *   [1] workers done with the current round (workers Atomics.add + notify)
 *   [2] total walk restarts after lost compare-exchanges (workers Atomics.add)
 *   [3] stop flag (coordinator)
 */
import { workerData } from 'node:worker_threads';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { GuestWalker, gvaToGpa, walkEnv } from '../../src/paging/index.js';
import { x86Context } from './helpers.js';

interface RaceWorkerData {
  memory: SharedArrayBuffer;
  control: SharedArrayBuffer;
  pgd: string;
  gvas: string[];
  leafPas: number[];
  index: number;
  rounds: number;
}

const d = workerData as RaceWorkerData;
const mem = GuestMemory.attach(d.memory);
const control = new Int32Array(d.control);
const ctx = x86Context('long4');
const root = { pgd: BigInt(d.pgd) };
const gvas = d.gvas.map((g) => BigInt(g));
const marker = 1n << BigInt(52 + d.index);
const w = new GuestWalker();
const write = walkEnv({ write: true });
const read = walkEnv({});

for (let round = 1; round <= d.rounds; round++) {
  // Wait until the coordinator opens this round (or stops).
  while (Atomics.load(control, 0) < round && Atomics.load(control, 3) === 0) Atomics.wait(control, 0, round - 1, 1000);
  if (Atomics.load(control, 3) !== 0) break;
  let retries = 0;
  for (let k = 0; k < gvas.length; k++) {
    // Each worker visits the addresses in its own rotation, so they collide on different entries.
    const i = (k + d.index * 7) % gvas.length;
    const env = (i + d.index) % 2 === 0 ? write : read;
    if (!gvaToGpa(w, ctx, mem, root, gvas[i]!, env)) throw new Error(`worker ${d.index}: walk of ${gvas[i]!.toString(16)} faulted`);
    retries += w.retries;
    mem.or64(d.leafPas[i]!, marker);
  }
  Atomics.add(control, 2, retries);
  Atomics.add(control, 1, 1);
  Atomics.notify(control, 1);
}

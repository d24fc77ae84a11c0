/**
 * Real worker threads racing on shared page-table entries: every round, the
 * coordinator resets the entries, opens the round, and four vCPU workers
 * walk the same addresses (setting A/D by compare-exchange, restarting on a
 * lost race as KVM does) while OR-ing their own marker bits into the same
 * leaves. After each round every entry must hold every bit anyone set: A at
 * every level, D in each written leaf, all markers. A plain
 * read-modify-write instead of the compare-exchange would lose some.
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { PTE } from '../../src/paging/index.js';
import { fixture } from './helpers.js';

const WORKERS = 4;
const ROUNDS = 1000;
const ROUND_DEADLINE_MS = 10_000;

/** Atomics.waitAsync (Node 16+; not in the ES2022 lib typings this project compiles against). */
type WaitAsync = (a: Int32Array, i: number, v: number, t: number) => { async: boolean; value: Promise<string> | string };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** Wait (without blocking the event loop) until `target` workers are done, a worker fails, or the deadline passes. */
async function waitForDone(control: Int32Array, target: number, round: number, failures: Error[]): Promise<void> {
  const deadline = Date.now() + ROUND_DEADLINE_MS;
  for (;;) {
    const seen = Atomics.load(control, 1);
    if (seen >= target) return;
    if (failures.length > 0) throw failures[0]!;
    if (Date.now() > deadline) throw new Error(`round ${round}: only ${seen - (target - WORKERS)} of ${WORKERS} workers finished within ${ROUND_DEADLINE_MS} ms`);
    const r = waitAsync(control, 1, seen, 100);
    if (r.async) await r.value;
  }
}

describe('accessed/dirty updates from racing worker threads', () => {
  it(`lose no bit over ${ROUNDS} rounds of ${WORKERS} workers`, async () => {
    const { mem, pt } = fixture({ kind: 'long', levels: 4 });
    const gvas: bigint[] = [];
    for (let i = 0; i < 8; i++) gvas.push(0x4000_0000n + BigInt(i) * 0x1000n, 0x4020_0000n + BigInt(i) * 0x1000n);
    for (const [i, gva] of gvas.entries()) pt.map({ gva, gpa: 0x80_0000n + BigInt(i) * 0x1000n });
    // Every entry on every path, with its clean value.
    const clean = new Map<number, { value: bigint; leaf: boolean }>();
    for (const gva of gvas) for (let l = 4; l >= 1; l--) {
      const e = pt.entry(gva, l)!;
      clean.set(e.pa, { value: e.value, leaf: l === 1 });
    }
    const leafPas = gvas.map((g) => pt.entry(g, 1)!.pa);
    const control = new Int32Array(new SharedArrayBuffer(16));
    const workers = Array.from({ length: WORKERS }, (_, index) =>
      new Worker(new URL('./ad-race.worker.mjs', import.meta.url), {
        workerData: { memory: mem.buffer, control: control.buffer, pgd: pt.pgd.toString(), gvas: gvas.map(String), leafPas, index, rounds: ROUNDS },
      }),
    );
    const failures: Error[] = [];
    const exited = workers.map(
      (w, i) =>
        new Promise<void>((resolve) => {
          w.on('error', (e) => failures.push(new Error(`worker ${i}: ${e.message}`)));
          w.on('exit', () => resolve());
        }),
    );
    const markers = Array.from({ length: WORKERS }, (_, i) => 1n << BigInt(52 + i)).reduce((a, b) => a | b);
    const lost: string[] = [];
    try {
      for (let round = 1; round <= ROUNDS && failures.length === 0; round++) {
        for (const [pa, e] of clean) mem.store64(pa, e.value);
        // Reset first, then open the round: the store of the round number orders the resets before any walk.
        Atomics.store(control, 0, round);
        Atomics.notify(control, 0);
        await waitForDone(control, round * WORKERS, round, failures);
        for (const [pa, e] of clean) {
          const want = e.leaf ? e.value | BigInt(PTE.A | PTE.D) | markers : e.value | BigInt(PTE.A);
          const got = mem.load64(pa);
          if (got !== want) lost.push(`round ${round}, entry at 0x${pa.toString(16)}: 0x${got.toString(16)} lacks 0x${(want & ~got).toString(16)}`);
        }
      }
    } finally {
      Atomics.store(control, 3, 1);
      Atomics.notify(control, 0);
      await Promise.all(exited);
    }
    expect(failures.map((f) => f.message)).toEqual([]);
    expect(lost.slice(0, 5)).toEqual([]);
    // How often a compare-exchange lost and the walk restarted (informational: races did happen).
    console.log(`ad-race: ${ROUNDS} rounds, ${Atomics.load(control, 2)} walk restarts after lost compare-exchanges`);
  });
});

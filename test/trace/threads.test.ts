/**
 * Rings written by real threads at the same time: the collector sees every
 * writer's track, each in timestamp order, the merged ftrace text in
 * timestamp order across tracks, and a racy snapshot taken while the
 * writers run never returns a torn or overwritten event (each event's
 * arguments check each other, and the sequence numbers are consecutive).
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { allocateTraceRings, chromeTraceText, EV, EVENT_WORDS, ftraceText, readTraceRings, TraceRing, type ChromeEvent, type RingSnapshot, type TraceRingsHandle } from '../../src/trace/index.js';
import { W } from '../../src/trace/ring.js';
import type { TraceWorkerData } from './trace.worker.js';

const WORKER = new URL('./trace.worker.mjs', import.meta.url);

function start(rings: TraceRingsHandle, tracks: (number | 'coordinator')[], count: number, batch = 0) {
  const control = new SharedArrayBuffer(8);
  const writers = tracks.length;
  const workers = tracks.map((track, id) => new Worker(WORKER, { workerData: { rings, track, id, count, batch, writers, control } satisfies TraceWorkerData }));
  const ready = Promise.all(workers.map((w) => new Promise<void>((res, rej) => (w.once('online', res), w.once('error', rej)))));
  const done = Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((res, rej) => {
          w.once('error', rej);
          w.once('exit', (code) => (code === 0 ? res() : rej(new Error(`worker exited with ${code}`))));
        }),
    ),
  );
  const go = async () => {
    await ready;
    Atomics.store(new Int32Array(control), 0, 1);
    Atomics.notify(new Int32Array(control), 0);
  };
  return { go, done };
}

/** Every event's arguments agree with each other, sequence numbers are consecutive, times never go back. */
function checkCanaries(s: RingSnapshot, id: number): void {
  const ev = s.events;
  let bad: string | null = null;
  for (let o = 0, prev = -1, prevTs = -Infinity; o < ev.length && !bad; o += EVENT_WORDS) {
    const i = ev[o + W.A0]!;
    if (ev[o + W.A1] !== 3 * i || ev[o + W.A2] !== (i ^ 0x5555) || ev[o + W.A3] !== id) bad = `event ${i}: torn arguments`;
    else if (ev[o + W.KIND] !== (i % 2 === 0 ? EV.GET_PAGE : EV.GUEST)) bad = `event ${i}: kind ${ev[o + W.KIND]}`;
    else if (prev >= 0 && i !== prev + 1) bad = `event ${i} follows ${prev}`;
    else if (ev[o + W.TS]! < prevTs) bad = `event ${i}: time goes back`;
    prev = i;
    prevTs = ev[o + W.TS]!;
  }
  if (!bad && s.count && ev[W.A0] !== s.dropped) bad = `first event ${ev[W.A0]} but ${s.dropped} dropped`;
  expect(bad).toBeNull();
}

/** The index of the first element smaller than its predecessor, or -1. */
const firstDecrease = (xs: readonly number[]): number => xs.findIndex((x, i) => i > 0 && x < xs[i - 1]!);

describe('rings written by concurrent threads', () => {
  it('the collector sees both tracks complete and in timestamp order; ftrace merges them in order', async () => {
    const COUNT = 20_000;
    const rings = allocateTraceRings(2, 32_768);
    const { go, done } = start(rings, [0, 1], COUNT);
    await go();
    await done;
    const all = readTraceRings(rings);
    for (const id of [0, 1]) {
      expect([all[id]!.written, all[id]!.count, all[id]!.dropped]).toEqual([COUNT, COUNT, 0]);
      checkCanaries(all[id]!, id);
    }
    const lines = ftraceText(rings, { style: 'tracefs', header: false }).trimEnd().split('\n');
    expect(lines).toHaveLength(COUNT);
    const times = lines.map((l) => Number(/ (\d+\.\d{6}): /.exec(l)![1]));
    expect(firstDecrease(times)).toBe(-1);
    expect(new Set(lines.map((l) => l.trim().split(' ')[0]!))).toEqual(new Set(['vcpu-0-4001', 'vcpu-1-4002']));

    const chrome = JSON.parse(chromeTraceText(rings)) as { traceEvents: ChromeEvent[] };
    for (const tid of [1, 2]) {
      const mine = chrome.traceEvents.filter((e) => e.tid === tid && e.ph !== 'M');
      expect(mine).toHaveLength(COUNT);
      expect(firstDecrease(mine.map((e) => e.ts))).toBe(-1);
    }
  });

  it('writers that take turns (handshakes) line up across threads: the merge shows the turns in order', async () => {
    const COUNT = 4_000;
    const BATCH = 100;
    const rings = allocateTraceRings(2, 4_096);
    const { go, done } = start(rings, [0, 1, 'coordinator'], COUNT, BATCH);
    await go();
    await done;
    // Only the even (kvmmmu) events reach ftrace: BATCH / 2 lines per turn, turns in writer order.
    const lines = ftraceText(rings, { style: 'tracefs', header: false }).trimEnd().split('\n');
    const tasks = lines.map((l) => l.trim().split(' ')[0]!);
    const expected: string[] = [];
    for (let turn = 0; turn < COUNT / BATCH; turn++) {
      for (const task of ['vcpu-0-4001', 'vcpu-1-4002', 'kvm-mmu-emu-4000']) for (let k = 0; k < BATCH / 2; k++) expected.push(task);
    }
    expect(tasks).toEqual(expected);
  });

  it('racy snapshots while small rings wrap many times return only whole, current events', async () => {
    const COUNT = 400_000;
    const rings = allocateTraceRings(1, 64);
    const { go, done } = start(rings, [0, 'coordinator'], COUNT);
    let finished = false;
    void done.then(() => (finished = true));
    await go();
    let snapshots = 0;
    const readers = [new TraceRing(rings, 0), new TraceRing(rings, 1)];
    while (!finished) {
      for (const [id, r] of readers.entries()) {
        const s = r.read(true);
        expect(s.count + s.dropped).toBe(s.written);
        checkCanaries(s, id);
        snapshots++;
      }
      await new Promise((res) => setImmediate(res));
    }
    await done;
    expect(snapshots).toBeGreaterThan(0);
    for (const [id, r] of readers.entries()) {
      const s = r.read();
      expect([s.written, s.count, s.dropped]).toEqual([COUNT, 64, COUNT - 64]);
      checkCanaries(s, id);
    }
  });
});

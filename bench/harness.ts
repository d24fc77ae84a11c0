/**
 * Measuring cases with tinybench: pre-warm every case of a group, calibrate
 * a batch size per case, then sample the cases that are compared with each
 * other interleaved (round after round), pool each case's samples into
 * per-call figures, and let each case verify that it measured what it claims
 * (e.g. that a "fast path" case really took the fast path on every call).
 */
import { Bench } from 'tinybench';
import type { BenchRow, Ratio, Timing } from './types.js';

/** A prepared case: `op` is one call; its result is consumed so it cannot be optimised away. */
export interface Probe {
  readonly op: () => number;
  /** Called after measuring; returns a message if the case did not measure what it claims. */
  readonly verify?: () => string | null;
}

export interface CaseSpec {
  readonly id: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Build fresh state and the probe; called once per case. */
  readonly make: () => Probe;
}

/** Thrown when a case's verify() finds it measured something else. */
export class BenchVerifyError extends Error {
  override name = 'BenchVerifyError';
}

/**
 * Every result of every call is folded in here. A module-level sink that is
 * read by `sinkValue()` is something V8 cannot prove dead.
 */
let sink = 0;
export const sinkValue = (): number => sink;

const nowNs = (): bigint => process.hrtime.bigint();
const MAX_BATCH = 1 << 20;

/** Time `batch` back-to-back calls, best of three (one GC pause or preemption must not decide the batch size). */
function timeBatch(op: () => number, batch: number): number {
  let best = Infinity;
  for (let t = 0; t < 3; t++) {
    let s = 0;
    const t0 = nowNs();
    for (let i = 0; i < batch; i++) s ^= op();
    best = Math.min(best, Number(nowNs() - t0));
    sink ^= s;
  }
  return best;
}

/** Smallest power of two such that `batch` back-to-back calls take at least `targetNs`. */
export function calibrateBatch(op: () => number, targetNs: number): number {
  // A first pass to get the function past the interpreter.
  let s = 0;
  for (let i = 0; i < 1000; i++) s ^= op();
  sink ^= s;
  let batch = 1;
  for (;;) {
    const dt = timeBatch(op, batch);
    if (dt >= targetNs || batch >= MAX_BATCH) return batch;
    // Jump close to the target when the estimate is already meaningful.
    const scale = dt > 0 ? Math.ceil(targetNs / dt) : 16;
    batch = Math.min(MAX_BATCH, batch * Math.max(2, 2 ** Math.ceil(Math.log2(scale))));
  }
}

/**
 * Run every case's op `calls` times before any case is measured, so every
 * case is measured in the same JIT state. Without it the first design
 * measured sees monomorphic call sites (one role format, one host object)
 * and the later ones polymorphic ones, and the order of cases, not the
 * design, decides who is faster.
 */
export function prewarm(specs: readonly CaseSpec[], calls: number): void {
  for (let round = 0; round < 2; round++) {
    for (const spec of specs) {
      const { op } = spec.make();
      let s = 0;
      for (let i = 0; i < calls; i++) s ^= op();
      sink ^= s;
    }
  }
}

/** Linear-interpolated quantile of ascending samples (as tinybench computes its percentiles). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const a = sorted[lo]!;
  const b = sorted[Math.min(lo + 1, sorted.length - 1)]!;
  return a + (pos - lo) * (b - a);
}

/** One tinybench run of `batch` calls per sample; returns the samples in ms. */
function sampleOnce(id: string, op: () => number, batch: number, timeMs: number, warmupMs: number, timing: Timing): number[] {
  const bench = new Bench({
    name: id,
    time: timeMs,
    warmup: warmupMs > 0,
    warmupTime: warmupMs,
    iterations: timing.minSamples,
    warmupIterations: timing.minSamples,
    timestampProvider: 'hrtimeNow',
    retainSamples: true,
    throws: true,
  });
  bench.add(id, () => {
    let s = 0;
    for (let i = 0; i < batch; i++) s ^= op();
    sink ^= s;
  });
  const [task] = bench.runSync();
  const r = task!.result;
  if (r.state !== 'completed') {
    throw new Error(`${id}: benchmark ended in state ${r.state}${r.state === 'errored' ? `: ${r.error.message}` : ''}`);
  }
  return r.latency.samples ?? [];
}

/** Per-call figures from pooled batch samples (ms per batch). */
function rowFromSamples(spec: CaseSpec, batch: number, samplesMs: number[]): BenchRow {
  const sorted = samplesMs.sort((a, b) => a - b);
  const n = sorted.length;
  const mean = sorted.reduce((acc, x) => acc + x, 0) / n;
  const sd = Math.sqrt(sorted.reduce((acc, x) => acc + (x - mean) ** 2, 0) / Math.max(1, n - 1));
  const perCallNs = (ms: number): number => (ms * 1e6) / batch;
  return {
    id: spec.id,
    labels: spec.labels,
    opsPerSec: mean > 0 ? (batch * 1000) / mean : 0,
    medianNs: perCallNs(quantile(sorted, 0.5)),
    p99Ns: perCallNs(quantile(sorted, 0.99)),
    samples: n,
    batch,
    // 95% margin of error of the mean (normal approximation; n is in the hundreds or more).
    rmePct: mean > 0 ? ((1.96 * sd) / Math.sqrt(n) / mean) * 100 : null,
  };
}

/**
 * Measure cases that will be compared with each other, interleaved: round
 * after round, each case gets `timeMs / rounds` of sampling, and a case's
 * figures come from all its rounds pooled. On a shared, noisy machine a burst
 * of outside load then hits every compared case alike instead of one of
 * them, so ratios between them hold even when absolute numbers move.
 * Throws BenchVerifyError if a case's verify() fails.
 */
export function measureInterleaved(specs: readonly CaseSpec[], timing: Timing): BenchRow[] {
  const probes = specs.map((spec) => spec.make());
  const batches = probes.map((p) => calibrateBatch(p.op, timing.targetSampleNs));
  const pooled: number[][] = specs.map(() => []);
  const rounds = Math.max(1, timing.rounds);
  for (let round = 0; round < rounds; round++) {
    specs.forEach((spec, i) => {
      const warm = round === 0 ? timing.warmupMs : 0;
      const into = pooled[i]!;
      for (const x of sampleOnce(spec.id, probes[i]!.op, batches[i]!, timing.timeMs / rounds, warm, timing)) into.push(x);
    });
  }
  return specs.map((spec, i) => {
    const problem = probes[i]!.verify?.() ?? null;
    if (problem) throw new BenchVerifyError(`${spec.id}: ${problem}`);
    return rowFromSamples(spec, batches[i]!, pooled[i]!);
  });
}

/** Measure one case on its own. */
export const measureCase = (spec: CaseSpec, timing: Timing): BenchRow => measureInterleaved([spec], timing)[0]!;

/** A ratio of the median ns/call of two rows of the same run. */
export function ratioOf(label: string, numerator: BenchRow, denominator: BenchRow, means: string): Ratio {
  const n = numerator.medianNs;
  const d = denominator.medianNs;
  if (n === null || d === null) throw new Error(`ratio ${label}: both rows need a median`);
  return {
    label,
    numerator: { row: numerator.id, medianNs: n },
    denominator: { row: denominator.id, medianNs: d },
    value: d > 0 ? n / d : Number.NaN,
    means,
  };
}

/** Let the event loop turn (signals, stderr) between cases. */
export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Searching with the simulation: run schedules (seed after seed) until one
 * fails, and shrink a failing run to a smaller one that still fails — fewer
 * steps (the run stops at its first violation, so the failing step is the
 * bound), fewer vCPUs, fewer coordinator actions (a lower event rate).
 */
import { simulate, type SimResult } from './sim.js';
import type { SimParams } from './token.js';

export interface HuntResult {
  /** Schedules run (including the failing one). */
  readonly schedules: number;
  readonly elapsedMs: number;
  /** The first failing run, or null when none failed within the budget. */
  readonly failure: SimResult | null;
}

/** Schedules with seeds p.seed, p.seed + 1, … until one fails or `maxSchedules` ran. */
export function hunt(p: SimParams, maxSchedules: number, onSchedule?: (n: number) => void): HuntResult {
  const t0 = performance.now();
  for (let i = 0; i < maxSchedules; i++) {
    const r = simulate({ ...p, seed: (p.seed + i) >>> 0 }, { keepTrace: false });
    onSchedule?.(i + 1);
    if (r.violation) return { schedules: i + 1, elapsedMs: performance.now() - t0, failure: r };
  }
  return { schedules: maxSchedules, elapsedMs: performance.now() - t0, failure: null };
}

const fails = (p: SimParams): SimResult | null => {
  const r = simulate(p, { keepTrace: false });
  return r.violation ? r : null;
};

/**
 * A smaller failing run: fewer vCPUs first (each count from 1 up, same seed),
 * then lower event rates (halving), each accepted only if it still fails
 * within the step room of the run it replaces; last, for a failure found at
 * the end of a run (the teardown audit), the fewest steps that still fail
 * (binary search). A failure found during a run needs no step search: the
 * run stops at its first violation. Returns the input when nothing smaller fails.
 */
export function shrink(failing: SimResult, budget = 64): SimResult {
  let best = failing;
  let tries = 0;
  const atEnd = (r: SimResult) => r.violation!.step >= r.params.steps;
  // Room for a candidate: the same bound for end-of-run failures, twice the failing step otherwise.
  const room = (r: SimResult) => (atEnd(r) ? r.params.steps : r.params.steps * 2);
  for (let n = 1; n < best.params.vcpus && tries < budget; n++, tries++) {
    const r = fails({ ...best.params, vcpus: n, steps: room(best) });
    if (r) {
      best = r;
      break;
    }
  }
  for (let rate = Math.floor(best.params.eventRate / 2); rate >= 1 && tries < budget; rate = Math.floor(rate / 2), tries++) {
    const r = fails({ ...best.params, eventRate: rate, steps: room(best) });
    if (!r) break;
    best = r;
  }
  if (atEnd(best)) {
    let lo = 1;
    let hi = best.params.steps;
    while (lo < hi && tries++ < budget) {
      const mid = Math.floor((lo + hi) / 2);
      const r = fails({ ...best.params, steps: mid });
      if (r) {
        best = r;
        hi = mid;
      } else lo = mid + 1;
    }
  }
  return best;
}

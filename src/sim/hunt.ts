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
 * A smaller failing run: fewer vCPUs first (each count from 1 up, same seed,
 * twice the original step bound), then lower event rates (halving), each
 * accepted only if it still fails; the failing step is the final bound.
 * Returns the input when nothing smaller fails.
 */
export function shrink(failing: SimResult, budget = 64): SimResult {
  let best = failing;
  let tries = 0;
  const bound = best.params.steps * 2;
  for (let n = 1; n < best.params.vcpus && tries < budget; n++, tries++) {
    const r = fails({ ...best.params, vcpus: n, steps: bound });
    if (r) {
      best = r;
      break;
    }
  }
  for (let rate = Math.floor(best.params.eventRate / 2); rate >= 1 && tries < budget; rate = Math.floor(rate / 2), tries++) {
    const r = fails({ ...best.params, eventRate: rate, steps: best.params.steps * 2 });
    if (!r || r.params.steps > best.params.steps * 2) break;
    best = r;
  }
  return best;
}

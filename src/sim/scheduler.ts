/**
 * Seeded schedulers for the in-thread simulation: at every step, choose which
 * runnable actor (a vCPU, or the coordinator) takes the next step.
 *
 * - `random`: uniform over the runnable actors.
 * - `pct`: probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi,
 *   Nagarakatte, ASPLOS 2010): random distinct priorities; always run the
 *   highest-priority runnable actor; at d − 1 change points, drawn uniformly
 *   in [1, k] for a step bound k, the running actor drops to a priority lower
 *   than every initial one. A bug of depth d is found with probability at
 *   least 1 / (n k^(d−1)) per run.
 *
 * Deterministic for a seed: the only randomness is the seeded Rng.
 */
import { Rng } from '../workload/rng.js';

/**
 * `horizon` (pct): the step bound k its change points are drawn over, when it
 * is not the run's own bound — a failing run's token stops at the failing
 * step but must draw the change points of the run that failed.
 */
export type SchedulerSpec = { readonly kind: 'random' } | { readonly kind: 'pct'; readonly depth: number; readonly horizon?: number };

export interface Scheduler {
  /** The actor to step, among `runnable` (indices, non-empty, ascending). */
  pick(runnable: readonly number[], step: number): number;
}

export function makeScheduler(spec: SchedulerSpec, actors: number, maxSteps: number, seed: number): Scheduler {
  const rng = new Rng(seed);
  if (spec.kind === 'random') return { pick: (runnable) => runnable[rng.int(runnable.length)]! };
  return new Pct(rng, actors, spec.horizon ?? maxSteps, spec.depth);
}

class Pct implements Scheduler {
  private readonly priority: number[];
  private readonly changePoints: Map<number, number>;

  constructor(rng: Rng, actors: number, maxSteps: number, depth: number) {
    // Distinct initial priorities d .. d + n − 1, shuffled; change points get d − 1 .. 1.
    const prios = Array.from({ length: actors }, (_, i) => depth + i);
    for (let i = prios.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [prios[i], prios[j]] = [prios[j]!, prios[i]!];
    }
    this.priority = prios;
    this.changePoints = new Map();
    for (let i = 1; i < depth; i++) this.changePoints.set(1 + rng.int(Math.max(1, maxSteps)), depth - i);
  }

  pick(runnable: readonly number[], step: number): number {
    let best = runnable[0]!;
    for (const a of runnable) if (this.priority[a]! > this.priority[best]!) best = a;
    const lowered = this.changePoints.get(step);
    if (lowered !== undefined) this.priority[best] = lowered;
    return best;
  }
}

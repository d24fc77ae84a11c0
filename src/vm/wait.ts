/**
 * Waiting on shared words from the coordinator without blocking its event
 * loop (so worker deaths and replies keep arriving): Atomics.waitAsync in
 * short slices, re-checking liveness and the deadline. A broadcast waits for
 * all targets and fails as a whole, naming every vCPU that did not answer.
 */
import { waitAsync } from '../layout/atomics.js';

export class BroadcastError extends Error {
  override name = 'BroadcastError';
  constructor(
    message: string,
    /** vCPU id → why it did not answer. */
    readonly failures: ReadonlyMap<number, string>,
  ) {
    super(message);
  }
}

const SLICE_MS = 25;

/** Wait until `done()` or the deadline; `dead()` returns a reason when the vCPU died. */
export async function waitOn(
  view: Int32Array,
  index: number,
  done: (value: number) => boolean,
  deadline: number,
  dead: () => string | null,
): Promise<void> {
  for (;;) {
    const v = Atomics.load(view, index);
    if (done(v)) return;
    const why = dead();
    if (why) throw new Error(why);
    const remaining = deadline - performance.now();
    if (remaining <= 0) throw new Error('no answer before the deadline');
    await waitAsync(view, index, v, Math.min(remaining, SLICE_MS));
  }
}

/** Run one wait per vCPU; resolve when all succeed, else throw a BroadcastError naming each failure. */
export async function waitAll(what: string, waits: ReadonlyMap<number, () => Promise<void>>): Promise<void> {
  const ids = [...waits.keys()];
  const results = await Promise.allSettled(ids.map((id) => waits.get(id)!()));
  const failures = new Map<number, string>();
  results.forEach((r, i) => {
    if (r.status === 'rejected') failures.set(ids[i]!, (r.reason as Error)?.message ?? String(r.reason));
  });
  if (failures.size) {
    const list = [...failures].map(([id, why]) => `vCPU ${id}: ${why}`).join('; ');
    throw new BroadcastError(`${what}: ${failures.size} of ${ids.length} vCPU(s) did not answer (${list})`, failures);
  }
}

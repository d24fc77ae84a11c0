/**
 * Waiting on shared words from the coordinator without blocking its event
 * loop (so worker deaths and replies keep arriving): Atomics.waitAsync in
 * short slices, re-checking liveness and the deadline. A broadcast waits for
 * all targets (one after the other, see waitAll) and fails as a whole,
 * naming every vCPU that did not answer.
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

/** One target of a broadcast: the shared word it answers in, when that counts as answered, and whether its worker died. */
export interface AckWord {
  readonly view: Int32Array;
  readonly index: number;
  /** Must be monotone: once true for a value of the word, true for every later value (epochs only grow). */
  readonly done: (value: number) => boolean;
  /** Why the target's worker died, or null. */
  readonly dead: () => string | null;
}

/**
 * Wait until every target answered, with one deadline for all; resolve when
 * all did, else throw a BroadcastError naming each target that did not.
 *
 * The targets are awaited one after the other, in order. Because `done` is
 * monotone, checking a target later is as good as checking it when it
 * answered, so this waits exactly as long as waiting on all at once would.
 * But a target that already answered costs one Atomics.load and no promise,
 * and only the one target being awaited has a waiter on its word: the others'
 * Atomics.notify finds no waiter, so it neither wakes this thread nor queues
 * a task on it (waiting on all at once, every unanswered target had a
 * waiter: each answer woke the coordinator, and each wait queued a timeout
 * task and allocated promises). Every target is still checked, and a
 * target reached after the deadline fails at once, so every failure is named.
 */
export async function waitAll(what: string, targets: ReadonlyMap<number, AckWord>, deadline: number): Promise<void> {
  const failures = new Map<number, string>();
  for (const [id, t] of targets) {
    if (t.done(Atomics.load(t.view, t.index))) continue;
    try {
      await waitOn(t.view, t.index, t.done, deadline, t.dead);
    } catch (e) {
      failures.set(id, (e as Error)?.message ?? String(e));
    }
  }
  if (failures.size) {
    const list = [...failures].map(([id, why]) => `vCPU ${id}: ${why}`).join('; ');
    throw new BroadcastError(`${what}: ${failures.size} of ${targets.size} vCPU(s) did not answer (${list})`, failures);
  }
}

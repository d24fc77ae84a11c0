/**
 * Small typed helpers over `Atomics` for 32-bit shared words. Every `Atomics`
 * operation is sequentially consistent, so the order of calls at a call site
 * is the memory order; callers comment which ordering they rely on.
 */

export type Word32 = Int32Array;

/** Sequentially consistent load. */
export const load = (view: Word32, index = 0): number => Atomics.load(view, index);

/** Sequentially consistent store. */
export const store = (view: Word32, index: number, value: number): void => {
  Atomics.store(view, index, value);
};

/**
 * Compare-exchange. Returns true when `expected` was found and replaced.
 * Failure contract: on failure nothing is written; the caller re-reads.
 */
export const compareExchange = (view: Word32, index: number, expected: number, replacement: number): boolean =>
  Atomics.compareExchange(view, index, expected, replacement) === expected;

/** Atomically OR `bits` into a word; returns the previous value. */
export const setBits = (view: Word32, index: number, bits: number): number => Atomics.or(view, index, bits);

/** Atomically clear `bits` in a word; returns the previous value. */
export const clearBits = (view: Word32, index: number, bits: number): number => Atomics.and(view, index, ~bits);

/**
 * Test a bit and, if it was set, clear it atomically (KVM's kvm_check_request:
 * test, then clear with a full barrier after the atomic). Returns whether it
 * was set. Safe against concurrent setters: a bit set after the test stays set.
 */
export function testAndClearBit(view: Word32, index: number, bit: number): boolean {
  const mask = 1 << bit;
  if ((Atomics.load(view, index) & mask) === 0) return false;
  return (Atomics.and(view, index, ~mask) & mask) !== 0;
}

/** Atomically add; returns the previous value. */
export const add = (view: Word32, index: number, delta: number): number => Atomics.add(view, index, delta);

/** Result of Atomics.waitAsync (ES2024; present in Node 20, typed here to keep lib ES2022). */
export type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };

/**
 * Wait without blocking the thread until `view[index]` is notified or no
 * longer equals `expected`, or `timeoutMs` passes (undefined: forever).
 */
export async function waitAsync(view: Int32Array, index: number, expected: number, timeoutMs?: number): Promise<'ok' | 'not-equal' | 'timed-out'> {
  const w = (Atomics as unknown as { waitAsync(v: Int32Array, i: number, e: number, t?: number): WaitAsyncResult }).waitAsync(view, index, expected, timeoutMs);
  return w.async ? await w.value : w.value;
}

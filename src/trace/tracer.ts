/**
 * The writer side of tracing: one Tracer per thread, over that thread's
 * ring. Spans are recorded once, at their end, with their start and
 * duration (`const t = tracer.now(); …; tracer.end(EV.GUEST, t)`), so an
 * unfinished span costs nothing and the ring never holds half a span.
 *
 * Callers hold a `Tracer | undefined` and write `tracer?.end(…)`: with
 * tracing off nothing is called and no argument is evaluated. A Tracer is
 * owner-only (one thread, one ring); it allocates nothing per event.
 */
import { EV, FAULT_OUTCOME_CODE, LOAD_RESULT_CODE, MMU_CONTEXT_CODE, BROADCAST_CODE, type BroadcastKind, type FaultOutcome, type LoadResultName, type MmuContextName } from './events.js';
import { ringIndex, TraceRing, type TraceRingsHandle } from './ring.js';
import type { ShadowTracer } from './shadow-tracer.js';

const LO32 = 0xffff_ffffn;

export class Tracer implements ShadowTracer {
  /** Add to performance.now() to get ms since the ring set's epoch. */
  private readonly offset: number;

  /**
   * @param clock optional time source in ms since the set's epoch, instead of
   *   the wall clock: the in-thread simulation passes its step counter, so a
   *   replayed run writes the same trace byte for byte.
   */
  constructor(
    readonly ring: TraceRing,
    private readonly clock?: () => number,
  ) {
    this.offset = performance.timeOrigin - ring.epoch;
  }

  /** The tracer of vCPU `track` (or the coordinator) on a set of rings: call it in the thread that writes. */
  static attach(handle: TraceRingsHandle, track: number | 'coordinator', clock?: () => number): Tracer {
    return new Tracer(new TraceRing(handle, ringIndex(handle, track)), clock);
  }

  /** Now, in ms since the set's epoch (the unit of every start and timestamp). */
  now(): number {
    return this.clock ? this.clock() : performance.now() + this.offset;
  }

  /** A span of `kind` from `start` (a `now()`) to now. */
  end(kind: number, start: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0): void {
    this.ring.push(start, this.now() - start, kind, a0, a1, a2, a3);
  }

  /** A span with both ends known. */
  span(kind: number, start: number, end: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0): void {
    this.ring.push(start, end - start, kind, a0, a1, a2, a3);
  }

  /** A point event now. */
  instant(kind: number, a0 = 0, a1 = 0, a2 = 0, a3 = 0): void {
    this.ring.push(this.now(), 0, kind, a0, a1, a2, a3);
  }

  /** A counter sample now. */
  counter(kind: number, value: number): void {
    this.ring.push(this.now(), 0, kind, value, 0, 0, 0);
  }

  // --- typed helpers for the vCPU core and the coordinator ------------------

  /** A guest-mode stint that began at `start`. */
  guest(start: number): void {
    this.end(EV.GUEST, start);
  }
  /** Request handling that began at `start`, consuming request word `bits`. */
  requests(start: number, bits: number): void {
    this.end(EV.REQUESTS, start, bits >>> 0);
  }
  /** kvm_init_mmu of one context: fast path (`rebuilt` false) or rebuild, and the role computed. */
  mmuInit(start: number, context: MmuContextName, rebuilt: boolean, base: number, ext: number): void {
    this.end(EV.MMU_INIT, start, MMU_CONTEXT_CODE[context], rebuilt ? 1 : 0, base >>> 0, ext >>> 0);
  }
  /** A shadow/direct page fault at `addr` with `errorCode` and its FaultResult kind. */
  shadowFault(start: number, addr: bigint, errorCode: number, outcome: FaultOutcome): void {
    const a = BigInt.asUintN(64, addr);
    this.end(EV.SHADOW_FAULT, start, Number(a & LO32), Number(a >> 32n), errorCode >>> 0, FAULT_OUTCOME_CODE[outcome]);
  }
  halt(start: number): void {
    this.end(EV.HALT, start);
  }
  mmuLoad(start: number, result: LoadResultName): void {
    this.end(EV.MMU_LOAD, start, LOAD_RESULT_CODE[result]);
  }
  /** A broadcast of `kind` to `targets` vCPUs, from the first request to the last acknowledgement. */
  broadcast(start: number, kind: BroadcastKind, targets: number): void {
    this.end(EV.BROADCAST, start, BROADCAST_CODE[kind], targets);
  }
  /** The coordinator waiting (for acknowledgements of `kind` from `targets` vCPUs). */
  wait(start: number, kind: BroadcastKind, targets: number): void {
    this.end(EV.WAIT, start, BROADCAST_CODE[kind], targets);
  }
  /** Shadow pages in use. */
  shadowPages(pages: number): void {
    this.counter(EV.SHADOW_PAGES, pages);
  }

  // --- ShadowTracer (kvmmmu tracepoints) --------------------------------------

  getPage(gfn: number, role: number, created: boolean, gen: number, rootCount: number): void {
    this.instant(EV.GET_PAGE, gfn, role >>> 0, rootCount, gen * 2 + (created ? 1 : 0));
  }
  prepareZap(gfn: number, role: number, rootCount: number, gen: number): void {
    this.instant(EV.PREPARE_ZAP_PAGE, gfn, role >>> 0, rootCount, gen);
  }
  zapAllFast(gen: number, usedPages: number): void {
    this.instant(EV.ZAP_ALL_FAST, gen, usedPages);
  }
  pagetableWalk(addr: bigint, pferr: number): void {
    const a = BigInt.asUintN(64, addr);
    this.instant(EV.PAGETABLE_WALK, Number(a & LO32), Number(a >> 32n), pferr >>> 0);
  }
  walkerError(pferr: number): void {
    this.instant(EV.WALKER_ERROR, pferr >>> 0);
  }
}

/**
 * Per-thread trace rings in one SharedArrayBuffer: one ring per vCPU plus
 * one for the coordinator, so the coordinator reads every thread's events
 * after the VM stopped without a single message.
 *
 * A ring holds the newest `capacity` events of its thread. An event is
 * EVENT_WORDS f64 words: timestamp, duration, kind, four arguments (see
 * events.ts for what each kind puts in them). Timestamps are milliseconds
 * since the set's `epoch` (ms since the Unix epoch, taken when the set was
 * allocated); each writer converts its own clock with its
 * performance.timeOrigin, so threads with different time origins line up,
 * and keeping the stored numbers small keeps them precise to well below a
 * microsecond.
 *
 * Ownership: one writer per ring, the thread that owns the track (a vCPU
 * worker, or the coordinator). Readers read after the writer stopped (the
 * normal case: the VM is stopped, every worker returned) — then the read is
 * exact — or at any time as a racy snapshot (`read` re-checks the cursor
 * and drops the slots the writer may have overwritten meanwhile).
 *
 * Arithmetic: event number n (0-based, counting every event ever written)
 * lives in slot n mod capacity, at word (n mod capacity)·EVENT_WORDS of
 * `events`. After `written` events, the ring holds events
 * max(0, written − capacity) … written − 1; the rest were dropped.
 */
import { allocate, bindRecord, defineLayout, LayoutError, type Layout, type RecordView } from '../layout/layout.js';

/** Words of one event: ts, dur, kind, a0, a1, a2, a3. */
export const EVENT_WORDS = 7;
export const EVENT_BYTES = EVENT_WORDS * 8;
/** Word offsets inside an event. */
export const W = { TS: 0, DUR: 1, KIND: 2, A0: 3, A1: 4, A2: 5, A3: 6 } as const;

export const DEFAULT_RING_CAPACITY = 65_536;
export const MAX_RING_CAPACITY = 1 << 24;
/** The most shared memory one set of rings may take (all rings together). */
export const MAX_TRACE_BYTES = 1 << 30;

const TWO32 = 2 ** 32;

function ringFields(capacity: number) {
  return {
    written: {
      type: 'u32',
      count: 2,
      doc: 'events ever written, [low 32 bits, high 32 bits]. Writer only: it fills the slot with plain writes, then Atomics.store of the low word (the publication: a reader that Atomics.loads it sees the slot); the high word is Atomics.stored right after the low word wraps to 0. Readers Atomics.load high, low, high and retry if the highs differ (exact once the writer stopped; a racy reader exactly at a 2^32 wrap may be off by 2^32).',
    },
    capacity: { type: 'u32', doc: 'events the ring holds. Written by allocateTraceRings before the buffer is shared; read-only afterwards (plain reads).' },
    epoch: {
      type: 'f64',
      doc: 'the set\'s time base, ms since the Unix epoch (performance.timeOrigin + performance.now() of the allocating thread). Written by allocateTraceRings before the buffer is shared; read-only afterwards (plain reads).',
    },
    events: {
      type: 'f64',
      count: capacity * EVENT_WORDS,
      doc: 'the events, EVENT_WORDS words each, slot n mod capacity for event n. Writer-only plain writes, published by the Atomics.store of written[0] that follows; readers read slots below the published count, after the writer stopped or as a racy snapshot re-checked against `written`.',
    },
  } as const;
}

export type TraceRingLayout = Layout<ReturnType<typeof ringFields>>;
export type TraceRingRecord = RecordView<ReturnType<typeof ringFields>>;

/** The layout of one ring of `capacity` events (records of a set share it). */
export function traceRingLayout(capacity: number): TraceRingLayout {
  checkCapacity(capacity);
  return defineLayout('trace-ring', ringFields(capacity));
}

function checkCapacity(capacity: number): void {
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_RING_CAPACITY) {
    throw new LayoutError(`trace ring capacity: expected an integer in 1..${MAX_RING_CAPACITY}, got ${capacity}`);
  }
}

/** Everything a thread needs to bind its ring: structured-clonable (post it in the vCPU task). */
export interface TraceRingsHandle {
  readonly buffer: SharedArrayBuffer;
  /** Events per ring. */
  readonly capacity: number;
  /** vCPU rings 0..vcpus−1; the coordinator's ring is index `vcpus`. */
  readonly vcpus: number;
}

/** Bytes a set of rings takes: (vcpus + 1) rings of `capacity` events. */
export const traceRingsBytes = (vcpus: number, capacity = DEFAULT_RING_CAPACITY): number => traceRingLayout(capacity).stride * (vcpus + 1);

/** Allocate the rings of a VM: one per vCPU and one for the coordinator, all empty, sharing one epoch. */
export function allocateTraceRings(vcpus: number, capacity = DEFAULT_RING_CAPACITY, epoch = performance.timeOrigin + performance.now()): TraceRingsHandle {
  if (!Number.isInteger(vcpus) || vcpus < 0) throw new LayoutError(`trace rings: vCPU count must be a non-negative integer, got ${vcpus}`);
  const layout = traceRingLayout(capacity);
  const bytes = layout.stride * (vcpus + 1);
  if (bytes > MAX_TRACE_BYTES) {
    const mib = (n: number) => Math.ceil(n / 2 ** 20);
    throw new LayoutError(
      `trace rings: ${vcpus + 1} rings of ${capacity} events (${EVENT_BYTES} bytes each) need ${mib(bytes)} MiB, more than ${mib(MAX_TRACE_BYTES)} MiB; ` +
        `at most ${Math.floor((MAX_TRACE_BYTES / (vcpus + 1) - layout.fields.events.offset) / EVENT_BYTES)} events per ring for ${vcpus} vCPUs`,
    );
  }
  const buffer = allocate(layout, vcpus + 1);
  for (let i = 0; i <= vcpus; i++) {
    const r = bindRecord(layout, buffer, i);
    r.capacity[0] = capacity;
    r.epoch[0] = epoch;
  }
  return { buffer, capacity, vcpus };
}

/** Ring index of vCPU `i`, or of the coordinator. */
export const ringIndex = (h: TraceRingsHandle, track: number | 'coordinator'): number => {
  if (track === 'coordinator') return h.vcpus;
  if (!Number.isInteger(track) || track < 0 || track >= h.vcpus) throw new RangeError(`trace ring: vCPU ${track} is not in 0..${h.vcpus - 1}`);
  return track;
};

/** The events a reader copied out of a ring, oldest first. */
export interface RingSnapshot {
  /** EVENT_WORDS words per event, oldest first; timestamps already relative to `epoch`. */
  readonly events: Float64Array;
  readonly count: number;
  /** Events ever written to the ring. */
  readonly written: number;
  /** Events lost: overwritten by newer ones (or, for a racy snapshot, being overwritten while read). */
  readonly dropped: number;
  /** ms since the Unix epoch of timestamp 0. */
  readonly epoch: number;
}

/** One ring, bound in one thread: the writer side (`push`) and the reader side (`read`). */
export class TraceRing {
  readonly capacity: number;
  readonly epoch: number;
  private readonly written: Uint32Array;
  private readonly ev: Float64Array;
  /** Writer-local copies: events written, and the next slot's first word. */
  private n: number;
  private at: number;

  constructor(handle: TraceRingsHandle, readonly index: number) {
    const layout = traceRingLayout(handle.capacity);
    const r = bindRecord(layout, handle.buffer, index);
    if (r.capacity[0] !== handle.capacity) throw new LayoutError(`trace ring ${index}: the buffer says capacity ${r.capacity[0]}, the handle ${handle.capacity}`);
    this.capacity = handle.capacity;
    this.epoch = r.epoch[0]!;
    this.written = r.written;
    this.ev = r.events;
    this.n = this.loadWritten();
    this.at = (this.n % this.capacity) * EVENT_WORDS;
  }

  /** Append one event (writer only). Overwrites the oldest when full. */
  push(ts: number, dur: number, kind: number, a0: number, a1: number, a2: number, a3: number): void {
    const ev = this.ev;
    let o = this.at;
    ev[o] = ts;
    ev[o + 1] = dur;
    ev[o + 2] = kind;
    ev[o + 3] = a0;
    ev[o + 4] = a1;
    ev[o + 5] = a2;
    ev[o + 6] = a3;
    o += EVENT_WORDS;
    this.at = o === this.ev.length ? 0 : o;
    const n = ++this.n;
    // The publication: every plain write above happens-before a reader's Atomics.load that sees n.
    Atomics.store(this.written, 0, n % TWO32);
    if (n % TWO32 === 0) Atomics.store(this.written, 1, n / TWO32);
  }

  /** Events ever written (any thread). */
  loadWritten(): number {
    for (;;) {
      const hi = Atomics.load(this.written, 1);
      const lo = Atomics.load(this.written, 0);
      if (Atomics.load(this.written, 1) === hi) return hi * TWO32 + lo;
    }
  }

  /**
   * Copy out the events the ring holds, oldest first. Exact once the writer
   * stopped (`racy` false: the caller knows it, e.g. every worker returned).
   * With `racy` true, a snapshot of a running writer: the slots it may have
   * reached while they were copied, the one it is writing included, are
   * counted as dropped.
   */
  read(racy = false): RingSnapshot {
    const cap = this.capacity;
    const before = this.loadWritten();
    let first = Math.max(0, before - cap);
    const copy = new Float64Array((before - first) * EVENT_WORDS);
    for (let n = first, o = 0; n < before; n++, o += EVENT_WORDS) {
      const s = (n % cap) * EVENT_WORDS;
      copy.set(this.ev.subarray(s, s + EVENT_WORDS), o);
    }
    let events = copy;
    if (racy) {
      // The writer published `after` events and may be writing event `after`, in the slot of event after − cap.
      const safe = this.loadWritten() + 1 - cap;
      if (safe > first) {
        const skip = Math.min(before, safe) - first;
        events = copy.subarray(skip * EVENT_WORDS);
        first += skip;
      }
    }
    return { events, count: before - first, written: before, dropped: first, epoch: this.epoch };
  }
}

/**
 * Read every ring of a set: vCPU rings first (index = vCPU), the
 * coordinator's last. Call it after every writer stopped, or pass `racy`.
 */
export function readTraceRings(handle: TraceRingsHandle, racy = false): RingSnapshot[] {
  const out: RingSnapshot[] = [];
  for (let i = 0; i <= handle.vcpus; i++) out.push(new TraceRing(handle, i).read(racy));
  return out;
}

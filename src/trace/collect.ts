/**
 * The reader's view of a VM's trace: the rings as tracks (one per vCPU, one
 * for the coordinator), a common time base, and a merge of events across
 * tracks in timestamp order. Shared by the Chrome and ftrace exporters.
 */
import { EVENT_WORDS, readTraceRings, W, type RingSnapshot, type TraceRingsHandle } from './ring.js';

/** Rings as read: vCPU i's at index i, and the coordinator's if it traced. */
export interface TraceSet {
  readonly vcpus: readonly RingSnapshot[];
  readonly coordinator?: RingSnapshot;
}

export interface Track {
  /** "vCPU 3" or "coordinator". */
  readonly name: string;
  /** vCPU index, or null for the coordinator. */
  readonly vcpu: number | null;
  readonly ring: RingSnapshot;
  /** ms to add to this ring's timestamps to get ms since the set's base (see timeBase). */
  readonly shift: number;
}

const isHandle = (s: TraceSet | TraceRingsHandle): s is TraceRingsHandle => 'buffer' in s;

/** A TraceSet from rings already read, or read now from a handle (after the writers stopped, unless `racy`). */
export function traceSetOf(source: TraceSet | TraceRingsHandle, racy = false): TraceSet {
  if (!isHandle(source)) return source;
  const all = readTraceRings(source, racy);
  return { vcpus: all.slice(0, source.vcpus), coordinator: all[source.vcpus] };
}

/**
 * The tracks of a set, coordinator first, each with its shift to a common
 * base: `base` is ms since the Unix epoch of the earliest timestamp of any
 * event (span starts included), and a track's event at ts lies at
 * ts + shift ms after it.
 */
export function tracksOf(set: TraceSet): { tracks: Track[]; base: number } {
  const raw: { name: string; vcpu: number | null; ring: RingSnapshot }[] = [];
  if (set.coordinator) raw.push({ name: 'coordinator', vcpu: null, ring: set.coordinator });
  set.vcpus.forEach((ring, i) => raw.push({ name: `vCPU ${i}`, vcpu: i, ring }));
  const epoch0 = raw.length ? Math.min(...raw.map((t) => t.ring.epoch)) : 0;
  // Earliest timestamp relative to epoch0, computed from small numbers to keep sub-µs precision.
  let min = Infinity;
  for (const t of raw) {
    const d = t.ring.epoch - epoch0;
    const ev = t.ring.events;
    for (let o = 0; o < ev.length; o += EVENT_WORDS) if (ev[o + W.TS]! + d < min) min = ev[o + W.TS]! + d;
  }
  if (min === Infinity) min = 0;
  return { tracks: raw.map((t) => ({ ...t, shift: t.ring.epoch - epoch0 - min })), base: epoch0 + min };
}

/**
 * Every event accepted by `keep(kind)`, across tracks, in timestamp order
 * (ties: track order, then ring order). Within a ring the kept events must
 * already be in timestamp order — true of instants and counters, which are
 * stamped when written; spans are stamped with their start but written at
 * their end, so merge them only with a keep that takes no spans. Yields
 * [track index, word offset of the event in its ring's `events`].
 */
export function* mergeByTime(tracks: readonly Track[], keep: (kind: number) => boolean): Generator<readonly [number, number]> {
  const pos = tracks.map(() => -EVENT_WORDS);
  const next = (t: number): boolean => {
    const ev = tracks[t]!.ring.events;
    for (let o = pos[t]! + EVENT_WORDS; o < ev.length; o += EVENT_WORDS) {
      if (keep(ev[o + W.KIND]!)) {
        pos[t] = o;
        return true;
      }
    }
    pos[t] = ev.length;
    return false;
  };
  const key = (t: number): number => tracks[t]!.ring.events[pos[t]! + W.TS]! + tracks[t]!.shift;
  const less = (a: number, b: number): boolean => key(a) < key(b) || (key(a) === key(b) && a < b);
  // A binary min-heap of track indices keyed by their current event's time.
  const heap: number[] = [];
  const up = (i: number): void => {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(heap[i]!, heap[p]!)) return;
      [heap[i], heap[p]] = [heap[p]!, heap[i]!];
      i = p;
    }
  };
  const down = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && less(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && less(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  };
  for (let t = 0; t < tracks.length; t++) {
    if (next(t)) {
      heap.push(t);
      up(heap.length - 1);
    }
  }
  while (heap.length) {
    const t = heap[0]!;
    yield [t, pos[t]!] as const;
    if (next(t)) down(0);
    else {
      const last = heap.pop()!;
      if (heap.length) {
        heap[0] = last;
        down(0);
      }
    }
  }
}

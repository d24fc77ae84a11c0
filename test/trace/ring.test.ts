/**
 * The trace ring: layout, wraparound keeping the newest `capacity` events
 * with the dropped count, racy snapshots, the Tracer's encodings, and the
 * merge across tracks.
 */
import { describe, expect, it } from 'vitest';
import { checkNoOverlap, LayoutError } from '../../src/layout/layout.js';
import {
  allocateTraceRings,
  EV,
  EVENT_BY_ID,
  EVENT_WORDS,
  MAX_TRACE_BYTES,
  mergeByTime,
  readTraceRings,
  TRACE_EVENTS,
  traceRingLayout,
  traceRingsBytes,
  TraceRing,
  Tracer,
  tracksOf,
} from '../../src/trace/index.js';
import { W } from '../../src/trace/ring.js';

const kinds = (events: Float64Array): number[] => {
  const out: number[] = [];
  for (let o = 0; o < events.length; o += EVENT_WORDS) out.push(events[o + W.KIND]!);
  return out;
};
const arg0s = (events: Float64Array): number[] => {
  const out: number[] = [];
  for (let o = 0; o < events.length; o += EVENT_WORDS) out.push(events[o + W.A0]!);
  return out;
};

describe('ring layout', () => {
  it('declares every field once, without overlap, and sizes a set as (vCPUs + 1) rings', () => {
    const layout = traceRingLayout(100);
    checkNoOverlap(layout);
    expect(layout.fields.events.count).toBe(100 * EVENT_WORDS);
    for (const f of Object.values(layout.fields)) expect(f.doc.length).toBeGreaterThan(20);
    const h = allocateTraceRings(3, 100);
    expect(h.buffer.byteLength).toBe(traceRingsBytes(3, 100));
    expect(h.buffer.byteLength).toBe(4 * layout.stride);
  });

  it('rejects a bad capacity or vCPU count with a message naming it', () => {
    expect(() => allocateTraceRings(2, 0)).toThrow(LayoutError);
    expect(() => allocateTraceRings(2, 1.5)).toThrow(/capacity/);
    expect(() => allocateTraceRings(-1, 8)).toThrow(/vCPU count/);
    // 1024 vCPUs at the default capacity would take 3.5 GiB: refused with the capacity that fits.
    let message = '';
    try {
      allocateTraceRings(1024, 65_536);
    } catch (e) {
      message = (e as Error).message;
    }
    const fits = Number(/more than 1024 MiB; at most (\d+) events per ring for 1024 vCPUs/.exec(message)?.[1]);
    expect(traceRingsBytes(1024, fits)).toBeLessThanOrEqual(MAX_TRACE_BYTES);
    expect(traceRingsBytes(1024, fits + 1)).toBeGreaterThan(MAX_TRACE_BYTES);
    expect(() => Tracer.attach(allocateTraceRings(2, 8), 2)).toThrow(/vCPU 2/);
  });

  it('every event kind has a unique id and at most four argument words', () => {
    const ids = Object.values(TRACE_EVENTS).map((d) => d.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const d of Object.values(TRACE_EVENTS)) expect(EVENT_BY_ID[d.id]).toBe(d);
  });
});

describe('wraparound', () => {
  it('keeps the newest `capacity` events, oldest first, and reports the rest as dropped', () => {
    const h = allocateTraceRings(1, 8);
    const t = Tracer.attach(h, 0);
    for (let i = 0; i < 21; i++) t.instant(EV.WALKER_ERROR, i);
    const [ring, coord] = readTraceRings(h);
    expect(ring!.written).toBe(21);
    expect(ring!.count).toBe(8);
    expect(ring!.dropped).toBe(13);
    expect(arg0s(ring!.events)).toEqual([13, 14, 15, 16, 17, 18, 19, 20]);
    expect(coord!.written).toBe(0);
    expect(coord!.count).toBe(0);
  });

  it('a ring that never filled drops nothing; exactly full drops nothing', () => {
    const h = allocateTraceRings(0, 4);
    const t = Tracer.attach(h, 'coordinator');
    for (let i = 0; i < 4; i++) t.counter(EV.SHADOW_PAGES, i);
    const [ring] = readTraceRings(h);
    expect([ring!.count, ring!.dropped]).toEqual([4, 0]);
    expect(arg0s(ring!.events)).toEqual([0, 1, 2, 3]);
  });

  it('a second binding in the same thread continues where the first stopped', () => {
    const h = allocateTraceRings(1, 4);
    Tracer.attach(h, 0).instant(EV.WALKER_ERROR, 1);
    const t = Tracer.attach(h, 0);
    for (let i = 2; i <= 5; i++) t.instant(EV.WALKER_ERROR, i);
    expect(arg0s(readTraceRings(h)[0]!.events)).toEqual([2, 3, 4, 5]);
  });

  it('a racy snapshot of a full ring drops the slot the writer may be writing', () => {
    const h = allocateTraceRings(1, 4);
    const t = Tracer.attach(h, 0);
    for (let i = 0; i < 6; i++) t.instant(EV.WALKER_ERROR, i);
    const snap = new TraceRing(h, 0).read(true);
    expect(arg0s(snap.events)).toEqual([3, 4, 5]);
    expect(snap.dropped).toBe(3);
    // Not yet full: nothing can be overwritten.
    const h2 = allocateTraceRings(1, 4);
    Tracer.attach(h2, 0).instant(EV.WALKER_ERROR, 7);
    expect(arg0s(new TraceRing(h2, 0).read(true).events)).toEqual([7]);
  });
});

describe('Tracer', () => {
  it('records spans at their end with start and duration; instants and counters with duration 0', () => {
    const h = allocateTraceRings(1, 16);
    const t = Tracer.attach(h, 0);
    const start = t.now();
    t.instant(EV.GET_PAGE, 5, 0x3784, 0, 1);
    t.guest(start);
    t.shadowPages(42);
    const [ring] = readTraceRings(h);
    const ev = ring!.events;
    expect(kinds(ev)).toEqual([EV.GET_PAGE, EV.GUEST, EV.SHADOW_PAGES]);
    expect(ev[EVENT_WORDS + W.TS]).toBe(start);
    expect(ev[EVENT_WORDS + W.DUR]).toBeGreaterThanOrEqual(0);
    expect(ev[W.TS]).toBeGreaterThanOrEqual(start);
    expect(ev[W.DUR]).toBe(0);
    expect(ev[2 * EVENT_WORDS + W.A0]).toBe(42);
    // Timestamps are ms since the set's epoch, which is ms since the Unix epoch.
    expect(Math.abs(ring!.epoch + start - Date.now())).toBeLessThan(5_000);
  });

  it('splits 64-bit addresses into halves and encodes codes by name', () => {
    const h = allocateTraceRings(1, 16);
    const t = Tracer.attach(h, 0);
    t.pagetableWalk(0xffff_8000_1234_5000n, 0x3);
    t.shadowFault(t.now(), 0xffff_ffff_ffff_f000n, 0x6, 'guest-fault');
    t.mmuInit(t.now(), 'nested_mmu', true, 0x8000_3784, 0xffff_ffff);
    t.getPage(0x1234, 0x3784, true, 1, 2);
    const ev = readTraceRings(h)[0]!.events;
    expect([ev[W.A0], ev[W.A1], ev[W.A2]]).toEqual([0x1234_5000, 0xffff_8000, 3]);
    const f = EVENT_WORDS;
    expect([ev[f + W.A0], ev[f + W.A1], ev[f + W.A2], ev[f + W.A3]]).toEqual([0xffff_f000, 0xffff_ffff, 6, 4]);
    const m = 2 * EVENT_WORDS;
    expect([ev[m + W.A0], ev[m + W.A1], ev[m + W.A2], ev[m + W.A3]]).toEqual([2, 1, 0x8000_3784, 0xffff_ffff]);
    const g = 3 * EVENT_WORDS;
    expect([ev[g + W.A0], ev[g + W.A1], ev[g + W.A2], ev[g + W.A3]]).toEqual([0x1234, 0x3784, 2, 3]);
  });
});

describe('merge across tracks', () => {
  it('yields the kept events of every track in timestamp order, ties in track order', () => {
    const h = allocateTraceRings(2, 16);
    const a = Tracer.attach(h, 0);
    const b = Tracer.attach(h, 1);
    const c = Tracer.attach(h, 'coordinator');
    // Hand-made timestamps through span(): a span's ts is its start.
    a.span(EV.WALKER_ERROR, 1, 1);
    a.span(EV.WALKER_ERROR, 4, 4);
    b.span(EV.WALKER_ERROR, 2, 2);
    b.span(EV.GUEST, 0, 9);
    b.span(EV.WALKER_ERROR, 4, 4);
    c.span(EV.ZAP_ALL_FAST, 3, 3);
    const { tracks } = tracksOf({ vcpus: readTraceRings(h).slice(0, 2), coordinator: readTraceRings(h)[2] });
    const keep = (k: number) => k !== EV.GUEST;
    const order = [...mergeByTime(tracks, keep)].map(([t, off]) => [tracks[t]!.name, tracks[t]!.ring.events[off + W.TS]! + tracks[t]!.shift]);
    // The GUEST span starting at 0 sets the base; tracks: coordinator, vCPU 0, vCPU 1.
    expect(order).toEqual([
      ['vCPU 0', 1],
      ['vCPU 1', 2],
      ['coordinator', 3],
      ['vCPU 0', 4],
      ['vCPU 1', 4],
    ]);
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { testAndClearBit, compareExchange, setBits, clearBits } from '../../src/layout/atomics.js';
import { allocate, bindRecord, checkNoOverlap, defineLayout, describeLayout, FIELD_TYPES, LayoutError, type FieldType, type Layout } from '../../src/layout/layout.js';

const doc = 'test field: written and read by the test thread only';

describe('defineLayout', () => {
  it('places fields in order, naturally aligned, with an 8-byte stride', () => {
    const l = defineLayout('t', {
      a: { type: 'u8', doc },
      b: { type: 'i32', doc },
      c: { type: 'u8', count: 3, doc },
      d: { type: 'i64', doc },
    });
    expect(l.fields.a.offset).toBe(0);
    expect(l.fields.b.offset).toBe(4);
    expect(l.fields.c.offset).toBe(8);
    expect(l.fields.d.offset).toBe(16);
    expect(l.byteLength).toBe(24);
    expect(l.stride).toBe(24);
  });

  it('refuses a field without a who-writes/who-reads line', () => {
    expect(() => defineLayout('t', { a: { type: 'i32', doc: ' ' } })).toThrow(LayoutError);
  });

  it('refuses a non-positive count', () => {
    expect(() => defineLayout('t', { a: { type: 'i32', count: 0, doc } })).toThrow(/count/);
  });

  it('checkNoOverlap catches overlapping and misaligned hand-made layouts', () => {
    const bad: Layout = {
      name: 'bad',
      byteLength: 8,
      stride: 8,
      fields: {
        x: { name: 'x', type: 'i32', count: 1, offset: 0, byteLength: 4, doc },
        y: { name: 'y', type: 'i32', count: 1, offset: 2, byteLength: 4, doc },
      },
    };
    expect(() => checkNoOverlap(bad)).toThrow(/misaligned|overlaps/);
    const overlap: Layout = {
      ...bad,
      fields: {
        x: { name: 'x', type: 'i32', count: 2, offset: 0, byteLength: 8, doc },
        y: { name: 'y', type: 'i32', count: 1, offset: 4, byteLength: 4, doc },
      },
    };
    expect(() => checkNoOverlap(overlap)).toThrow(/overlaps/);
  });

  it('property: any declaration gives aligned, disjoint fields inside the record', () => {
    const types = Object.keys(FIELD_TYPES) as FieldType[];
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(...types), fc.integer({ min: 1, max: 9 })), { minLength: 1, maxLength: 12 }), (specs) => {
        const decl = Object.fromEntries(specs.map(([type, count], i) => [`f${i}`, { type, count, doc }]));
        const l = defineLayout('p', decl);
        const placed = Object.values(l.fields).sort((a, b) => a.offset - b.offset);
        for (let i = 0; i < placed.length; i++) {
          const f = placed[i]!;
          expect(f.offset % FIELD_TYPES[f.type].bytes).toBe(0);
          expect(f.byteLength).toBe(FIELD_TYPES[f.type].bytes * f.count);
          if (i + 1 < placed.length) expect(f.offset + f.byteLength).toBeLessThanOrEqual(placed[i + 1]!.offset);
        }
        expect(l.stride % 8).toBe(0);
        expect(l.stride).toBeGreaterThanOrEqual(l.byteLength);
      }),
    );
  });
});

describe('allocate and bindRecord', () => {
  const L = defineLayout('vcpu', {
    requests: { type: 'i32', doc },
    roles: { type: 'u32', count: 6, doc },
    gen: { type: 'u64', doc },
  });

  it('records do not alias each other, and views alias the buffer', () => {
    const buf = allocate(L, 3);
    expect(buf).toBeInstanceOf(SharedArrayBuffer);
    expect(buf.byteLength).toBe(L.stride * 3);
    const r0 = bindRecord(L, buf, 0);
    const r2 = bindRecord(L, buf, 2);
    r0.requests[0] = 7;
    r2.roles[5] = 0xdeadbeef;
    r2.gen[0] = 1n << 63n;
    expect(bindRecord(L, buf, 0).requests[0]).toBe(7);
    expect(bindRecord(L, buf, 1).requests[0]).toBe(0);
    expect(bindRecord(L, buf, 2).roles[5]).toBe(0xdeadbeef);
    expect(bindRecord(L, buf, 2).gen[0]).toBe(1n << 63n);
    expect(r0.roles.length).toBe(6);
  });

  it('rejects a record outside the buffer and a bad record count', () => {
    const buf = allocate(L, 2);
    expect(() => bindRecord(L, buf, 2)).toThrow(/outside/);
    expect(() => bindRecord(L, buf, -1)).toThrow(/outside/);
    expect(() => allocate(L, 0)).toThrow(/positive/);
  });

  it('describes itself with every field and its doc', () => {
    const text = describeLayout(L);
    for (const name of ['requests', 'roles', 'gen']) expect(text).toContain(name);
    expect(text).toContain(doc);
  });
});

describe('atomics helpers', () => {
  it('testAndClearBit clears only a set bit and reports it', () => {
    const w = new Int32Array(new SharedArrayBuffer(4));
    setBits(w, 0, (1 << 3) | (1 << 31));
    expect(testAndClearBit(w, 0, 3)).toBe(true);
    expect(testAndClearBit(w, 0, 3)).toBe(false);
    expect(testAndClearBit(w, 0, 31)).toBe(true);
    expect(w[0]).toBe(0);
  });

  it('compareExchange writes nothing on failure', () => {
    const w = new Int32Array(new SharedArrayBuffer(4));
    w[0] = 5;
    expect(compareExchange(w, 0, 4, 9)).toBe(false);
    expect(w[0]).toBe(5);
    expect(compareExchange(w, 0, 5, 9)).toBe(true);
    expect(w[0]).toBe(9);
    clearBits(w, 0, 1);
    expect(w[0]).toBe(8);
  });
});

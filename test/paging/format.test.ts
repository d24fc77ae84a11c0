/**
 * The walker's number arithmetic against BigInt references: splitting
 * entries into halves, table indices, leaf addresses (mmu.c / paging.h
 * PT*_INDEX, PT*_LVL_ADDR_MASK, PT*_LVL_OFFSET_MASK).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GEOMETRY, hi32, hi32u, leafAddress, lo32, pageSizeAt, ptIndex } from '../../src/paging/index.js';
import { testSeed } from './helpers.js';

const u64 = fc.bigInt(0n, (1n << 64n) - 1n);
const params = (name: string) => ({ seed: testSeed(name), numRuns: 2000 });

describe('walker arithmetic', () => {
  it('hi32u (no BigInt operation) equals the exact high half for every 64-bit value', () => {
    fc.assert(fc.property(u64, (v) => hi32u(v, lo32(v)) === Number(v >> 32n)), params('hi32u'));
    for (const v of [0n, (1n << 64n) - 1n, 1n << 63n, (1n << 53n) + 1n, 0xffff_ffff_0000_0000n, 0x8000_0000_ffff_ffffn]) {
      expect(hi32u(v, lo32(v))).toBe(Number(v >> 32n));
      expect(hi32(v)).toBe(Number(v >> 32n));
    }
  });

  it('ptIndex matches (addr >> (12 + bits * (level - 1))) & mask', () => {
    fc.assert(
      fc.property(u64, fc.constantFrom('paging32' as const, 'paging64' as const, 'ept' as const), fc.integer({ min: 1, max: 5 }), (a, kind, level) => {
        const g = GEOMETRY[kind];
        if (level > g.maxLevels) return;
        const shift = BigInt(12 + g.levelBits * (level - 1));
        expect(ptIndex(g, lo32(a), hi32(a), level)).toBe(Number((a >> shift) & BigInt((1 << g.levelBits) - 1)));
      }),
      params('ptIndex'),
    );
  });

  it('leafAddress matches (pte & LVL_ADDR_MASK) | (addr & LVL_OFFSET_MASK) | (addr & 0xfff)', () => {
    fc.assert(
      fc.property(u64, u64, fc.integer({ min: 1, max: 3 }), (pte, a, level) => {
        const g = GEOMETRY.paging64;
        const size = BigInt(pageSizeAt(g, level));
        const base = (1n << 52n) - 1n;
        const want = (pte & base & ~(size - 1n)) | (a & (size - 1n));
        expect(leafAddress(g, lo32(pte), hi32(pte), level, lo32(a), hi32(a))).toBe(Number(want));
      }),
      params('leafAddress'),
    );
  });
});

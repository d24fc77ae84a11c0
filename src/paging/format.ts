/**
 * Guest page-table entry formats and geometry: the bits of x86 (32-bit, PAE,
 * 4/5-level) and EPT entries, the page-fault error code, and per-walker
 * index/address arithmetic (Linux v5.17 mmu.h, mmu.c PT32_* macros,
 * mmu/paging.h PT64_* macros, asm/vmx.h EPT bits; Intel SDM vol. 3A
 * §4.3-§4.5, §28.3.2).
 *
 * Addresses inside the walker are plain numbers: a guest physical address is
 * below 2^52, exact in a double. Entries are split into two unsigned 32-bit
 * halves (`lo` = bits 31:0, `hi` = bits 63:32).
 */
import type { GuestWalkerKind } from './mmu-view.js';

/** x86 paging-structure entry bits (mmu.h PT_*_MASK; SDM Tables 4-4..4-20). */
export const PTE = {
  P: 1 << 0,
  RW: 1 << 1,
  US: 1 << 2,
  PWT: 1 << 3,
  PCD: 1 << 4,
  A: 1 << 5,
  D: 1 << 6,
  /** PS in a PDE/PDPTE; PAT in a 4 KiB PTE. */
  PS: 1 << 7,
  G: 1 << 8,
  /** PAT bit of a large-page entry. */
  PAT_LARGE: 1 << 12,
  /** Bits 16:13 of a 4 MiB PDE: physical address bits 35:32 (PSE-36; mmu.h PT32_DIR_PSE36_MASK). */
  PSE36_MASK: 0xf << 13,
  PSE36_SHIFT: 13,
} as const;

/** x86 bits in the high half (bit n here is entry bit n + 32). */
export const PTE_HI = {
  /** XD / NX, entry bit 63 (mmu.h PT64_NX_MASK). */
  NX: 0x80000000,
  /** Protection key, entry bits 62:59. */
  PKEY_SHIFT: 59 - 32,
  PKEY_MASK: 0xf << (59 - 32),
} as const;

export const NX_BIT = 1n << 63n;

/** EPT entry bits (asm/vmx.h VMX_EPT_*; SDM §28.3.2). */
export const EPTE = {
  R: 1 << 0,
  W: 1 << 1,
  X: 1 << 2,
  MT_SHIFT: 3,
  MT_MASK: 7 << 3,
  IPAT: 1 << 6,
  PS: 1 << 7,
  /** Accessed (with EPTP bit 6): tmpl.h PT_GUEST_ACCESSED_SHIFT 8 for EPT. */
  A: 1 << 8,
  /** Dirty: PT_GUEST_DIRTY_SHIFT 9 for EPT. */
  D: 1 << 9,
} as const;

/** EPT memory types (SDM §28.3.7): 0 UC, 1 WC, 4 WT, 5 WP, 6 WB; 2, 3, 7 are reserved. */
export const EPT_MT = { UC: 0, WC: 1, WT: 4, WP: 5, WB: 6 } as const;

/** EPTP fields (SDM §25.6.11). */
export const EPTP = { MT_WB: 6, WALK_LENGTH_SHIFT: 3, AD_ENABLE: 1 << 6 } as const;

/**
 * Page-fault error code bits (kvm_host.h PFERR_*_MASK; SDM §4.7). Declared
 * once here; src/mmu re-exports them.
 */
export const PFERR = {
  PRESENT: 1 << 0,
  WRITE: 1 << 1,
  USER: 1 << 2,
  RSVD: 1 << 3,
  FETCH: 1 << 4,
  PK: 1 << 5,
} as const;

/** ACC_* (spte.h), declared once in src/role. EPT reuses USER for "readable". */
export { ACC } from '../role/page-role.js';

/** Index, mask and size arithmetic of one walker instance (tmpl.h PTTYPE). */
export interface WalkerGeometry {
  readonly kind: 'paging32' | 'paging64' | 'ept';
  /** sizeof(pt_element_t). */
  readonly entryBytes: 4 | 8;
  /** PT_LEVEL_BITS. */
  readonly levelBits: 9 | 10;
  /** Bit positions of the guest accessed and dirty flags (PT_GUEST_*_SHIFT). */
  readonly accessedBit: number;
  readonly dirtyBit: number;
  /** walk_nx_mask, high half: the NX bit is inverted before the AND (64-bit instance only). */
  readonly nxHi: number;
  /** Highest level this instance walks (PT_MAX_FULL_LEVELS). */
  readonly maxLevels: number;
}

export const GEOMETRY: Readonly<Record<'paging32' | 'paging64' | 'ept', WalkerGeometry>> = {
  paging32: { kind: 'paging32', entryBytes: 4, levelBits: 10, accessedBit: 5, dirtyBit: 6, nxHi: 0, maxLevels: 2 },
  paging64: { kind: 'paging64', entryBytes: 8, levelBits: 9, accessedBit: 5, dirtyBit: 6, nxHi: PTE_HI.NX, maxLevels: 5 },
  ept: { kind: 'ept', entryBytes: 8, levelBits: 9, accessedBit: 8, dirtyBit: 9, nxHi: 0, maxLevels: 5 },
};

export const geometryOf = (kind: GuestWalkerKind): WalkerGeometry | null => (kind === 'nonpaging' ? null : GEOMETRY[kind]);

const TWO32 = 2 ** 32;

/** log2 of the bytes one entry at `level` maps (PT*_LEVEL_SHIFT). */
export const levelShift = (g: WalkerGeometry, level: number): number => 12 + g.levelBits * (level - 1);

const SIZES_9 = [0, 2 ** 12, 2 ** 21, 2 ** 30, 2 ** 39, 2 ** 48];
const SIZES_10 = [0, 2 ** 12, 2 ** 22];

/** Bytes mapped by one entry at `level`: 4 KiB, 4 MiB / 2 MiB, 1 GiB, ... */
export const pageSizeAt = (g: WalkerGeometry, level: number): number => (g.levelBits === 9 ? SIZES_9 : SIZES_10)[level] ?? 2 ** levelShift(g, level);

/** PT_INDEX(addr, level), from the address split into 32-bit halves. */
export function ptIndex(g: WalkerGeometry, addrLo: number, addrHi: number, level: number): number {
  const shift = levelShift(g, level);
  const mask = (1 << g.levelBits) - 1;
  if (shift >= 32) return (addrHi >>> (shift - 32)) & mask;
  return ((addrLo >>> shift) | (addrHi << (32 - shift))) & mask;
}

/**
 * gfn_to_gpa(gpte_to_gfn(pte)): the 4 KiB-aligned address in an entry
 * (64-bit: bits 51:12, GUEST_PT64_BASE_ADDR_MASK; 32-bit: bits 31:12).
 */
export function entryFrame(g: WalkerGeometry, lo: number, hi: number): number {
  const low = (lo & 0xfffff000) >>> 0;
  return g.entryBytes === 4 ? low : (hi & 0xfffff) * TWO32 + low;
}

/**
 * The guest physical address a leaf at `level` maps `addr` to, before the
 * PSE-36 adjustment: the leaf's frame with the level's offset bits cleared
 * (PT*_LVL_ADDR_MASK), plus the address's offset within the page
 * (PT*_LVL_OFFSET_MASK and the low 12 bits).
 */
export function leafAddress(g: WalkerGeometry, lo: number, hi: number, level: number, addrLo: number, addrHi: number): number {
  const size = pageSizeAt(g, level);
  const frame = entryFrame(g, lo, hi);
  const base = frame - (frame % size);
  const offset = size <= TWO32 ? addrLo % size : (addrHi % (size / TWO32)) * TWO32 + addrLo;
  return base + offset;
}

/** pse36_gfn_delta (mmu.c) as a byte offset: PDE bits 16:13 become physical bits 35:32. */
export const pse36Delta = (lo: number): number => ((lo & PTE.PSE36_MASK) >>> PTE.PSE36_SHIFT) * TWO32;

/** Split a 64-bit value into unsigned halves (any BigInt: bits above 63 are dropped). */
export const lo32 = (v: bigint): number => Number(BigInt.asUintN(32, v));
export const hi32 = (v: bigint): number => Number(BigInt.asUintN(32, v >> 32n));
/**
 * The high half of an unsigned 64-bit value whose low half `lo` is known,
 * without a BigInt operation: Number(v) is v rounded to 53 bits (error at
 * most 2^11), so (Number(v) - lo) / 2^32 is within 2^-20 of the exact high
 * half and rounds to it. `v` must be in 0..2^64-1 (an entry from a
 * BigUint64Array).
 */
export const hi32u = (v: bigint, lo: number): number => Math.round((Number(v) - lo) / TWO32);

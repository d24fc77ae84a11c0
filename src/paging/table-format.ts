/**
 * Encoding guest page-table entries for the builder, per format: 32-bit
 * paging (4 KiB pages, 4 MiB PSE pages with PSE-36 high bits), PAE (PDPT +
 * 2 levels, 2 MiB pages), 4- and 5-level long mode (2 MiB, 1 GiB pages) and
 * EPT (4/5 levels; R/W/X, memory type, A/D). Intel SDM vol. 3A Tables 4-4
 * to 4-20 and §28.3.2. The builder writes what it is asked to, including
 * entries a given context will reject (reserved bits, PS without PSE,
 * addresses beyond MAXPHYADDR): deciding that is the walker's job.
 */
import { EPTE, EPT_MT, EPTP, GEOMETRY, NX_BIT, PTE, type WalkerGeometry } from './format.js';

export type TableFormat =
  | { readonly kind: 'paging32' }
  | { readonly kind: 'pae' }
  | { readonly kind: 'long'; readonly levels: 4 | 5 }
  | { readonly kind: 'ept'; readonly levels: 4 | 5; readonly accessedDirty?: boolean };

export const PAGE_4K = 0x1000;
export const PAGE_2M = 0x200000;
export const PAGE_4M = 0x400000;
export const PAGE_1G = 0x40000000;

/** Permissions and attributes of an entry. Defaults: everything allowed, A/D clear. */
export interface PagePerms {
  /** EPT: R. x86 entries are readable whenever present. */
  readonly read?: boolean;
  readonly write?: boolean;
  /** x86: NX clear (PAE and long mode only; 32-bit paging has no NX). EPT: X. */
  readonly exec?: boolean;
  /** x86 U/S. */
  readonly user?: boolean;
  /** Protection key 0..15, bits 62:59 (long mode only). */
  readonly pkey?: number;
  readonly accessed?: boolean;
  readonly dirty?: boolean;
  /** EPT memory type (default WB = 6). */
  readonly memType?: number;
  /** EPT ignore-PAT, bit 6. */
  readonly ignorePat?: boolean;
  /** Extra raw bits ORed in last (e.g. G, PWT, PCD, or deliberately reserved bits). */
  readonly extraBits?: bigint;
}

export class TableFormatError extends RangeError {
  override name = 'TableFormatError';
}

/** The shape of one format's tables. */
export interface TableShape {
  readonly format: TableFormat;
  /** Levels including the PAE PDPT (KVM numbering: 1 = the 4 KiB level). */
  readonly levels: number;
  /** Walker arithmetic for the levels the builder indexes. */
  readonly geometry: WalkerGeometry;
  /** Largest guest physical address + 1 an entry can hold. */
  readonly addrLimit: bigint;
  /** Largest guest virtual address + 1 the format translates. */
  readonly vaLimit: bigint;
}

export function shapeOf(format: TableFormat): TableShape {
  switch (format.kind) {
    case 'paging32':
      return { format, levels: 2, geometry: GEOMETRY.paging32, addrLimit: 1n << 36n, vaLimit: 1n << 32n };
    case 'pae':
      return { format, levels: 3, geometry: GEOMETRY.paging64, addrLimit: 1n << 52n, vaLimit: 1n << 32n };
    case 'long':
      return { format, levels: format.levels, geometry: GEOMETRY.paging64, addrLimit: 1n << 52n, vaLimit: 1n << 64n };
    case 'ept':
      return { format, levels: format.levels, geometry: GEOMETRY.ept, addrLimit: 1n << 52n, vaLimit: 1n << BigInt(12 + 9 * format.levels) };
  }
}

/** The level whose entries map pages of `pageSize` bytes; throws if the format has no such page. */
export function leafLevelFor(shape: TableShape, pageSize: number): number {
  const k = shape.format.kind;
  if (pageSize === PAGE_4K) return 1;
  if (pageSize === PAGE_4M && k === 'paging32') return 2;
  if (pageSize === PAGE_2M && k !== 'paging32') return 2;
  if (pageSize === PAGE_1G && (k === 'long' || k === 'ept')) return 3;
  throw new TableFormatError(`${k} tables have no ${pageSize}-byte pages`);
}

/** Whether an entry is present in the builder's (architectural) sense. */
export const isPresent = (shape: TableShape, e: bigint): boolean => (shape.format.kind === 'ept' ? (e & 7n) !== 0n : (e & 1n) !== 0n);

/** Whether a present entry at `level` maps a page rather than a table (PS; never for a PDPTE or the top level). */
export function isLeaf(shape: TableShape, level: number, e: bigint): boolean {
  if (level === 1) return true;
  if (shape.format.kind === 'pae' && level === 3) return false;
  if (level >= 4) return false;
  return (e & BigInt(PTE.PS)) !== 0n;
}

/** The bits that make an entry present (cleared by unmap). */
export const presentBits = (shape: TableShape): bigint => (shape.format.kind === 'ept' ? 7n : 1n);

/** The address bits of an entry at `level` (a leaf's page, or a table's frame). */
export function addressMask(shape: TableShape, level: number, leaf: boolean): bigint {
  if (shape.format.kind === 'paging32') {
    // 4 MiB PDE: bits 31:22 plus PSE-36 bits 16:13 (physical 35:32).
    return leaf && level === 2 ? 0xffc00000n | BigInt(PTE.PSE36_MASK) : 0xfffff000n;
  }
  const low = leaf && level > 1 ? BigInt(2 ** (12 + 9 * (level - 1))) : 0x1000n;
  return ((1n << 52n) - 1n) & ~(low - 1n);
}

/** The address field of an entry for `gpa` (PSE-36 rearrangement for 4 MiB pages). */
export function encodeAddress(shape: TableShape, level: number, leaf: boolean, gpa: bigint): bigint {
  if (gpa >= shape.addrLimit) throw new TableFormatError(`gpa 0x${gpa.toString(16)} does not fit a ${shape.format.kind} entry`);
  const size = leaf ? (shape.format.kind === 'paging32' ? 1n << BigInt(12 + 10 * (level - 1)) : 1n << BigInt(12 + 9 * (level - 1))) : 0x1000n;
  if (gpa % size !== 0n) throw new TableFormatError(`gpa 0x${gpa.toString(16)} is not aligned to the ${size}-byte page`);
  if (shape.format.kind === 'paging32') {
    if (leaf && level === 2) return (gpa & 0xffc00000n) | ((gpa >> 32n) << BigInt(PTE.PSE36_SHIFT));
    if (gpa >= 1n << 32n) throw new TableFormatError(`gpa 0x${gpa.toString(16)} needs a 4 MiB page (PSE-36) in 32-bit paging`);
  }
  return gpa;
}

/** The address an entry holds, inverse of encodeAddress. */
export function decodeAddress(shape: TableShape, level: number, leaf: boolean, e: bigint): bigint {
  const a = e & addressMask(shape, level, leaf);
  if (shape.format.kind === 'paging32' && leaf && level === 2) {
    return (a & 0xffc00000n) | (((a >> BigInt(PTE.PSE36_SHIFT)) & 0xfn) << 32n);
  }
  return a;
}

/** A leaf entry mapping `gpa` at `level`. */
export function encodeLeaf(shape: TableShape, level: number, gpa: bigint, p: PagePerms): bigint {
  const addr = encodeAddress(shape, level, true, gpa);
  const big = level > 1 ? BigInt(PTE.PS) : 0n;
  if (shape.format.kind === 'ept') return addr | big | eptBits(p);
  return addr | big | x86Bits(shape, p, true);
}

/** A non-leaf entry pointing at the table page `tablePa`. */
export function encodeTable(shape: TableShape, level: number, tablePa: number, p: PagePerms): bigint {
  const addr = encodeAddress(shape, level, false, BigInt(tablePa));
  if (shape.format.kind === 'ept') {
    const rwx = (p.read ?? true ? EPTE.R : 0) | (p.write ?? true ? EPTE.W : 0) | (p.exec ?? true ? EPTE.X : 0);
    return addr | BigInt(rwx | (p.accessed ? EPTE.A : 0)) | (p.extraBits ?? 0n);
  }
  // A PAE PDPTE has only P (bits 2:1 and 8:5 are reserved).
  if (shape.format.kind === 'pae' && level === 3) return addr | 1n | (p.extraBits ?? 0n);
  return addr | x86Bits(shape, p, false);
}

function x86Bits(shape: TableShape, p: PagePerms, leaf: boolean): bigint {
  let lo = PTE.P | (p.write ?? true ? PTE.RW : 0) | (p.user ?? true ? PTE.US : 0) | (p.accessed ? PTE.A : 0);
  if (leaf && p.dirty) lo |= PTE.D;
  let e = BigInt(lo);
  if (p.exec === false) {
    if (shape.format.kind === 'paging32') throw new TableFormatError('32-bit paging has no NX bit: exec cannot be false');
    e |= NX_BIT;
  }
  if (p.pkey !== undefined && p.pkey !== 0) {
    if (shape.format.kind !== 'long' || !Number.isInteger(p.pkey) || p.pkey < 0 || p.pkey > 15) {
      throw new TableFormatError(`pkey ${p.pkey}: protection keys are 0..15 and exist only in 4/5-level paging`);
    }
    e |= BigInt(p.pkey) << 59n;
  }
  return e | (p.extraBits ?? 0n);
}

function eptBits(p: PagePerms): bigint {
  const mt = p.memType ?? EPT_MT.WB;
  if (!Number.isInteger(mt) || mt < 0 || mt > 7) throw new TableFormatError(`memType ${mt}: expected 0..7`);
  const lo =
    (p.read ?? true ? EPTE.R : 0) |
    (p.write ?? true ? EPTE.W : 0) |
    (p.exec ?? true ? EPTE.X : 0) |
    (mt << EPTE.MT_SHIFT) |
    (p.ignorePat ? EPTE.IPAT : 0) |
    (p.accessed ? EPTE.A : 0) |
    (p.dirty ? EPTE.D : 0);
  return BigInt(lo) | (p.extraBits ?? 0n);
}

/** The EPT pointer for a root table (SDM §25.6.11): WB, walk length, A/D enable. */
export function eptPointer(rootPa: number, levels: 4 | 5, accessedDirty: boolean): bigint {
  return BigInt(rootPa) | BigInt(EPTP.MT_WB | ((levels - 1) << EPTP.WALK_LENGTH_SHIFT) | (accessedDirty ? EPTP.AD_ENABLE : 0));
}

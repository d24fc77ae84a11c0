/**
 * The guest page tables a workload runs on: for each paging format
 * (32-bit, PAE, 4-level, 5-level) a few address spaces mapping the same
 * guest-virtual range [0, pages × 4 KiB) to data pages with seeded
 * permissions (user/supervisor, writable, NX), plus identity nested tables
 * for L2 (EPT and NPT) over the whole guest memory. Built once by the
 * coordinator before any vCPU runs; the CR3 values are plain data the guest
 * programs choose from, so a guest always loads a CR3 of its current format.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { FrameAllocator } from '../paging/frame-alloc.js';
import { PageTableBuilder } from '../paging/builder.js';
import { PAGE_2M, PAGE_4K, type TableFormat } from '../paging/table-format.js';
import { CR0, CR4, EFER } from '../role/regs.js';
import { Rng } from './rng.js';

export const GUEST_TABLE_FORMATS = ['paging32', 'pae', 'long4', 'long5'] as const;
export type GuestTableFormat = (typeof GUEST_TABLE_FORMATS)[number];

export interface GuestTableSet {
  /** CR3 values of the address spaces, per format. */
  readonly cr3: Readonly<Record<GuestTableFormat, readonly bigint[]>>;
  /** EPT pointer of identity nested tables (4-level, A/D enabled). */
  readonly eptp: bigint;
  /** Nested CR3 of identity NPT tables (4-level long-mode format). */
  readonly nptCr3: bigint;
  /** Guest-virtual pages mapped from address 0 in every address space. */
  readonly pages: number;
  /** Guest physical address where the data pages begin (tables lie below). */
  readonly dataStart: number;
}

export interface GuestTableOptions {
  addressSpaces: number;
  pages: number;
  seed: number;
}

export const DEFAULT_GUEST_TABLES: GuestTableOptions = { addressSpaces: 3, pages: 64, seed: 1 };

const TABLE_FORMAT: Readonly<Record<GuestTableFormat, TableFormat>> = {
  paging32: { kind: 'paging32' },
  pae: { kind: 'pae' },
  long4: { kind: 'long', levels: 4 },
  long5: { kind: 'long', levels: 5 },
};

/** The table format a guest with these registers walks, or null when paging is off. */
export function tableFormatOf(cr0: bigint, cr4: bigint, efer: bigint): GuestTableFormat | null {
  if ((cr0 & BigInt(CR0.PG >>> 0)) === 0n) return null;
  if (efer & BigInt(EFER.LMA)) return cr4 & BigInt(CR4.LA57) ? 'long5' : 'long4';
  return cr4 & BigInt(CR4.PAE) ? 'pae' : 'paging32';
}

/** Build every address space and the nested tables into `mem` (tables in the lower half, data above). */
export function buildGuestTables(mem: GuestMemory, opts: GuestTableOptions = DEFAULT_GUEST_TABLES): GuestTableSet {
  const rng = new Rng(opts.seed);
  const half = Math.floor(mem.size / 2 / PAGE_4K) * PAGE_4K;
  const alloc = FrameAllocator.create(mem, { start: PAGE_4K, end: half });
  const dataPages = Math.max(1, Math.floor((mem.size - half) / PAGE_4K));
  const cr3 = {} as Record<GuestTableFormat, bigint[]>;
  for (const f of GUEST_TABLE_FORMATS) {
    cr3[f] = [];
    for (let a = 0; a < opts.addressSpaces; a++) {
      const b = PageTableBuilder.create(mem, alloc, TABLE_FORMAT[f]);
      for (let p = 0; p < opts.pages; p++) {
        const gpa = BigInt(half + rng.int(Math.min(dataPages, 1 << 20)) * PAGE_4K);
        // 32-bit paging has no NX bit: every page there is executable.
        const perms = { write: rng.chance(0.7), user: rng.chance(0.6), exec: f === 'paging32' || rng.chance(0.8) };
        b.map({ gva: BigInt(p * PAGE_4K), gpa, perms, tablePerms: { write: true, user: true, exec: true } });
      }
      cr3[f].push(b.pgd);
    }
  }
  const identity = (format: TableFormat, perms: object): bigint => {
    const b = PageTableBuilder.create(mem, alloc, format);
    b.map({ gva: 0n, gpa: 0n, size: BigInt(Math.floor(mem.size / PAGE_2M) * PAGE_2M), pageSize: PAGE_2M, perms, tablePerms: perms });
    return b.pgd;
  };
  const eptp = identity({ kind: 'ept', levels: 4, accessedDirty: true }, { read: true, write: true, exec: true });
  const nptCr3 = identity({ kind: 'long', levels: 4 }, { write: true, user: true, exec: true });
  return { cr3, eptp, nptCr3, pages: opts.pages, dataStart: half };
}

/**
 * Point guest-virtual page `gva` of every address space (every format) at
 * `gpa`, each leaf with a compare-exchange that keeps its permission bits
 * (accessed and dirty cleared, as in a freshly written entry); returns
 * the guest physical addresses of the leaves written (for write tracking).
 * Tables are only read and edited here, never allocated.
 */
/** Accessed (bit 5) and dirty (bit 6): the same bits in 32-bit, PAE and 64-bit entries. */
const ACCESSED_DIRTY = 0x60n;

export function remapEverywhere(mem: GuestMemory, tables: GuestTableSet, gva: bigint, gpa: bigint): number[] {
  const noAlloc = FrameAllocator.create(mem, { start: 0, end: PAGE_4K });
  const leaves: number[] = [];
  for (const f of GUEST_TABLE_FORMATS) {
    for (const cr3 of tables.cr3[f]) {
      const b = PageTableBuilder.attach(mem, noAlloc, TABLE_FORMAT[f], Number(cr3));
      const e = b.remap(gva, gpa);
      // A fresh entry, as a guest kernel writes one: accessed and dirty clear, set again by the next access.
      b.clearBits(gva, e.level, ACCESSED_DIRTY);
      leaves.push(e.pa);
    }
  }
  return leaves;
}

/**
 * The page-table edit the stress coordinator repeats (invariant 6): guest
 * virtual page `gvaPage` of every address space maps `frames[0]` after an
 * even number of completed edits, `frames[1]` after an odd number.
 */
export interface EditTarget {
  readonly gvaPage: number;
  readonly frames: readonly [number, number];
}

/** The frame the edit target maps once `seq` (even) is the edit sequence. */
export const expectedFrame = (t: EditTarget, seq: number): number => t.frames[(seq >>> 1) & 1]!;

/** The last guest page of the address spaces, mapped to the first of two frames at the top of memory. */
export function prepareEditTarget(mem: GuestMemory, tables: GuestTableSet): EditTarget {
  const top = mem.size;
  const t: EditTarget = { gvaPage: tables.pages - 1, frames: [top - 2 * PAGE_4K, top - PAGE_4K] };
  remapEverywhere(mem, tables, BigInt(t.gvaPage) << 12n, BigInt(t.frames[0]));
  return t;
}

/**
 * The page-table builder: maps guest-virtual ranges (or, for EPT, L2
 * guest-physical ranges) to guest-physical pages in any format the walker
 * understands, allocating table pages from guest memory, and edits single
 * entries afterwards (set/clear bits, remap, unmap) — how workloads change
 * page tables while vCPUs walk them.
 *
 * Shared memory: a new table page is zeroed before the entry that links it
 * is published with a compare-exchange (if another builder linked one first,
 * that one is used); leaf entries are stored whole; edits are atomic
 * read-modify-writes (OR, AND, compare-exchange loop), so they never erase
 * accessed/dirty bits a walker sets concurrently. The builder's own lookups
 * follow the architecture's structure (PS = page), not any MMU context.
 */
import { hexAddr } from '../memory/address.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { ptIndex, entryFrame, lo32, hi32 } from './format.js';
import type { FrameAllocator } from './frame-alloc.js';
import {
  decodeAddress,
  encodeAddress,
  encodeLeaf,
  encodeTable,
  eptPointer,
  isLeaf,
  isPresent,
  leafLevelFor,
  PAGE_4K,
  presentBits,
  shapeOf,
  addressMask,
  type PagePerms,
  type TableFormat,
  type TableShape,
} from './table-format.js';
import type { WalkRoot } from './walker-state.js';

export class BuilderError extends Error {
  override name = 'BuilderError';
}

export interface MapRequest {
  /** First address of the range (guest virtual; an L2 GPA for EPT). */
  readonly gva: bigint;
  /** First guest physical address it maps to. */
  readonly gpa: bigint;
  /** Bytes to map (default one page). */
  readonly size?: bigint | number;
  /** 4 KiB (default), 2 MiB, 4 MiB (32-bit) or 1 GiB. */
  readonly pageSize?: number;
  readonly perms?: PagePerms;
  /** Permissions of non-leaf entries this call creates (default: everything allowed). */
  readonly tablePerms?: PagePerms;
}

/** Where an entry lives and what it holds. */
export interface EntryRef {
  readonly level: number;
  /** Guest physical byte address of the entry. */
  readonly pa: number;
  readonly value: bigint;
}

export class PageTableBuilder {
  readonly shape: TableShape;

  private constructor(
    readonly mem: GuestMemory,
    readonly alloc: FrameAllocator,
    readonly format: TableFormat,
    /** Guest physical address of the top table (the PDPT for PAE). */
    readonly rootPa: number,
  ) {
    this.shape = shapeOf(format);
  }

  /** New, empty tables: allocates the top-level page. */
  static create(mem: GuestMemory, alloc: FrameAllocator, format: TableFormat): PageTableBuilder {
    return new PageTableBuilder(mem, alloc, format, alloc.allocPage());
  }

  /** Tables another builder made (e.g. on another thread). */
  static attach(mem: GuestMemory, alloc: FrameAllocator, format: TableFormat, rootPa: number): PageTableBuilder {
    return new PageTableBuilder(mem, alloc, format, rootPa);
  }

  /** CR3 (the table address), or the EPT pointer (WB, walk length, A/D enable). */
  get pgd(): bigint {
    const f = this.format;
    return f.kind === 'ept' ? eptPointer(this.rootPa, f.levels, !!f.accessedDirty) : BigInt(this.rootPa);
  }

  /**
   * The root a walk needs; for PAE with the four PDPTEs as they are in
   * memory now (what load_pdptrs would load, before its reserved-bit check).
   */
  get root(): WalkRoot {
    if (this.format.kind !== 'pae') return { pgd: this.pgd };
    const pdptes = [0, 1, 2, 3].map((i) => this.mem.load64(this.rootPa + 8 * i));
    return { pgd: this.pgd, pdptes };
  }

  /** Map [gva, gva + size) to [gpa, gpa + size) with pages of one size. */
  map(req: MapRequest): void {
    const pageSize = req.pageSize ?? PAGE_4K;
    const level = leafLevelFor(this.shape, pageSize);
    const size = BigInt(req.size ?? pageSize);
    const step = BigInt(pageSize);
    if (size <= 0n || size % step !== 0n) throw new BuilderError(`map: size ${size} is not a positive multiple of the ${pageSize}-byte page`);
    if (req.gva % step !== 0n || req.gva < 0n || req.gva + size > this.shape.vaLimit) {
      throw new BuilderError(`map: gva ${hexAddr(req.gva)} is not ${pageSize}-aligned or the range leaves the ${this.format.kind} address space`);
    }
    const perms = req.perms ?? {};
    const tablePerms = req.tablePerms ?? {};
    for (let off = 0n; off < size; off += step) {
      const entryPa = this.entryFor(req.gva + off, level, tablePerms);
      this.store(entryPa, encodeLeaf(this.shape, level, req.gpa + off, perms));
    }
  }

  /** The entry at `level` for `gva`, or null when a level above is absent or maps a page. */
  entry(gva: bigint, level: number): EntryRef | null {
    this.checkLevel(level);
    let table = this.rootPa;
    for (let l = this.shape.levels; ; l--) {
      const pa = table + this.index(gva, l) * this.shape.geometry.entryBytes;
      const value = this.load(pa);
      if (l === level) return { level, pa, value };
      if (!isPresent(this.shape, value) || isLeaf(this.shape, l, value)) return null;
      table = entryFrame(this.shape.geometry, lo32(value), hi32(value));
    }
  }

  /** The entry mapping `gva` (the first present leaf on the way down), or null. */
  leaf(gva: bigint): EntryRef | null {
    let table = this.rootPa;
    for (let l = this.shape.levels; l >= 1; l--) {
      const pa = table + this.index(gva, l) * this.shape.geometry.entryBytes;
      const value = this.load(pa);
      if (!isPresent(this.shape, value)) return null;
      if (isLeaf(this.shape, l, value)) return { level: l, pa, value };
      table = entryFrame(this.shape.geometry, lo32(value), hi32(value));
    }
    return null;
  }

  /** Atomically OR `bits` into the entry at `level`; returns the old value. */
  setBits(gva: bigint, level: number, bits: bigint): bigint {
    const e = this.mustEntry(gva, level);
    return this.shape.geometry.entryBytes === 8 ? this.mem.or64(e.pa, bits) : BigInt(this.mem.or32(e.pa, Number(bits & 0xffffffffn)));
  }

  /** Atomically clear `bits` in the entry at `level`; returns the old value. */
  clearBits(gva: bigint, level: number, bits: bigint): bigint {
    return this.andNot(this.mustEntry(gva, level).pa, bits);
  }

  /** Store a whole entry (raw value) at `level`. */
  writeEntry(gva: bigint, level: number, value: bigint): void {
    this.store(this.mustEntry(gva, level).pa, value);
  }

  /** Point the leaf mapping `gva` at `gpa`, keeping every other bit (compare-exchange loop). */
  remap(gva: bigint, gpa: bigint): EntryRef {
    for (;;) {
      const e = this.leaf(gva);
      if (e === null) throw new BuilderError(`remap: ${hexAddr(gva)} is not mapped`);
      const mask = addressMask(this.shape, e.level, true);
      const next = (e.value & ~mask) | encodeAddress(this.shape, e.level, true, gpa);
      if (this.cmpxchg(e.pa, e.value, next)) return { ...e, value: next };
    }
  }

  /** Clear the present bit(s) of the leaf mapping `gva`; returns it as it was, or null if unmapped. */
  unmap(gva: bigint): EntryRef | null {
    const e = this.leaf(gva);
    if (e === null) return null;
    const old = this.andNot(e.pa, presentBits(this.shape));
    return { ...e, value: old };
  }

  /** The guest physical page a leaf maps. */
  leafAddress(e: EntryRef): bigint {
    return decodeAddress(this.shape, e.level, true, e.value);
  }

  /** Walk down to the entry at `level`, creating missing tables. */
  private entryFor(gva: bigint, level: number, tablePerms: PagePerms): number {
    let table = this.rootPa;
    for (let l = this.shape.levels; ; l--) {
      const pa = table + this.index(gva, l) * this.shape.geometry.entryBytes;
      if (l === level) {
        const cur = this.load(pa);
        if (level > 1 && isPresent(this.shape, cur) && !isLeaf(this.shape, level, cur)) {
          throw new BuilderError(`map: ${hexAddr(gva)} already has a page table at level ${level}; unmap its pages first`);
        }
        return pa;
      }
      table = this.tableBelow(pa, l, gva, tablePerms);
    }
  }

  /** The table an entry points to, linking a fresh one if the entry is not present. */
  private tableBelow(pa: number, level: number, gva: bigint, tablePerms: PagePerms): number {
    for (;;) {
      const cur = this.load(pa);
      if (isPresent(this.shape, cur)) {
        if (isLeaf(this.shape, level, cur)) throw new BuilderError(`map: ${hexAddr(gva)} is inside a page mapped at level ${level}`);
        return entryFrame(this.shape.geometry, lo32(cur), hi32(cur));
      }
      const page = this.alloc.allocPage();
      // The page was zeroed before this compare-exchange publishes it.
      if (this.cmpxchg(pa, cur, encodeTable(this.shape, level, page, tablePerms))) return page;
    }
  }

  private index(gva: bigint, level: number): number {
    return ptIndex(this.shape.geometry, lo32(gva), hi32(gva), level);
  }

  private checkLevel(level: number): void {
    if (!Number.isInteger(level) || level < 1 || level > this.shape.levels) {
      throw new BuilderError(`level ${level}: ${this.format.kind} tables have levels 1..${this.shape.levels}`);
    }
  }

  private mustEntry(gva: bigint, level: number): EntryRef {
    const e = this.entry(gva, level);
    if (e === null) throw new BuilderError(`no level-${level} entry for ${hexAddr(gva)}: a level above is not present or maps a page`);
    return e;
  }

  private load(pa: number): bigint {
    return this.shape.geometry.entryBytes === 8 ? this.mem.load64(pa) : BigInt(this.mem.load32(pa));
  }

  private store(pa: number, v: bigint): void {
    if (this.shape.geometry.entryBytes === 8) this.mem.store64(pa, v);
    else this.mem.store32(pa, Number(v & 0xffffffffn));
  }

  private cmpxchg(pa: number, expected: bigint, next: bigint): boolean {
    if (this.shape.geometry.entryBytes === 8) return this.mem.cmpxchg64(pa, expected, next) === expected;
    const e = Number(expected & 0xffffffffn);
    return this.mem.cmpxchg32(pa, e, Number(next & 0xffffffffn)) === e;
  }

  private andNot(pa: number, bits: bigint): bigint {
    return this.shape.geometry.entryBytes === 8 ? this.mem.andNot64(pa, bits) : BigInt(this.mem.andNot32(pa, Number(bits & 0xffffffffn)));
  }
}

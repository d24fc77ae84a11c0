/**
 * A warm, fault-free walk loop for benchmarks: guest memory with tables that
 * map a handful of consecutive 4 KiB pages (so every level stays in the CPU
 * caches), accessed/dirty bits already set (so the measured walks write
 * nothing), one reused GuestWalker, and a `walk()` that translates the next
 * page. The caller supplies the context(s); src/paging does not build them.
 */
import { GuestMemory } from '../memory/guest-memory.js';
import { FrameAllocator } from './frame-alloc.js';
import { PageTableBuilder } from './builder.js';
import type { WalkMmu } from './mmu-view.js';
import { walkEnv, type AccessFlags } from './permission.js';
import type { TableFormat } from './table-format.js';
import { gvaToGpa } from './walker.js';
import { GuestWalker, nestedTdp, type NestedTdp, type WalkRoot } from './walker-state.js';

export interface WalkLoopOptions {
  /** Pages mapped and walked round-robin (default 64). */
  readonly pages?: number;
  /** The access of every walk (default: a supervisor read). */
  readonly access?: AccessFlags;
  /** Two-dimensional: the guest_mmu context and its table format (EPT or NPT); `mmu` is then nested_mmu. */
  readonly nested?: { readonly mmu: WalkMmu; readonly format: TableFormat };
}

export interface WalkLoop {
  /** Walk the next page; returns the low bits of the GPA (to be consumed by the caller). Throws on a fault. */
  readonly walk: () => number;
  readonly pages: number;
}

const GVA_BASE = 0x4000_0000n;
const DATA_GPA = 0x80_0000n;
const TABLES = { start: 0x10_0000, end: 0x40_0000 };

/** Build tables for `format`, pre-walk every page once, and return the loop. */
export function makeWalkLoop(mmu: WalkMmu, format: TableFormat, opts: WalkLoopOptions = {}): WalkLoop {
  const pages = opts.pages ?? 64;
  const mem = GuestMemory.create(16 << 20);
  let nested: NestedTdp | null = null;
  if (opts.nested) {
    // L1's tables map L2's table area 1:1 and L2's data pages to L1 memory.
    const npt = PageTableBuilder.create(mem, FrameAllocator.create(mem, { start: 0x40_0000, end: 0x50_0000 }), opts.nested.format);
    npt.map({ gva: BigInt(TABLES.start), gpa: BigInt(TABLES.start), size: TABLES.end - TABLES.start });
    npt.map({ gva: DATA_GPA, gpa: DATA_GPA, size: pages * 4096 });
    nested = nestedTdp(opts.nested.mmu, npt.root);
  }
  const pt = PageTableBuilder.create(mem, FrameAllocator.create(mem, TABLES), format);
  pt.map({ gva: GVA_BASE, gpa: DATA_GPA, size: pages * 4096 });
  const root: WalkRoot = pt.root;
  const w = new GuestWalker();
  const env = walkEnv(opts.access ?? {});
  const addrs = Array.from({ length: pages }, (_, i) => GVA_BASE + BigInt(i) * 4096n + 0x10n);
  const one = (i: number): number => {
    if (!gvaToGpa(w, mmu, mem, root, addrs[i]!, env, nested, nested === null)) {
      throw new Error(`walk of 0x${addrs[i]!.toString(16)} faulted with error code 0x${w.fault.errorCode.toString(16)}`);
    }
    return Number(w.gpa & 0xffffn);
  };
  for (let i = 0; i < pages; i++) one(i);
  let next = 0;
  return {
    pages,
    walk: () => {
      const r = one(next);
      next = next + 1 === pages ? 0 : next + 1;
      return r;
    },
  };
}

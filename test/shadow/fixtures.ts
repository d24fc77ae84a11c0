/**
 * Fixtures for the shadow-cache tests: guest memory with page tables (the
 * paging tests' builder), MMU contexts built by src/mmu's init paths, and a
 * shadow VM sized for the guest memory.
 */
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { MmuContext } from '../../src/mmu/context.js';
import { FrameAllocator, PageTableBuilder, type TableFormat } from '../../src/paging/index.js';
import { DEFAULT_HOST, type HostSettings } from '../../src/role/host.js';
import { ShadowVm, type ShadowVmOptions } from '../../src/shadow/index.js';
import { formatOf, x86Vcpu, type X86Mode, type X86Opts } from '../paging/helpers.js';
import { SimVcpu } from './sim-vcpu.js';

export { testSeed } from '../paging/helpers.js';

/** 8 MiB of guest memory; tables from 1..3 MiB, data pages above 4 MiB. */
export const MEM_BYTES = 8 << 20;
export const TABLES = { start: 0x10_0000, end: 0x30_0000 };
export const DATA_GPA = 0x40_0000;

export interface Guest {
  readonly mem: GuestMemory;
  readonly alloc: FrameAllocator;
  readonly pt: PageTableBuilder;
}

export function guest(format: TableFormat, mem = GuestMemory.create(MEM_BYTES)): Guest {
  const alloc = FrameAllocator.create(mem, TABLES);
  return { mem, alloc, pt: PageTableBuilder.create(mem, alloc, format) };
}

/** The host a context runs on: TDP (Intel EPT) unless `shadow`. */
export const hostFor = (o: X86Opts = {}): HostSettings => ({ ...DEFAULT_HOST, ...(o.shadow ? { tdpEnabled: false } : {}), ...o.host });

/** root_mmu of a fresh vCPU in `mode` (TDP by default, shadow paging with `shadow`). */
export const context = (mode: X86Mode, o: X86Opts = {}): MmuContext => x86Vcpu(mode, o).ctx;

export function shadowVm(mem: GuestMemory, o: Partial<ShadowVmOptions> & { host: HostSettings }): ShadowVm {
  return ShadowVm.create({ maxPages: 256, agents: 2, guestPages: mem.size / 4096, prove: true, ...o });
}

/** One shadow-paging vCPU on fresh tables of `mode`. */
export function shadowSetup(mode: X86Mode, o: X86Opts & { maxPages?: number; capacity?: number; agents?: number } = {}) {
  const g = guest(formatOf(mode));
  const opts = { ...o, shadow: true };
  const vm = shadowVm(g.mem, { host: hostFor(opts), maxPages: o.maxPages ?? 256, capacity: o.capacity, agents: o.agents ?? 2 });
  const ctx = context(mode, opts);
  const vcpu = new SimVcpu(vm, 0, ctx, g.mem, g.pt.root);
  return { ...g, vm, ctx, vcpu };
}

/** One TDP vCPU (accesses are guest physical addresses). */
export function tdpSetup(o: { maxPages?: number; capacity?: number; agents?: number; host?: Partial<HostSettings> } = {}) {
  const mem = GuestMemory.create(MEM_BYTES);
  const vm = shadowVm(mem, { host: hostFor({ host: o.host }), maxPages: o.maxPages ?? 256, capacity: o.capacity, agents: o.agents ?? 2 });
  const ctx = context('long4', { host: o.host });
  const vcpu = new SimVcpu(vm, 0, ctx, mem, { pgd: 0n });
  return { mem, vm, ctx, vcpu };
}

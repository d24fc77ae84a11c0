/**
 * Test fixtures for the walker: MMU contexts built the way KVM builds them
 * (src/mmu init paths on a fresh vCPU), guest memory, and table builders.
 */
import { DEFAULT_CPUID, type CpuidModel } from '../../src/cpuid/cpuid.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { MmuContext } from '../../src/mmu/context.js';
import { initTdpMmu, setRoleRegisters } from '../../src/mmu/init.js';
import { runInitStep } from '../../src/mmu/probe.js';
import { VcpuMmu } from '../../src/mmu/vcpu-mmu.js';
import { FrameAllocator, PageTableBuilder, type TableFormat } from '../../src/paging/index.js';
import { DEFAULT_HOST, type HostSettings } from '../../src/role/host.js';
import { CR0, CR4, EFER } from '../../src/role/regs.js';

export type X86Mode = 'paging32' | 'pae' | 'long4' | 'long5';

export interface X86Opts {
  wp?: boolean;
  nx?: boolean;
  pse?: boolean;
  smep?: boolean;
  smap?: boolean;
  pke?: boolean;
  /** Use the shadow-paging init path (guest CPUID GBPAGES decides 1 GiB pages). Default: TDP. */
  shadow?: boolean;
  cpuid?: Partial<CpuidModel>;
  host?: Partial<HostSettings>;
}

export function x86Regs(mode: X86Mode, o: X86Opts = {}): { cr0: number; cr4: number; efer: number } {
  const cr0 = (CR0.PE | CR0.PG | (o.wp ?? true ? CR0.WP : 0)) >>> 0;
  let cr4 = (o.pse ? CR4.PSE : 0) | (o.smep ? CR4.SMEP : 0) | (o.smap ? CR4.SMAP : 0) | (o.pke ? CR4.PKE : 0);
  let efer = o.nx ?? true ? EFER.NX : 0;
  if (mode !== 'paging32') cr4 |= CR4.PAE;
  if (mode === 'long4' || mode === 'long5') efer |= EFER.LME | EFER.LMA;
  if (mode === 'long5') cr4 |= CR4.LA57;
  return { cr0, cr4: cr4 >>> 0, efer: efer >>> 0 };
}

/** A vCPU and its root_mmu initialised for an x86 paging mode. */
export function x86Vcpu(mode: X86Mode, o: X86Opts = {}): { vcpu: VcpuMmu; ctx: MmuContext } {
  const host: HostSettings = { ...DEFAULT_HOST, ...(o.shadow ? { tdpEnabled: false } : {}), ...o.host };
  const vcpu = new VcpuMmu({ host, cpuid: { ...DEFAULT_CPUID, ...o.cpuid } });
  const r = x86Regs(mode, o);
  const path = o.shadow ? 'shadow' : 'tdp';
  const { ctx } = runInitStep(vcpu, path, { cr0: BigInt(r.cr0), cr4: BigInt(r.cr4), efer: BigInt(r.efer), smm: false, guestMode: false }, undefined);
  return { vcpu, ctx };
}

export const x86Context = (mode: X86Mode, o: X86Opts = {}): MmuContext => x86Vcpu(mode, o).ctx;

export interface EptOpts {
  levels?: 4 | 5;
  ad?: boolean;
  execonly?: boolean;
  hugePageLevel?: 1 | 2 | 3;
  cpuid?: Partial<CpuidModel>;
}

/** A vCPU whose guest_mmu is a shadow-EPT context (root_mmu first, for SMM inheritance). */
export function eptVcpu(o: EptOpts = {}): { vcpu: VcpuMmu; ctx: MmuContext } {
  const vcpu = new VcpuMmu({ host: DEFAULT_HOST, cpuid: { ...DEFAULT_CPUID, ...o.cpuid } });
  const r = x86Regs('long4');
  setRoleRegisters(vcpu, r.cr0, r.cr4, r.efer, false, true);
  initTdpMmu(vcpu);
  const ept = { execonly: o.execonly ?? false, accessedDirty: o.ad ?? true, level: o.levels ?? 4, hugePageLevel: o.hugePageLevel ?? 3 } as const;
  const { ctx } = runInitStep(vcpu, 'shadow-ept', { cr0: BigInt(r.cr0), cr4: BigInt(r.cr4), efer: BigInt(r.efer), smm: false, guestMode: true }, ept);
  return { vcpu, ctx };
}

export const eptContext = (o: EptOpts = {}): MmuContext => eptVcpu(o).ctx;

/** The builder format of an x86 mode. */
export const formatOf = (mode: X86Mode): TableFormat =>
  mode === 'paging32' ? { kind: 'paging32' } : mode === 'pae' ? { kind: 'pae' } : { kind: 'long', levels: mode === 'long5' ? 5 : 4 };

export interface Fixture {
  mem: GuestMemory;
  alloc: FrameAllocator;
  pt: PageTableBuilder;
}

/** 8 MiB of guest memory with tables allocated from 1..4 MiB. */
export function fixture(format: TableFormat, bytes = 8 << 20): Fixture {
  const mem = GuestMemory.create(bytes);
  const alloc = FrameAllocator.create(mem, { start: 0x100000, end: 0x400000 });
  return { mem, alloc, pt: PageTableBuilder.create(mem, alloc, format) };
}

/** A snapshot of every 64-bit word of the first `bytes` of memory that is non-zero. */
export function snapshot(mem: GuestMemory, from: number, to: number): Map<number, bigint> {
  const out = new Map<number, bigint>();
  for (let pa = from; pa < to; pa += 8) {
    const v = mem.load64(pa);
    if (v !== 0n) out.set(pa, v);
  }
  return out;
}

/** Fresh seed for a property/seeded test, printed so a failure can be replayed (SEED=... to force). */
export function testSeed(name: string): number {
  const forced = process.env.SEED;
  const seed = forced !== undefined ? Number(forced) : (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0;
  return seed >>> 0 || 1 + name.length;
}

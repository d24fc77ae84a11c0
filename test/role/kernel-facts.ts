/**
 * Shared fixtures for the kernel-derived role tests. Every constant here is
 * written by hand from the architecture / Linux v5.17 sources, NOT imported
 * from the implementation, so the tests stay independent of src/.
 *
 * Register bits: Intel SDM vol. 3 / arch/x86/include/uapi/asm/processor-flags.h
 * and msr-index.h (CR0.PE 0, WP 16, AM 18, PG 31; CR4.PSE 4, PAE 5, PGE 7,
 * LA57 12, SMEP 20, SMAP 21, PKE 22; EFER.SCE 0, LME 8, LMA 10, NX 11).
 */
import type { CpuidModel } from '../../src/cpuid/cpuid.js';
import type { HostSettings } from '../../src/role/host.js';
import { VcpuMmu } from '../../src/mmu/vcpu-mmu.js';
import { STRATEGIES, type StrategyName } from '../../src/mmu/strategies.js';

export const CR0_PE = 0x00000001;
export const CR0_NE = 0x00000020;
export const CR0_WP = 0x00010000;
export const CR0_AM = 0x00040000;
export const CR0_PG = 0x80000000;

export const CR4_PSE = 0x00000010;
export const CR4_PAE = 0x00000020;
export const CR4_PGE = 0x00000080;
export const CR4_LA57 = 0x00001000;
export const CR4_SMEP = 0x00100000;
export const CR4_SMAP = 0x00200000;
export const CR4_PKE = 0x00400000;

export const EFER_SCE = 0x001;
export const EFER_LME = 0x100;
export const EFER_LMA = 0x400;
export const EFER_NX = 0x800;

/** rsvd_bits(s, e) (arch/x86/kvm/mmu.h): bits s..e set. */
export function R(s: number, e: number): bigint {
  let m = 0n;
  for (let b = s; b <= e; b++) m |= 1n << BigInt(b);
  return m;
}

/** Intel host, 4-level EPT with A/D, 1G pages, 46 physical bits. */
export const INTEL_EPT4: HostSettings = {
  tdpEnabled: true,
  maxTdpLevel: 4,
  vendor: 'intel',
  tdpForcedRootLevel: 0,
  adDisabled: false,
  gbpages: true,
  physBits: 46,
  maxHugePageLevel: 3,
};

/** Intel host with 5-level EPT (max_tdp_level = 5, tdp_root_level = 0). */
export const INTEL_EPT5: HostSettings = { ...INTEL_EPT4, maxTdpLevel: 5 };

/** AMD host with NPT: tdp_root_level forced to the host paging depth (4). */
export const AMD_NPT4: HostSettings = {
  tdpEnabled: true,
  maxTdpLevel: 4,
  vendor: 'amd',
  tdpForcedRootLevel: 4,
  adDisabled: false,
  gbpages: true,
  physBits: 48,
  maxHugePageLevel: 3,
};

/** Shadow paging (tdp_enabled = false) on an Intel host. */
export const SHADOW_HOST: HostSettings = { ...INTEL_EPT4, tdpEnabled: false, maxHugePageLevel: 3 };

export const INTEL_CPUID: CpuidModel = {
  vendor: 'intel',
  maxPhyAddr: 46,
  gbpages: true,
  pse36: true,
  pku: true,
  la57: true,
  smep: true,
  smap: true,
  nx: true,
};

export function mkVcpu(host: HostSettings, cpuid: Partial<CpuidModel> = {}, strategy: StrategyName = 'valid-bit'): VcpuMmu {
  return new VcpuMmu({ host, cpuid: { ...INTEL_CPUID, ...cpuid }, strategy: STRATEGIES[strategy] });
}

/** rsvd_bits_mask as [row 0 (bit7 clear), row 1 (bit7 set)], columns level-1 = 0..4. */
export function rsvdMatrix(get: (big: 0 | 1, l: number) => bigint): bigint[][] {
  return [0, 1].map((big) => [0, 1, 2, 3, 4].map((l) => get(big as 0 | 1, l)));
}

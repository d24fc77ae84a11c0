/**
 * The guest CPUID model: the facts KVM's MMU and register checks read from a
 * vCPU's CPUID table (Linux v5.17 arch/x86/kvm/cpuid.c, cpuid.h), normalised,
 * comparable, and with the derived values the MMU uses.
 *
 * What the MMU reads (kvm-mmu-reference.md §3.2, §10): MAXPHYADDR (reserved
 * GPA bits; TDP level on 5-level hosts), GBPAGES (shadow paging only), vendor
 * AMD/Hygon (bit 8 of non-leaf PML4E/PML5E). PSE36 is never read
 * (is_cpuid_PSE36() is hard-wired to 1). NX, SMEP, SMAP, PKU and LA57 only
 * decide which EFER/CR4 bits the guest may set.
 */

export const GUEST_VENDORS = ['intel', 'amd', 'hygon', 'centaur', 'zhaoxin'] as const;
export type GuestVendor = (typeof GUEST_VENDORS)[number];

export interface CpuidModel {
  readonly vendor: GuestVendor;
  /** CPUID 0x80000008.EAX[7:0], MIN_MAXPHYADDR..MAX_MAXPHYADDR. */
  readonly maxPhyAddr: number;
  readonly gbpages: boolean;
  readonly pse36: boolean;
  readonly pku: boolean;
  readonly la57: boolean;
  readonly smep: boolean;
  readonly smap: boolean;
  readonly nx: boolean;
}

/**
 * The MAXPHYADDR range the model accepts. KVM v5.17 takes any byte the VMM
 * puts in CPUID 0x80000008.EAX[7:0] (cpuid_query_maxphyaddr; kvm_check_cpuid
 * checks only the virtual-address width); real CPUs report 36 or more. Down
 * to 24 so that a guest of the emulator's size (at most 1 GiB) can have
 * memory above 2^MAXPHYADDR: the mixed-MAXPHYADDR caveat, scaled down
 * (examples/scenario-maxphyaddr-*.json). Below 24 the default guest layout
 * (tables at 1–3 MiB, data from 4 MiB) would not fit.
 */
export const MIN_MAXPHYADDR = 24;
export const MAX_MAXPHYADDR = 52;

/** A 64-bit Intel-like guest with every feature the model knows. */
export const DEFAULT_CPUID: CpuidModel = {
  vendor: 'intel',
  maxPhyAddr: 46,
  gbpages: true,
  pse36: true,
  pku: true,
  la57: false,
  smep: true,
  smap: true,
  nx: true,
};

/** Bits [s, e] set, as KVM's rsvd_bits(s, e). */
export function rsvdBits(s: number, e: number): bigint {
  if (e < s) return 0n;
  return ((1n << BigInt(e - s + 1)) - 1n) << BigInt(s);
}

/** vcpu->arch.reserved_gpa_bits = rsvd_bits(maxphyaddr, 63) (kvm_vcpu_after_set_cpuid). */
export const reservedGpaBits = (maxPhyAddr: number): bigint => rsvdBits(maxPhyAddr, 63);

/** guest_cpuid_is_amd_or_hygon (cpuid.h). */
export const isAmdOrHygon = (c: CpuidModel): boolean => c.vendor === 'amd' || c.vendor === 'hygon';

/** Field-by-field equality: the "identical CPUID" test of kvm_set_cpuid. */
export function cpuidEqual(a: CpuidModel, b: CpuidModel): boolean {
  return (
    a.vendor === b.vendor &&
    a.maxPhyAddr === b.maxPhyAddr &&
    a.gbpages === b.gbpages &&
    a.pse36 === b.pse36 &&
    a.pku === b.pku &&
    a.la57 === b.la57 &&
    a.smep === b.smep &&
    a.smap === b.smap &&
    a.nx === b.nx
  );
}

/** A checked copy: throws RangeError naming the field on an impossible value. */
export function normaliseCpuid(c: CpuidModel): CpuidModel {
  if (!GUEST_VENDORS.includes(c.vendor)) throw new RangeError(`cpuid.vendor: ${String(c.vendor)} is not one of ${GUEST_VENDORS.join(', ')}`);
  if (!Number.isInteger(c.maxPhyAddr) || c.maxPhyAddr < MIN_MAXPHYADDR || c.maxPhyAddr > MAX_MAXPHYADDR) {
    throw new RangeError(`cpuid.maxPhyAddr: ${c.maxPhyAddr} is outside ${MIN_MAXPHYADDR}..${MAX_MAXPHYADDR}`);
  }
  return {
    vendor: c.vendor,
    maxPhyAddr: c.maxPhyAddr,
    gbpages: !!c.gbpages,
    pse36: !!c.pse36,
    pku: !!c.pku,
    la57: !!c.la57,
    smep: !!c.smep,
    smap: !!c.smap,
    nx: !!c.nx,
  };
}

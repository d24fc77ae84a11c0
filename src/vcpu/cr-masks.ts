/**
 * Register bit masks and host/guest feature inputs for cr-checks.ts (Linux
 * v5.17): the CR0/CR4/EFER bits KVM accepts at all (kvm_host.h
 * CR0_RESERVED_BITS, CR4_RESERVED_BITS; x86.c efer_reserved_bits after the
 * vendor module's hardware setup), the CPUID-gated CR4 bits (x86.h
 * __cr4_reserved_bits) and the nested-VMX fixed-bit MSRs. Bit positions come
 * from src/role/regs.ts; the ones it lacks are defined here.
 */
import type { CpuidModel } from '../cpuid/cpuid.js';
import { CR0, CR0_ROLE_BITS, CR4, CR4_ROLE_BITS, EFER } from '../role/regs.js';

/** A 32-bit register constant from regs.ts as an unsigned bigint. */
export const u = (n: number): bigint => BigInt(n >>> 0);

export const U64_MAX = (1n << 64n) - 1n;

// --- bit constants regs.ts has only as numbers, and those it lacks ---------

export const CR0_PE = u(CR0.PE);
export const CR0_ET = u(CR0.ET);
export const CR0_NW = u(CR0.NW);
export const CR0_CD = u(CR0.CD);
export const CR0_PG = u(CR0.PG);

/** Complement of kvm_host.h CR0_RESERVED_BITS: the CR0 bits KVM keeps. */
export const CR0_KVM_BITS = u(CR0.PE | CR0.MP | CR0.EM | CR0.TS | CR0.ET | CR0.NE | CR0.WP | CR0.AM | CR0.NW | CR0.CD | CR0.PG);
/** kvm_cache_regs.h X86_CR0_PDPTR_BITS. */
export const CR0_PDPTR_BITS = u(CR0.CD | CR0.NW | CR0.PG);

export const CR4_PAE = u(CR4.PAE);
export const CR4_PGE = u(CR4.PGE);
export const CR4_LA57 = u(CR4.LA57);
export const CR4_VMXE = u(CR4.VMXE);
export const CR4_PCIDE = u(CR4.PCIDE);

/** Complement of kvm_host.h CR4_RESERVED_BITS (note: SMXE is not in it, so KVM always refuses it). */
export const CR4_KVM_BITS = u(
  CR4.VME | CR4.PVI | CR4.TSD | CR4.DE | CR4.PSE | CR4.PAE | CR4.MCE | CR4.PGE | CR4.PCE | CR4.OSFXSR | CR4.PCIDE |
    CR4.OSXSAVE | CR4.SMEP | CR4.FSGSBASE | CR4.OSXMMEXCPT | CR4.LA57 | CR4.VMXE | CR4.SMAP | CR4.PKE | CR4.UMIP,
);
/** kvm_cache_regs.h X86_CR4_PDPTR_BITS. */
export const CR4_PDPTR_BITS = u(CR4.PGE | CR4.PSE | CR4.PAE | CR4.SMEP);

/** processor-flags.h X86_CR3_PCID_MASK (bits 11:0) and X86_CR3_PCID_NOFLUSH (bit 63). */
export const CR3_PCID_MASK = 0xfffn;
export const CR3_PCID_NOFLUSH = 1n << 63n;

export const EFER_SCE = u(EFER.SCE);
export const EFER_LME = u(EFER.LME);
export const EFER_LMA = u(EFER.LMA);
export const EFER_NX = u(EFER.NX);
export const EFER_SVME = u(EFER.SVME);
export const EFER_LMSLE = u(EFER.LMSLE);
export const EFER_FFXSR = u(EFER.FFXSR);

export const MMU_CR0_ROLE_BITS = u(CR0_ROLE_BITS);
export const MMU_CR4_ROLE_BITS = u(CR4_ROLE_BITS);

/** vmx/nested.c VMXON_CR0_ALWAYSON and VMXON_CR4_ALWAYSON (the fixed0 MSRs). */
export const VMXON_CR0_FIXED0 = u(CR0.PE | CR0.PG | CR0.NE);
export const VMXON_CR4_FIXED0 = CR4_VMXE;

// --- inputs -----------------------------------------------------------------

/**
 * The guest CPUID facts these checks read: CpuidModel plus the bits it does
 * not carry. An absent extra flag means "the guest CPUID has it".
 */
export interface GuestFeatures extends CpuidModel {
  /** 0x80000001.EDX[29] LM: EFER.LME/LMA. */
  readonly lm?: boolean;
  /** 0x80000001.EDX[25] FXSR_OPT: EFER.FFXSR. */
  readonly fxsrOpt?: boolean;
  /** 0x80000001.ECX[2] SVM: EFER.SVME. */
  readonly svm?: boolean;
  /** 1.ECX[5] VMX: CR4.VMXE. */
  readonly vmx?: boolean;
  /** 1.ECX[6] SMX: only widens the nested VMX CR4 fixed1 MSR (SMXE stays refused). */
  readonly smx?: boolean;
  /** 1.ECX[17] PCID: CR4.PCIDE. */
  readonly pcid?: boolean;
  /** 1.ECX[26] XSAVE: CR4.OSXSAVE. */
  readonly xsave?: boolean;
  /** 7.0.EBX[0] FSGSBASE: CR4.FSGSBASE. */
  readonly fsgsbase?: boolean;
  /** 7.0.ECX[2] UMIP: CR4.UMIP. */
  readonly umip?: boolean;
}

/** The KVM vendor module and its `nested` parameter (decide host-wide reserved bits). */
export interface KvmHost {
  readonly module: 'vmx' | 'svm';
  readonly nested: boolean;
}

export const DEFAULT_KVM_HOST: KvmHost = { module: 'vmx', nested: true };

export const feat = (f: boolean | undefined): boolean => f ?? true;

/** vmx/nested.h fixed_bits_valid: every fixed0 bit set, no bit outside fixed1. */
export const fixedBitsValid = (v: bigint, fixed0: bigint, fixed1: bigint): boolean => ((v & fixed1) | fixed0) === v;

// --- reserved-bit masks -----------------------------------------------------

/**
 * x86.c cr4_reserved_bits = __cr4_reserved_bits(__kvm_cpu_cap_has, ...):
 * what KVM refuses for every guest. The VMX capability exists only with
 * kvm_intel nested=1 (vmx_set_cpu_caps); the host is assumed to have the rest.
 */
export function hostCr4ReservedBits(host: KvmHost): bigint {
  let r = U64_MAX & ~CR4_KVM_BITS;
  if (!(host.module === 'vmx' && host.nested)) r |= CR4_VMXE;
  return r;
}

/** cpuid.c kvm_vcpu_after_set_cpuid: cr4_guest_rsvd_bits = __cr4_reserved_bits(guest_cpuid_has, vcpu). */
export function guestCr4ReservedBits(f: GuestFeatures): bigint {
  let r = U64_MAX & ~CR4_KVM_BITS;
  if (!feat(f.xsave)) r |= u(CR4.OSXSAVE);
  if (!f.smep) r |= u(CR4.SMEP);
  if (!f.smap) r |= u(CR4.SMAP);
  if (!feat(f.fsgsbase)) r |= u(CR4.FSGSBASE);
  if (!f.pku) r |= u(CR4.PKE);
  if (!f.la57) r |= CR4_LA57;
  if (!feat(f.umip)) r |= u(CR4.UMIP);
  if (!feat(f.vmx)) r |= CR4_VMXE;
  if (!feat(f.pcid)) r |= CR4_PCIDE;
  return r;
}

/**
 * vmx.c nested_vmx_cr_fixed1_bits_update: the CR4 fixed1 MSR (allowed-1
 * bits in VMX operation). PCE always; VME/PVI/TSD/DE/PSE/PAE/MCE/PGE/OSFXSR/
 * OSXMMEXCPT follow CPUID bits the model takes as present; the rest follow
 * the guest features.
 */
export function vmxCr4Fixed1(f: GuestFeatures): bigint {
  let r = u(CR4.PCE | CR4.VME | CR4.PVI | CR4.TSD | CR4.DE | CR4.PSE | CR4.PAE | CR4.MCE | CR4.PGE | CR4.OSFXSR | CR4.OSXMMEXCPT);
  if (feat(f.vmx)) r |= CR4_VMXE;
  if (feat(f.smx)) r |= u(CR4.SMXE);
  if (feat(f.pcid)) r |= CR4_PCIDE;
  if (feat(f.xsave)) r |= u(CR4.OSXSAVE);
  if (feat(f.fsgsbase)) r |= u(CR4.FSGSBASE);
  if (f.smep) r |= u(CR4.SMEP);
  if (f.smap) r |= u(CR4.SMAP);
  if (f.pku) r |= u(CR4.PKE);
  if (feat(f.umip)) r |= u(CR4.UMIP);
  if (f.la57) r |= CR4_LA57;
  return r;
}

/**
 * x86.c efer_reserved_bits after the vendor module's hardware setup:
 * SCE/LME/LMA always allowed; NX enabled by both modules (host NX assumed);
 * kvm_amd adds FFXSR (host FXSR_OPT assumed) and, with nested=1, SVME and LMSLE.
 */
export function eferReservedBits(host: KvmHost): bigint {
  let ok = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX;
  if (host.module === 'svm') {
    ok |= EFER_FFXSR;
    if (host.nested) ok |= EFER_SVME | EFER_LMSLE;
  }
  return U64_MAX & ~ok;
}

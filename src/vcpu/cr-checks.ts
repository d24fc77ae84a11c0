/**
 * Guest writes to CR0, CR4, EFER and CR3: accepted or #GP, exactly as Linux
 * v5.17 decides, and the MMU effect KVM takes for an accepted write
 * (kvm-mmu-reference.md §11). Pure: every function takes the current
 * register file and returns a verdict plus the register file afterwards;
 * nothing is mutated. Registers are 64-bit, so this API speaks bigint.
 *
 * Sources (v5.17): arch/x86/kvm/x86.c kvm_set_cr0 (884), kvm_lmsw (932),
 * kvm_is_valid_cr4 (1056), kvm_post_set_cr4 (1068), kvm_set_cr4 (1095),
 * kvm_set_cr3 (1172), __kvm_valid_efer (1605), set_efer (1632);
 * x86.h __cr4_reserved_bits; kvm_host.h CR0_/CR4_RESERVED_BITS;
 * kvm_cache_regs.h X86_CR{0,4}_PDPTR_BITS; cpuid.h kvm_vcpu_is_illegal_gpa;
 * vmx/vmx.c handle_set_cr0, vmx_set_cr0, vmx_is_valid_cr4, hardware_setup,
 * vmx_set_cpu_caps, nested_vmx_cr_fixed1_bits_update; vmx/nested.h
 * nested_host_cr0_valid, nested_cr4_valid; svm/svm.c svm_set_cr0,
 * svm_is_valid_cr4, svm_hardware_setup, svm_set_cpu_caps.
 *
 * Assumed about the host (not modelled as inputs): a 64-bit kernel
 * (CONFIG_X86_64), a host CPU that has every CR4 feature named here plus NX
 * and FFXSR, SEV-ES off (guest_state_protected = 0), the vCPU not in guest
 * mode (L2), no MSR filter.
 */
import { reservedGpaBits } from '../cpuid/cpuid.js';
import { CR4 } from '../role/regs.js';
import {
  CR0_CD,
  CR0_ET,
  CR0_KVM_BITS,
  CR0_NW,
  CR0_PDPTR_BITS,
  CR0_PE,
  CR0_PG,
  CR3_PCID_MASK,
  CR3_PCID_NOFLUSH,
  CR4_LA57,
  CR4_PAE,
  CR4_PCIDE,
  CR4_PDPTR_BITS,
  CR4_PGE,
  CR4_VMXE,
  DEFAULT_KVM_HOST,
  EFER_FFXSR,
  EFER_LMA,
  EFER_LME,
  EFER_NX,
  EFER_SVME,
  MMU_CR0_ROLE_BITS,
  MMU_CR4_ROLE_BITS,
  U64_MAX,
  VMXON_CR0_FIXED0,
  VMXON_CR4_FIXED0,
  eferReservedBits,
  feat,
  fixedBitsValid,
  guestCr4ReservedBits,
  hostCr4ReservedBits,
  u,
  vmxCr4Fixed1,
  type GuestFeatures,
  type KvmHost,
} from './cr-masks.js';

export {
  CR0_KVM_BITS,
  CR0_PDPTR_BITS,
  CR3_PCID_MASK,
  CR3_PCID_NOFLUSH,
  CR4_KVM_BITS,
  CR4_PDPTR_BITS,
  DEFAULT_KVM_HOST,
  eferReservedBits,
  guestCr4ReservedBits,
  hostCr4ReservedBits,
} from './cr-masks.js';
export type { GuestFeatures, KvmHost } from './cr-masks.js';

/** The register file a write is checked against (and the one a result returns). */
export interface CrRegs {
  readonly cr0: bigint;
  readonly cr3: bigint;
  readonly cr4: bigint;
  readonly efer: bigint;
}

export interface CrState extends CrRegs {
  /** Guest CPUID; `features.maxPhyAddr` gives reserved_gpa_bits. */
  readonly features: GuestFeatures;
  /** CS.L (kvm_x86_get_cs_db_l_bits); default false. */
  readonly csL?: boolean;
  /** is_smm(); default false. */
  readonly smm?: boolean;
  /** VMX operation (to_vmx(vcpu)->nested.vmxon), module 'vmx' only; default false. */
  readonly vmxon?: boolean;
  /** Default DEFAULT_KVM_HOST. */
  readonly host?: KvmHost;
  /**
   * Outcome of load_pdptrs(cr3) (x86.c 820): whether the four PDPTEs at cr3
   * are readable and have no reserved bit set. A function gets the CR3 KVM
   * would load from. Default true.
   */
  readonly pdptrsValid?: boolean | ((cr3: bigint) => boolean);
}

// --- results ----------------------------------------------------------------

export type MmuEffect =
  | { readonly kind: 'none' }
  /** kvm_mmu_reset_context. */
  | { readonly kind: 'reset' }
  /** kvm_make_request (kvm_post_set_cr4's lighter answers). */
  | { readonly kind: 'request'; readonly request: 'MMU_RELOAD' | 'TLB_FLUSH_GUEST' }
  /** kvm_mmu_new_pgd(vcpu, pgd) (kvm_set_cr3). */
  | { readonly kind: 'new-pgd'; readonly pgd: bigint };

export type CrRule =
  | 'cr0-vmxon-fixed'
  | 'cr0-high-bits'
  | 'cr0-nw-without-cd'
  | 'cr0-pg-without-pe'
  | 'cr0-long-mode-without-pae'
  | 'cr0-long-mode-cs-l'
  | 'cr0-pdptrs'
  | 'cr0-clear-pg-64bit'
  | 'cr0-clear-pg-pcide'
  | 'cr4-reserved'
  | 'cr4-guest-reserved'
  | 'cr4-vmxe-smm'
  | 'cr4-vmxon-fixed'
  | 'cr4-long-mode-pae'
  | 'cr4-long-mode-la57'
  | 'cr4-pdptrs'
  | 'cr4-pcide-cpuid'
  | 'cr4-pcide-cr3'
  | 'cr4-pcide-not-long-mode'
  | 'efer-reserved'
  | 'efer-ffxsr'
  | 'efer-svme'
  | 'efer-lm'
  | 'efer-nx'
  | 'efer-lme-while-paging'
  | 'cr3-illegal-gpa'
  | 'cr3-pdptrs';

export interface CrFault {
  readonly ok: false;
  readonly fault: 'GP';
  readonly rule: CrRule;
  readonly reason: string;
}

export interface CrAccepted {
  readonly ok: true;
  /** The register file after the write (CR0 may also change EFER.LMA). */
  readonly regs: CrRegs;
  readonly effect: MmuEffect;
  /** load_pdptrs ran and succeeded: PDPTEs cached, KVM_REQ_LOAD_MMU_PGD made (shadow paging also frees the current root if they changed). */
  readonly pdptrsLoaded: boolean;
}

export interface Cr0Accepted extends CrAccepted {
  /** vmx_set_cr0 enter_lmode/exit_lmode, svm_set_cr0: EFER.LMA followed CR0.PG because EFER.LME is set. */
  readonly longMode: 'enter' | 'exit' | null;
}

export interface Cr3Accepted extends CrAccepted {
  /** kvm_invalidate_pcid(vcpu, pcid) is called with this PCID; null when bit 63 (NOFLUSH) skipped it. */
  readonly invalidatePcid: number | null;
}

export type CrResult = CrAccepted | CrFault;
export type Cr0Result = Cr0Accepted | CrFault;
export type Cr3Result = Cr3Accepted | CrFault;

// --- helpers ----------------------------------------------------------------

const has = (v: bigint, bits: bigint): boolean => (v & bits) !== 0n;
const gp = (rule: CrRule, reason: string): CrFault => ({ ok: false, fault: 'GP', rule, reason });
const NONE: MmuEffect = { kind: 'none' };
const RESET: MmuEffect = { kind: 'reset' };

function checkU64(field: string, v: unknown): bigint {
  if (typeof v !== 'bigint') throw new TypeError(`${field}: expected a bigint, got ${typeof v}`);
  if (v < 0n || v > U64_MAX) throw new RangeError(`${field}: ${v} is not a 64-bit register value`);
  return v;
}

function checkState(s: CrState): void {
  checkU64('state.cr0', s.cr0);
  checkU64('state.cr3', s.cr3);
  checkU64('state.cr4', s.cr4);
  checkU64('state.efer', s.efer);
  if (s.features == null) throw new TypeError('state.features: required');
}

const regsOf = (s: CrState): CrRegs => ({ cr0: s.cr0, cr3: s.cr3, cr4: s.cr4, efer: s.efer });
const hostOf = (s: CrState): KvmHost => s.host ?? DEFAULT_KVM_HOST;

function pdptrsOk(s: CrState, cr3: bigint): boolean {
  const p = s.pdptrsValid;
  if (p === undefined) return true;
  return typeof p === 'function' ? p(cr3) : p;
}

/** Names of the CR4 bits set in `bits`, for reasons. */
function cr4Names(bits: bigint): string {
  const names = Object.entries(CR4)
    .filter(([, b]) => has(bits, u(b)))
    .map(([n]) => `CR4.${n}`);
  const unnamed = bits & ~Object.values(CR4).reduce((a, b) => a | u(b), 0n);
  if (unnamed) names.push(`CR4 bits 0x${unnamed.toString(16)}`);
  return names.join(', ');
}

// --- CR0 ----------------------------------------------------------------------

/**
 * A guest MOV to CR0: vmx.c handle_set_cr0 (outside guest mode) / svm.c
 * cr_interception, then x86.c kvm_set_cr0, the vendor set_cr0 hook and
 * kvm_post_set_cr0.
 */
export function checkSetCr0(state: CrState, value: bigint): Cr0Result {
  checkState(state);
  checkU64('cr0', value);
  const { cr0: old, cr3, cr4, efer } = state;
  const csL = state.csL ?? false;

  // vmx.c handle_set_cr0 → vmx/nested.h nested_host_cr0_valid: in VMX
  // operation PE, PG and NE are fixed to 1 (VMXON_CR0_ALWAYSON) and fixed1 is
  // 0xffffffff. Checked on the raw value, before kvm_set_cr0 adds ET.
  if (hostOf(state).module === 'vmx' && state.vmxon && !fixedBitsValid(value, VMXON_CR0_FIXED0, 0xffffffffn)) {
    return gp('cr0-vmxon-fixed', 'CR0 write breaks the VMX fixed bits (PE, PG, NE set; bits 63:32 clear) in VMX operation');
  }

  // kvm_set_cr0: ET reads as 1; bits 63:32 fault; other reserved low bits are dropped.
  let cr0 = value | CR0_ET;
  if (cr0 >> 32n) return gp('cr0-high-bits', 'CR0 bits 63:32 set');
  cr0 &= CR0_KVM_BITS;

  if (has(cr0, CR0_NW) && !has(cr0, CR0_CD)) return gp('cr0-nw-without-cd', 'CR0.NW without CR0.CD');
  if (has(cr0, CR0_PG) && !has(cr0, CR0_PE)) return gp('cr0-pg-without-pe', 'CR0.PG without CR0.PE');

  // kvm_set_cr0: turning paging on with EFER.LME activates long mode.
  if (has(efer, EFER_LME) && !has(old, CR0_PG) && has(cr0, CR0_PG)) {
    if (!has(cr4, CR4_PAE)) return gp('cr0-long-mode-without-pae', 'CR0.PG with EFER.LME needs CR4.PAE');
    if (csL) return gp('cr0-long-mode-cs-l', 'CR0.PG with EFER.LME needs CS.L = 0');
  }

  // kvm_set_cr0: PAE paging (no LME) reloads the PDPTEs when CD, NW or PG change.
  let pdptrsLoaded = false;
  if (!has(efer, EFER_LME) && has(cr0, CR0_PG) && has(cr4, CR4_PAE) && has(cr0 ^ old, CR0_PDPTR_BITS)) {
    if (!pdptrsOk(state, cr3)) return gp('cr0-pdptrs', 'PAE paging with a change in CR0.CD/NW/PG needs valid PDPTEs');
    pdptrsLoaded = true;
  }

  // kvm_set_cr0: paging cannot be turned off in 64-bit mode (is_64_bit_mode = EFER.LMA && CS.L) or with PCIDE.
  if (!has(cr0, CR0_PG)) {
    if (has(efer, EFER_LMA) && csL) return gp('cr0-clear-pg-64bit', 'CR0.PG cleared in 64-bit mode');
    if (has(cr4, CR4_PCIDE)) return gp('cr0-clear-pg-pcide', 'CR0.PG cleared with CR4.PCIDE set');
  }

  // vmx_set_cr0 (enter_lmode/exit_lmode) / svm_set_cr0: with EFER.LME, LMA follows PG.
  let newEfer = efer;
  let longMode: 'enter' | 'exit' | null = null;
  if (has(efer, EFER_LME)) {
    if (!has(old, CR0_PG) && has(cr0, CR0_PG)) {
      newEfer = efer | EFER_LMA;
      longMode = 'enter';
    } else if (has(old, CR0_PG) && !has(cr0, CR0_PG)) {
      newEfer = efer & ~EFER_LMA;
      longMode = 'exit';
    }
  }

  // kvm_post_set_cr0: a KVM_MMU_CR0_ROLE_BITS change (PG, WP) resets the MMU.
  const effect = has(cr0 ^ old, MMU_CR0_ROLE_BITS) ? RESET : NONE;
  return { ok: true, regs: { cr0, cr3, cr4, efer: newEfer }, effect, pdptrsLoaded, longMode };
}

/** x86.c kvm_lmsw: LMSW loads CR0[3:0] but cannot clear PE; then kvm_set_cr0. */
export function checkLmsw(state: CrState, msw: number): Cr0Result {
  checkState(state);
  if (!Number.isInteger(msw) || msw < 0 || msw > 0xffff) throw new RangeError(`msw: ${msw} is not a 16-bit value`);
  return checkSetCr0(state, (state.cr0 & ~0x0en) | (BigInt(msw) & 0x0fn));
}

// --- CR4 ----------------------------------------------------------------------

/** x86.c kvm_set_cr4 (with kvm_is_valid_cr4 and the vendor hook), then kvm_post_set_cr4. */
export function checkSetCr4(state: CrState, value: bigint): CrResult {
  checkState(state);
  checkU64('cr4', value);
  const { cr0, cr3, cr4: old, efer, features: f } = state;
  const host = hostOf(state);
  const longMode = has(efer, EFER_LMA);

  // kvm_is_valid_cr4: host-wide reserved bits, then the guest-CPUID-gated ones.
  const hostRsvd = value & hostCr4ReservedBits(host);
  if (hostRsvd) return gp('cr4-reserved', `${cr4Names(hostRsvd)} reserved by KVM on this host`);
  const guestRsvd = value & guestCr4ReservedBits(f);
  if (guestRsvd) return gp('cr4-guest-reserved', `${cr4Names(guestRsvd)} set but the guest CPUID lacks the feature`);

  // kvm_x86_is_valid_cr4: vmx_is_valid_cr4 (svm_is_valid_cr4 accepts everything).
  if (host.module === 'vmx') {
    if (has(value, CR4_VMXE) && state.smm) return gp('cr4-vmxe-smm', 'CR4.VMXE set in SMM');
    if (state.vmxon && !fixedBitsValid(value, VMXON_CR4_FIXED0, vmxCr4Fixed1(f))) {
      return gp('cr4-vmxon-fixed', 'CR4 write breaks the VMX fixed bits (VMXE set) in VMX operation');
    }
  }

  let pdptrsLoaded = false;
  if (longMode) {
    if (!has(value, CR4_PAE)) return gp('cr4-long-mode-pae', 'CR4.PAE cleared in long mode');
    if (has(value ^ old, CR4_LA57)) return gp('cr4-long-mode-la57', 'CR4.LA57 changed in long mode');
  } else if (has(cr0, CR0_PG) && has(value, CR4_PAE) && has(value ^ old, CR4_PDPTR_BITS)) {
    if (!pdptrsOk(state, cr3)) return gp('cr4-pdptrs', 'PAE paging with a change in CR4.PGE/PSE/PAE/SMEP needs valid PDPTEs');
    pdptrsLoaded = true;
  }

  if (has(value, CR4_PCIDE) && !has(old, CR4_PCIDE)) {
    // Unreachable after cr4_guest_rsvd_bits (which already refuses PCIDE without CPUID PCID); kept as the kernel has it.
    if (!feat(f.pcid)) return gp('cr4-pcide-cpuid', 'CR4.PCIDE set but the guest CPUID lacks PCID');
    if (cr3 & CR3_PCID_MASK) return gp('cr4-pcide-cr3', 'CR4.PCIDE set with CR3[11:0] != 0');
    if (!longMode) return gp('cr4-pcide-not-long-mode', 'CR4.PCIDE set outside long mode');
  }

  // kvm_post_set_cr4: reset ⊃ MMU_RELOAD ⊃ TLB_FLUSH_GUEST, hence the "else if" chain.
  const changed = value ^ old;
  let effect: MmuEffect = NONE;
  if (has(changed, MMU_CR4_ROLE_BITS)) effect = RESET;
  else if (has(changed, CR4_PCIDE)) effect = { kind: 'request', request: 'MMU_RELOAD' };
  else if (has(changed, CR4_PGE)) effect = { kind: 'request', request: 'TLB_FLUSH_GUEST' };
  return { ok: true, regs: { cr0, cr3, cr4: value, efer }, effect, pdptrsLoaded };
}

// --- EFER -----------------------------------------------------------------------

export interface EferWriteOptions {
  /** KVM_SET_MSRS from the VMM (msr_info->host_initiated): skips the CPUID and LME-while-paging checks. */
  readonly hostInitiated?: boolean;
}

/**
 * WRMSR to EFER: x86.c set_efer (kvm_set_msr_common case MSR_EFER), with
 * __kvm_valid_efer for guest writes. Not KVM_SET_SREGS, which sets EFER
 * through __set_sregs_common without these checks.
 */
export function checkSetEfer(state: CrState, value: bigint, opts: EferWriteOptions = {}): CrResult {
  checkState(state);
  checkU64('efer', value);
  const { cr0, cr3, cr4, efer: old, features: f } = state;

  const rsvd = value & eferReservedBits(hostOf(state));
  if (rsvd) return gp('efer-reserved', `EFER reserved bits 0x${rsvd.toString(16)} set`);

  if (!opts.hostInitiated) {
    // __kvm_valid_efer: the CPUID-gated bits. (SCE and, on kvm_amd, LMSLE are not gated.)
    if (has(value, EFER_FFXSR) && !feat(f.fxsrOpt)) return gp('efer-ffxsr', 'EFER.FFXSR set but the guest CPUID lacks FXSR_OPT');
    if (has(value, EFER_SVME) && !feat(f.svm)) return gp('efer-svme', 'EFER.SVME set but the guest CPUID lacks SVM');
    if (has(value, EFER_LME | EFER_LMA) && !feat(f.lm)) return gp('efer-lm', 'EFER.LME/LMA set but the guest CPUID lacks LM');
    if (has(value, EFER_NX) && !f.nx) return gp('efer-nx', 'EFER.NX set but the guest CPUID lacks NX');
    if (has(cr0, CR0_PG) && has(old ^ value, EFER_LME)) return gp('efer-lme-while-paging', 'EFER.LME changed while paging');
  }

  // set_efer: LMA is not writable through the MSR; it keeps its current value.
  const efer = (value & ~EFER_LMA) | (old & EFER_LMA);
  // set_efer: only an NX change touches reserved-bit masks → kvm_mmu_reset_context.
  const effect = has(efer ^ old, EFER_NX) ? RESET : NONE;
  return { ok: true, regs: { cr0, cr3, cr4, efer }, effect, pdptrsLoaded: false };
}

// --- CR3 ------------------------------------------------------------------------

/**
 * A guest MOV to CR3: x86.c kvm_set_cr3. With CR4.PCIDE, bit 63 (NOFLUSH) is
 * stripped and only suppresses kvm_invalidate_pcid; without PCIDE it is an
 * ordinary GPA bit and faults as illegal. PAE paging always reloads the
 * PDPTEs, even for an unchanged CR3.
 */
export function checkSetCr3(state: CrState, value: bigint): Cr3Result {
  checkState(state);
  checkU64('cr3', value);
  const { cr0, cr3: old, cr4, efer, features: f } = state;

  let cr3 = value;
  let skipFlush = false;
  let pcid = 0;
  if (has(cr4, CR4_PCIDE)) {
    skipFlush = has(cr3, CR3_PCID_NOFLUSH);
    cr3 &= ~CR3_PCID_NOFLUSH;
    pcid = Number(cr3 & CR3_PCID_MASK);
  }
  const invalidatePcid = skipFlush ? null : pcid;
  // is_pae_paging: !EFER.LMA && CR4.PAE && CR0.PG.
  const paePaging = !has(efer, EFER_LMA) && has(cr4, CR4_PAE) && has(cr0, CR0_PG);

  if (cr3 === old && !paePaging) {
    return { ok: true, regs: regsOf(state), effect: NONE, pdptrsLoaded: false, invalidatePcid };
  }
  // kvm_vcpu_is_illegal_gpa: any bit at or above MAXPHYADDR (not conditioned on long mode).
  if (cr3 & reservedGpaBits(f.maxPhyAddr)) {
    return gp('cr3-illegal-gpa', `CR3 sets bits at or above MAXPHYADDR (${f.maxPhyAddr})`);
  }
  if (paePaging && !pdptrsOk(state, cr3)) return gp('cr3-pdptrs', 'PAE paging needs valid PDPTEs at the new CR3');

  const effect: MmuEffect = cr3 !== old ? { kind: 'new-pgd', pgd: cr3 } : NONE;
  return { ok: true, regs: { cr0, cr3, cr4, efer }, effect, pdptrsLoaded: paePaging, invalidatePcid };
}

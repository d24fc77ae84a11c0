/**
 * Guest CR0/CR4/EFER/CR3 writes against Linux v5.17: every acceptance rule
 * with a case that passes and one that faults, and the MMU effect of each
 * accepted write. Register bits are written here by hand from
 * arch/x86/include/uapi/asm/processor-flags.h and asm/msr-index.h, not
 * imported from src, so the tests stay independent of the implementation.
 *
 *   x86.c:884  kvm_set_cr0        x86.c:867  kvm_post_set_cr0
 *   x86.c:932  kvm_lmsw
 *   x86.c:1056 kvm_is_valid_cr4   x86.c:1068 kvm_post_set_cr4   x86.c:1095 kvm_set_cr4
 *   x86.c:1172 kvm_set_cr3
 *   x86.c:1605 __kvm_valid_efer   x86.c:1632 set_efer
 *   x86.h      __cr4_reserved_bits
 *   vmx.c      handle_set_cr0, vmx_set_cr0, vmx_is_valid_cr4, hardware_setup
 *   svm.c      svm_set_cr0, svm_is_valid_cr4, svm_hardware_setup
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { CpuidModel } from '../../src/cpuid/cpuid.js';
import {
  checkLmsw,
  checkSetCr0,
  checkSetCr3,
  checkSetCr4,
  checkSetEfer,
  type CrResult,
  type CrState,
  type GuestFeatures,
} from '../../src/vcpu/cr-checks.js';

// CR0 (processor-flags.h)
const PE = 1n << 0n;
const MP = 1n << 1n;
const TS = 1n << 3n;
const ET = 1n << 4n;
const NE = 1n << 5n;
const WP = 1n << 16n;
const AM = 1n << 18n;
const NW = 1n << 29n;
const CD = 1n << 30n;
const PG = 1n << 31n;
// CR4
const PSE = 1n << 4n;
const PAE = 1n << 5n;
const PGE = 1n << 7n;
const PCE = 1n << 8n;
const OSFXSR = 1n << 9n;
const UMIP = 1n << 11n;
const LA57 = 1n << 12n;
const VMXE = 1n << 13n;
const SMXE = 1n << 14n;
const FSGSBASE = 1n << 16n;
const PCIDE = 1n << 17n;
const OSXSAVE = 1n << 18n;
const SMEP = 1n << 20n;
const SMAP = 1n << 21n;
const PKE = 1n << 22n;
/** mmu.h KVM_MMU_CR4_ROLE_BITS */
const CR4_ROLE = PSE | PAE | LA57 | SMEP | SMAP | PKE;
// EFER (msr-index.h)
const SCE = 1n << 0n;
const LME = 1n << 8n;
const LMA = 1n << 10n;
const NX = 1n << 11n;
const SVME = 1n << 12n;
const LMSLE = 1n << 13n;
const FFXSR = 1n << 14n;
const TCE = 1n << 15n;

const CPUID: CpuidModel = {
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
const feats = (extra: Partial<GuestFeatures> = {}): GuestFeatures => ({ ...CPUID, ...extra });

/** Real mode after RESET: CR0 = ET. */
const REAL: CrState = { cr0: ET, cr3: 0n, cr4: 0n, efer: 0n, features: feats() };
/** Protected mode, paging off. */
const PROT: CrState = { ...REAL, cr0: PE | ET };
/** 32-bit paging. */
const PAGED32: CrState = { ...REAL, cr0: PE | ET | PG };
/** PAE paging (no LME). */
const PAE32: CrState = { ...REAL, cr0: PE | ET | PG | WP, cr4: PAE, efer: NX, cr3: 0x1000n };
/** Long mode, 64-bit code (CS.L = 1). */
const LONG64: CrState = { ...REAL, cr0: PE | ET | NE | WP | PG, cr4: PAE, efer: SCE | LME | LMA | NX, cr3: 0x2000n, csL: true };
/** Long mode, compatibility code (CS.L = 0). */
const COMPAT: CrState = { ...LONG64, csL: false };

const SVM_HOST = { module: 'svm', nested: true } as const;

function expectFault(r: CrResult, rule: string): void {
  expect(r.ok).toBe(false);
  if (r.ok) return;
  expect(r.fault).toBe('GP');
  expect(r.rule).toBe(rule);
  expect(r.reason.length).toBeGreaterThan(0);
  expect('effect' in r).toBe(false);
}

function accepted<T extends CrResult>(r: T): Extract<T, { ok: true }> {
  if (!r.ok) throw new Error(`expected acceptance, got #GP: ${r.reason}`);
  return r as Extract<T, { ok: true }>;
}

describe('CR0 (kvm_set_cr0, kvm_post_set_cr0, vendor set_cr0)', () => {
  it('kvm_set_cr0: bits 63:32 fault; other reserved bits are dropped and ET forced', () => {
    expectFault(checkSetCr0(PROT, PE | (1n << 32n)), 'cr0-high-bits');
    expectFault(checkSetCr0(PROT, PE | (1n << 63n)), 'cr0-high-bits');
    const r = accepted(checkSetCr0(REAL, PE | (1n << 6n) | (1n << 17n)));
    expect(r.regs.cr0).toBe(PE | ET);
  });

  it('kvm_set_cr0: NW without CD faults, NW with CD is accepted', () => {
    expectFault(checkSetCr0(PROT, PE | NW), 'cr0-nw-without-cd');
    expect(accepted(checkSetCr0(PROT, PE | NW | CD)).regs.cr0).toBe(PE | ET | NW | CD);
  });

  it('kvm_set_cr0: PG without PE faults, PG with PE is accepted', () => {
    expectFault(checkSetCr0(REAL, PG), 'cr0-pg-without-pe');
    const r = accepted(checkSetCr0(REAL, PG | PE));
    expect(r.regs.cr0).toBe(PG | PE | ET);
    expect(r.effect).toEqual({ kind: 'reset' });
  });

  it('kvm_set_cr0: enabling PG with EFER.LME needs CR4.PAE', () => {
    const s: CrState = { ...PROT, efer: LME };
    expectFault(checkSetCr0(s, PE | PG), 'cr0-long-mode-without-pae');
    const r = accepted(checkSetCr0({ ...s, cr4: PAE }, PE | PG));
    expect(r.longMode).toBe('enter');
    expect(r.regs.efer).toBe(LME | LMA);
    expect(r.effect).toEqual({ kind: 'reset' });
    expect(r.pdptrsLoaded).toBe(false); // long mode: no PDPTE load
  });

  it('kvm_set_cr0: enabling PG with EFER.LME needs CS.L = 0', () => {
    const s: CrState = { ...PROT, efer: LME, cr4: PAE, csL: true };
    expectFault(checkSetCr0(s, PE | PG), 'cr0-long-mode-cs-l');
    expect(accepted(checkSetCr0({ ...s, csL: false }, PE | PG)).longMode).toBe('enter');
  });

  it('kvm_set_cr0: PAE paging with a change in CD/NW/PG needs valid PDPTEs (load_pdptrs)', () => {
    const s: CrState = { ...PROT, cr4: PAE, cr3: 0x3000n };
    expectFault(checkSetCr0({ ...s, pdptrsValid: false }, PE | PG), 'cr0-pdptrs');
    const seen: bigint[] = [];
    const r = accepted(checkSetCr0({ ...s, pdptrsValid: (cr3) => (seen.push(cr3), true) }, PE | PG));
    expect(r.pdptrsLoaded).toBe(true);
    expect(seen).toEqual([0x3000n]);
    // CD change while PAE paging also reloads
    expectFault(checkSetCr0({ ...PAE32, pdptrsValid: false }, PAE32.cr0 | CD), 'cr0-pdptrs');
    // a change outside CD/NW/PG (AM) does not reload, so bad PDPTEs do not matter
    const am = accepted(checkSetCr0({ ...PAE32, pdptrsValid: false }, PAE32.cr0 | AM));
    expect(am.pdptrsLoaded).toBe(false);
    expect(am.effect).toEqual({ kind: 'none' });
  });

  it('kvm_set_cr0: clearing PG in 64-bit mode faults; in compatibility mode it leaves long mode', () => {
    expectFault(checkSetCr0(LONG64, PE | NE | WP), 'cr0-clear-pg-64bit');
    const r = accepted(checkSetCr0(COMPAT, PE | NE | WP));
    expect(r.longMode).toBe('exit');
    expect(r.regs.efer).toBe(SCE | LME | NX);
    expect(r.effect).toEqual({ kind: 'reset' });
  });

  it('kvm_set_cr0: clearing PG with CR4.PCIDE faults', () => {
    expectFault(checkSetCr0({ ...COMPAT, cr4: PAE | PCIDE }, PE | NE), 'cr0-clear-pg-pcide');
    expect(accepted(checkSetCr0({ ...COMPAT, cr4: PAE | PCIDE }, PE | NE | PG)).effect).toEqual({ kind: 'reset' }); // WP cleared
  });

  it('vmx handle_set_cr0 / nested_host_cr0_valid: in VMX operation PE, PG, NE stay set', () => {
    const s: CrState = { ...LONG64, cr4: PAE | VMXE, vmxon: true };
    expectFault(checkSetCr0(s, PE | PG | WP), 'cr0-vmxon-fixed');
    expect(accepted(checkSetCr0(s, PE | PG | NE)).effect).toEqual({ kind: 'reset' });
    // svm has no such check
    expect(accepted(checkSetCr0({ ...s, cr4: PAE, host: SVM_HOST }, PE | PG | WP)).ok).toBe(true);
  });

  it('vmx_set_cr0 / svm_set_cr0: LMA follows PG only when EFER.LME is set', () => {
    const r = accepted(checkSetCr0({ ...PROT, cr4: PAE }, PE | PG));
    expect(r.longMode).toBeNull();
    expect(r.regs.efer).toBe(0n);
    for (const host of [undefined, SVM_HOST]) {
      const e = accepted(checkSetCr0({ ...PROT, efer: LME | NX, cr4: PAE, host }, PE | PG));
      expect(e.regs.efer).toBe(LME | LMA | NX);
    }
  });

  it('kvm_post_set_cr0: reset iff PG or WP changed', () => {
    expect(accepted(checkSetCr0(PAGED32, PAGED32.cr0 | WP)).effect).toEqual({ kind: 'reset' });
    expect(accepted(checkSetCr0(PAGED32, PAGED32.cr0 | MP | TS | AM | NE)).effect).toEqual({ kind: 'none' });
    expect(accepted(checkSetCr0(PAGED32, PE)).effect).toEqual({ kind: 'reset' });
  });

  it('kvm_lmsw: loads CR0[3:0] but cannot clear PE', () => {
    const r = accepted(checkLmsw(PROT, 0));
    expect(r.regs.cr0).toBe(PE | ET);
    expect(accepted(checkLmsw(REAL, 0x9)).regs.cr0).toBe(PE | ET | (1n << 3n));
    expect(() => checkLmsw(REAL, 0x10000)).toThrow(/msw/);
  });

  it('bad input names the field', () => {
    expect(() => checkSetCr0(REAL, -1n)).toThrow(/cr0/);
    expect(() => checkSetCr0(REAL, 1n << 64n)).toThrow(/cr0/);
    expect(() => checkSetCr0({ ...REAL, efer: -2n }, PE)).toThrow(/state\.efer/);
  });
});

describe('CR4 (kvm_set_cr4, kvm_is_valid_cr4, kvm_post_set_cr4)', () => {
  it('kvm_is_valid_cr4 / cr4_reserved_bits: SMXE and bits outside CR4_RESERVED_BITS always fault', () => {
    expectFault(checkSetCr4(PROT, SMXE), 'cr4-reserved');
    expectFault(checkSetCr4(PROT, 1n << 15n), 'cr4-reserved');
    expectFault(checkSetCr4(PROT, 1n << 32n), 'cr4-reserved');
    expect(accepted(checkSetCr4(PROT, OSFXSR | PCE)).regs.cr4).toBe(OSFXSR | PCE);
  });

  it('kvm_is_valid_cr4 / cr4_reserved_bits: VMXE only with kvm_intel nested=1 (vmx_set_cpu_caps)', () => {
    expect(accepted(checkSetCr4(PROT, VMXE)).regs.cr4).toBe(VMXE);
    expectFault(checkSetCr4({ ...PROT, host: SVM_HOST }, VMXE), 'cr4-reserved');
    expectFault(checkSetCr4({ ...PROT, host: { module: 'vmx', nested: false } }, VMXE), 'cr4-reserved');
  });

  const gated: Array<[string, bigint, Partial<GuestFeatures>]> = [
    ['OSXSAVE', OSXSAVE, { xsave: false }],
    ['SMEP', SMEP, { smep: false }],
    ['SMAP', SMAP, { smap: false }],
    ['FSGSBASE', FSGSBASE, { fsgsbase: false }],
    ['PKE', PKE, { pku: false }],
    ['LA57', LA57, { la57: false }],
    ['UMIP', UMIP, { umip: false }],
    ['VMXE', VMXE, { vmx: false }],
    ['PCIDE', PCIDE, { pcid: false }],
  ];
  it.each(gated)('__cr4_reserved_bits (guest CPUID): CR4.%s needs its feature', (name, bit, off) => {
    // paging off, not long mode: only the reserved-bit checks can refuse (PCIDE: use long mode)
    const base: CrState = name === 'PCIDE' ? LONG64 : PROT;
    const r = checkSetCr4({ ...base, features: feats(off) }, base.cr4 | bit);
    expectFault(r, 'cr4-guest-reserved');
    if (!r.ok) expect(r.reason).toContain(`CR4.${name}`);
    expect(accepted(checkSetCr4(base, base.cr4 | bit)).regs.cr4).toBe(base.cr4 | bit);
  });

  it('vmx_is_valid_cr4: VMXE refused in SMM; svm_is_valid_cr4 accepts', () => {
    expectFault(checkSetCr4({ ...PROT, smm: true }, VMXE), 'cr4-vmxe-smm');
    expect(accepted(checkSetCr4({ ...PROT, smm: true }, PSE)).ok).toBe(true);
    expect(accepted(checkSetCr4(PROT, VMXE)).ok).toBe(true);
  });

  it('vmx_is_valid_cr4 / nested_cr4_valid: in VMX operation VMXE stays set', () => {
    const s: CrState = { ...LONG64, cr4: PAE | VMXE, vmxon: true };
    expectFault(checkSetCr4(s, PAE), 'cr4-vmxon-fixed');
    expect(accepted(checkSetCr4(s, PAE | VMXE | PGE)).effect).toEqual({ kind: 'request', request: 'TLB_FLUSH_GUEST' });
  });

  it('kvm_set_cr4: in long mode PAE must stay set', () => {
    expectFault(checkSetCr4(LONG64, 0n), 'cr4-long-mode-pae');
    expect(accepted(checkSetCr4(LONG64, PAE | SMEP)).effect).toEqual({ kind: 'reset' });
  });

  it('kvm_set_cr4: in long mode LA57 cannot change; outside long mode it can', () => {
    expectFault(checkSetCr4(LONG64, PAE | LA57), 'cr4-long-mode-la57');
    expectFault(checkSetCr4({ ...LONG64, cr4: PAE | LA57 }, PAE), 'cr4-long-mode-la57');
    expect(accepted(checkSetCr4({ ...LONG64, cr4: PAE | LA57 }, PAE | LA57 | PGE)).ok).toBe(true);
    expect(accepted(checkSetCr4({ ...PROT, cr4: PAE }, PAE | LA57)).effect).toEqual({ kind: 'reset' });
  });

  it('kvm_set_cr4: PAE paging with a change in PGE/PSE/PAE/SMEP needs valid PDPTEs', () => {
    for (const bit of [PGE, PSE, SMEP]) {
      expectFault(checkSetCr4({ ...PAE32, pdptrsValid: false }, PAE | bit), 'cr4-pdptrs');
    }
    // enabling PAE under 32-bit paging loads PDPTEs from the current CR3
    const seen: bigint[] = [];
    const r = accepted(checkSetCr4({ ...PAGED32, cr3: 0x5000n, pdptrsValid: (c) => (seen.push(c), true) }, PAE));
    expect(r.pdptrsLoaded).toBe(true);
    expect(seen).toEqual([0x5000n]);
    // SMAP and OSFXSR are not PDPTR bits
    expect(accepted(checkSetCr4({ ...PAE32, pdptrsValid: false }, PAE | SMAP)).pdptrsLoaded).toBe(false);
    // paging off: no load
    expect(accepted(checkSetCr4({ ...PROT, pdptrsValid: false }, PAE | PGE)).pdptrsLoaded).toBe(false);
    // clearing PAE under paging: no load (new PAE clear)
    expect(accepted(checkSetCr4({ ...PAE32, pdptrsValid: false }, 0n)).pdptrsLoaded).toBe(false);
  });

  it('kvm_set_cr4: setting PCIDE needs CPUID PCID (caught first by cr4_guest_rsvd_bits)', () => {
    expectFault(checkSetCr4({ ...LONG64, features: feats({ pcid: false }) }, PAE | PCIDE), 'cr4-guest-reserved');
    expect(accepted(checkSetCr4(LONG64, PAE | PCIDE)).ok).toBe(true);
  });

  it('kvm_set_cr4: setting PCIDE needs CR3[11:0] = 0', () => {
    expectFault(checkSetCr4({ ...LONG64, cr3: 0x2001n }, PAE | PCIDE), 'cr4-pcide-cr3');
    // already set: no check
    expect(accepted(checkSetCr4({ ...LONG64, cr3: 0x2001n, cr4: PAE | PCIDE }, PAE | PCIDE | PGE)).ok).toBe(true);
  });

  it('kvm_set_cr4: setting PCIDE needs long mode', () => {
    expectFault(checkSetCr4({ ...PAE32, cr3: 0x1000n }, PAE | PCIDE), 'cr4-pcide-not-long-mode');
    expect(accepted(checkSetCr4(COMPAT, PAE | PCIDE)).regs.cr4).toBe(PAE | PCIDE);
  });

  it('kvm_post_set_cr4: role bit → reset, else PCIDE → MMU_RELOAD, else PGE → TLB_FLUSH_GUEST', () => {
    expect(accepted(checkSetCr4(LONG64, PAE | PKE)).effect).toEqual({ kind: 'reset' });
    expect(accepted(checkSetCr4(LONG64, PAE | PKE | PCIDE | PGE)).effect).toEqual({ kind: 'reset' });
    expect(accepted(checkSetCr4(LONG64, PAE | PCIDE | PGE)).effect).toEqual({ kind: 'request', request: 'MMU_RELOAD' });
    expect(accepted(checkSetCr4({ ...LONG64, cr4: PAE | PCIDE }, PAE)).effect).toEqual({ kind: 'request', request: 'MMU_RELOAD' });
    expect(accepted(checkSetCr4(LONG64, PAE | PGE)).effect).toEqual({ kind: 'request', request: 'TLB_FLUSH_GUEST' });
    expect(accepted(checkSetCr4(LONG64, PAE | OSFXSR | UMIP)).effect).toEqual({ kind: 'none' });
  });
});

describe('EFER (set_efer, __kvm_valid_efer)', () => {
  it('set_efer / efer_reserved_bits: unknown bits fault even from the host', () => {
    expectFault(checkSetEfer(REAL, 1n << 9n), 'efer-reserved');
    expectFault(checkSetEfer(REAL, TCE), 'efer-reserved');
    expectFault(checkSetEfer(REAL, 1n << 40n, { hostInitiated: true }), 'efer-reserved');
    expect(accepted(checkSetEfer(REAL, SCE | LME | NX)).regs.efer).toBe(SCE | LME | NX);
  });

  it('set_efer / efer_reserved_bits: SVME, LMSLE, FFXSR only on kvm_amd (SVME/LMSLE with nested=1)', () => {
    expectFault(checkSetEfer(REAL, SVME, { hostInitiated: true }), 'efer-reserved');
    expectFault(checkSetEfer(REAL, FFXSR), 'efer-reserved');
    expectFault(checkSetEfer(REAL, LMSLE), 'efer-reserved');
    expect(accepted(checkSetEfer({ ...REAL, host: SVM_HOST }, SVME | LMSLE | FFXSR)).regs.efer).toBe(SVME | LMSLE | FFXSR);
    expectFault(checkSetEfer({ ...REAL, host: { module: 'svm', nested: false } }, SVME), 'efer-reserved');
    expect(accepted(checkSetEfer({ ...REAL, host: { module: 'svm', nested: false } }, FFXSR)).ok).toBe(true);
  });

  it('__kvm_valid_efer: FFXSR needs CPUID FXSR_OPT (guest writes only)', () => {
    const s: CrState = { ...REAL, host: SVM_HOST, features: feats({ fxsrOpt: false }) };
    expectFault(checkSetEfer(s, FFXSR), 'efer-ffxsr');
    expect(accepted(checkSetEfer(s, FFXSR, { hostInitiated: true })).ok).toBe(true);
  });

  it('__kvm_valid_efer: SVME needs CPUID SVM (guest writes only)', () => {
    const s: CrState = { ...REAL, host: SVM_HOST, features: feats({ vendor: 'amd', svm: false }) };
    expectFault(checkSetEfer(s, SVME), 'efer-svme');
    expect(accepted(checkSetEfer(s, SVME, { hostInitiated: true })).ok).toBe(true);
    expect(accepted(checkSetEfer({ ...s, features: feats({ vendor: 'amd' }) }, SVME)).ok).toBe(true);
  });

  it('__kvm_valid_efer: LME or LMA need CPUID LM (guest writes only)', () => {
    const s: CrState = { ...REAL, features: feats({ lm: false }) };
    expectFault(checkSetEfer(s, LME), 'efer-lm');
    expectFault(checkSetEfer(s, LMA), 'efer-lm');
    expect(accepted(checkSetEfer(s, LME, { hostInitiated: true })).regs.efer).toBe(LME);
    expect(accepted(checkSetEfer(s, SCE | NX)).ok).toBe(true); // SCE is not CPUID-gated in v5.17
  });

  it('__kvm_valid_efer: NX needs CPUID NX; the NX change resets the MMU (set_efer)', () => {
    expectFault(checkSetEfer({ ...REAL, features: feats({ nx: false }) }, NX), 'efer-nx');
    const r = accepted(checkSetEfer(REAL, NX));
    expect(r.effect).toEqual({ kind: 'reset' });
    expect(accepted(checkSetEfer({ ...REAL, features: feats({ nx: false }) }, NX, { hostInitiated: true })).effect).toEqual({ kind: 'reset' });
  });

  it('set_efer: a guest cannot change LME while paging; the host can', () => {
    expectFault(checkSetEfer(PAGED32, LME), 'efer-lme-while-paging');
    expectFault(checkSetEfer(LONG64, SCE | LMA | NX), 'efer-lme-while-paging');
    expect(accepted(checkSetEfer(PAGED32, LME, { hostInitiated: true })).regs.efer).toBe(LME);
    expect(accepted(checkSetEfer(PROT, LME)).regs.efer).toBe(LME);
  });

  it('set_efer: LMA keeps its current value whatever is written', () => {
    expect(accepted(checkSetEfer(LONG64, SCE | LME | NX)).regs.efer).toBe(SCE | LME | LMA | NX);
    expect(accepted(checkSetEfer(PROT, LME | LMA)).regs.efer).toBe(LME);
    expect(accepted(checkSetEfer(PROT, LME | LMA, { hostInitiated: true })).regs.efer).toBe(LME);
  });

  it('set_efer: only an NX change resets the MMU', () => {
    expect(accepted(checkSetEfer(LONG64, LME | LMA | NX)).effect).toEqual({ kind: 'none' }); // SCE cleared
    expect(accepted(checkSetEfer(LONG64, SCE | LME)).effect).toEqual({ kind: 'reset' });
  });
});

describe('CR3 (kvm_set_cr3)', () => {
  it('kvm_vcpu_is_illegal_gpa: bits at or above MAXPHYADDR fault', () => {
    const s: CrState = { ...PAGED32, features: feats({ maxPhyAddr: 36 }) };
    expectFault(checkSetCr3(s, 1n << 36n), 'cr3-illegal-gpa');
    const r = accepted(checkSetCr3(s, (1n << 35n) | 0x18n));
    expect(r.effect).toEqual({ kind: 'new-pgd', pgd: (1n << 35n) | 0x18n });
    expect(r.invalidatePcid).toBe(0);
  });

  it('kvm_set_cr3: without PCIDE bit 63 is a GPA bit; with PCIDE it is NOFLUSH and is stripped', () => {
    expectFault(checkSetCr3(LONG64, (1n << 63n) | 0x4000n), 'cr3-illegal-gpa');
    const s: CrState = { ...LONG64, cr4: PAE | PCIDE };
    const r = accepted(checkSetCr3(s, (1n << 63n) | 0x4005n));
    expect(r.regs.cr3).toBe(0x4005n);
    expect(r.invalidatePcid).toBeNull();
    expect(r.effect).toEqual({ kind: 'new-pgd', pgd: 0x4005n });
    expect(accepted(checkSetCr3(s, 0x4007n)).invalidatePcid).toBe(7);
  });

  it('kvm_set_cr3: an unchanged CR3 outside PAE paging skips every check', () => {
    const s: CrState = { ...LONG64, cr3: 1n << 50n }; // stuffed illegal value
    const r = accepted(checkSetCr3(s, 1n << 50n));
    expect(r.effect).toEqual({ kind: 'none' });
    expect(r.invalidatePcid).toBe(0);
  });

  it('kvm_set_cr3: PAE paging always reloads PDPTEs, even for the same CR3', () => {
    expectFault(checkSetCr3({ ...PAE32, pdptrsValid: false }, 0x7000n), 'cr3-pdptrs');
    expectFault(checkSetCr3({ ...PAE32, pdptrsValid: false }, PAE32.cr3), 'cr3-pdptrs');
    const seen: bigint[] = [];
    const r = accepted(checkSetCr3({ ...PAE32, pdptrsValid: (c) => (seen.push(c), true) }, 0x7020n));
    expect(seen).toEqual([0x7020n]);
    expect(r.pdptrsLoaded).toBe(true);
    const same = accepted(checkSetCr3(PAE32, PAE32.cr3));
    expect(same.pdptrsLoaded).toBe(true);
    expect(same.effect).toEqual({ kind: 'none' });
    // long mode: no PDPTEs
    expect(accepted(checkSetCr3({ ...LONG64, pdptrsValid: false }, 0x9000n)).pdptrsLoaded).toBe(false);
  });
});

describe('properties', () => {
  const cr0Bits = [PE, MP, TS, ET, NE, WP, AM, NW, CD, PG, 1n << 6n, 1n << 32n];
  const cr4Bits = [PSE, PAE, PGE, PCE, OSFXSR, UMIP, LA57, VMXE, SMXE, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP, PKE, 1n << 33n];
  const eferBits = [SCE, LME, LMA, NX, SVME, LMSLE, FFXSR, TCE];
  const bitsArb = (bits: bigint[]) => fc.subarray(bits).map((xs) => xs.reduce((a, b) => a | b, 0n));
  const featArb = fc.record({
    vendor: fc.constantFrom('intel' as const, 'amd' as const),
    maxPhyAddr: fc.integer({ min: 32, max: 52 }),
    gbpages: fc.boolean(),
    pse36: fc.boolean(),
    pku: fc.boolean(),
    la57: fc.boolean(),
    smep: fc.boolean(),
    smap: fc.boolean(),
    nx: fc.boolean(),
    lm: fc.boolean(),
    pcid: fc.boolean(),
    vmx: fc.boolean(),
    svm: fc.boolean(),
    fxsrOpt: fc.boolean(),
  });
  const stateArb: fc.Arbitrary<CrState> = fc.record({
    cr0: bitsArb([PE, ET, NE, WP, PG, CD]),
    cr3: fc.oneof(fc.constantFrom(0n, 0x1000n, 0x2003n), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
    cr4: bitsArb([PSE, PAE, PGE, LA57, PCIDE, SMEP, SMAP, PKE, VMXE]),
    efer: bitsArb([SCE, LME, LMA, NX]),
    features: featArb,
    csL: fc.boolean(),
    smm: fc.boolean(),
    vmxon: fc.boolean(),
    host: fc.constantFrom({ module: 'vmx' as const, nested: true }, { module: 'svm' as const, nested: true }),
    pdptrsValid: fc.boolean(),
  });
  const writeArb = fc.oneof(
    fc.tuple(fc.constant('cr0' as const), bitsArb(cr0Bits)),
    fc.tuple(fc.constant('cr4' as const), bitsArb(cr4Bits)),
    fc.tuple(fc.constant('efer' as const), bitsArb(eferBits)),
    fc.tuple(fc.constant('cr3' as const), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
  );
  const run = (s: CrState, reg: 'cr0' | 'cr4' | 'efer' | 'cr3', v: bigint, host: boolean): CrResult => {
    switch (reg) {
      case 'cr0':
        return checkSetCr0(s, v);
      case 'cr4':
        return checkSetCr4(s, v);
      case 'efer':
        return checkSetEfer(s, v, { hostInitiated: host });
      case 'cr3':
        return checkSetCr3(s, v);
    }
  };

  it('a rejected write never reports an effect or registers; an accepted one always does', () => {
    fc.assert(
      fc.property(stateArb, writeArb, fc.boolean(), (s, [reg, v], host) => {
        const before = JSON.stringify(s, (_k, x) => (typeof x === 'bigint' ? x.toString() : x));
        const r = run(s, reg, v, host);
        expect(JSON.stringify(s, (_k, x) => (typeof x === 'bigint' ? x.toString() : x))).toBe(before); // pure
        if (r.ok) {
          expect(r.effect).toBeDefined();
          expect(r.regs).toBeDefined();
        } else {
          expect(r.fault).toBe('GP');
          expect('effect' in r).toBe(false);
          expect('regs' in r).toBe(false);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('an accepted CR4 write that flips a role bit reports a reset', () => {
    let flips = 0;
    fc.assert(
      fc.property(stateArb, bitsArb(cr4Bits), (s, v) => {
        const r = checkSetCr4(s, v);
        if (r.ok && (v ^ s.cr4) & CR4_ROLE) {
          flips++;
          expect(r.effect).toEqual({ kind: 'reset' });
        }
        if (r.ok && !((v ^ s.cr4) & CR4_ROLE)) expect(r.effect.kind).not.toBe('reset');
      }),
      { numRuns: 2000 },
    );
    expect(flips).toBeGreaterThan(50);
  });

  it('an accepted CR0 write resets iff PG or WP changed, and an accepted EFER write iff NX changed', () => {
    fc.assert(
      fc.property(stateArb, bitsArb(cr0Bits), bitsArb(eferBits), fc.boolean(), (s, c0, ef, host) => {
        const r0 = checkSetCr0(s, c0);
        if (r0.ok) expect(r0.effect.kind === 'reset').toBe(((r0.regs.cr0 ^ s.cr0) & (PG | WP)) !== 0n);
        const re = checkSetEfer(s, ef, { hostInitiated: host });
        if (re.ok) {
          expect(re.effect.kind === 'reset').toBe(((ef ^ s.efer) & NX) !== 0n);
          expect(re.regs.efer & LMA).toBe(s.efer & LMA);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('from a consistent state, an accepted CR0 write keeps EFER.LMA = EFER.LME && CR0.PG', () => {
    fc.assert(
      fc.property(stateArb, bitsArb(cr0Bits), (s0, c0) => {
        const pg = (s0.cr0 & PG) !== 0n;
        const lme = (s0.efer & LME) !== 0n;
        const s: CrState = { ...s0, efer: lme && pg ? s0.efer | LMA : s0.efer & ~LMA };
        const r = checkSetCr0(s, c0);
        if (!r.ok) return;
        const lma = (r.regs.efer & LMA) !== 0n;
        expect(lma).toBe(lme && (r.regs.cr0 & PG) !== 0n);
      }),
      { numRuns: 1000 },
    );
  });
});

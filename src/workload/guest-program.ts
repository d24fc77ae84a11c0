/**
 * A seeded guest program: produces the operations a guest kernel and
 * hypervisor would execute — paging-mode switches done the architectural way
 * (paging off, EFER, CR4, paging on), feature toggles (CR0.WP, CR4.SMEP /
 * SMAP / PKE / PSE / PGE, EFER.NX), CR3 switches among a few address spaces,
 * memory accesses, SMI/RSM, nested VM entry/exit with L2 paging on and off,
 * HLT, and now and then a write the CPU must refuse (#GP). It consults a
 * read-only view of the vCPU so that most operations are valid.
 */
import type { EptInit } from '../mmu/init.js';
import { CR0, EFER } from '../role/regs.js';
import type { GuestOp, GuestProgram, GuestView, NestedKind } from '../vcpu/guest-ops.js';
import { modeRegs, PAGING_MODES, randomGuestRegs, toggleableBits, type GuestRegs } from './guest-modes.js';
import { Rng } from './rng.js';

export type OpClass = 'access' | 'toggle' | 'mode' | 'cr3' | 'invlpg' | 'smm' | 'nested-enter' | 'nested-exit' | 'hlt' | 'invalid';

/** Relative weights of each class of operation. */
export type OpMix = Readonly<Record<OpClass, number>>;

export const DEFAULT_MIX: OpMix = {
  access: 40,
  toggle: 12,
  mode: 3,
  cr3: 8,
  invlpg: 3,
  smm: 2,
  'nested-enter': 8,
  'nested-exit': 6,
  hlt: 0,
  invalid: 1,
};

export interface ProgramOptions {
  seed: number;
  /** How this vCPU's L1 runs L2: decided by the host (EPT, NPT, or no nested TDP). */
  nestedKind: NestedKind;
  mix?: Partial<OpMix>;
  /** Distinct CR3 values (address spaces) the guest switches among. */
  addressSpaces?: number;
}

const big = (n: number): bigint => BigInt(n >>> 0);

export class RandomGuestProgram implements GuestProgram {
  private readonly rng: Rng;
  private readonly mix: OpMix;
  private readonly queue: GuestOp[] = [];
  private ept: EptInit = { execonly: true, accessedDirty: true, level: 4, hugePageLevel: 3 };

  constructor(private readonly opts: ProgramOptions) {
    this.rng = new Rng(opts.seed);
    this.mix = { ...DEFAULT_MIX, ...opts.mix };
  }

  next(view: GuestView): GuestOp {
    const queued = this.queue.shift();
    if (queued) return queued;
    const op = this.generate(view);
    return op ?? { k: 'access', gva: this.gva(), write: false, fetch: false, user: false };
  }

  private gva(): bigint {
    return BigInt(this.rng.int(1 << 16)) << 12n;
  }

  /** Paging off, then EFER, CR4, then CR0 with paging: how a guest changes mode. */
  private switchMode(r: GuestRegs, view: GuestView): GuestOp {
    this.queue.push({ k: 'wrmsr-efer', v: big(r.efer & ~EFER.LMA) }, { k: 'mov-cr4', v: big(r.cr4) }, { k: 'mov-cr0', v: big(r.cr0) });
    return { k: 'mov-cr0', v: view.cr0 & ~big(CR0.PG) };
  }

  private generate(view: GuestView): GuestOp | null {
    const rng = this.rng;
    switch (rng.weighted(this.mix)) {
      case 'access':
        return { k: 'access', gva: this.gva(), write: rng.chance(0.4), fetch: rng.chance(0.1), user: rng.chance(0.3) };
      case 'toggle': {
        const regs = { cr0: Number(view.cr0 & 0xffffffffn), cr4: Number(view.cr4 & 0xffffffffn), efer: Number(view.efer & 0xffffffffn) };
        const t = rng.pick(toggleableBits(regs));
        const v = big(regs[t.reg] ^ t.bit);
        return t.reg === 'cr0' ? { k: 'mov-cr0', v } : t.reg === 'cr4' ? { k: 'mov-cr4', v } : { k: 'wrmsr-efer', v };
      }
      case 'mode':
        return this.switchMode(randomGuestRegs(rng), view);
      case 'cr3':
        return { k: 'mov-cr3', v: BigInt(1 + rng.int(this.opts.addressSpaces ?? 4)) << 12n };
      case 'invlpg':
        return { k: 'invlpg', gva: this.gva() };
      case 'smm':
        return view.smm ? { k: 'rsm' } : { k: 'smi' };
      case 'nested-enter':
        return view.guestMode || view.smm || (view.cr0 & big(CR0.PG)) === 0n ? null : this.vmentry();
      case 'nested-exit':
        return view.guestMode ? { k: 'vmexit' } : null;
      case 'hlt':
        return { k: 'hlt' };
      case 'invalid':
        return this.invalidWrite(view);
    }
  }

  private vmentry(): GuestOp {
    const rng = this.rng;
    const r = randomGuestRegs(rng, rng.chance(0.25) ? ['real', 'protected'] : PAGING_MODES);
    if (rng.chance(0.2)) this.ept = { ...this.ept, execonly: rng.chance(0.5), accessedDirty: rng.chance(0.5) };
    const l2 = { cr0: big(r.cr0), cr3: BigInt(0x100 + rng.int(4)) << 12n, cr4: big(r.cr4), efer: big(r.efer) };
    return { k: 'vmentry', kind: this.opts.nestedKind, l2, ept: this.ept, nestedRoot: BigInt(0x200 + rng.int(2)) << 12n };
  }

  /** A write the CPU refuses: the core must raise #GP and change nothing. */
  private invalidWrite(view: GuestView): GuestOp {
    switch (this.rng.int(4)) {
      case 0: // CR0.PG without CR0.PE
        return { k: 'mov-cr0', v: big(modeRegs('paging32').cr0 & ~CR0.PE) };
      case 1: // a reserved CR4 bit
        return { k: 'mov-cr4', v: view.cr4 | (1n << 28n) };
      case 2: // bits 63:32 of CR0
        return { k: 'mov-cr0', v: view.cr0 | (1n << 40n) };
      default: // CR0.NW without CR0.CD
        return { k: 'mov-cr0', v: (view.cr0 | big(CR0.NW)) & ~big(CR0.CD) };
    }
  }
}


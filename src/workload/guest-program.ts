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
import { tableFormatOf, type GuestTableSet } from './guest-tables.js';
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
  /** The guest page tables to run on (CR3 values per format, nested roots). */
  tables?: GuestTableSet;
  /** A guest-virtual page one access in ten goes to (the stress edit target: a page the guest kernel keeps editing). */
  hotPage?: number;
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

  /** Mostly mapped pages of the address spaces, one in nine beyond them (unmapped). */
  private gva(): bigint {
    const hot = this.opts.hotPage;
    if (hot !== undefined && this.rng.chance(0.1)) return (BigInt(hot) << 12n) | BigInt(this.rng.int(512) * 8);
    const pages = this.opts.tables?.pages ?? 64;
    return (BigInt(this.rng.int(pages + Math.ceil(pages / 8))) << 12n) | BigInt(this.rng.int(512) * 8);
  }

  /** A CR3 of the format these registers walk (any address space of it). */
  private cr3For(cr0: bigint, cr4: bigint, efer: bigint): bigint {
    const t = this.opts.tables;
    if (!t) return BigInt(1 + this.rng.int(4)) << 12n;
    return this.rng.pick(t.cr3[tableFormatOf(cr0, cr4, efer) ?? 'long4']);
  }

  /** Paging off, then EFER, CR4, a CR3 of the new format, then CR0 with paging: how a guest changes mode. */
  private switchMode(r: GuestRegs, view: GuestView): GuestOp {
    const cr3 = this.cr3For(big(r.cr0), big(r.cr4), big(r.efer));
    this.queue.push({ k: 'wrmsr-efer', v: big(r.efer & ~EFER.LMA) }, { k: 'mov-cr4', v: big(r.cr4) }, { k: 'mov-cr3', v: cr3 }, { k: 'mov-cr0', v: big(r.cr0) });
    return { k: 'mov-cr0', v: view.cr0 & ~big(CR0.PG) };
  }

  private generate(view: GuestView): GuestOp | null {
    const rng = this.rng;
    switch (rng.weighted(this.mix)) {
      case 'access': {
        // A load, a store or an instruction fetch: never a fetch that writes.
        const write = rng.chance(0.4);
        // With paging off an address is physical: the guest touches its data, not its page tables.
        const flat = (view.cr0 & big(CR0.PG)) === 0n ? BigInt(this.opts.tables?.dataStart ?? 0) : 0n;
        return { k: 'access', gva: flat + this.gva(), write, fetch: !write && rng.chance(1 / 6), user: rng.chance(0.3) };
      }
      case 'toggle': {
        const regs = { cr0: Number(view.cr0 & 0xffffffffn), cr4: Number(view.cr4 & 0xffffffffn), efer: Number(view.efer & 0xffffffffn) };
        const t = rng.pick(toggleableBits(regs));
        const v = big(regs[t.reg] ^ t.bit);
        return t.reg === 'cr0' ? { k: 'mov-cr0', v } : t.reg === 'cr4' ? { k: 'mov-cr4', v } : { k: 'wrmsr-efer', v };
      }
      case 'mode':
        return this.switchMode(randomGuestRegs(rng), view);
      case 'cr3':
        return { k: 'mov-cr3', v: this.cr3For(view.cr0, view.cr4, view.efer) };
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
    const l2 = { cr0: big(r.cr0), cr3: this.cr3For(big(r.cr0), big(r.cr4), big(r.efer)), cr4: big(r.cr4), efer: big(r.efer) };
    const t = this.opts.tables;
    const nestedRoot = !t ? 0x200000n : this.opts.nestedKind === 'ept' ? t.eptp : t.nptCr3;
    return { k: 'vmentry', kind: this.opts.nestedKind, l2, ept: this.ept, nestedRoot };
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


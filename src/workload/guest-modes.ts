/**
 * Architecturally consistent guest register sets for every paging mode KVM
 * distinguishes, and the feature bits a workload toggles on top. Values pass
 * the checks of kvm_set_cr0 / kvm_set_cr4 / set_efer for a guest whose CPUID
 * has the features used (the default CPUID has them all but LA57).
 */
import { CR0, CR4, EFER } from '../role/regs.js';
import type { Rng } from './rng.js';

export const PAGING_MODES = ['real', 'protected', 'paging32', 'paging32-pse', 'pae', 'long4', 'long5'] as const;
export type PagingMode = (typeof PAGING_MODES)[number];

export interface GuestRegs {
  cr0: number;
  cr4: number;
  efer: number;
}

const BASE_CR0 = CR0.ET | CR0.NE;

/** The register values that select a paging mode (no optional features). */
export function modeRegs(mode: PagingMode): GuestRegs {
  const pg = (BASE_CR0 | CR0.PE | CR0.PG) >>> 0;
  switch (mode) {
    case 'real':
      return { cr0: BASE_CR0, cr4: 0, efer: 0 };
    case 'protected':
      return { cr0: BASE_CR0 | CR0.PE, cr4: 0, efer: 0 };
    case 'paging32':
      return { cr0: pg, cr4: 0, efer: 0 };
    case 'paging32-pse':
      return { cr0: pg, cr4: CR4.PSE, efer: 0 };
    case 'pae':
      return { cr0: pg, cr4: CR4.PAE, efer: 0 };
    case 'long4':
      return { cr0: pg, cr4: CR4.PAE, efer: EFER.LME | EFER.LMA };
    case 'long5':
      return { cr0: pg, cr4: CR4.PAE | CR4.LA57, efer: EFER.LME | EFER.LMA };
  }
}

export const isLong = (r: GuestRegs): boolean => (r.efer & EFER.LMA) !== 0;

/** A random mode with random WP/SMEP/SMAP/PKE/NX on top (PKE only in long mode). */
export function randomGuestRegs(rng: Rng, modes: readonly PagingMode[] = PAGING_MODES): GuestRegs {
  const r = modeRegs(rng.pick(modes));
  if (rng.chance(0.7)) r.cr0 |= CR0.WP;
  if (rng.chance(0.5)) r.cr4 |= CR4.SMEP;
  if (rng.chance(0.4)) r.cr4 |= CR4.SMAP;
  if (isLong(r) && rng.chance(0.4)) r.cr4 |= CR4.PKE;
  if (rng.chance(0.7)) r.efer |= EFER.NX;
  r.cr0 >>>= 0;
  return r;
}

/** Feature bits that can be flipped without leaving the current mode. */
export function toggleableBits(r: GuestRegs): { reg: keyof GuestRegs; bit: number; name: string }[] {
  const out: { reg: keyof GuestRegs; bit: number; name: string }[] = [
    { reg: 'cr0', bit: CR0.WP, name: 'CR0.WP' },
    { reg: 'cr4', bit: CR4.SMEP, name: 'CR4.SMEP' },
    { reg: 'cr4', bit: CR4.SMAP, name: 'CR4.SMAP' },
    { reg: 'efer', bit: EFER.NX, name: 'EFER.NX' },
    { reg: 'cr4', bit: CR4.PGE, name: 'CR4.PGE' },
  ];
  if (isLong(r)) out.push({ reg: 'cr4', bit: CR4.PKE, name: 'CR4.PKE' });
  else if (!(r.cr4 & CR4.PAE)) out.push({ reg: 'cr4', bit: CR4.PSE, name: 'CR4.PSE' });
  return out;
}

/**
 * Loading the four PAE page-directory-pointer-table entries (Linux v5.17
 * x86.c load_pdptrs, pdptr_rsvd_bits). PAE paging does not walk the PDPT on
 * each access: MOV to CR3 (and CR0/CR4 changes, and VM entry) loads the four
 * PDPTEs into registers, checking them then. A present PDPTE with a reserved
 * bit makes the load fail (#GP on MOV to CR3); the walker later uses the
 * loaded values without checking them again.
 */
import { rsvdBits } from '../cpuid/cpuid.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { hexAddr } from '../memory/address.js';
import { GuestWalker, type NestedTdp } from './walker-state.js';
import { PFERR } from './format.js';
import { translateNestedGpa } from './walker.js';

export type PdptrLoad = { readonly ok: true; readonly pdptes: readonly bigint[] } | { readonly ok: false; readonly reason: string };

/** pdptr_rsvd_bits: reserved GPA bits (MAXPHYADDR..63), bits 8:5 and 2:1. */
export const pdptrRsvdBits = (reservedGpaBits: bigint): bigint => reservedGpaBits | rsvdBits(5, 8) | rsvdBits(1, 2);

/**
 * load_pdptrs: read the 32-byte PDPT at CR3 bits 31:5 — for the nested MMU
 * after translating its page through L1's tables as a user write — and
 * check every present entry against `reservedGpaBits` (the vCPU's
 * reserved_gpa_bits). Reads are whole 64-bit Atomics loads.
 */
export function loadPdptrs(mem: GuestMemory, cr3: bigint, reservedGpaBits: bigint, nested: NestedTdp | null = null): PdptrLoad {
  let page = (cr3 >> 12n) << 12n;
  if (nested !== null) {
    const sink = new GuestWalker();
    if (!translateNestedGpa(nested, mem, page, PFERR.USER | PFERR.WRITE, nested.env, sink, 3)) {
      return { ok: false, reason: `the PDPT page ${hexAddr(page)} does not translate through L1's tables (error code ${hexAddr(BigInt(sink.fault.errorCode))})` };
    }
    page = nested.walker.gpa;
  }
  const base = page + (cr3 & 0xfe0n);
  if (base + 32n > BigInt(mem.size)) return { ok: false, reason: `the PDPT at ${hexAddr(base)} is outside guest memory` };
  const rsvd = pdptrRsvdBits(reservedGpaBits);
  const pdptes: bigint[] = [];
  for (let i = 0; i < 4; i++) {
    const e = mem.load64(Number(base) + 8 * i);
    if ((e & 1n) !== 0n && (e & rsvd) !== 0n) {
      return { ok: false, reason: `PDPTE ${i} (${hexAddr(e)}) is present with reserved bits ${hexAddr(e & rsvd)} set` };
    }
    pdptes.push(e);
  }
  return { ok: true, pdptes };
}

/**
 * Reserved-bit masks (Linux v5.17 mmu.c): `__reset_rsvds_bits_mask` (legacy
 * x86 format) and `__reset_rsvds_bits_mask_ept` (EPT format). Each writes only
 * the entries its level uses; the others keep their previous values, exactly
 * as in the kernel.
 */
import { rsvdBits } from '../cpuid/cpuid.js';
import type { RsvdBitsValidate } from './context.js';

const BIT7 = rsvdBits(7, 7);
const BIT63 = rsvdBits(63, 63);
const R_0_62 = rsvdBits(0, 62);
const R_0_51 = rsvdBits(0, 51);
const R_5_8 = rsvdBits(5, 8);
const R_1_2 = rsvdBits(1, 2);
const R_13_20 = rsvdBits(13, 20);
const R_13_29 = rsvdBits(13, 29);
const R_17_21 = rsvdBits(17, 21);
const R_3_7 = rsvdBits(3, 7);
const R_3_6 = rsvdBits(3, 6);
const R_12_29 = rsvdBits(12, 29);
const R_12_20 = rsvdBits(12, 20);
const BIT8 = rsvdBits(8, 8);

/** __reset_rsvds_bits_mask: legacy format for a paging depth of `level`. */
export function resetRsvdsBitsMask(
  check: RsvdBitsValidate,
  paBitsRsvd: bigint,
  level: number,
  nx: boolean,
  gbpages: boolean,
  pse: boolean,
  amd: boolean,
): void {
  check.badMtXwr = 0n;
  const gbpagesBitRsvd = gbpages ? 0n : BIT7;
  let high = paBitsRsvd & (level === 3 ? R_0_62 : R_0_51);
  // NX does not exist in PDPTEs; that case is handled below.
  if (!nx) high |= BIT63;
  // Non-leaf PML4Es and PDPEs reserve bit 8 on AMD CPUs only.
  const nonleafBit8Rsvd = amd ? BIT8 : 0n;

  switch (level) {
    case 2:
      // No reserved bits for 2-level 4K entries. PSE36 is always assumed
      // (is_cpuid_PSE36() returns 1), so the 32-bit-PSE value is dead code.
      check.set(0, 1, 0n);
      check.set(0, 0, 0n);
      check.set(1, 0, 0n);
      check.set(1, 1, pse ? R_17_21 : 0n);
      break;
    case 3:
      check.set(0, 2, BIT63 | high | R_5_8 | R_1_2); // PDPTE
      check.set(0, 1, high); // PDE
      check.set(0, 0, high); // PTE
      check.set(1, 1, high | R_13_20); // 2M page
      check.set(1, 0, high);
      break;
    case 5:
    case 4:
      if (level === 5) {
        check.set(0, 4, high | nonleafBit8Rsvd | BIT7);
        check.set(1, 4, high | nonleafBit8Rsvd | BIT7);
      }
      check.set(0, 3, high | nonleafBit8Rsvd | BIT7);
      check.set(0, 2, high | gbpagesBitRsvd);
      check.set(0, 1, high);
      check.set(0, 0, high);
      check.set(1, 3, high | nonleafBit8Rsvd | BIT7);
      check.set(1, 2, high | gbpagesBitRsvd | R_13_29);
      check.set(1, 1, high | R_13_20); // 2M page
      check.set(1, 0, high);
      break;
    default:
      // Other levels write nothing (the kernel's switch has no default).
      break;
  }
}

/** EPT `bad_mt_xwr`: memtypes 2, 3, 7 and XWR 010, 110 (and 100 unless execonly). */
function computeEptBadMtXwr(execonly: boolean): bigint {
  const repeatByte = (b: bigint): bigint => b * 0x0101010101010101n;
  let v = (0xffn << 16n) | (0xffn << 24n) | (0xffn << 56n);
  v |= repeatByte(1n << 2n);
  v |= repeatByte(1n << 6n);
  if (!execonly) v |= repeatByte(1n << 4n);
  return v;
}
const BAD_MT_XWR_EXECONLY = computeEptBadMtXwr(true);
const BAD_MT_XWR = computeEptBadMtXwr(false);
export const eptBadMtXwr = (execonly: boolean): bigint => (execonly ? BAD_MT_XWR_EXECONLY : BAD_MT_XWR);

/** __reset_rsvds_bits_mask_ept: all ten entries and bad_mt_xwr. */
export function resetRsvdsBitsMaskEpt(check: RsvdBitsValidate, paBitsRsvd: bigint, execonly: boolean, hugePageLevel: number): void {
  const high = paBitsRsvd & R_0_51;
  const large1g = hugePageLevel < 3 ? BIT7 : 0n;
  const large2m = hugePageLevel < 2 ? BIT7 : 0n;
  check.set(0, 4, high | R_3_7);
  check.set(0, 3, high | R_3_7);
  check.set(0, 2, high | R_3_6 | large1g);
  check.set(0, 1, high | R_3_6 | large2m);
  check.set(0, 0, high);
  check.set(1, 4, high | R_3_7);
  check.set(1, 3, high | R_3_7);
  check.set(1, 2, high | R_12_29 | large1g);
  check.set(1, 1, high | R_12_20 | large2m);
  check.set(1, 0, high);
  check.badMtXwr = eptBadMtXwr(execonly);
}

/**
 * The extended role word, `union kvm_mmu_extended_role` (Linux v5.17,
 * kvm_host.h), in the three layouts the invalidation designs imply, and the
 * `RoleFormat` each design computes roles in.
 *
 * The ext word exists so that a context whose page role is unchanged but whose
 * software-walker semantics changed (e.g. SMEP toggled while CR0.WP=1) is
 * still reconfigured. It is never part of a shadow page's key.
 */
import { Bitfield, hex32 } from './bitfield.js';

/** v5.17: bit 0 `valid`, set in every computed role. */
export const EXT_ROLE_V517 = new Bitfield('kvm_mmu_extended_role', {
  valid: [0, 1],
  execonly: [1, 1],
  cr0_pg: [2, 1],
  cr4_pae: [3, 1],
  cr4_pse: [4, 1],
  cr4_pke: [5, 1],
  cr4_smap: [6, 1],
  cr4_smep: [7, 1],
  cr4_la57: [8, 1],
  efer_lma: [9, 1],
} as const);

/**
 * Patch 03/23 as posted (Feb 2022): `valid` deleted from the union, so every
 * later field moves down one bit.
 */
export const EXT_ROLE_NO_VALID = new Bitfield('kvm_mmu_extended_role (no valid)', {
  execonly: [0, 1],
  cr0_pg: [1, 1],
  cr4_pae: [2, 1],
  cr4_pse: [3, 1],
  cr4_pke: [4, 1],
  cr4_smap: [5, 1],
  cr4_smep: [6, 1],
  cr4_la57: [7, 1],
  efer_lma: [8, 1],
} as const);

/** The reviewer's proposal: bit 0 renamed `cpuid_stale`, meaning flipped. */
export const EXT_ROLE_CPUID_STALE = new Bitfield('kvm_mmu_extended_role (cpuid_stale)', {
  cpuid_stale: [0, 1],
  execonly: [1, 1],
  cr0_pg: [2, 1],
  cr4_pae: [3, 1],
  cr4_pse: [4, 1],
  cr4_pke: [5, 1],
  cr4_smap: [6, 1],
  cr4_smep: [7, 1],
  cr4_la57: [8, 1],
  efer_lma: [9, 1],
} as const);

/** The ext fields every layout has (the marker bit aside). */
export type ExtField = 'execonly' | 'cr0_pg' | 'cr4_pae' | 'cr4_pse' | 'cr4_pke' | 'cr4_smap' | 'cr4_smep' | 'cr4_la57' | 'efer_lma';

export type RoleFormatName = 'v5.17' | 'no-valid' | 'cpuid-stale';

/**
 * How a design lays out and marks computed roles. Role computation first
 * builds the ext fields in the v5.17 positions with bit 0 clear (`fields`),
 * then `encodeExt` turns that into the design's word: set `valid`, shift out
 * the deleted bit, or leave the flipped bit clear.
 */
export interface RoleFormat {
  readonly name: RoleFormatName;
  readonly ext: Bitfield<string>;
  /** Masks of the ext fields in this layout, for the MMU's role accessors. */
  readonly bit: Readonly<Record<ExtField, number>>;
  encodeExt(fieldsInV517Positions: number): number;
}

function masks(b: Bitfield<ExtField | string>): Record<ExtField, number> {
  const names: ExtField[] = ['execonly', 'cr0_pg', 'cr4_pae', 'cr4_pse', 'cr4_pke', 'cr4_smap', 'cr4_smep', 'cr4_la57', 'efer_lma'];
  return Object.fromEntries(names.map((n) => [n, b.maskOf(n)])) as Record<ExtField, number>;
}

const V517_VALID = EXT_ROLE_V517.maskOf('valid');

/** kvm_calc_mmu_role_ext / kvm_calc_shadow_ept_root_page_role, v5.17: `ext.valid = 1`. */
export const FORMAT_V517: RoleFormat = {
  name: 'v5.17',
  ext: EXT_ROLE_V517,
  bit: masks(EXT_ROLE_V517),
  encodeExt: (f) => (f | V517_VALID) >>> 0,
};

/** Patch 03/23: no validity bit; the remaining fields shift down by one. */
export const FORMAT_NO_VALID: RoleFormat = {
  name: 'no-valid',
  ext: EXT_ROLE_NO_VALID,
  bit: masks(EXT_ROLE_NO_VALID),
  encodeExt: (f) => f >>> 1,
};

/** cpuid_stale proposal: bit 0 stays 0 in every computed role. */
export const FORMAT_CPUID_STALE: RoleFormat = {
  name: 'cpuid-stale',
  ext: EXT_ROLE_CPUID_STALE,
  bit: masks(EXT_ROLE_CPUID_STALE),
  encodeExt: (f) => f >>> 0,
};

/** Every field of an ext word in a format, `name=value`, in bit order. */
export function formatExtRole(word: number, format: RoleFormat = FORMAT_V517): string {
  const r = format.ext.decode(word);
  const parts = format.ext.names.map((f) => `${f}=${r[f]}`);
  if (r.unused) parts.push(`unused=${hex32(r.unused)}`);
  return parts.join(' ');
}

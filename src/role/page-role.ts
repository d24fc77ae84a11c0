/**
 * The page role word, `union kvm_mmu_page_role` (Linux v5.17,
 * arch/x86/include/asm/kvm_host.h). It is the key of the shadow page cache,
 * together with the gfn, and the low half of a context's cached role.
 *
 * Why each field is in the key: a shadow page built for one of these values
 * is wrong for another (different table depth, 4-byte vs 8-byte guest
 * entries, which quarter of a 32-bit table, direct vs shadowed, access bits,
 * NX/WP semantics, SMEP/SMAP-without-WP emulation, A/D usage, L1 vs L2, SMM
 * address space). What is left out: MAXPHYADDR, GBPAGES, the guest vendor and
 * every other CPUID fact — they shape reserved-bit masks but are not in the
 * key, which is exactly what the CPUID-time invalidation
 * (`kvm_mmu_after_set_cpuid`) has to cover.
 */
import { Bitfield, hex32 } from './bitfield.js';

/** A 32-bit page role word. Branded so it cannot be mixed up with other words. */
export type PageRoleWord = number & { readonly __brand: 'PageRoleWord' };
export const asPageRoleWord = (word: number): PageRoleWord => (word >>> 0) as PageRoleWord;

export const PAGE_ROLE = new Bitfield('kvm_mmu_page_role', {
  level: [0, 4],
  has_4_byte_gpte: [4, 1],
  quadrant: [5, 2],
  direct: [7, 1],
  access: [8, 3],
  invalid: [11, 1],
  efer_nx: [12, 1],
  cr0_wp: [13, 1],
  smep_andnot_wp: [14, 1],
  smap_andnot_wp: [15, 1],
  ad_disabled: [16, 1],
  guest_mode: [17, 1],
  // bits 18..23 unused
  smm: [24, 8],
} as const);

export type PageRoleField = (typeof PAGE_ROLE.names)[number];

/** Single-bit masks and shifts for hot paths; derived from the table above. */
export const PR = {
  LEVEL_MASK: PAGE_ROLE.maskOf('level'),
  HAS_4_BYTE_GPTE: PAGE_ROLE.maskOf('has_4_byte_gpte'),
  QUADRANT_SHIFT: PAGE_ROLE.shiftOf('quadrant'),
  QUADRANT_MASK: PAGE_ROLE.maskOf('quadrant'),
  DIRECT: PAGE_ROLE.maskOf('direct'),
  ACCESS_SHIFT: PAGE_ROLE.shiftOf('access'),
  ACCESS_MASK: PAGE_ROLE.maskOf('access'),
  INVALID: PAGE_ROLE.maskOf('invalid'),
  EFER_NX: PAGE_ROLE.maskOf('efer_nx'),
  CR0_WP: PAGE_ROLE.maskOf('cr0_wp'),
  SMEP_ANDNOT_WP: PAGE_ROLE.maskOf('smep_andnot_wp'),
  SMAP_ANDNOT_WP: PAGE_ROLE.maskOf('smap_andnot_wp'),
  AD_DISABLED: PAGE_ROLE.maskOf('ad_disabled'),
  GUEST_MODE: PAGE_ROLE.maskOf('guest_mode'),
  SMM_SHIFT: PAGE_ROLE.shiftOf('smm'),
  SMM_MASK: PAGE_ROLE.maskOf('smm'),
} as const;

/** ACC_* bits (arch/x86/kvm/mmu/spte.h). */
export const ACC = { EXEC: 1, WRITE: 2, USER: 4, ALL: 7 } as const;

/** Page-table levels (arch/x86/kvm/mmu.h, kvm_host.h). */
export const LEVEL = { PT32_ROOT: 2, PT32E_ROOT: 3, PT64_ROOT_4: 4, PT64_ROOT_5: 5 } as const;

const ACCESS_STR = ['---', '--x', 'w--', 'w-x', '-u-', '-ux', 'wu-', 'wux'] as const;

/**
 * The role in the notation of the `kvmmmu` tracepoints (mmutrace.h
 * KVM_MMU_PAGE_PRINTK, v5.17), the part that depends on the role only:
 * `l4 8-byte q0 direct wux !nxe ad`.
 */
export function formatPageRoleTrace(word: number): string {
  const r = PAGE_ROLE.decode(word);
  return (
    `l${r.level} ${r.has_4_byte_gpte ? 4 : 8}-byte q${r.quadrant}${r.direct ? ' direct' : ''} ` +
    `${ACCESS_STR[r.access]}${r.invalid ? ' invalid' : ''} ${r.efer_nx ? '' : '!'}nxe ${r.ad_disabled ? '!' : ''}ad`
  );
}

/** Every field, `name=value`, in bit order. */
export function formatPageRole(word: number): string {
  const r = PAGE_ROLE.decode(word);
  const parts = PAGE_ROLE.names.map((f) => `${f}=${r[f]}`);
  if (r.unused) parts.push(`unused=${hex32(r.unused)}`);
  return parts.join(' ');
}

/**
 * One MMU context, the parts of `struct kvm_mmu` (Linux v5.17 kvm_host.h) that
 * role caching and reconfiguration touch: the cached role, the levels, the
 * handler set, reserved-bit masks, permission and PKRU bitmasks.
 *
 * A context starts zero-filled, as the kernel's zero-allocated vCPU does, and
 * a rebuild writes only what the kernel writes: fields a path leaves alone
 * keep their previous (stale) values.
 */
import type { ExtField, RoleFormat } from '../role/ext-role.js';
import { PR } from '../role/page-role.js';

export type MmuName = 'root' | 'guest' | 'nested';

/** The walker chosen for `gva_to_gpa` (tmpl.h instances plus nonpaging). */
export type WalkerKind = 'nonpaging' | 'paging32' | 'paging64' | 'ept';

/** The `page_fault` handler slot. */
export type FaultHandler = 'tdp' | 'nonpaging' | 'paging32' | 'paging64' | 'ept';

/** `struct rsvd_bits_validate`: masks indexed [bit 7 of the entry][level - 1]. */
export class RsvdBitsValidate {
  /** rsvd_bits_mask[big][level - 1] at index big * 5 + level - 1. */
  readonly mask = new BigUint64Array(10);
  badMtXwr = 0n;

  get(big: 0 | 1, levelIndex: number): bigint {
    return this.mask[big * 5 + levelIndex]!;
  }

  set(big: 0 | 1, levelIndex: number, value: bigint): void {
    this.mask[big * 5 + levelIndex] = value;
  }

  copyFrom(other: RsvdBitsValidate): void {
    this.mask.set(other.mask);
    this.badMtXwr = other.badMtXwr;
  }

  equals(other: RsvdBitsValidate): boolean {
    if (this.badMtXwr !== other.badMtXwr) return false;
    for (let i = 0; i < 10; i++) if (this.mask[i] !== other.mask[i]) return false;
    return true;
  }
}

/** Per-context counters. */
export interface MmuStats {
  inits: number;
  fastPathHits: number;
  rebuilds: number;
}

/**
 * Observer of reads of role fields other than the whole-role comparison. The
 * stress checker uses it to catch code that reads an invalidated role (the
 * reviewer's worry in the 03/23 thread). `reader` names the kernel function.
 */
export type RoleReadObserver = (ctx: MmuContext, field: string, reader: string) => void;

export class MmuContext {
  /** Cached role, `mmu_role`: [0] = base word, [1] = ext word. */
  readonly role: Uint32Array;

  rootLevel = 0;
  shadowRootLevel = 0;
  directMap = false;
  eptAd = false;
  gvaToGpa: WalkerKind | null = null;
  pageFault: FaultHandler | null = null;

  readonly guestRsvdCheck = new RsvdBitsValidate();
  readonly shadowZeroCheck = new RsvdBitsValidate();
  /** Whether any path ever wrote shadow_zero_check (never for nested_mmu). */
  shadowZeroCheckSet = false;

  readonly permissions = new Uint8Array(16);
  pkruMask = 0;

  readonly stats: MmuStats = { inits: 0, fastPathHits: 0, rebuilds: 0 };
  roleReadObserver: RoleReadObserver | null = null;

  /**
   * @param roleStorage optional two-word view (e.g. a slot of a vCPU's shared
   *   record) holding the cached role; owner-only writes.
   */
  constructor(
    readonly name: MmuName,
    readonly format: RoleFormat,
    roleStorage?: Uint32Array,
  ) {
    if (roleStorage && roleStorage.length < 2) throw new RangeError('role storage needs two words');
    this.role = roleStorage ?? new Uint32Array(2);
  }

  /** Copy role and every reconfiguration product from another context (not stats, not observer). */
  copyFrom(other: MmuContext): void {
    this.role.set(other.role.subarray(0, 2));
    this.rootLevel = other.rootLevel;
    this.shadowRootLevel = other.shadowRootLevel;
    this.directMap = other.directMap;
    this.eptAd = other.eptAd;
    this.gvaToGpa = other.gvaToGpa;
    this.pageFault = other.pageFault;
    this.guestRsvdCheck.copyFrom(other.guestRsvdCheck);
    this.shadowZeroCheck.copyFrom(other.shadowZeroCheck);
    this.shadowZeroCheckSet = other.shadowZeroCheckSet;
    this.permissions.set(other.permissions);
    this.pkruMask = other.pkruMask;
  }

  /**
   * Names of the reconfiguration products (not the role) that differ from
   * another context's; empty when they agree.
   */
  productDifferences(other: MmuContext): string[] {
    const d: string[] = [];
    if (this.rootLevel !== other.rootLevel) d.push('rootLevel');
    if (this.shadowRootLevel !== other.shadowRootLevel) d.push('shadowRootLevel');
    if (this.directMap !== other.directMap) d.push('directMap');
    if (this.eptAd !== other.eptAd) d.push('eptAd');
    if (this.gvaToGpa !== other.gvaToGpa) d.push('gvaToGpa');
    if (this.pageFault !== other.pageFault) d.push('pageFault');
    if (!this.guestRsvdCheck.equals(other.guestRsvdCheck)) d.push('guestRsvdCheck');
    if (!this.shadowZeroCheck.equals(other.shadowZeroCheck)) d.push('shadowZeroCheck');
    if (this.permissions.some((p, i) => p !== other.permissions[i])) d.push('permissions');
    if (this.pkruMask !== other.pkruMask) d.push('pkruMask');
    return d;
  }

  get roleBase(): number {
    return this.role[0]!;
  }

  get roleExt(): number {
    return this.role[1]!;
  }

  /** Whole-role comparison: the skip test of every init path. */
  roleEquals(base: number, ext: number): boolean {
    return this.role[0] === base && this.role[1] === ext;
  }

  storeRole(base: number, ext: number): void {
    this.role[0] = base;
    this.role[1] = ext;
  }

  /** is_<reg>_<name>(mmu) for an ext field: reads the role, not the registers. */
  ext(field: ExtField, reader: string): boolean {
    this.roleReadObserver?.(this, `ext.${field}`, reader);
    return (this.role[1]! & this.format.bit[field]) !== 0;
  }

  /** is_cr0_wp(mmu). */
  cr0Wp(reader: string): boolean {
    this.roleReadObserver?.(this, 'base.cr0_wp', reader);
    return (this.role[0]! & PR.CR0_WP) !== 0;
  }

  /** is_efer_nx(mmu). */
  eferNx(reader: string): boolean {
    this.roleReadObserver?.(this, 'base.efer_nx', reader);
    return (this.role[0]! & PR.EFER_NX) !== 0;
  }

  /** mmu_role.base.smm. */
  smm(reader: string): number {
    this.roleReadObserver?.(this, 'base.smm', reader);
    return (this.role[0]! & PR.SMM_MASK) >>> PR.SMM_SHIFT;
  }
}

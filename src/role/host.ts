/**
 * KVM's module-wide settings that role computation and reconfiguration read
 * (mmu.c and spte.c globals, v5.17). Static for the life of a VM.
 */
export type HostVendor = 'intel' | 'amd';

export interface HostSettings {
  /** `tdp_enabled` (enable_ept / npt_enabled). */
  readonly tdpEnabled: boolean;
  /** `max_tdp_level`: 4 or 5. */
  readonly maxTdpLevel: 4 | 5;
  /** Host CPU vendor: decides the TDP shadow-zero-bit format (EPT vs legacy). */
  readonly vendor: HostVendor;
  /** `tdp_root_level`: the architecture-forced TDP level, 0 if none. */
  readonly tdpForcedRootLevel: 0 | 4 | 5;
  /** `shadow_accessed_mask == 0`: SPTEs cannot use hardware A/D bits. */
  readonly adDisabled: boolean;
  /** Host 1 GiB page support (`boot_cpu_has(X86_FEATURE_GBPAGES)`). */
  readonly gbpages: boolean;
  /** `shadow_phys_bits`: host MAXPHYADDR. */
  readonly physBits: number;
  /** `max_huge_page_level`: 1 (4K), 2 (2M) or 3 (1G). */
  readonly maxHugePageLevel: 1 | 2 | 3;
}

/** An Intel host with 4-level EPT, A/D bits and 1 GiB pages. */
export const DEFAULT_HOST: HostSettings = {
  tdpEnabled: true,
  maxTdpLevel: 4,
  vendor: 'intel',
  tdpForcedRootLevel: 0,
  adDisabled: false,
  gbpages: true,
  physBits: 46,
  maxHugePageLevel: 3,
};

/**
 * "Boot CPU is AMD" as KVM tests it (mmu.c boot_cpu_is_amd): `shadow_x_mask`
 * is 0. That mask is the EPT X bit only when EPT is in use
 * (kvm_mmu_set_ept_masks); without EPT it is 0 on Intel too.
 */
export const shadowXMaskIsZero = (host: HostSettings): boolean => host.vendor === 'amd' || !host.tdpEnabled;

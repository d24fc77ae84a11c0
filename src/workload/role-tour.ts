/**
 * The built-in "role tour": seeded guest workloads that drive vCPU MMUs
 * through every paging mode, CR0/CR4/EFER toggles, SMM, nested entry and exit
 * (EPT, NPT and shadow-on-shadow, L2 paging on and off) and CPUID changes
 * under the legacy policy (allowed while running, so the invalidation path
 * runs with live nested state), with the role checker attached. Runs in one
 * thread; it exercises the role machinery only (no shadow pages yet).
 */
import { RoleChecker, type RoleCheckCounts, type RoleFinding } from '../check/role-checker.js';
import { DEFAULT_CPUID, type CpuidModel } from '../cpuid/cpuid.js';
import { setCpuid, type EptInit } from '../mmu/init.js';
import { STRATEGIES, type StrategyName } from '../mmu/strategies.js';
import { enterGuestEpt, enterGuestNpt, enterGuestShadow, leaveGuest, postSetCr0, postSetCr4, postSetEfer, smmChanged } from '../mmu/transitions.js';
import { VcpuMmu } from '../mmu/vcpu-mmu.js';
import type { HostSettings } from '../role/host.js';
import { CR0 } from '../role/regs.js';
import { isPaging, modeRegs, randomGuestRegs, toggleableBits, type GuestRegs } from './guest-modes.js';
import { Rng } from './rng.js';

/** The three host flavours of the tour: each decides how nesting is done. */
export const TOUR_HOSTS: Readonly<Record<'intel-ept' | 'amd-npt' | 'shadow', HostSettings>> = {
  'intel-ept': { tdpEnabled: true, maxTdpLevel: 5, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 46, maxHugePageLevel: 3 },
  'amd-npt': { tdpEnabled: true, maxTdpLevel: 4, vendor: 'amd', tdpForcedRootLevel: 4, adDisabled: false, gbpages: true, physBits: 48, maxHugePageLevel: 3 },
  shadow: { tdpEnabled: false, maxTdpLevel: 4, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 46, maxHugePageLevel: 2 },
};
type HostFlavour = keyof typeof TOUR_HOSTS;

export interface TourOptions {
  vcpus: number;
  opsPerVcpu: number;
  seed: number;
}

export const DEFAULT_TOUR: TourOptions = { vcpus: 8, opsPerVcpu: 20_000, seed: 1 };

export interface TourResult {
  strategy: StrategyName;
  ops: number;
  cpuidChanges: number;
  nestedEntries: number;
  inits: number;
  fastPathHits: number;
  rebuilds: number;
  checks: RoleCheckCounts;
  findings: RoleFinding[];
  elapsedMs: number;
}

const MAXPHYADDRS = [36, 39, 42, 46, 48, 52] as const;

function randomCpuid(rng: Rng): CpuidModel {
  return { ...DEFAULT_CPUID, maxPhyAddr: rng.pick(MAXPHYADDRS), gbpages: rng.chance(0.5), vendor: rng.chance(0.3) ? 'amd' : 'intel' };
}

type Op = 'toggle' | 'mode' | 'smm' | 'nested-enter' | 'nested-exit' | 'cpuid' | 'reentry';
const WEIGHTS: Readonly<Record<Op, number>> = { toggle: 30, mode: 8, smm: 4, 'nested-enter': 12, 'nested-exit': 10, cpuid: 3, reentry: 33 };

/** One vCPU of the tour: its MMU, checker, and L1 state saved while L2 runs. */
class TourVcpu {
  readonly v: VcpuMmu;
  readonly checker: RoleChecker;
  l1: GuestRegs = modeRegs('long4');
  l2: GuestRegs | null = null;
  ept: EptInit = { execonly: true, accessedDirty: true, level: 4, hugePageLevel: 3 };
  cpuidChanges = 0;
  nestedEntries = 0;

  constructor(
    id: number,
    readonly flavour: HostFlavour,
    strategy: StrategyName,
    readonly rng: Rng,
  ) {
    this.v = new VcpuMmu({ host: TOUR_HOSTS[flavour], strategy: STRATEGIES[strategy] });
    this.checker = new RoleChecker(id);
    this.checker.attach(this.v);
    this.writeRegs(randomGuestRegs(rng));
  }

  private get regs(): GuestRegs {
    return { cr0: this.v.cr0, cr4: this.v.cr4, efer: this.v.efer };
  }

  /** Mode switch the way a guest does it: paging off, EFER, CR4, then CR0. */
  private writeRegs(r: GuestRegs): void {
    postSetCr0(this.v, this.v.cr0 & ~CR0.PG);
    postSetEfer(this.v, r.efer);
    postSetCr4(this.v, r.cr4);
    postSetCr0(this.v, r.cr0);
  }

  private enterNested(): void {
    const l2 = randomGuestRegs(this.rng);
    this.l1 = this.regs;
    this.l2 = l2;
    this.nestedEntries++;
    if (this.flavour === 'intel-ept') {
      if (this.rng.chance(0.2)) this.ept = { ...this.ept, execonly: this.rng.chance(0.5), accessedDirty: this.rng.chance(0.5) };
      enterGuestEpt(this.v, this.ept, l2);
    } else if (this.flavour === 'amd-npt') {
      enterGuestNpt(this.v, this.l1, l2);
    } else {
      enterGuestShadow(this.v, l2);
    }
  }

  private exitNested(): void {
    leaveGuest(this.v, this.l1);
    this.l2 = null;
  }

  step(): void {
    this.checker.op++;
    const op = this.rng.weighted(WEIGHTS);
    const inL2 = this.v.guestMode;
    switch (op) {
      case 'toggle': {
        const t = this.rng.pick(toggleableBits(this.regs));
        const r = this.regs;
        r[t.reg] = (r[t.reg] ^ t.bit) >>> 0;
        if (t.reg === 'cr0') postSetCr0(this.v, r.cr0);
        else if (t.reg === 'cr4') postSetCr4(this.v, r.cr4);
        else postSetEfer(this.v, r.efer);
        break;
      }
      case 'mode':
        this.writeRegs(randomGuestRegs(this.rng));
        break;
      case 'smm':
        // An SMI while L2 runs exits to L1 first; RSM returns to L1.
        if (inL2) this.exitNested();
        smmChanged(this.v, !this.v.smm);
        break;
      case 'nested-enter':
        if (!inL2 && !this.v.smm && isPaging(this.regs)) this.enterNested();
        break;
      case 'nested-exit':
        if (inL2) this.exitNested();
        break;
      case 'cpuid':
        // Legacy policy: KVM_SET_CPUID2 accepted at any time.
        this.cpuidChanges++;
        setCpuid(this.v, randomCpuid(this.rng));
        break;
      case 'reentry':
        // A nested round trip with unchanged registers: the fast path's home.
        if (inL2) {
          const l2 = this.l2!;
          this.exitNested();
          this.l2 = l2;
          this.l1 = this.regs;
          if (this.flavour === 'intel-ept') enterGuestEpt(this.v, this.ept, l2);
          else if (this.flavour === 'amd-npt') enterGuestNpt(this.v, this.l1, l2);
          else enterGuestShadow(this.v, l2);
        }
        break;
    }
  }
}

/** Run the tour under one strategy. */
export function runTour(strategy: StrategyName, opts: TourOptions = DEFAULT_TOUR): TourResult {
  const root = new Rng(opts.seed);
  const flavours: HostFlavour[] = ['intel-ept', 'amd-npt', 'shadow'];
  const vcpus = Array.from({ length: opts.vcpus }, (_, i) => new TourVcpu(i, flavours[i % 3]!, strategy, root.fork(i)));
  const t0 = performance.now();
  for (let n = 0; n < opts.opsPerVcpu; n++) for (const vc of vcpus) vc.step();
  const elapsedMs = performance.now() - t0;
  const res: TourResult = {
    strategy,
    ops: opts.opsPerVcpu * opts.vcpus,
    cpuidChanges: 0,
    nestedEntries: 0,
    inits: 0,
    fastPathHits: 0,
    rebuilds: 0,
    checks: { invalidations: 0, missedRebuildLatent: 0, missedRebuildObservable: 0, invalidReadLatent: 0, invalidReadObservable: 0 },
    findings: [],
    elapsedMs,
  };
  for (const vc of vcpus) {
    res.cpuidChanges += vc.cpuidChanges;
    res.nestedEntries += vc.nestedEntries;
    for (const ctx of vc.v.contexts) {
      res.inits += ctx.stats.inits;
      res.fastPathHits += ctx.stats.fastPathHits;
      res.rebuilds += ctx.stats.rebuilds;
    }
    for (const k of Object.keys(res.checks) as (keyof RoleCheckCounts)[]) res.checks[k] += vc.checker.counts[k];
    res.findings.push(...vc.checker.findings.slice(0, 5));
  }
  return res;
}

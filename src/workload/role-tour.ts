/**
 * The built-in "role tour": vCPU cores on three host flavours (Intel EPT,
 * AMD NPT, shadow paging) run seeded guest programs — every paging mode,
 * feature toggles, SMI/RSM, nested entry and exit with L2 paging on and off,
 * CR3 switches, refused writes — while a chaos coordinator broadcasts CPUID
 * changes through shared memory under the legacy policy (allowed while
 * running, so the invalidation path runs with live nested state). The role
 * checker watches every vCPU. Runs in one thread with a seeded round-robin:
 * the same seed gives the same run.
 */
import { RoleChecker, type RoleCheckCounts, type RoleFinding } from '../check/role-checker.js';
import { DEFAULT_CPUID } from '../cpuid/cpuid.js';
import { STRATEGIES, type StrategyName } from '../mmu/strategies.js';
import type { HostSettings } from '../role/host.js';
import { VcpuCore } from '../vcpu/core.js';
import type { NestedKind } from '../vcpu/guest-ops.js';
import { allocateVcpus, bindVcpu, STAT_INDEX, type VcpuStat } from '../vcpu/vcpu-layout.js';
import { postCpuid } from '../vm/requests.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { RandomGuestProgram } from './guest-program.js';
import { buildGuestTables } from './guest-tables.js';
import { randomCpuid } from './random-cpuid.js';
import { Rng } from './rng.js';

/** The three host flavours of the tour: each decides how nesting is done. */
export const TOUR_HOSTS: Readonly<Record<'intel-ept' | 'amd-npt' | 'shadow', { host: HostSettings; nested: NestedKind }>> = {
  'intel-ept': {
    host: { tdpEnabled: true, maxTdpLevel: 5, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 46, maxHugePageLevel: 3 },
    nested: 'ept',
  },
  'amd-npt': {
    host: { tdpEnabled: true, maxTdpLevel: 4, vendor: 'amd', tdpForcedRootLevel: 4, adDisabled: false, gbpages: true, physBits: 48, maxHugePageLevel: 3 },
    nested: 'npt',
  },
  shadow: {
    host: { tdpEnabled: false, maxTdpLevel: 4, vendor: 'intel', tdpForcedRootLevel: 0, adDisabled: false, gbpages: true, physBits: 46, maxHugePageLevel: 2 },
    nested: 'shadow',
  },
};
type Flavour = keyof typeof TOUR_HOSTS;
const FLAVOURS: readonly Flavour[] = ['intel-ept', 'amd-npt', 'shadow'];

export interface TourOptions {
  vcpus: number;
  opsPerVcpu: number;
  seed: number;
}

export const DEFAULT_TOUR: TourOptions = { vcpus: 8, opsPerVcpu: 20_000, seed: 1 };

/** Guest operations per vCPU per scheduling slice. */
const SLICE = 64;
/** Chance per round that the coordinator changes CPUID on every vCPU. */
const CPUID_CHANGE_CHANCE = 0.08;

export interface TourResult {
  strategy: StrategyName;
  ops: number;
  cpuidBroadcasts: number;
  stats: Record<VcpuStat, number>;
  checks: RoleCheckCounts;
  findings: RoleFinding[];
  elapsedMs: number;
}

/** Run the tour under one strategy. */
export function runTour(strategy: StrategyName, opts: TourOptions = DEFAULT_TOUR): TourResult {
  const rng = new Rng(opts.seed);
  const memory = GuestMemory.create(16 * 1024 * 1024);
  const tables = buildGuestTables(memory, { addressSpaces: 3, pages: 64, seed: opts.seed });
  const buf = allocateVcpus(opts.vcpus);
  const records = Array.from({ length: opts.vcpus }, (_, i) => bindVcpu(buf, i));
  const checkers: RoleChecker[] = [];
  const cores = records.map((record, id) => {
    const f = TOUR_HOSTS[FLAVOURS[id % FLAVOURS.length]!];
    const core = new VcpuCore({
      id,
      record,
      host: f.host,
      cpuid: DEFAULT_CPUID,
      strategy: STRATEGIES[strategy],
      policy: 'legacy',
      program: new RandomGuestProgram({ seed: rng.fork(id).nextU32(), nestedKind: f.nested, tables }),
      memory,
    });
    const checker = new RoleChecker(id);
    checker.attach(core.mmu);
    core.checkCounts = checker.counts;
    checkers.push(checker);
    return core;
  });
  let epoch = 0;
  let broadcasts = 0;
  const t0 = performance.now();
  for (let done = 0; done < opts.opsPerVcpu; done += SLICE) {
    if (rng.chance(CPUID_CHANGE_CHANCE)) {
      postCpuid(records, randomCpuid(rng), ++epoch);
      broadcasts++;
    }
    for (let i = 0; i < cores.length; i++) {
      const core = cores[i]!;
      checkers[i]!.op = done;
      // A halted vCPU is woken by its timer at the next slice.
      core.halted = false;
      core.run(Math.min(SLICE, opts.opsPerVcpu - done));
    }
  }
  const elapsedMs = performance.now() - t0;
  const stats = Object.fromEntries(Object.keys(STAT_INDEX).map((k) => [k, 0])) as Record<VcpuStat, number>;
  const checks: RoleCheckCounts = { invalidations: 0, missedRebuildLatent: 0, missedRebuildObservable: 0, invalidReadLatent: 0, invalidReadObservable: 0 };
  const findings: RoleFinding[] = [];
  cores.forEach((core, i) => {
    core.publish();
    for (const k of Object.keys(stats) as VcpuStat[]) stats[k] += core.rec.stats[STAT_INDEX[k]]!;
    for (const k of Object.keys(checks) as (keyof RoleCheckCounts)[]) checks[k] += checkers[i]!.counts[k];
    findings.push(...checkers[i]!.findings.slice(0, 5));
  });
  return { strategy, ops: stats.guestOps, cpuidBroadcasts: broadcasts, stats, checks, findings, elapsedMs };
}

/**
 * `stress`: N vCPU threads split over three VMs, one per host flavour (Intel
 * EPT, AMD NPT, shadow paging), running seeded guest programs with a stress
 * coordinator, for a duration or an operation count, once per invalidation
 * strategy; every invariant counted separately (checked, latent,
 * observable). Checks run in the vCPU threads (src/check) and in the
 * coordinator (invariant 5); the shadow cache runs in prove mode at level
 * `full` (lookup and lockless-walk assertions), and its teardown is audited.
 */
import { availableParallelism } from 'node:os';
import type { CheckLevel } from '../check/vcpu-checker.js';
import type { MutantName } from '../check/mutants.js';
import type { StrategyName } from '../mmu/strategies.js';
import type { FindingWire } from '../rpc/protocol.js';
import type { ShadowCounters } from '../shadow/index.js';
import type { CpuidPolicy } from '../vcpu/core.js';
import { VCPU_STATS, type VcpuStat } from '../vcpu/vcpu-layout.js';
import { Vm } from '../vm/vm.js';
import { TOUR_HOSTS } from '../workload/role-tour.js';
import { INVARIANTS, OBSERVABLE_STATS, sumOf } from '../check/invariants.js';
import { chaos, collectRun, representative, type ChaosResult, type CoordinatorCounts } from '../vm/chaos.js';
import type { OpMix } from '../workload/guest-program.js';

export type HostFlavour = keyof typeof TOUR_HOSTS;
export const HOST_FLAVOURS = Object.keys(TOUR_HOSTS) as HostFlavour[];

/**
 * The stress workload: mostly memory accesses, as a guest spends its time,
 * with every kind of MMU event still frequent (a few per hundred operations):
 * a context reset on every other operation would hide invalidation bugs
 * behind resets no real guest makes.
 */
export const STRESS_MIX: Partial<OpMix> = { access: 75, toggle: 4, mode: 1, cr3: 6, invlpg: 3, smm: 1, 'nested-enter': 4, 'nested-exit': 3, hlt: 0, invalid: 1 };

/** The default: four vCPUs per core. */
export const defaultStressVcpus = (): number => 4 * availableParallelism();

export interface StressOptions {
  readonly vcpus: number;
  readonly strategies: readonly StrategyName[];
  /** Stop each strategy after this long (ms) ... */
  readonly durationMs: number;
  /** ... or once its vCPUs executed this many guest operations in all (whichever comes first). */
  readonly ops?: number;
  readonly seed: number;
  readonly check: CheckLevel;
  readonly sampleEvery?: number;
  readonly policy: CpuidPolicy;
  readonly hosts?: readonly HostFlavour[];
  readonly mutant?: MutantName;
  readonly actionEveryMs?: number;
  /** Progress, about every 100 ms: strategy index, fraction of its run done, guest ops so far. */
  readonly onProgress?: (p: StressProgress) => void;
  /**
   * End a strategy's run at its first observable violation (true), or at the first finding,
   * latent or observable, of the listed invariants (ids 1-8): time to detection.
   */
  readonly stopOnViolation?: boolean | readonly number[];
  /** Checked with the clock: true ends the current strategy and skips the rest (Ctrl-C). */
  readonly shouldStop?: () => boolean;
  /** Keep each vCPU's last N traced events (0/undefined: no trace) to print with its findings. */
  readonly traceEvents?: number;
}

export interface StressProgress {
  readonly strategy: StrategyName;
  readonly index: number;
  /** Of this strategy's run: time or op budget, whichever is nearer. */
  readonly fraction: number;
  readonly ops: number;
  readonly elapsedMs: number;
  /** Observable violations so far (vCPU counters lag by up to one batch; lost invalidations and dead threads at once). */
  readonly violations: number;
}

export interface InvariantResult {
  readonly id: number;
  readonly name: string;
  /** Checks made (entries, accesses, waits, inits — per invariant). */
  readonly checked: number;
  readonly latent: number;
  readonly observable: number;
}

export interface StressResult {
  readonly strategy: StrategyName;
  readonly vcpus: number;
  readonly elapsedMs: number;
  readonly guestOps: number;
  readonly invariants: readonly InvariantResult[];
  readonly stats: Readonly<Record<VcpuStat, number>>;
  readonly shadow: Readonly<ShadowCounters> | null;
  readonly coordinator: Omit<CoordinatorCounts, 'lost'>;
  /** First findings (vCPU checkers, coordinator, teardown, crashes). */
  readonly findings: readonly FindingWire[];
  /** Worker threads that died, by "flavour/vCPU". */
  readonly crashed: Readonly<Record<string, string>>;
  /** ms from the start until the first observable violation was seen (polled every 100 ms); null if none. */
  readonly detectedAtMs: number | null;
  /** The run was cut short by shouldStop (Ctrl-C). */
  readonly interrupted: boolean;
}


const FINDINGS_PER_VM = 12;

interface VmRun extends Pick<ChaosResult, 'findings' | 'stats' | 'shadow' | 'teardown' | 'dead'> {
  flavour: HostFlavour;
  counts: CoordinatorCounts;
}

/** One strategy: three VMs side by side, the coordinator on each, then collection and teardown. */
export async function stressStrategy(o: StressOptions, strategy: StrategyName, index: number): Promise<StressResult> {
  const hosts = o.hosts ?? HOST_FLAVOURS;
  const share = (i: number) => Math.floor(o.vcpus / hosts.length) + (i < o.vcpus % hosts.length ? 1 : 0);
  const plan = hosts.map((flavour, i) => ({ flavour, n: share(i), seed: o.seed + i })).filter((p) => p.n > 0);
  const vms: Vm[] = [];
  try {
    for (const p of plan) {
      vms.push(
        await Vm.create({
          vcpus: p.n,
          strategy,
          policy: o.policy,
          host: TOUR_HOSTS[p.flavour].host,
          seed: p.seed,
          check: o.check,
          sampleEvery: o.sampleEvery,
          editTarget: true,
          mix: STRESS_MIX,
          mutant: o.mutant,
          shadow: { prove: o.check === 'full' },
          startPaused: true,
          // Small rings: the last events of a vCPU behind a finding, for the report.
          trace: o.traceEvents ? { capacity: o.traceEvents } : undefined,
        }),
      );
    }
    const t0 = performance.now();
    const live = { lost: 0 };
    let detectedAtMs: number | null = null;
    let interrupted = false;
    const ops = () => vms.reduce((s, vm) => s + vm.totals().guestOps, 0);
    // What counts as detected: every observable violation, or any finding of the listed invariants.
    const targets = Array.isArray(o.stopOnViolation) ? o.stopOnViolation : null;
    const watchedStats: readonly VcpuStat[] = targets ? INVARIANTS.filter((d) => targets.includes(d.id)).flatMap((d) => [...d.observable, ...d.latent]) : OBSERVABLE_STATS;
    const watchLost = !targets || targets.includes(5);
    const watchDead = !targets || targets.includes(3) || targets.includes(4);
    const violations = () => {
      let n = watchLost ? live.lost : 0;
      for (const vm of vms) {
        if (watchDead) n += vm.dead.size;
        const t = vm.totals();
        for (const k of watchedStats) n += t[k];
      }
      return n;
    };
    const running = () => {
      if (o.shouldStop?.()) interrupted = true;
      return !interrupted && performance.now() - t0 < o.durationMs && (o.ops === undefined || ops() < o.ops) && vms.every((vm) => vm.dead.size === 0) && !(o.stopOnViolation !== undefined && o.stopOnViolation !== false && detectedAtMs !== null);
    };
    const timer = setInterval(() => {
      const elapsedMs = performance.now() - t0;
      const v = violations();
      if (v > 0 && detectedAtMs === null) detectedAtMs = elapsedMs;
      const fraction = Math.min(1, Math.max(elapsedMs / o.durationMs, o.ops ? ops() / o.ops : 0));
      o.onProgress?.({ strategy, index, fraction, ops: ops(), elapsedMs, violations: v });
    }, 100);
    for (const vm of vms) vm.start();
    let counts: CoordinatorCounts[];
    try {
      counts = await Promise.all(vms.map((vm, i) => chaos(vm, { seed: plan[i]!.seed, actionEveryMs: o.actionEveryMs ?? 20, running, live })));
    } finally {
      clearInterval(timer);
    }
    const elapsedMs = performance.now() - t0;
    // A violation that became visible after the last poll (counters are published per batch).
    if (detectedAtMs === null && violations() > 0) detectedAtMs = elapsedMs;
    const runs: VmRun[] = [];
    for (let i = 0; i < vms.length; i++) {
      const r = await collectRun(vms[i]!, counts[i]!, strategy, 3);
      const flavour = plan[i]!.flavour;
      runs.push({ ...r, flavour, counts: counts[i]!, findings: representative(r.findings, FINDINGS_PER_VM).map((f) => ({ ...f, detail: `${flavour}: ${f.detail}` })) });
    }
    return { ...summarise(strategy, o.vcpus, elapsedMs, runs), detectedAtMs, interrupted };
  } finally {
    for (const vm of vms) await vm.destroy();
  }
}

function summarise(strategy: StrategyName, vcpus: number, elapsedMs: number, runs: VmRun[]): Omit<StressResult, 'detectedAtMs' | 'interrupted'> {
  const stats = sumStats(runs.map((r) => r.stats));
  const coordinator = sumCounts(runs.map((r) => r.counts));
  const crashed: Record<string, string> = {};
  for (const r of runs) for (const [id, why] of Object.entries(r.dead)) crashed[`${r.flavour}/${id}`] = why;
  const teardown = runs.flatMap((r) => r.teardown.map((t) => `${r.flavour}: ${t}`));
  const shadowRuns = runs.map((r) => r.shadow).filter((x): x is ShadowCounters => x !== null);
  const shadow = shadowRuns.length ? (Object.fromEntries(Object.keys(shadowRuns[0]!).map((k) => [k, shadowRuns.reduce((a, s) => a + s[k as keyof ShadowCounters], 0)])) as ShadowCounters) : null;
  const lost = runs.reduce((a, r) => a + r.counts.lost.length, 0);
  const invariants = invariantsOf(stats, { waitsChecked: coordinator.waitsChecked, lost }, crashed, teardown.length, runs.length);
  const findings: FindingWire[] = runs.flatMap((r) => r.findings);
  for (const [k, why] of Object.entries(crashed)) findings.push({ invariant: why.includes('kvm_mmu_get_page') ? 'shadow-sharing' : 'no-use-after-free', severity: 'observable', strategy, vcpu: Number(k.split('/')[1]), mmu: k.split('/')[0]!, op: 0, detail: `vCPU thread ${k} died: ${why}` });
  for (const t of teardown.slice(0, 5)) findings.push({ invariant: 'no-use-after-free', severity: 'observable', strategy, vcpu: -1, mmu: '', op: 0, detail: t });
  return { strategy, vcpus, elapsedMs, guestOps: stats.guestOps, invariants, stats, shadow, coordinator, findings, crashed };
}

/** vCPU counters summed over VMs. */
export const sumStats = (all: readonly Readonly<Record<VcpuStat, number>>[]): Record<VcpuStat, number> =>
  Object.fromEntries(VCPU_STATS.map((k) => [k, all.reduce((a, s) => a + s[k], 0)])) as Record<VcpuStat, number>;

/** Coordinator counts summed over VMs (the lost-invalidation findings left out). */
export function sumCounts(all: readonly CoordinatorCounts[]): Omit<CoordinatorCounts, 'lost'> {
  const c = { cpuidBroadcasts: 0, cpuidRefused: 0, zapAlls: 0, tableEdits: 0, reloads: 0, flushes: 0, waitsChecked: 0 };
  for (const x of all) for (const k of Object.keys(c) as (keyof typeof c)[]) c[k] += x[k];
  return c;
}

/**
 * The eight invariants from the counters: vCPU checkers (1-4, 6), role
 * checker (7, 8), coordinator (5), teardown and dead threads (4; a prove-mode
 * lookup assertion, "kvm_mmu_get_page", is invariant 3).
 */
export function invariantsOf(
  s: Readonly<Record<VcpuStat, number>>,
  c: { waitsChecked: number; lost: number },
  crashed: Readonly<Record<string, string>>,
  teardownProblems: number,
  vms: number,
): InvariantResult[] {
  const lookupCrashes = Object.values(crashed).filter((why) => why.includes('kvm_mmu_get_page')).length;
  const crashes = Object.keys(crashed).length - lookupCrashes;
  // Beyond the vCPU counters: the coordinator's checks (5), a prove-mode lookup assertion (3), dead threads and the teardown (4).
  const extra: Record<number, { checked: number; observable: number }> = {
    3: { checked: 0, observable: lookupCrashes },
    4: { checked: vms, observable: teardownProblems + crashes },
    5: { checked: c.waitsChecked, observable: c.lost },
  };
  const read = (k: VcpuStat) => s[k];
  return INVARIANTS.map((d) => ({
    id: d.id,
    name: d.name,
    checked: (d.checked ? s[d.checked] : 0) + (extra[d.id]?.checked ?? 0),
    latent: sumOf(read, d.latent),
    observable: sumOf(read, d.observable) + (extra[d.id]?.observable ?? 0),
  }));
}

/** Every strategy in turn (each with its own VMs). */
export async function stress(o: StressOptions): Promise<StressResult[]> {
  const out: StressResult[] = [];
  for (const [i, name] of o.strategies.entries()) {
    if (o.shouldStop?.()) break;
    out.push(await stressStrategy(o, name, i));
  }
  return out;
}

/** Observable violations (and crashes) of a run: what makes `stress` exit 1. */
export const observableViolations = (r: StressResult): number => r.invariants.reduce((a, i) => a + i.observable, 0);

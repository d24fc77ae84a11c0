/**
 * The seeded chaos coordinator (the VMM of `run` and `stress`): against a
 * running VM, at random moments, it changes CPUID on every vCPU (MAXPHYADDR,
 * NX, GBPAGES, PKU, LA57, vendor; applied while running under the legacy
 * policy, refused under strict), zaps all shadow pages, edits the guest page
 * tables (the invariant-6 edit target) and sends TLB-flush and MMU-reload
 * requests, waiting or not. Every waiting request is checked the moment it
 * returns for invariant 5 (src/check/lost-invalidation.ts). `runChaos` runs
 * one VM for a fixed time, then collects statistics, findings and teardown.
 */
import type { StrategyName } from '../mmu/strategies.js';
import type { FindingWire } from '../rpc/protocol.js';
import { checkAfterWait, nextRequestSeqs, type LostInvalidation } from '../check/lost-invalidation.js';
import { REQ } from '../vcpu/requests.js';
import type { VcpuStat } from '../vcpu/vcpu-layout.js';
import { randomCpuid } from '../workload/random-cpuid.js';
import { Rng } from '../workload/rng.js';
import { Vm, type VmOptions, type WriteTraceOptions } from './vm.js';
import { teardownProblems, type ShadowCounters } from '../shadow/index.js';
import { lastEvents } from '../trace/chrome.js';

/** Events shown for the vCPU behind a finding (the last ones its ring kept). */
export const LAST_EVENTS = 8;

export interface ChaosOptions {
  /** How long the vCPUs run (ms). */
  durationMs: number;
  /** Mean time between coordinator actions (ms). */
  actionEveryMs: number;
  seed: number;
  /**
   * Record a trace and write it after the VM stopped (docs/traces.md): the
   * VM traces with vmOpts.trace (default ring size unless given there).
   */
  traceOut?: WriteTraceOptions;
}

export interface ChaosResult {
  readonly strategy: StrategyName;
  readonly vcpus: number;
  readonly elapsedMs: number;
  readonly coordinator: CoordinatorCounts;
  readonly stats: Record<VcpuStat, number>;
  /** Shadow-cache counters after teardown (null without a cache or when a vCPU died). */
  readonly shadow: ShadowCounters | null;
  /** Teardown problems: roots left, pages not free, audit violations. */
  readonly teardown: string[];
  readonly findings: FindingWire[];
  readonly dead: Record<number, string>;
  /** The trace files written (ChaosOptions.traceOut). */
  readonly traceFiles: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface CoordinatorOptions {
  seed: number;
  /** Mean time between actions (ms). */
  actionEveryMs: number;
  /** Keep going while this says so (checked before every action). */
  running: () => boolean;
  /** A live count of invariant-5 findings, for progress reports while the run goes on. */
  live?: { lost: number };
}

export interface CoordinatorCounts {
  cpuidBroadcasts: number;
  cpuidRefused: number;
  zapAlls: number;
  tableEdits: number;
  reloads: number;
  flushes: number;
  /** Waiting requests checked for invariant 5 (zap-alls included). */
  waitsChecked: number;
  lost: LostInvalidation[];
}

/** Drive a VM that is already running, until `running()` says stop. */
export async function chaos(vm: Vm, o: CoordinatorOptions): Promise<CoordinatorCounts> {
  const rng = new Rng(o.seed);
  const c: CoordinatorCounts = { cpuidBroadcasts: 0, cpuidRefused: 0, zapAlls: 0, tableEdits: 0, reloads: 0, flushes: 0, waitsChecked: 0, lost: [] };
  while (o.running()) {
    await sleep(rng.int(2 * o.actionEveryMs) + 1);
    if (!o.running()) break;
    try {
      const pick = rng.int(10);
      if (pick < 3) {
        const r = await vm.broadcastCpuid(randomCpuid(rng, { features: true }));
        c.cpuidBroadcasts++;
        c.cpuidRefused += r.refused.length;
      } else if (pick < 5 && vm.shadow) {
        // Watch 2 ms after the wait: vCPUs that re-enter must do so on new roots.
        const z = await vm.zapAllFast({ watchMs: 2 });
        c.zapAlls++;
        c.waitsChecked++;
        c.lost.push(...z.lostInvalidations);
        if (o.live) o.live.lost += z.lostInvalidations.length;
      } else if (pick < 7 && vm.editTarget) {
        vm.flipEditTarget();
        c.tableEdits++;
      } else {
        const reload = rng.chance(0.5);
        const wait = rng.chance(0.5);
        const seq = nextRequestSeqs(vm.records);
        await vm.makeAllCpusRequest(reload ? REQ.MMU_RELOAD : REQ.TLB_FLUSH, { wait });
        if (reload) c.reloads++;
        else c.flushes++;
        if (wait) {
          c.waitsChecked++;
          const lost = checkAfterWait(vm.records, vm.records.keys(), seq);
          c.lost.push(...lost);
          if (o.live) o.live.lost += lost.length;
        }
      }
    } catch (e) {
      // A vCPU thread died (a checker's crash is a finding, reported with the dead threads): stop driving this VM.
      if (vm.dead.size > 0) break;
      throw e;
    }
  }
  return c;
}

/**
 * After the coordinator stopped: the first findings of every live vCPU (and
 * the coordinator's invariant-5 findings), then teardown — every root given
 * back, every page free, the audit clean — and the counters.
 */
export async function collectRun(vm: Vm, c: CoordinatorCounts, strategy: StrategyName, perVcpu = 5): Promise<Pick<ChaosResult, 'findings' | 'stats' | 'shadow' | 'teardown' | 'dead'>> {
  const all: FindingWire[] = c.lost.map((l) => ({ invariant: 'no-lost-invalidation', severity: 'observable', strategy, vcpu: l.vcpu, mmu: '', op: 0, detail: l.detail }));
  for (let id = 0; id < vm.vcpus; id++) {
    if (vm.dead.has(id)) continue;
    const f = await vm.call(id, 'findings');
    if (f.ok) all.push(...f.value);
  }
  const picked = representative(all, perVcpu * Math.max(1, vm.vcpus));
  const stats = await vm.destroy();
  // The last events of the vCPU behind the first finding of each kind, when the VM kept a trace.
  const rings = vm.traceRings;
  const seen = new Set<string>();
  const findings = picked.map((f) => {
    const key = `${f.invariant}/${f.severity}`;
    if (!rings || f.vcpu < 0 || f.severity !== 'observable' || seen.has(key)) return f;
    seen.add(key);
    return { ...f, events: lastEvents(rings, f.vcpu, LAST_EVENTS) };
  });
  const t = vm.shadowTeardown;
  return { findings, stats, shadow: t?.stats ?? null, teardown: t ? teardownProblems(t) : [], dead: Object.fromEntries(vm.dead) };
}

/**
 * At most `max` findings, the first of every (invariant, severity, context)
 * kind before any repeat: a rare kind is never crowded out by a frequent one.
 */
export function representative(all: readonly FindingWire[], max: number): FindingWire[] {
  const seen = new Set<string>();
  const first: FindingWire[] = [];
  const rest: FindingWire[] = [];
  for (const f of all) {
    const key = `${f.invariant}/${f.severity}/${f.mmu}`;
    (seen.has(key) ? rest : first).push(f);
    seen.add(key);
  }
  return [...first, ...rest].slice(0, max);
}

/** Create a VM with checking on, run the chaos coordinator against it, tear it down. */
export async function runChaos(vmOpts: VmOptions & { strategy: StrategyName }, opts: ChaosOptions): Promise<ChaosResult> {
  const trace = opts.traceOut ? (vmOpts.trace ?? {}) : vmOpts.trace;
  const vm = await Vm.create({ policy: 'legacy', check: true, seed: opts.seed, editTarget: true, ...vmOpts, trace });
  try {
    const t0 = performance.now();
    const c = await chaos(vm, { seed: opts.seed, actionEveryMs: opts.actionEveryMs, running: () => performance.now() - t0 < opts.durationMs && vm.dead.size === 0 });
    const elapsedMs = performance.now() - t0;
    const traceOut = opts.traceOut;
    const r = await collectRun(vm, c, vmOpts.strategy);
    return { ...r, strategy: vmOpts.strategy, vcpus: vm.vcpus, elapsedMs, coordinator: c, traceFiles: traceOut ? vm.writeTrace(traceOut) : [] };
  } finally {
    await vm.destroy();
  }
}

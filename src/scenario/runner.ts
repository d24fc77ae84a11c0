/**
 * Runs a validated scenario on real vCPU threads: per strategy (and per host
 * flavour, side by side), create a VM with every vCPU held before its first
 * KVM_RUN, give each vCPU its CPUID (KVM_SET_CPUID2) and registers
 * (KVM_SET_SREGS) over the control plane, let them run, perform the events in
 * time and operation order, then stop the VM and report one row per strategy
 * in the shape of the default run's table (src/cli/run.ts RunRow).
 */
import { cpuidEqual, DEFAULT_CPUID, type CpuidModel } from '../cpuid/cpuid.js';
import { STRATEGY_NAMES, type StrategyName } from '../mmu/strategies.js';
import type { FindingWire } from '../rpc/protocol.js';
import type { VcpuStat } from '../vcpu/vcpu-layout.js';
import { VCPU_STATS } from '../vcpu/vcpu-layout.js';
import { traceFileName } from '../trace/files.js';
import { invariantsOf, type InvariantResult } from '../stress/stress.js';
import { teardownProblems, type ShadowCounters } from '../shadow/index.js';
import { Vm } from '../vm/vm.js';
import { TOUR_HOSTS } from '../workload/role-tour.js';
import { applyPatch, regsWire, runEvent, type EventOutcome, type EventTarget } from './events.js';
import { ScenarioError } from './load.js';
import { SCENARIO_LIMITS, targetIds, type HostFlavour, type RegsPatch, type Scenario, type ScenarioEvent } from './schema.js';

export interface RunScenarioOptions {
  /** Override the scenario's run length (ms); events scheduled later are reported as not reached. */
  durationMs?: number;
  /** Override the scenario's strategy choice. */
  strategies?: readonly StrategyName[];
  /** Override the scenario's seed. */
  seed?: number;
  /** Where the scenario came from, for error messages (default: its name). */
  source?: string;
  /** Told one line before each strategy runs. */
  progress?: (line: string) => void;
  /** How often atOps events and the ops budget are polled (ms, default 2). */
  pollMs?: number;
  /** Deadline for control-plane calls and broadcasts (ms; Vm default otherwise). */
  deadlineMs?: number;
  /** Record traces (docs/traces.md): one file per VM, FILE with `.STRATEGY.FLAVOUR` inserted. */
  trace?: { readonly chrome?: string; readonly ftrace?: string; readonly capacity?: number };
  /** Told each trace file written. */
  traceWritten?: (file: string) => void;
}

/** One strategy's results: a RunRow (src/cli/run.ts) plus what the events did. */
export interface ScenarioRow {
  readonly strategy: string;
  readonly cpuidBroadcasts: number;
  readonly stats: Readonly<Record<VcpuStat, number>>;
  readonly elapsedMs: number;
  readonly findings: readonly FindingWire[];
  readonly hosts: readonly HostFlavour[];
  readonly vcpus: number;
  readonly events: readonly EventOutcome[];
  /** `host/vCPU` → why its worker died. */
  readonly dead: Readonly<Record<string, string>>;
  readonly invariants: readonly InvariantResult[];
  readonly shadow: { readonly pagesCreated: number; readonly zapped: number } | null;
}

export interface ScenarioResult {
  readonly name: string;
  readonly rows: readonly ScenarioRow[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Run the scenario once per strategy; each run creates and destroys its VM(s). */
export async function runScenario(s: Scenario, opts: RunScenarioOptions = {}): Promise<ScenarioResult> {
  if (opts.durationMs !== undefined && !(Number.isInteger(opts.durationMs) && opts.durationMs >= 1 && opts.durationMs <= SCENARIO_LIMITS.maxDurationMs)) {
    throw new ScenarioError(`durationMs override: expected an integer in 1..${SCENARIO_LIMITS.maxDurationMs}, got ${opts.durationMs}`);
  }
  const strategies = opts.strategies ?? (s.strategy === 'all' ? STRATEGY_NAMES : [s.strategy]);
  const durationMs = opts.durationMs ?? s.durationMs;
  const rows: ScenarioRow[] = [];
  for (const strategy of strategies) {
    opts.progress?.(`running ${strategy}: ${s.vcpus} vCPU thread(s) on ${s.host.join(' + ')} for up to ${durationMs} ms ...`);
    // Settle every VM (each shuts itself down) before reporting the first failure.
    const settled = await Promise.allSettled(s.host.map((h) => runOnHost(s, strategy, h, durationMs, opts)));
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const runs = settled.map((r) => (r as PromiseFulfilledResult<HostRun>).value);
    rows.push(mergeRuns(strategy, s, runs));
  }
  return { name: s.name, rows };
}

interface HostRun {
  readonly host: HostFlavour;
  readonly stats: Record<VcpuStat, number>;
  readonly elapsedMs: number;
  readonly cpuidBroadcasts: number;
  readonly findings: FindingWire[];
  readonly events: EventOutcome[];
  readonly dead: Record<string, string>;
  /** Shadow-cache counters after teardown (null without them) and the teardown's problems. */
  readonly shadow: ShadowCounters | null;
  readonly teardown: number;
}

function mergeRuns(strategy: StrategyName, s: Scenario, runs: HostRun[]): ScenarioRow {
  const stats = Object.fromEntries(VCPU_STATS.map((k) => [k, runs.reduce((sum, r) => sum + r.stats[k], 0)])) as Record<VcpuStat, number>;
  return {
    strategy,
    cpuidBroadcasts: runs.reduce((sum, r) => sum + r.cpuidBroadcasts, 0),
    stats,
    elapsedMs: Math.max(...runs.map((r) => r.elapsedMs)),
    findings: runs.flatMap((r) => r.findings),
    hosts: s.host,
    vcpus: s.vcpus,
    events: runs.flatMap((r) => r.events).sort((a, b) => a.index - b.index),
    dead: Object.assign({}, ...runs.map((r) => r.dead)),
    // The stress invariants from the checkers' counters (invariant 5 is the coordinator's: no waits are checked here).
    invariants: invariantsOf(stats, { waitsChecked: 0, lost: 0 }, Object.assign({}, ...runs.map((r) => r.dead)), runs.reduce((a, r) => a + r.teardown, 0), runs.length),
    shadow: runs.some((r) => r.shadow)
      ? { pagesCreated: runs.reduce((a, r) => a + (r.shadow?.pagesCreated ?? 0), 0), zapped: runs.reduce((a, r) => a + (r.shadow?.zapped ?? 0), 0) }
      : null,
  };
}

/** One VM: one strategy on one host flavour. */
async function runOnHost(s: Scenario, strategy: StrategyName, host: HostFlavour, durationMs: number, opts: RunScenarioOptions): Promise<HostRun> {
  const base = applyPatch(DEFAULT_CPUID, s.cpuid);
  const vm = await Vm.create({
    vcpus: s.vcpus,
    strategy,
    policy: s.policy,
    host: TOUR_HOSTS[host].host,
    cpuid: base,
    seed: opts.seed ?? s.seed,
    mix: s.mix,
    memoryBytes: s.memoryBytes,
    check: s.check,
    startPaused: true,
    trace: opts.trace && { capacity: opts.trace.capacity },
    ...(opts.deadlineMs !== undefined ? { deadlineMs: opts.deadlineMs } : {}),
  });
  const target: EventTarget = { vm, cpuid: Array.from({ length: s.vcpus }, () => base), paused: false, cpuidBroadcasts: 0 };
  let timeline: Awaited<ReturnType<typeof runTimeline>>;
  let findings: FindingWire[];
  try {
    // Hold every vCPU over the control plane too, so the setup calls below find each one
    // outside its run loop before its first KVM_RUN (the `go` word holds it as well).
    await vm.pauseAll();
    await setUpVcpus(s, target, base, opts.source ?? s.name);
    timeline = await runTimeline(s, target, host, durationMs, opts.pollMs ?? 2);
    findings = s.check === 'off' ? [] : await collectFindings(vm);
  } catch (e) {
    await shutDown(vm);
    throw e;
  }
  const stats = await shutDown(vm);
  const t = opts.trace;
  if (t) {
    const files = vm.writeTrace({
      chrome: t.chrome === undefined ? undefined : traceFileName(t.chrome, strategy, host),
      ftrace: t.ftrace === undefined ? undefined : traceFileName(t.ftrace, strategy, host),
      processName: `kvm-mmu-emu VM (${strategy}, ${host})`,
      metadata: { scenario: s.name, flavour: host },
    });
    for (const f of files) opts.traceWritten?.(f);
  }
  const dead = Object.fromEntries([...vm.dead].map(([id, why]) => [`${host}/${id}`, why]));
  const td = vm.shadowTeardown;
  const teardown = td ? teardownProblems(td).length : 0;
  return { host, stats, elapsedMs: timeline.elapsedMs, cpuidBroadcasts: target.cpuidBroadcasts, findings, events: timeline.outcomes, dead, shadow: td?.stats ?? null, teardown };
}

/**
 * Resume every vCPU first: a paused vCPU (setup, or a scenario that ends
 * paused) waits for resume, not for requests, so Vm.destroy's STOP request
 * would wait out its deadline. Then destroy the VM.
 */
async function shutDown(vm: Vm) {
  await vm.resumeAll().catch(() => undefined);
  return vm.destroy();
}

/**
 * Before the first KVM_RUN: each vCPU's CPUID (base + every vcpuSetup patch
 * naming it, in file order), then its registers. A refusal is bad input: the
 * file asked for state a real CPU (or KVM) rejects.
 */
async function setUpVcpus(s: Scenario, t: EventTarget, base: CpuidModel, source: string): Promise<void> {
  const plan = Array.from({ length: s.vcpus }, () => ({ cpuid: base, regs: {} as RegsPatch, cpuidFrom: [] as number[], regsFrom: [] as number[] }));
  s.vcpuSetup.forEach((entry, k) => {
    for (const id of targetIds(entry.vcpus, s.vcpus)) {
      const p = plan[id]!;
      if (entry.cpuid) (p.cpuid = applyPatch(p.cpuid, entry.cpuid)), p.cpuidFrom.push(k);
      if (entry.regs) (p.regs = { ...p.regs, ...entry.regs }), p.regsFrom.push(k);
    }
  });
  const where = (from: number[], field: string, id: number) => `${source}: ${from.map((k) => `vcpuSetup[${k}].${field}`).join(' + ')} (vCPU ${id})`;
  const problems = await Promise.all(
    plan.map(async (p, id): Promise<string | null> => {
      if (!cpuidEqual(p.cpuid, base)) {
        const r = await t.vm.call(id, 'setCpuid', p.cpuid);
        if (!r.ok) return `${where(p.cpuidFrom, 'cpuid', id)}: refused: ${r.message}`;
        t.cpuid[id] = p.cpuid;
      }
      if (p.regsFrom.length) {
        const r = await t.vm.call(id, 'setRegs', regsWire(t.vm, p.regs));
        if (!r.ok) return `${where(p.regsFrom, 'regs', id)}: refused by the vCPU's register checks: ${r.message}`;
      }
      return null;
    }),
  );
  const bad = problems.filter((x): x is string => x !== null);
  if (bad.length) {
    const listed = bad.slice(0, 20);
    if (bad.length > listed.length) listed.push(`${source}: ... and ${bad.length - listed.length} more vCPU(s)`);
    throw new ScenarioError(listed.join('\n'), listed);
  }
}

/** Let the vCPUs run; perform due events in order until the time (or ops budget) runs out. */
async function runTimeline(s: Scenario, t: EventTarget, host: HostFlavour, durationMs: number, pollMs: number) {
  const indexed = s.events.map((e, index) => ({ e, index }));
  const timed = indexed.filter((x) => x.e.atMs !== undefined).sort((a, b) => a.e.atMs! - b.e.atMs! || a.index - b.index);
  const counted = indexed.filter((x) => x.e.atOps !== undefined).sort((a, b) => a.e.atOps! - b.e.atOps! || a.index - b.index);
  const outcomes: EventOutcome[] = [];
  const record = (x: { e: ScenarioEvent; index: number }, r: Pick<EventOutcome, 'result' | 'detail'>, ms: number, ops: number) =>
    outcomes.push({ index: x.index, kind: x.e.kind, host, ranAtMs: Math.round(ms * 10) / 10, ranAtOps: ops, ...r });
  let ti = 0;
  let ci = 0;
  await t.vm.resumeAll();
  const t0 = performance.now();
  for (;;) {
    const now = performance.now() - t0;
    const ops = t.vm.totals().guestOps;
    if (now >= durationMs || (s.opsBudget !== undefined && ops >= s.opsBudget)) break;
    const nt = timed[ti];
    const nc = counted[ci];
    const tDue = nt !== undefined && nt.e.atMs! <= now;
    const cDue = nc !== undefined && nc.e.atOps! <= ops;
    if (tDue || cDue) {
      // Both due: the one earlier in the file first.
      const pick = tDue && (!cDue || nt.index < nc!.index) ? (ti++, nt) : (ci++, nc!);
      record(pick, await runEvent(t, pick.e), now, ops);
      continue;
    }
    const pollNeeded = nc !== undefined || s.opsBudget !== undefined;
    const untilTimed = nt !== undefined ? nt.e.atMs! - now : Infinity;
    await sleep(Math.max(0, Math.min(durationMs - now, untilTimed, pollNeeded ? pollMs : Infinity)));
  }
  const elapsedMs = performance.now() - t0;
  for (const x of [...timed.slice(ti), ...counted.slice(ci)].sort((a, b) => a.index - b.index)) {
    record(x, { result: 'not-reached', detail: 'the run ended first' }, -1, -1);
  }
  return { elapsedMs, outcomes };
}

/** The first findings of every live vCPU's role checker. */
async function collectFindings(vm: Vm): Promise<FindingWire[]> {
  const out: FindingWire[] = [];
  for (let id = 0; id < vm.vcpus; id++) {
    if (vm.dead.has(id)) continue;
    const f = await vm.call(id, 'findings');
    if (f.ok) out.push(...f.value.slice(0, 5));
  }
  return out;
}

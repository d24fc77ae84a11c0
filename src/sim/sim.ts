/**
 * Deterministic simulation: the same vCPU cores, shadow cache, checkers and
 * coordinator protocol as `stress`, in one thread over the same
 * shared-memory layouts, with a seeded scheduler choosing which actor (a
 * vCPU, or the coordinator) takes each step.
 *
 * Scheduling points: a vCPU step is one phase of its run loop
 * (VcpuCore.step: requests + MMU load + entry, or one guest operation, or the
 * exit that follows); the coordinator's actions are split where they
 * publish or wait: a zap-all is [flip + reload request under mmu_lock] →
 * [wait until every target acknowledged] → [zap obsolete pages]; a table
 * edit is [seqlock odd + entries written] → [write-tracking zap + seqlock
 * even]; a CPUID change is [post + request] → [wait until handled].
 *
 * Inside a vCPU step, the named points of src/layout/sched-point.ts — each
 * SPTE read of a lockless walk, a guest walk's A/D compare-exchange, taking
 * mmu_lock after a fault's guest walk — may each (one time in
 * PREEMPT_ONE_IN, from the run's seeded Rng) run one step of another actor
 * (vCPU or coordinator) before the preempted vCPU goes on; the trace names
 * the point ("(preempts vcpu2 inside a lockless walk, level 3)"). So a zap
 * can land between two SPTE reads of a walk, or between a fault's guest
 * walk and its staleness checks under mmu_lock. A nested step is never
 * preempted itself, the coordinator is never preempted, and no point is
 * inside a locked region (the hook throws if mmu_lock is held): in one
 * thread a nested actor could never take a held lock, so mmu_lock is never
 * contended here. Other shared-memory operations (request set/consume, mode
 * changes, generation reads, role publication) happen at step boundaries.
 *
 * The run stops at the first observable violation (any invariant), a crash
 * (an assertion of the cache), or the step bound.
 */
import { checkAfterWait, nextRequestSeqs, type LostInvalidation } from '../check/lost-invalidation.js';
import { mutant, setMutant } from '../check/mutants.js';
import { DEFAULT_CPUID } from '../cpuid/cpuid.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { STRATEGIES } from '../mmu/strategies.js';
import { PAGE_STATE, reclaimLimbo, ShadowVm, teardownCache, teardownProblems, zapAllFastFlip, zapObsoletePages } from '../shadow/index.js';
import { STRESS_MIX } from '../stress/stress.js';
import { allocateTraceRings, Tracer, type TraceRingsHandle } from '../trace/index.js';
import type { VcpuCore } from '../vcpu/core.js';
import { REQ } from '../vcpu/requests.js';
import { startVcpu } from '../vcpu/task.js';
import { allocateVcpus, bindVcpu, REG_INDEX, STAT_INDEX, type VcpuRecord, type VcpuStat } from '../vcpu/vcpu-layout.js';
import { acknowledged, cpuidHandled, makeAllCpusRequest, postCpuid, remoteRequestHooks, type AckWait } from '../vm/requests.js';
import { allocateVmRecord, beginEditFlip, bindVmRecord, commitEditFlip, type EditTarget } from '../vm/vm-layout.js';
import { defaultMmuPages, programSeed } from '../vm/vm.js';
import { buildGuestTables, DEFAULT_GUEST_TABLES, prepareEditTarget } from '../workload/guest-tables.js';
import { randomCpuid } from '../workload/random-cpuid.js';
import { TOUR_HOSTS } from '../workload/role-tour.js';
import { Rng } from '../workload/rng.js';
import { makeScheduler } from './scheduler.js';
import { INVARIANTS, sumOf } from '../check/invariants.js';
import type { VcpuCheckStat } from '../check/vcpu-checker.js';
import { describeSchedPoint, schedPoint } from '../layout/sched-point.js';
import { encodeToken, type SimInvariant, type SimParams } from './token.js';

/** Guest memory of a simulated VM: small, so set-up costs little per schedule. */
export const SIM_MEMORY_BYTES = 8 * 1024 * 1024;
/** After a waiting request returned, keep checking invariant 5 for this many steps. */
export const WATCH_STEPS = 64;
/** A halted vCPU's timer fires after this many steps without a request. */
export const HALT_TIMER_STEPS = 32;
/** At a scheduling point inside a vCPU step, another actor runs first one time in this many. */
export const PREEMPT_ONE_IN = 4;

export interface SimViolation {
  readonly step: number;
  readonly invariant: string;
  readonly detail: string;
}

export interface SimResult {
  readonly params: SimParams;
  /** The token that replays this run (its step bound is the failing step when it failed). */
  readonly token: string;
  readonly steps: number;
  readonly violation: SimViolation | null;
  /** One line per step: `step actor what` (deterministic for a token). */
  readonly trace: readonly string[];
  readonly guestOps: number;
  readonly coordinatorActions: number;
  /** The trace rings, when asked for (write them with src/trace writeChromeTrace / writeFtrace). */
  readonly rings: TraceRingsHandle | null;
  /** Each vCPU's architectural registers and cached role words at the end (as published to its record). */
  readonly finalState: readonly { regs: Record<'cr0' | 'cr3' | 'cr4' | 'efer', bigint>; roles: number[]; flags: number }[];
}

export interface SimOptions {
  /** Keep the per-step lines (default true; off when hunting, for speed). */
  readonly keepTrace?: boolean;
  /** Record vCPU and cache events into trace rings, with the step as the clock (1 step = 1 µs). */
  readonly rings?: boolean;
  /** Stop scheduling a vCPU once its guest program issued this many operations; the run ends when all did. */
  readonly opsPerVcpu?: number;
}

type Phase =
  | { kind: 'idle' }
  | { kind: 'wait-acks'; what: string; acks: AckWait[]; then: () => string }
  | { kind: 'wait-cpuid'; epoch: number }
  | { kind: 'edit-commit'; leaves: number[] };

/** A vCPU counter as its checkers hold it now (the shared record is published only when the core leaves). */
const counterOf = (c: VcpuCore, k: VcpuStat): number => c.checker?.counts[k as VcpuCheckStat] ?? c.checkCounts?.[k] ?? 0;

/** The invariants the vCPU-side checkers count observable violations of, and where each count is. */
const VCPU_OBSERVABLE: readonly (readonly [SimInvariant, (c: VcpuCore) => number])[] = INVARIANTS.filter((d) => d.observable.length > 0).map(
  (d) => [d.finding, (c: VcpuCore) => sumOf((k) => counterOf(c, k), d.observable)] as const,
);

export function simulate(p: SimParams, o: SimOptions = {}): SimResult {
  const keep = o.keepTrace ?? true;
  const trace: string[] = [];
  const rng = new Rng(p.seed);
  const flavour = TOUR_HOSTS[p.host];
  setMutant(p.mutant);
  const memory = GuestMemory.create(SIM_MEMORY_BYTES);
  const tables = buildGuestTables(memory, { ...DEFAULT_GUEST_TABLES, seed: p.seed });
  const editTarget: EditTarget = prepareEditTarget(memory, tables);
  const guestPages = memory.size / 4096;
  const shadow = ShadowVm.create({ maxPages: defaultMmuPages(guestPages), agents: p.vcpus + 1, guestPages, host: flavour.host, prove: true });
  const vcpuBuffer = allocateVcpus(p.vcpus);
  const vmBuffer = allocateVmRecord();
  const vmRecord = bindVmRecord(vmBuffer);
  const records: VcpuRecord[] = Array.from({ length: p.vcpus }, (_, i) => bindVcpu(vcpuBuffer, i));
  let step = 0;
  const rings = o.rings ? allocateTraceRings(p.vcpus, 16_384, 0) : null;
  const clock = () => step / 1000;
  const coordinator = p.vcpus;
  const coordTracer = rings ? Tracer.attach(rings, 'coordinator', clock) : undefined;
  shadow.setHooks(coordinator, {
    ...remoteRequestHooks(records),
    trace: coordTracer,
  });
  const started = records.map((_, id) =>
      startVcpu({
        id,
        vcpuBuffer,
        vcpuCount: p.vcpus,
        memoryBuffer: memory.buffer,
        shadow: shadow.handle,
        vmRecord: vmBuffer,
        trace: rings ?? undefined,
        traceClock: rings ? clock : undefined,
        config: {
          host: flavour.host,
          cpuid: DEFAULT_CPUID,
          strategy: p.strategy,
          policy: 'legacy',
          program: { seed: programSeed(p.seed, id), nestedKind: flavour.nested, tables, hotPage: editTarget.gvaPage, mix: STRESS_MIX },
          loop: { batch: 1, yieldEvery: 1, haltTimeoutMs: Infinity },
          check: 'full',
          editTarget,
          mutant: p.mutant ?? undefined,
        },
      }),
  );
  const cores: VcpuCore[] = started.map((s) => s.core);
  const watched = VCPU_OBSERVABLE.filter(([name]) => !p.ignore.includes(name));
  const observable = (c: VcpuCore): number[] => watched.map(([, count]) => count(c));
  for (const r of records) Atomics.store(r.go, 0, 1);

  const sched = makeScheduler(p.scheduler, p.vcpus + 1, p.steps, rng.fork(1000).nextU32());
  const coordRng = rng.fork(2000);
  const haltedAt = new Array<number>(p.vcpus).fill(-1);
  let phase: Phase = { kind: 'idle' };
  // Assigned inside closures: declared with `as` so flow analysis does not narrow them to null.
  let watch = null as { until: number; seq: number[]; oldGeneration: number | null } | null;
  let violation = null as SimViolation | null;
  let actions = 0;
  let cpuidEpoch = 0;
  const line = (actor: string, what: string) => {
    if (keep) trace.push(`${step} ${actor} ${what}`);
  };
  const fail = (invariant: string, detail: string) => {
    violation ??= { step, invariant, detail };
  };

  const lostCheck = (seq: number[], oldGeneration: number | null): LostInvalidation[] =>
    checkAfterWait(records, records.keys(), seq, oldGeneration === null ? undefined : { shadow, oldGeneration });

  /** The coordinator's next step: start an action, or continue a waiting one. */
  const coordinatorStep = (): string => {
    switch (phase.kind) {
      case 'wait-acks': {
        const done = phase.then();
        phase = { kind: 'idle' };
        return done;
      }
      case 'wait-cpuid':
        phase = { kind: 'idle' };
        return 'CPUID handled by every vCPU';
      case 'edit-commit': {
        commitEditFlip(vmRecord, shadow, coordinator, phase.leaves);
        phase = { kind: 'idle' };
        return `edit committed (seq ${Atomics.load(vmRecord.editSeq, 0)})`;
      }
      case 'idle':
        break;
    }
    if (coordRng.int(1000) >= p.eventRate) return 'idle';
    actions++;
    switch (coordRng.int(5)) {
      case 0: {
        const epoch = ++cpuidEpoch;
        postCpuid(records, randomCpuid(coordRng, { features: true }), epoch);
        phase = { kind: 'wait-cpuid', epoch };
        return `CPUID change posted (epoch ${epoch})`;
      }
      case 1: {
        const seq = nextRequestSeqs(records);
        let acks: AckWait[] = [];
        let generation = 0;
        shadow.lock.with(coordinator, () => {
          ({ generation, token: acks } = zapAllFastFlip(shadow, coordinator, { request: () => makeAllCpusRequest(records, REQ.MMU_RELOAD) }));
        });
        const oldGeneration = generation ^ 1;
        phase = {
          kind: 'wait-acks',
          what: 'zap-all reload',
          acks,
          then: () => {
            watch = { until: step + WATCH_STEPS, seq, oldGeneration };
            const zapped = shadow.lock.with(coordinator, () => {
              const n = zapObsoletePages(shadow, coordinator);
              reclaimLimbo(shadow, coordinator);
              return n;
            });
            return `zap-all: reload acknowledged, ${zapped} obsolete pages zapped`;
          },
        };
        return `zap-all: generation ${oldGeneration} -> ${generation}, MMU_RELOAD to all`;
      }
      case 2: {
        const { leaves, frame } = beginEditFlip(vmRecord, memory, tables, editTarget);
        phase = { kind: 'edit-commit', leaves };
        return `edit: target page -> frame ${frame.toString(16)}`;
      }
      default: {
        const reload = coordRng.chance(0.5);
        const wait = coordRng.chance(0.5);
        const req = reload ? REQ.MMU_RELOAD : REQ.TLB_FLUSH;
        const seq = nextRequestSeqs(records);
        const acks = makeAllCpusRequest(records, req);
        if (wait) {
          phase = {
            kind: 'wait-acks',
            what: req.name,
            acks,
            then: () => {
              watch = { until: step + WATCH_STEPS, seq, oldGeneration: null };
              return `${req.name} acknowledged`;
            },
          };
        }
        return `${req.name} to all${wait ? ', waiting' : ''}`;
      }
    }
  };

  const coordinatorRunnable = (): boolean => {
    if (phase.kind === 'wait-acks') {
      // Mutant: kvm_mmu_zap_all_fast goes on without waiting for the reload acknowledgements.
      if (phase.what === 'zap-all reload' && mutant['zap-no-wait']) return true;
      return phase.acks.every((a) => acknowledged(records[a.vcpu]!, a));
    }
    if (phase.kind === 'wait-cpuid') {
      const epoch = phase.epoch;
      return records.every((r) => cpuidHandled(r, epoch));
    }
    return true;
  };

  /** The actors that may take a step now (a vCPU with its op budget spent, or halted without a request, may not). */
  const runnableActors = (out: number[], except: number): number[] => {
    out.length = 0;
    for (let i = 0; i < p.vcpus; i++) {
      if (i === except) continue;
      if (o.opsPerVcpu !== undefined && cores[i]!.rec.stats[STAT_INDEX.guestOps]! >= o.opsPerVcpu) continue;
      const halted = haltedAt[i]! >= 0;
      if (!halted || Atomics.load(records[i]!.requests, 0) !== 0 || step - haltedAt[i]! >= HALT_TIMER_STEPS) out.push(i);
    }
    if (o.opsPerVcpu !== undefined && out.length === 0) return out;
    if (except !== coordinator && coordinatorRunnable()) out.push(coordinator);
    return out;
  };

  /** One step of `actor`, then the checks that follow every step. */
  const runActor = (actor: number, prefix: string): void => {
    try {
      if (actor === coordinator) line('coord', prefix + coordinatorStep());
      else {
        const core = cores[actor]!;
        if (haltedAt[actor]! >= 0) {
          haltedAt[actor] = -1;
          core.halted = false;
        }
        const before = observable(core);
        const r = core.step();
        if (r === 'halt') haltedAt[actor] = step;
        line(`vcpu${actor}`, prefix + core.lastStep);
        const after = observable(core);
        const k = after.findIndex((n, i) => n !== before[i]);
        if (k >= 0) {
          const name = watched[k]![0];
          const found = started[actor]!.control.findings();
          const f = found.ok ? found.value.filter((x) => x.invariant === name && x.severity === 'observable').pop() : undefined;
          fail(name, f?.detail ?? `vCPU ${actor}: an observable violation (the findings list was full)`);
        }
      }
    } catch (e) {
      const msg = (e as Error).message;
      // A prove-mode lookup assertion is invariant 3, a lockless walk that reached a freed or reused
      // page invariant 4 (shadow-walk.ts checkVisited, remember); any other throw a crash.
      const invariant = msg.includes('kvm_mmu_get_page') ? 'shadow-sharing' : /lockless walk/.test(msg) ? 'no-use-after-free' : 'crash';
      fail(invariant, `${actor === coordinator ? 'coordinator' : `vCPU ${actor}`}: ${msg}`);
    }
    if (watch && !violation) {
      const lost = lostCheck(watch.seq, watch.oldGeneration);
      if (lost.length && !p.ignore.includes('no-lost-invalidation')) fail('no-lost-invalidation', lost[0]!.detail);
      else if (step >= watch.until) watch = null;
    }
  };

  // Scheduling points inside a vCPU step (src/layout/sched-point.ts: an A/D compare-exchange of a
  // guest walk, each SPTE read of a lockless walk, taking mmu_lock after a fault's guest walk): at
  // each, with probability 1/PREEMPT_ONE_IN, one step of another actor runs first. Never nested (a
  // nested step's own points pass), never inside the coordinator, never with mmu_lock held.
  const preemptRng = rng.fork(3000);
  const nestedRunnable: number[] = [];
  let current = -1;
  let nested = false;
  schedPoint.hook = (kind, level, page) => {
    const holder = shadow.lock.holder();
    if (holder >= 0) throw new Error(`scheduling point ${kind} reached with mmu_lock held by agent ${holder}: a nested actor could never take it`);
    if (nested || violation || current === coordinator || preemptRng.int(PREEMPT_ONE_IN) !== 0) return;
    const cand = runnableActors(nestedRunnable, current);
    if (cand.length === 0) return;
    nested = true;
    const preempted = current;
    const wasActive = page >= 0 && shadow.stateOf(page) === PAGE_STATE.ACTIVE;
    const lines = trace.length;
    step++;
    current = sched.pick(cand, step);
    runActor(current, `(preempts vcpu${preempted} ${describeSchedPoint(kind, level)}) `);
    // The walk reads this page next: say so when the nested step zapped it (the walk must then
    // read a cleared SPTE, and its epoch keeps the page from being freed until it ends).
    if (wasActive && shadow.stateOf(page) !== PAGE_STATE.ACTIVE && trace.length > lines) trace[trace.length - 1] += ` [zapped page ${page}, which the walk reads next]`;
    current = preempted;
    nested = false;
  };

  const runnable: number[] = [];
  try {
    for (step = 1; step <= p.steps && !violation; step++) {
      runnableActors(runnable, -1);
      if (o.opsPerVcpu !== undefined && runnable.every((a) => a === coordinator)) break;
      if (runnable.length === 0) throw new Error(`simulation deadlock at step ${step}: nothing can run`);
      current = sched.pick(runnable, step);
      runActor(current, '');
    }
  } finally {
    schedPoint.hook = null;
  }
  const steps = Math.min(step - 1, p.steps);
  // Teardown (invariant 4), as Vm.destroy checks it: every vCPU gives its roots back, no root
  // count is left, zap all, reclaim, and the cache audits clean.
  if (!violation) {
    for (const c of cores) c.shutdown();
    const problems = teardownProblems(teardownCache(shadow, coordinator));
    step = Math.min(step - 1, p.steps);
    if (problems.length && !p.ignore.includes('no-use-after-free')) fail('no-use-after-free', `teardown: ${problems[0]}`);
    step++;
  }
  for (const c of cores) c.publish();
  const guestOps = cores.reduce((a, c) => a + c.rec.stats[STAT_INDEX.guestOps]!, 0);
  const finalState = records.map((r) => ({
    regs: { cr0: Atomics.load(r.regs, REG_INDEX.cr0), cr3: Atomics.load(r.regs, REG_INDEX.cr3), cr4: Atomics.load(r.regs, REG_INDEX.cr4), efer: Atomics.load(r.regs, REG_INDEX.efer) },
    roles: [...r.roles],
    flags: Atomics.load(r.flags, 0),
  }));
  // A failing run's token stops at the failing step; PCT keeps drawing its change points over this run's bound.
  const final: SimParams = violation
    ? { ...p, steps: violation.step, scheduler: p.scheduler.kind === 'pct' ? { ...p.scheduler, horizon: p.scheduler.horizon ?? p.steps } : p.scheduler }
    : p;
  setMutant(null);
  return { params: final, token: encodeToken(final), steps, violation, trace, guestOps, coordinatorActions: actions, rings, finalState };
}

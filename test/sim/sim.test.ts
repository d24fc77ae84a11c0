/**
 * The deterministic simulation: exact replay (same token, same trace, byte
 * for byte, twice; a failing PCT run too), tokens that round-trip (an older
 * scheduler's refused), a zap nested inside a lockless walk that the walker
 * survives, every mutant caught within a
 * bounded number of schedules, a correct design clean, the known word-zero
 * finding reproduced from a token, shrinking, and the same workload run on
 * real threads (stress's VM) and in one thread reaching the same final
 * architectural state where the schedule cannot matter.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MUTANT_NAMES, MUTANTS } from '../../src/check/mutants.js';
import { STRATEGY_NAMES } from '../../src/mmu/strategies.js';
import { hunt, shrink } from '../../src/sim/hunt.js';
import { SIM_MEMORY_BYTES, simulate } from '../../src/sim/sim.js';
import { decodeToken, encodeToken, SIM_HOSTS, SIM_INVARIANTS, TokenError, type SimParams } from '../../src/sim/token.js';
import { STRESS_MIX } from '../../src/stress/stress.js';
import { chromeTraceText, ftraceText } from '../../src/trace/index.js';
import { REG_INDEX } from '../../src/vcpu/vcpu-layout.js';
import { Vm } from '../../src/vm/vm.js';
import { TOUR_HOSTS } from '../../src/workload/role-tour.js';

const SEED = Number(process.env.KVM_MMU_EMU_SEED ?? Date.now() % 1_000_000);
const ctx = `(seed ${SEED}; rerun with KVM_MMU_EMU_SEED=${SEED})`;

const base: SimParams = { strategy: 'valid-bit', host: 'shadow', vcpus: 3, seed: SEED, scheduler: { kind: 'random' }, steps: 20_000, mutant: null, eventRate: 50, ignore: [] };

/**
 * Schedules a mutant may take to be caught. Observed with the sim2 scheduling
 * points (random scheduler, 3 vCPUs, 20 000 steps, event rate 50, start seeds
 * 1000, 2000, … 10 000): every mutant in the first schedule, except
 * prev-root-ignores-role (at most 3) and ad-no-cmpxchg (a lost update needs an
 * edit to land between a walk's read and its A/D write: median 23, at most 42;
 * over 30 start seeds median 17.5, mean 24, at most 151 — a geometric tail, so
 * its bound is about eight means). The bounds leave a wide margin.
 */
const MUTANT_BOUND = 10;
const AD_BOUND = 200;
const boundOf = (name: string): number => (name === 'ad-no-cmpxchg' ? AD_BOUND : MUTANT_BOUND);

describe('deterministic simulation', () => {
  it('replays exactly: the same token gives the same step trace, Chrome trace and ftrace text, twice', () => {
    const p: SimParams = { ...base, host: 'amd-npt', steps: 3000 };
    const a = simulate(p, { rings: true });
    const b = simulate(decodeToken(a.token), { rings: true });
    expect(b.trace.join('\n'), ctx).toBe(a.trace.join('\n'));
    expect(b.trace.length, ctx).toBeGreaterThan(100);
    // Nested steps at the scheduling points inside vCPU steps replay too.
    expect(a.trace.filter((l) => l.includes('inside a lockless walk')).length, ctx).toBeGreaterThan(0);
    expect(chromeTraceText(b.rings!), ctx).toBe(chromeTraceText(a.rings!));
    expect(ftraceText(b.rings!), ctx).toBe(ftraceText(a.rings!));
    expect(ftraceText(a.rings!), ctx).toMatch(/kvm_mmu_get_page/);
  });

  it('replays a failing PCT run exactly: its token keeps the bound the change points were drawn over', () => {
    // PCT draws its change points over the step bound; a failing token's bound is the failing step,
    // so the token carries the original bound (pctD/K), or the replay would schedule differently.
    const r = simulate({ ...base, seed: 2, scheduler: { kind: 'pct', depth: 3 }, mutant: 'zap-no-wait' }, { keepTrace: false });
    expect(r.violation, ctx).not.toBeNull();
    expect(r.token).toMatch(/:pct3\/20000:\d+:zap-no-wait:/);
    expect(simulate(decodeToken(r.token), { keepTrace: false }).violation).toEqual(r.violation);
  });

  it('preempts inside a lockless walk: a write-tracking zap of the page the walk reads next, and the run stays clean', () => {
    // Observed: seed 11, step 596, "coord (preempts vcpu2 inside a lockless walk, level 1) edit
    // committed (seq 8) [zapped page 15, which the walk reads next]"; 5 of seeds 1..40 have one in
    // 3000 steps. The walk then reads the zapped page's cleared SPTE and exits with a fault; its
    // epoch keeps the page out of the free list (shadow-walk.ts checkVisited would throw, and the
    // run would fail invariant 4, if it were freed or reused).
    const zapInWalk = /^(\d+) (coord|vcpu\d) \(preempts vcpu(\d) inside a lockless walk, level \d\) .*\[zapped page \d+, which the walk reads next\]$/;
    let found: { r: ReturnType<typeof simulate>; i: number } | null = null;
    for (let seed = 11; seed < 51 && !found; seed++) {
      const r = simulate({ ...base, seed, steps: 3000 });
      const i = r.trace.findIndex((l) => zapInWalk.test(l));
      if (i >= 0) found = { r, i };
    }
    expect(found, 'no seed in 11..50 zapped a page under a lockless walk').not.toBeNull();
    const { r, i } = found!;
    expect(r.violation, r.token).toBeNull();
    const [, step, , walker] = zapInWalk.exec(r.trace[i]!)!;
    // The preempted walker's own step follows, numbered with the nested step: it read a cleared SPTE.
    expect(r.trace[i + 1], r.token).toMatch(new RegExp(`^${step} vcpu${walker} exit `));
    // The other scheduling points are reached too.
    for (const point of ["between a guest walk's read and its A/D write", "between a fault's guest walk and mmu_lock", 'in a direct fault, before mmu_lock']) {
      expect(r.trace.some((l) => l.includes(`(preempts vcpu`) && l.includes(point)), `${point} ${r.token}`).toBe(true);
    }
  });

  it('tokens round-trip and bad tokens are refused with what is allowed', () => {
    const params = fc.record({
      strategy: fc.constantFrom(...STRATEGY_NAMES),
      host: fc.constantFrom(...SIM_HOSTS),
      vcpus: fc.integer({ min: 1, max: 64 }),
      seed: fc.integer({ min: 0, max: 0xffffffff }),
      scheduler: fc.oneof(
        fc.constant({ kind: 'random' as const }),
        fc.integer({ min: 1, max: 64 }).map((depth) => ({ kind: 'pct' as const, depth })),
        fc.record({ kind: fc.constant('pct' as const), depth: fc.integer({ min: 1, max: 64 }), horizon: fc.integer({ min: 1, max: 100_000_000 }) }),
      ),
      steps: fc.integer({ min: 1, max: 100_000_000 }),
      mutant: fc.constantFrom(null, ...MUTANT_NAMES),
      eventRate: fc.integer({ min: 0, max: 1000 }),
      ignore: fc.subarray([...SIM_INVARIANTS]),
    });
    fc.assert(
      fc.property(params, (p) => {
        // pctD/K with K the run's own bound is pctD.
        const own = p.scheduler.kind === 'pct' && 'horizon' in p.scheduler && p.scheduler.horizon === p.steps ? { ...p, scheduler: { kind: 'pct' as const, depth: p.scheduler.depth } } : p;
        expect(decodeToken(encodeToken(p))).toEqual(own);
      }),
    );
    expect(() => decodeToken('sim2:valid-bit:shadow:3')).toThrow(TokenError);
    expect(() => decodeToken('sim2:nope:shadow:3:1:random:10:-:50')).toThrow(/unknown strategy "nope"/);
    expect(() => decodeToken('sim2:valid-bit:shadow:0:1:random:10:-:50')).toThrow(/vcpus must be an integer in 1\.\.64/);
    expect(() => decodeToken('sim2:valid-bit:shadow:3:1:pct0:10:-:50')).toThrow(/pctD/);
    expect(() => decodeToken('sim2:valid-bit:shadow:3:1:random:10:-:50:no-such')).toThrow(/unknown invariant "no-such"/);
    // A token of the older scheduler (fewer scheduling points) is recognised and refused, not misreplayed.
    expect(() => decodeToken('sim1:valid-bit:shadow:3:1:random:793:zap-no-wait:50')).toThrow(/recorded by an older scheduler \(sim1\)/);
  });

  for (const name of MUTANT_NAMES) {
    it(`catches mutant ${name} (invariant ${MUTANTS[name].invariant}) within ${boundOf(name)} schedules`, () => {
      const h = hunt({ ...base, mutant: name }, boundOf(name));
      expect(h.failure, `${name}: no failure in ${h.schedules} schedules ${ctx}`).not.toBeNull();
      // The failing token replays to the same violation at the same step.
      const again = simulate(decodeToken(h.failure!.token), { keepTrace: false });
      expect(again.violation, ctx).toEqual(h.failure!.violation);
    }, boundOf(name) === AD_BOUND ? 240_000 : undefined);
  }

  it('finds nothing in a correct design on the shadow-paging host', () => {
    const h = hunt({ ...base, steps: 10_000 }, 5);
    expect(h.failure?.violation ?? null, `${h.failure?.token} ${ctx}`).toBeNull();
  });

  it('reproduces the word-zero finding: a nested walk reads efer_nx from a zeroed guest_mmu (wrong fault error code)', () => {
    const h = hunt({ ...base, strategy: 'word-zero', host: 'amd-npt', seed: 1 }, 10);
    expect(h.failure, ctx).not.toBeNull();
    const v = h.failure!.violation!;
    expect(['correct-accesses', 'fresh-configuration'], v.detail).toContain(v.invariant);
  });

  it('separates the designs once the failure every design shares under the legacy policy is ignored', () => {
    // Every design leaves guest_mmu stale while L2 runs after a CPUID change (fresh configuration);
    // past that, word-zero gives wrong nested error codes and invalid-bit leaks write tracking.
    const look = (strategy: SimParams['strategy'], host: SimParams['host']) => hunt({ ...base, strategy, host, seed: 1, ignore: ['fresh-configuration'] }, 5).failure?.violation ?? null;
    expect(look('word-zero', 'amd-npt')?.invariant, ctx).toBe('correct-accesses');
    expect(look('invalid-bit', 'intel-ept')?.detail, ctx).toMatch(/teardown: gfn \d+: write-track count \d+, 0 indirect pages shadow it/);
    expect(look('valid-bit', 'amd-npt'), ctx).toBeNull();
  });

  it('shrinks a failing run to one that is no larger and still fails', () => {
    const h = hunt({ ...base, mutant: 'zap-no-wait' }, MUTANT_BOUND);
    const s = shrink(h.failure!);
    expect(s.violation, ctx).not.toBeNull();
    expect(s.params.vcpus, ctx).toBeLessThanOrEqual(h.failure!.params.vcpus);
    expect(s.params.eventRate, ctx).toBeLessThanOrEqual(h.failure!.params.eventRate);
    expect(simulate(decodeToken(s.token), { keepTrace: false }).violation, ctx).toEqual(s.violation);
  });

  it('real threads and one thread reach the same final registers and roles when the schedule cannot matter', async () => {
    const ops = 3000;
    const flavour = 'shadow';
    // No coordinator actions: each vCPU's program reads only its own state, so its end state after
    // exactly `ops` operations depends on the seed alone, not on the interleaving.
    const sim = simulate({ ...base, host: flavour, seed: 7, vcpus: 3, eventRate: 0, steps: 10_000_000 }, { keepTrace: false, opsPerVcpu: ops });
    const vm = await Vm.create({
      vcpus: 3,
      seed: 7,
      host: TOUR_HOSTS[flavour].host,
      policy: 'legacy',
      memoryBytes: SIM_MEMORY_BYTES,
      editTarget: true,
      mix: STRESS_MIX,
      loop: { stopAfterOps: ops },
    });
    const deadline = Date.now() + 60_000;
    while (vm.totals().guestOps < 3 * ops && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await vm.destroy();
    expect(vm.totals().guestOps, ctx).toBe(3 * ops);
    for (let id = 0; id < 3; id++) {
      const threaded = vm.records[id]!;
      const inThread = sim.finalState[id]!;
      for (const r of ['cr0', 'cr3', 'cr4', 'efer'] as const) expect(Atomics.load(threaded.regs, REG_INDEX[r]), `vCPU ${id} ${r} ${ctx}`).toBe(inThread.regs[r]);
      expect([...threaded.roles], `vCPU ${id} roles ${ctx}`).toEqual(inThread.roles);
    }
  }, 120_000);
});

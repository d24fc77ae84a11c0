/**
 * The scenario runner end to end with real vCPU worker threads: the
 * single-vCPU tour (short), setup refusals as input errors, the ops budget,
 * the strict policy's refusal as an event outcome, and rows the default
 * run's table can print.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { formatTable } from '../../src/cli/run.js';
import { loadScenario, parseScenario, ScenarioError } from '../../src/scenario/load.js';
import { runScenario } from '../../src/scenario/runner.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

describe('runScenario', () => {
  it('runs the single-vCPU tour end to end: setup, events in order, later events not reached', async () => {
    const s = loadScenario(join(root, 'examples/scenario-tour.json'));
    const lines: string[] = [];
    const { rows } = await runScenario(s, { durationMs: 700, strategies: ['valid-bit', 'word-zero'], progress: (l) => lines.push(l) });
    expect(lines).toHaveLength(2);
    expect(rows.map((r) => r.strategy)).toEqual(['valid-bit', 'word-zero']);
    for (const r of rows) {
      expect(r.stats.guestOps).toBeGreaterThan(0);
      expect(r.elapsedMs).toBeGreaterThanOrEqual(690);
      expect(Object.keys(r.dead)).toEqual([]);
      expect(r.events).toHaveLength(s.events.length);
      const byIndex = new Map(r.events.map((e) => [e.index, e]));
      // Timed events up to 700 ms ran, in time order; those after it did not.
      const ran = r.events.filter((e) => e.result !== 'not-reached');
      const timed = ran.filter((e) => s.events[e.index]!.atMs !== undefined);
      expect(timed.map((e) => e.ranAtMs)).toEqual([...timed.map((e) => e.ranAtMs)].sort((a, b) => a - b));
      for (const [i, e] of s.events.entries()) {
        if (e.atMs !== undefined && e.atMs > 700) expect(byIndex.get(i)!.result, `events[${i}]`).toBe('not-reached');
        if (e.atMs !== undefined && e.atMs < 600) {
          expect(byIndex.get(i)!.result, `events[${i}] ${byIndex.get(i)!.detail}`).toBe('ok');
          expect(byIndex.get(i)!.ranAtMs).toBeGreaterThanOrEqual(e.atMs);
        }
      }
      // Paused by hand: the register writes built PAE paging on the pae:0 tables.
      expect(byIndex.get(5)!.detail).toBe('vCPU 0 cr3 = 0x7000');
      expect(byIndex.get(7)!.detail).toMatch(/KVM_SET_CPUID2 while paused/);
      expect(r.cpuidBroadcasts).toBeGreaterThanOrEqual(3);
      expect(r.stats.cpuidApplied).toBe(r.cpuidBroadcasts);
    }
    // The default run's table prints these rows.
    const table = formatTable(rows, false);
    expect(table).toMatch(/^\s+valid-bit\s+word-zero$/m);
    expect(table).toMatch(/guest operations/);
  });

  it('stops at the ops budget', async () => {
    const s = parseScenario(JSON.stringify({ name: 'budget', vcpus: 2, strategy: 'valid-bit', opsBudget: 5000, durationMs: 20_000, check: 'off' }));
    const { rows } = await runScenario(s);
    expect(rows[0]!.stats.guestOps).toBeGreaterThanOrEqual(5000);
    expect(rows[0]!.elapsedMs).toBeLessThan(15_000);
  });

  it('initial registers a CPU refuses are bad input naming the entry and the vCPU', async () => {
    const s = parseScenario(
      JSON.stringify({ name: 'bad regs', vcpus: 2, strategy: 'valid-bit', durationMs: 100, vcpuSetup: [{ vcpus: [1], regs: { cr0: '0x80000000' } }] }),
      'regs.json',
    );
    const err = await runScenario(s, { source: 'regs.json' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ScenarioError);
    expect((err as Error).message).toMatch(/^regs\.json: vcpuSetup\[0\]\.regs \(vCPU 1\): refused by the vCPU's register checks: cr0: .*PG.*PE/);
  });

  // Needs Vm.create({ startPaused: true }) to hold each vCPU before its first run: src/vcpu/host-loop.ts
  // waitForGo must end on `go` or STOP only, not on the hello handshake's USERSPACE_EXIT kick.
  it('initial CPUID and registers are applied before the run; the strict policy refuses a later change', async () => {
    const s = parseScenario(
      JSON.stringify({
        name: 'strict',
        vcpus: 2,
        strategy: 'invalid-bit',
        policy: 'strict',
        // Room for a loaded machine: each vCPU must have entered guest mode before the first event
        // (else KVM still accepts KVM_SET_CPUID2: "applied"), and the first event's wait for both vCPUs
        // may take hundreds of ms, which must not push the second past the end of the run ("not-reached").
        durationMs: 2000,
        mix: { 'nested-enter': 0, mode: 0, toggle: 0 },
        vcpuSetup: [{ regs: { cr0: '0x80010031', cr4: '0x20', efer: '0xd00', cr3: 'long4:1' }, cpuid: { maxPhyAddr: 40 } }],
        events: [
          { atMs: 300, kind: 'set-cpuid', cpuid: { maxPhyAddr: 40 } },
          { atMs: 400, kind: 'set-cpuid', cpuid: { nx: false } },
        ],
      }),
    );
    const { rows } = await runScenario(s);
    const [same, changed] = rows[0]!.events;
    expect(same).toMatchObject({ result: 'ok', detail: '0 applied, 2 identical' });
    expect(changed!.result).toBe('refused');
    expect(changed!.detail).toMatch(/2 refused \(strict policy/);
  });

  it('rejects a bad duration override', async () => {
    const s = parseScenario('{"name": "x"}');
    await expect(runScenario(s, { durationMs: 0 })).rejects.toThrow(/durationMs override: expected an integer in 1\.\.600000/);
  });
});

describe('the mixed-MAXPHYADDR caveat (kvm_mmu_after_set_cpuid: CPUID is not in the page role)', () => {
  // Both examples run whole (1.5 s, 4 vCPUs, one strategy): their events end by 400 ms.
  it('changing MAXPHYADDR vCPU by vCPU lets a vCPU hit through SPTEs its own walk must refuse: invariant 2, reserved-bit faults', async () => {
    const { rows } = await runScenario(loadScenario(join(root, 'examples/scenario-maxphyaddr-rolling.json')));
    const r = rows[0]!;
    expect(r.events.map((e) => e.result)).toEqual(['ok', 'ok', 'ok', 'ok']);
    const observable = r.findings.filter((f) => f.severity === 'observable');
    expect(observable.length, 'observable findings').toBeGreaterThan(0);
    for (const f of observable) {
      expect(f.invariant).toBe('correct-accesses');
      // The access got a GPA at or above 2^24 where a fresh walk (MAXPHYADDR 24) faults with PFERR_RSVD (bit 3).
      const m = /got GPA ([0-9a-f]+), a fresh walk gives fault ([0-9a-f]+)/.exec(f.detail);
      expect(m, f.detail).not.toBeNull();
      expect(parseInt(m![1]!, 16), f.detail).toBeGreaterThanOrEqual(2 ** 24);
      expect(parseInt(m![2]!, 16) & 8, f.detail).toBe(8);
    }
  }, 60_000);

  it('pausing every vCPU, changing all, zapping all and resuming leaves nothing for the checker', async () => {
    const { rows } = await runScenario(loadScenario(join(root, 'examples/scenario-maxphyaddr-quiesced.json')));
    const r = rows[0]!;
    expect(r.events.map((e) => e.result)).toEqual(['ok', 'ok', 'ok', 'ok']);
    expect(r.stats.guestOps).toBeGreaterThan(0);
    expect(r.findings.filter((f) => f.severity === 'observable')).toEqual([]);
  }, 60_000);
});

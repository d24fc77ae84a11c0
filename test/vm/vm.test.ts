/**
 * The coordinator with real worker threads (one piscina worker per vCPU):
 * broadcasts, waiting requests, halted vCPUs, the CPUID policies, the
 * control plane, and a worker that dies. Seeds are printed on failure.
 */
import { describe, expect, it } from 'vitest';
import { ctx, SEED, vmPerTest } from './fixture.js';
import { DEFAULT_CPUID } from '../../src/cpuid/cpuid.js';
import { MODE, REQ } from '../../src/vcpu/requests.js';
import { Rng } from '../../src/workload/rng.js';
import { BroadcastError } from '../../src/vm/wait.js';


const createVm = vmPerTest({});

const waitFor = async (cond: () => boolean, what: string, ms = 20_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} ${ctx}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('VM with real workers', () => {
  it('a CPUID broadcast reaches all 64 vCPUs and each applies it exactly once', async () => {
    const v = await createVm({ vcpus: 64, policy: 'legacy' });
    for (let k = 1; k <= 3; k++) {
      const r = await v.broadcastCpuid({ ...DEFAULT_CPUID, maxPhyAddr: 36 + k });
      expect(r.applied.length, ctx).toBe(64);
      for (let id = 0; id < 64; id++) expect(v.vcpuStats(id).cpuidApplied, `vCPU ${id} ${ctx}`).toBe(k);
    }
  }, 240_000);

  it('a waiting request never returns while a target still runs guest code in a stint older than the request', async () => {
    const v = await createVm({ vcpus: 12, policy: 'legacy', loop: { batch: 64 } });
    const rng = new Rng(SEED);
    await waitFor(() => v.totals().guestEntries > 100, 'guest entries');
    let checked = 0;
    // At least 150 rounds, and on until a target was caught in guest mode (stints are short with shadow faults).
    for (let round = 0; round < 150 || (checked === 0 && round < 3000); round++) {
      const targets = [...Array(12).keys()].filter(() => rng.chance(0.6));
      // requestAndKick adds 1 to each target's requestSeq before setting the bit.
      const seq = v.records.map((r) => Atomics.load(r.requestSeq, 0) + 1);
      await v.makeAllCpusRequest(rng.chance(0.5) ? REQ.TLB_FLUSH : REQ.MMU_RELOAD, { targets, wait: true });
      for (const id of targets) {
        const rec = v.records[id]!;
        // stintSeq is the requestSeq a stint read after its entry re-check (-1 before): a verified
        // stint that read less than our sequence began before our request and must have exited.
        // Read stintSeq, mode, stintSeq again (as src/check/lost-invalidation.ts does): the mode belongs to
        // the stint of `stint` only if the sequence did not move around it. Without the second read, an old
        // stint's sequence (it stays after the exit) could be paired with the mode of a stint entered after
        // our request: an entry stores -1 before IN_GUEST, so then the two reads differ.
        const stint = Atomics.load(rec.stintSeq, 0);
        // EXITING counts: a kicked vCPU keeps running guest code until it notices the kick.
        const mode = Atomics.load(rec.mode, 0);
        const same = Atomics.load(rec.stintSeq, 0) === stint;
        const inGuest = same && (mode === MODE.IN_GUEST || mode === MODE.EXITING_GUEST);
        if (inGuest) checked++;
        expect(inGuest && stint >= 0 && stint < seq[id]!, `round ${round} vCPU ${id}: stint ${stint} < request ${seq[id]} ${ctx}`).toBe(false);
      }
    }
    expect(checked, `targets seen in guest mode after a wait ${ctx}`).toBeGreaterThan(0);
    expect(v.totals().tlbFlushes + v.totals().mmuUnloads, ctx).toBeGreaterThan(0);
  });

  it('a request on a halted vCPU wakes it: it handles the request and halts again', async () => {
    const mix = { access: 0, toggle: 0, mode: 0, cr3: 0, invlpg: 0, smm: 0, 'nested-enter': 0, 'nested-exit': 0, invalid: 0, hlt: 1 };
    const v = await createVm({ vcpus: 4, policy: 'legacy', mix, loop: { haltTimeoutMs: Infinity } });
    await waitFor(() => v.records.every((r) => Atomics.load(r.halted, 0) === 1), 'all vCPUs halted');
    const r = await v.broadcastCpuid({ ...DEFAULT_CPUID, gbpages: false });
    expect(r.applied, ctx).toEqual([0, 1, 2, 3]);
    for (let id = 0; id < 4; id++) expect(v.vcpuStats(id).halts, ctx).toBe(1);
    await waitFor(() => v.records.every((x) => Atomics.load(x.halted, 0) === 1), 'halted again');
    const snap = await v.call(2, 'snapshot');
    expect(snap.ok && snap.value.halted, ctx).toBe(true);
  });

  it('strict: a changed CPUID after the first run is refused (shared memory and RPC); an identical one is accepted', async () => {
    const v = await createVm({ vcpus: 4, policy: 'strict' });
    await waitFor(() => v.records.every((r) => Atomics.load(r.ran, 0) === 1), 'first runs');
    const changed = await v.broadcastCpuid({ ...DEFAULT_CPUID, maxPhyAddr: 40 });
    expect(changed.refused, ctx).toEqual([0, 1, 2, 3]);
    const same = await v.broadcastCpuid({ ...DEFAULT_CPUID });
    expect(same.identical, ctx).toEqual([0, 1, 2, 3]);
    const rpc = await v.call(1, 'setCpuid', { ...DEFAULT_CPUID, nx: false });
    expect(rpc.ok, ctx).toBe(false);
    if (!rpc.ok) {
      expect(rpc.code).toBe('NOT_ALLOWED');
      expect(rpc.message).toMatch(/strict policy/);
    }
    expect(v.totals().cpuidApplied, ctx).toBe(0);
  });

  it('the control plane answers a busy vCPU; an invalid register write is refused and changes nothing', async () => {
    // No nested entries: setRegs is NOT_ALLOWED while L2 runs (KVM needs KVM_SET_NESTED_STATE there).
    const v = await createVm({ vcpus: 2, policy: 'legacy', mix: { 'nested-enter': 0 } });
    expect((await v.call(0, 'pause')).ok).toBe(true);
    const before = await v.call(0, 'getRegs');
    const bad = await v.call(0, 'setRegs', { cr0: '0x80000000' });
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.code).toBe('INVALID_ARGUMENT');
    expect(await v.call(0, 'getRegs')).toEqual(before);
    const good = await v.call(0, 'setRegs', { cr0: '0x11', cr4: '0x0', efer: '0x0' });
    expect(good.ok, JSON.stringify(good)).toBe(true);
    expect((await v.call(0, 'resume')).ok).toBe(true);
    // vCPU 1 is busy once it entered guest mode (the hello's USERSPACE_EXIT makes its first slice return
    // before entering): on a loaded machine its thread may not have got that far yet.
    await waitFor(() => Atomics.load(v.records[1]!.ran, 0) === 1, 'vCPU 1 to run');
    const snap = await v.call(1, 'snapshot');
    expect(snap.ok && snap.value.hasRun).toBe(true);
  });

  it('a crashing worker is reported by id; waits on it fail instead of hanging; the others keep their statistics', async () => {
    const v = await createVm({ vcpus: 4, policy: 'legacy', throwAfterOps: new Map([[2, 2000]]), deadlineMs: 10_000 });
    await waitFor(() => v.dead.has(2), 'vCPU 2 to die');
    expect(v.dead.get(2)).toMatch(/injected fault/);
    await expect(v.broadcastCpuid({ ...DEFAULT_CPUID, maxPhyAddr: 41 })).rejects.toThrow(BroadcastError);
    await expect(v.broadcastCpuid({ ...DEFAULT_CPUID, maxPhyAddr: 42 })).rejects.toThrow(/vCPU 2: worker died/);
    const rpc = await v.call(2, 'snapshot');
    expect(rpc.ok ? 'ok' : rpc.code).toBe('VCPU_DEAD');
    const ok = await v.broadcastCpuid({ ...DEFAULT_CPUID, maxPhyAddr: 43 }, [0, 1, 3]);
    expect(ok.applied).toEqual([0, 1, 3]);
    // destroy() is idempotent: the fixture's second call returns the same totals.
    const totals = await v.destroy();
    expect(totals.guestOps).toBeGreaterThan(2000);
    expect(v.vcpuStats(2).guestOps).toBeGreaterThanOrEqual(2000);
  });
});

/**
 * The shadow page cache wired into real vCPU workers (one piscina worker per
 * vCPU, every vCPU an agent of the VM-wide cache): on each host flavour the
 * vCPUs fault, hit, reload and switch roots while the coordinator zaps all
 * pages, edits a guest page table and changes CPUID. After every zap-all the
 * waiting reload must leave nobody on the old generation; audits under
 * mmu_lock while the vCPUs run must find the cache consistent; after
 * teardown every root count is zero and every page is free again.
 * Seeds are printed on failure.
 */
import { describe, expect, it } from 'vitest';
import { ctx, SEED, vmPerTest } from './fixture.js';
import { DEFAULT_CPUID } from '../../src/cpuid/cpuid.js';
import { DEFAULT_HOST, type HostSettings } from '../../src/role/host.js';
import { Rng } from '../../src/workload/rng.js';
import type { Vm } from '../../src/vm/vm.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `cond` until it holds or `ms` passed (a loaded machine may keep the vCPU threads off the CPU for a while). */
const waitFor = async (cond: () => boolean, what: string, ms = 30_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} ${ctx}`);
    await sleep(5);
  }
};

const HOSTS: Record<string, HostSettings> = {
  'intel-ept': DEFAULT_HOST,
  'amd-npt': { ...DEFAULT_HOST, vendor: 'amd' },
  shadow: { ...DEFAULT_HOST, tdpEnabled: false },
};

const createVm = vmPerTest({ policy: 'legacy' });

/** Every root given back, every page free, the audit clean. */
function expectCleanTeardown(v: Vm): void {
  const t = v.shadowTeardown;
  expect(t, `teardown ran ${ctx}`).not.toBeNull();
  expect([...t!.rootsLeft], `root counts left ${ctx}`).toEqual([]);
  expect(t!.audit, `audit after teardown ${ctx}`).toEqual([]);
  expect(t!.freePages, `free pages after teardown ${ctx}`).toBe(t!.capacity);
}

describe('shadow page cache with real vCPU workers', () => {
  for (const [flavour, host] of Object.entries(HOSTS)) {
    it(`${flavour}: zap-all, CPUID changes and table edits while vCPUs fault; nobody stays on the old generation`, async () => {
      const v = await createVm({ vcpus: 4, host, check: true, loop: { batch: 64 } });
      const rng = new Rng(SEED);
      const pml4 = Number(v.tables.cr3.long4[0]!);
      let zaps = 0;
      for (let round = 0; round < 12; round++) {
        await sleep(rng.int(20) + 5);
        const z = await v.zapAllFast();
        zaps++;
        expect(z.lostInvalidations, `round ${round} ${ctx}`).toEqual([]);
        if (rng.chance(0.5)) await v.broadcastCpuid({ ...DEFAULT_CPUID, maxPhyAddr: 36 + rng.int(10), nx: rng.chance(0.8) });
        // Rewrite a top-level entry with its own value: the write-tracking path runs, the tables stay valid.
        v.writeGuestPte(pml4, v.memory.load64(pml4));
        if (round % 4 === 3) expect(await v.auditShadow(), `audit under mmu_lock, round ${round} ${ctx}`).toEqual([]);
      }
      // However the OS scheduled the vCPU threads, they must get to hits and fault exits; not assumed of 12 short rounds.
      await waitFor(() => v.shadowStats()!.stats.accessHits > 0 && v.totals().shadowHits > 0 && v.totals().shadowExits > 0, 'shadow hits and fault exits');
      const shadow = v.shadowStats()!.stats;
      await v.destroy();
      const t = v.totals();
      expect(shadow.zapAllFast, ctx).toBe(zaps);
      expect(shadow.pagesCreated, ctx).toBeGreaterThan(0);
      expect(shadow.accessHits, ctx).toBeGreaterThan(0);
      expect(t.shadowHits, ctx).toBeGreaterThan(0);
      expect(t.shadowExits, ctx).toBeGreaterThan(0);
      expect(t.mmuLoadFailures, ctx).toBe(0);
      expectCleanTeardown(v);
    }, 120_000);
  }

  it('a small arena (n_max_mmu_pages = 64) reclaims pages under pressure and ends clean', async () => {
    const v = await createVm({ vcpus: 6, host: HOSTS.shadow!, shadow: { maxPages: 64 } });
    await sleep(1500);
    expect(await v.auditShadow(), ctx).toEqual([]);
    const g = v.shadowStats()!.gauges;
    expect(g.usedPages, ctx).toBeLessThanOrEqual(g.capacity);
    await v.destroy();
    const s = v.shadowTeardown!.stats;
    // Pages were taken back from the oldest end (make_mmu_pages_available) or reused from limbo.
    expect(s.zapped, ctx).toBeGreaterThan(0);
    expectCleanTeardown(v);
  }, 120_000);

  it('without a shadow cache the vCPUs only walk, and zap-all is refused', async () => {
    const v = await createVm({ vcpus: 2, shadow: false });
    // Not a fixed sleep: on a loaded machine the vCPU threads may not have run at all after 200 ms.
    await waitFor(() => v.totals().accesses > 0, 'the first guest accesses');
    await expect(v.zapAllFast()).rejects.toThrow(/without a shadow page cache/);
    await v.destroy();
    expect(v.totals().accesses, ctx).toBeGreaterThan(0);
    expect(v.totals().shadowHits, ctx).toBe(0);
  }, 60_000);
});

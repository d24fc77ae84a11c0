/**
 * The stress coordinator (the chaos VMM): against a running VM, at seeded
 * random moments, it changes CPUID on every vCPU (MAXPHYADDR, NX, GBPAGES,
 * PKU, LA57, vendor), zaps all shadow pages, edits the guest page tables
 * (the invariant-6 edit target), and sends TLB-flush and MMU-reload requests,
 * waiting or not. Every waiting request is checked the moment it returns for
 * invariant 5 (src/check/lost-invalidation.ts).
 */
import { checkAfterWait, nextRequestSeqs, type LostInvalidation } from '../check/lost-invalidation.js';
import { REQ } from '../vcpu/requests.js';
import type { Vm } from '../vm/vm.js';
import { randomCpuid } from '../workload/random-cpuid.js';
import { Rng } from '../workload/rng.js';

export interface CoordinatorOptions {
  seed: number;
  /** Mean time between actions (ms). */
  actionEveryMs: number;
  /** Keep going while this says so (checked before every action). */
  running: () => boolean;
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function coordinate(vm: Vm, o: CoordinatorOptions): Promise<CoordinatorCounts> {
  const rng = new Rng(o.seed);
  const c: CoordinatorCounts = { cpuidBroadcasts: 0, cpuidRefused: 0, zapAlls: 0, tableEdits: 0, reloads: 0, flushes: 0, waitsChecked: 0, lost: [] };
  while (o.running()) {
    await sleep(rng.int(2 * o.actionEveryMs) + 1);
    if (!o.running()) break;
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
        c.lost.push(...checkAfterWait(vm.records, vm.records.keys(), seq));
      }
    }
  }
  return c;
}

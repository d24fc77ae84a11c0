/**
 * The shadow cache under real worker threads (one per vCPU, see
 * vcpu.worker.ts), with the project's vCPU records and request protocol:
 *
 * - many vCPUs faulting on the same gfns create exactly one page per
 *   (gfn, role, generation), and share the root;
 * - vCPUs with different roles on the same guest tables never share a page,
 *   while the guest edits a table (write tracking) under them — and after an
 *   edit's tracked write returns, nobody translates through the old entry;
 * - zap-all while vCPUs fault: once the waiting MMU_RELOAD returned, no vCPU
 *   in guest mode uses a root of the old generation;
 * - mmu_lock orders plain read-modify-writes from every worker;
 * - after teardown every root count is zero and the arena's free count is
 *   back to its capacity.
 *
 * Seeds are printed when a test fails (SEED=... replays a scenario's seeds).
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { waitAsync } from '../../src/layout/atomics.js';
import { allocate, bindRecord } from '../../src/layout/layout.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { FrameAllocator, PageTableBuilder } from '../../src/paging/index.js';
import { PR } from '../../src/role/page-role.js';
import {
  audit,
  auditLocked,
  PAGE_STATE,
  ShadowVm,
  trackedWrite,
  vmStats,
  zapAll,
  zapAllFast,
  type ReloadBroadcast,
} from '../../src/shadow/index.js';
import { acknowledged, makeAllCpusRequest, type AckWait } from '../../src/vm/requests.js';
import { waitOn } from '../../src/vm/wait.js';
import { REQ } from '../../src/vcpu/requests.js';
import { allocateVcpus, bindVcpu, type VcpuRecord } from '../../src/vcpu/vcpu-layout.js';
import { Rng } from '../../src/workload/rng.js';
import { formatOf, type X86Mode } from '../paging/helpers.js';
import { CONTROL_LAYOUT, type ControlView } from './control.js';
import { hostFor, MEM_BYTES, TABLES, testSeed } from './fixtures.js';
import type { VcpuWorkerData } from './vcpu.worker.js';

const VCPUS = 4;
const DEADLINE_MS = 20_000;
/** Zap-all rounds per zap scenario (the workers run until the coordinator made them all). */
const ZAP_ROUNDS = 12;

interface Scenario {
  readonly name: string;
  readonly mode: X86Mode;
  readonly shadowPaging: boolean;
  readonly wp: (id: number) => boolean;
  readonly accesses: number;
  readonly writeRatio: number;
  readonly maxPages?: number;
  readonly kind?: 'vcpu' | 'lock';
}

/** A VM for a scenario: guest memory and tables, the shadow cache, vCPU records, control words. */
class Harness {
  readonly mem = GuestMemory.create(MEM_BYTES);
  readonly vm: ShadowVm;
  readonly vcpuBuffer = allocateVcpus(VCPUS);
  readonly records: VcpuRecord[] = Array.from({ length: VCPUS }, (_, i) => bindVcpu(this.vcpuBuffer, i));
  readonly ctl: ControlView;
  readonly coordinator = VCPUS;
  readonly messages: string[] = [];
  /** Per vCPU: MMU_RELOAD requests it handled (kvm_mmu_unload calls), from its final message. */
  readonly unloads: number[] = [];
  readonly failures: string[] = [];
  private workers: Worker[] = [];
  private exits: Promise<void>[] = [];
  readonly seed: number;
  pt: PageTableBuilder | null = null;
  targets: [string, number[]][] = [];

  constructor(readonly sc: Scenario) {
    this.seed = testSeed(`shadow-threads-${sc.name}`);
    this.vm = ShadowVm.create({
      maxPages: sc.maxPages ?? 512,
      agents: VCPUS + 1,
      guestPages: MEM_BYTES / 4096,
      host: hostFor({ shadow: sc.shadowPaging }),
      prove: true,
    });
    this.ctl = bindRecord(CONTROL_LAYOUT, allocate(CONTROL_LAYOUT)) as ControlView;
  }

  /** Guest tables (shadow paging) or plain GPAs (TDP): `n` pages spread over the address space. */
  buildTargets(n: number, spread: bigint): void {
    if (!this.sc.shadowPaging) {
      this.targets = Array.from({ length: n }, (_, i) => {
        const gpa = 0x40_0000 + ((i * Number(spread)) % 0x40_0000);
        return [String(gpa), [gpa]];
      });
      return;
    }
    const pt = PageTableBuilder.create(this.mem, FrameAllocator.create(this.mem, TABLES), formatOf(this.sc.mode));
    this.targets = Array.from({ length: n }, (_, i) => {
      const gva = 0x4000_0000n + BigInt(i) * spread;
      const gpa = 0x40_0000 + i * 0x1000;
      pt.map({ gva, gpa: BigInt(gpa) });
      return [String(gva), [gpa]];
    });
    this.pt = pt;
  }

  start(edited = -1): void {
    const root = this.pt?.root ?? { pgd: 0n, pdptes: null };
    for (let id = 0; id < VCPUS; id++) {
      const data: VcpuWorkerData = {
        kind: this.sc.kind ?? 'vcpu',
        id,
        vcpuCount: VCPUS,
        shadow: this.vm.handle,
        memory: this.mem.buffer,
        vcpus: this.vcpuBuffer,
        control: this.ctl.ready.buffer as SharedArrayBuffer,
        mode: this.sc.mode,
        shadowPaging: this.sc.shadowPaging,
        wp: this.sc.wp(id),
        guest: { pgd: String(root.pgd), pdptes: root.pdptes?.map(String) },
        targets: this.targets,
        edited,
        seed: (this.seed * 1_000_003 + id) >>> 0,
        accesses: this.sc.accesses,
        writeRatio: this.sc.writeRatio,
      };
      const w = new Worker(new URL('./vcpu.worker.mjs', import.meta.url), { workerData: data });
      w.on('message', (m: { type: string; msg?: string; id: number; unloads?: number }) => {
        if (m.type === 'violation') this.messages.push(`vCPU ${m.id}: ${m.msg}`);
        if (m.type === 'result') this.unloads[m.id] = m.unloads ?? 0;
      });
      w.on('error', (e) => this.failures.push(`vCPU ${id} died: ${e.stack ?? e.message}`));
      this.exits.push(new Promise((r) => w.on('exit', () => r())));
      this.workers.push(w);
    }
  }

  /** Wait (event loop alive) until `pred(word)`, a worker fails, or the deadline. */
  async until(word: Int32Array, pred: (v: number) => boolean, what: string): Promise<void> {
    const deadline = performance.now() + DEADLINE_MS;
    for (;;) {
      const v = Atomics.load(word, 0);
      if (pred(v)) return;
      if (this.failures.length) throw new Error(`${this.failures[0]} (seed ${this.seed})`);
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what} (at ${v}; seed ${this.seed})`);
      await waitAsync(word, 0, v, 50);
    }
  }

  /**
   * Start the workers. With `release` false they keep accessing past their
   * `accesses` until release(): the coordinator's rounds and edits then happen
   * however little CPU time the OS gives it against the workers.
   */
  async go(release = true): Promise<void> {
    await this.until(this.ctl.ready, (v) => v === VCPUS, 'every worker to attach');
    if (release) this.release();
    Atomics.store(this.ctl.go, 0, 1);
    Atomics.notify(this.ctl.go, 0);
  }

  /** Let the workers finish once their accesses are done (control.ts `release`). */
  release(): void {
    Atomics.store(this.ctl.release, 0, 1);
  }

  /** Wait until the workers made `n` more accesses (they cannot finish before release()). */
  async progress(n: number, what: string): Promise<void> {
    const before = Atomics.load(this.ctl.progress, 0);
    await this.until(this.ctl.progress, (v) => v >= before + n, what);
  }

  /** A waiting KVM_REQ_MMU_RELOAD over the real vCPU records; marks the round complete when it returns. */
  reload(round: number): ReloadBroadcast<AckWait[]> {
    return {
      request: () => makeAllCpusRequest(this.records, REQ.MMU_RELOAD),
      wait: async (acks) => {
        const deadline = performance.now() + DEADLINE_MS;
        const dead = () => (this.failures.length ? this.failures[0]! : null);
        // Every target that was in guest mode must leave it once (its outsideEpoch moves): the IPI acknowledgement.
        for (const a of acks) await waitOn(this.records[a.vcpu]!.outsideEpoch, 0, () => acknowledged(this.records[a.vcpu]!, a), deadline, dead);
        Atomics.store(this.ctl.completedGen, 0, this.vm.mmuValidGen);
        Atomics.store(this.ctl.completed, 0, round);
      },
    };
  }

  /** STOP every vCPU (each unloads its roots) and wait for the threads to end. */
  async stop(): Promise<void> {
    makeAllCpusRequest(this.records, REQ.STOP);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((_, rej) => (timer = setTimeout(() => rej(new Error(`workers did not stop (seed ${this.seed})`)), DEADLINE_MS)));
    try {
      await Promise.race([Promise.all(this.exits), timeout]);
    } finally {
      clearTimeout(timer);
      for (const w of this.workers) await w.terminate();
    }
    if (this.failures.length) throw new Error(`${this.failures.join('\n')} (seed ${this.seed})`);
  }

  /** After stop: no root held anywhere; zap everything; the arena is whole again. */
  async expectTornDown(): Promise<void> {
    const held = [...Array(this.vm.capacity).keys()].filter((p) => this.vm.rootCountOf(p) !== 0);
    expect(held, `pages still held as roots (seed ${this.seed})`).toEqual([]);
    expect(audit(this.vm, new Map())).toEqual([]);
    await zapAll(this.vm, this.coordinator);
    expect(this.vm.nUsed).toBe(0);
    expect(this.vm.limboCount).toBe(0);
    expect(this.vm.freeCount).toBe(this.vm.capacity);
    expect(audit(this.vm, new Map())).toEqual([]);
  }

  expectClean(): void {
    expect(this.messages.slice(0, 5), `violations (seed ${this.seed})`).toEqual([]);
    expect(Atomics.load(this.ctl.violations, 0)).toBe(0);
  }
}

describe('shadow cache with real vCPU threads', () => {
  it('vCPUs faulting on the same gfns create exactly one page per (gfn, role, generation) and share the root', async () => {
    const h = new Harness({ name: 'same-gfns', mode: 'long4', shadowPaging: false, wp: () => true, accesses: 3000, writeRatio: 0.3 });
    h.buildTargets(64, 0x1_1000n);
    h.start();
    try {
      await h.go();
      await h.until(h.ctl.done, (v) => v === VCPUS, 'every vCPU to finish');
      // Root (gfn 0, level 4), one level-3 and one level-2 page, one level-1 page per 2 MiB touched (4 MiB: 2).
      const s = vmStats(h.vm);
      expect(s.pagesCreated).toBe(5);
      expect(s.hashMisses).toBe(5);
      expect(s.hashHits).toBeGreaterThan(0);
      const roots = [...Array(h.vm.capacity).keys()].filter((p) => h.vm.rootCountOf(p) > 0);
      expect(roots.map((p) => h.vm.rootCountOf(p))).toEqual([VCPUS]);
      expect(auditLocked(h.vm, h.coordinator, new Map([[roots[0]!, VCPUS]]))).toEqual([]);
      await h.stop();
      h.expectClean();
      await h.expectTornDown();
    } finally {
      await h.stop().catch(() => {});
    }
  });

  it('different roles never share a page, while the guest edits a table under them', async () => {
    const h = new Harness({ name: 'roles', mode: 'long4', shadowPaging: true, wp: (id) => id < 2, accesses: 4000, writeRatio: 0.2 });
    h.buildTargets(48, 0x8_0000n);
    // Page 0 is edited: it moves between two frames.
    const alt = [0x40_0000, 0x7f_0000];
    h.targets[0] = [h.targets[0]![0], alt];
    h.start(0);
    const rng = new Rng(h.seed);
    try {
      await h.go(false);
      const gva0 = BigInt(h.targets[0]![0]);
      for (let e = 1; e <= 24; e++) {
        await h.progress(128, 'progress between edits');
        const to = alt[e % 2]!;
        Atomics.store(h.ctl.editStarted, 0, e);
        const entry = h.pt!.remap(gva0, BigInt(to));
        // The guest's write reaches page tracking after it reached memory.
        trackedWrite(h.vm, h.coordinator, entry.pa);
        Atomics.store(h.ctl.editGpa, 0, to);
        Atomics.store(h.ctl.editDone, 0, e);
        if (rng.chance(0.5)) Atomics.notify(h.ctl.progress, 0);
      }
      // The workers run on until a hit on the edited page was checked against the last edit.
      await h.until(h.ctl.editChecks, (v) => v > 0, 'a hit on the edited page after an edit');
      h.release();
      await h.until(h.ctl.done, (v) => v === VCPUS, 'every vCPU to finish');
      expect(auditLocked(h.vm, h.coordinator)).toEqual([]);
      // Per shadowed (gfn, level): at most one valid page per role, and — except the edited table,
      // whose pages the last edit may have zapped — one page for each of the two roles.
      const editedGfn = Math.floor(h.pt!.entry(gva0, 1)!.pa / 4096);
      const byKey = new Map<string, number[]>();
      for (let p = 0; p < h.vm.capacity; p++) {
        if (h.vm.stateOf(p) !== PAGE_STATE.ACTIVE || h.vm.isObsolete(p)) continue;
        const key = `${h.vm.gfnOf(p)}/${h.vm.roleOf(p) & PR.LEVEL_MASK}`;
        byKey.set(key, [...(byKey.get(key) ?? []), h.vm.roleOf(p) & PR.CR0_WP ? 1 : 0]);
      }
      for (const [key, wps] of byKey) {
        if (key === `${editedGfn}/1`) expect(new Set(wps).size, `pages of ${key}`).toBe(wps.length);
        else expect(wps.sort(), `pages of ${key}`).toEqual([0, 1]);
      }
      // Root, level 3, level 2 and 12 level-1 tables; the edited table may be zapped right now.
      expect(byKey.size).toBeGreaterThanOrEqual(3 + 12 - 1);
      expect(Atomics.load(h.ctl.editChecks, 0)).toBeGreaterThan(0);
      await h.stop();
      h.expectClean();
      await h.expectTornDown();
    } finally {
      await h.stop().catch(() => {});
    }
  });

  for (const sc of [
    { name: 'zap-tdp', mode: 'long4', shadowPaging: false },
    { name: 'zap-shadow-pae', mode: 'paging32', shadowPaging: true },
  ] as const) {
    it(`${sc.name}: zap-all while vCPUs fault leaves no vCPU on an obsolete root once the waiting request returned`, async () => {
      const h = new Harness({ ...sc, wp: () => true, accesses: 6000, writeRatio: 0.3, maxPages: 64 });
      h.buildTargets(48, sc.shadowPaging ? 0x4_0000n : 0x2_1000n);
      h.start();
      try {
        await h.go(false);
        let rounds = 0;
        while (rounds < ZAP_ROUNDS) {
          await h.progress(512, 'progress between rounds');
          rounds++;
          Atomics.store(h.ctl.started, 0, rounds);
          await zapAllFast(h.vm, h.coordinator, h.reload(rounds));
          // Consistent mid-flight, with the vCPUs still faulting around the audit.
          expect(auditLocked(h.vm, h.coordinator), `round ${rounds} (seed ${h.seed})`).toEqual([]);
        }
        // Accesses after the last round, each made after a root check against it; then let the workers finish.
        await h.progress(512, 'progress after the last round');
        h.release();
        await h.until(h.ctl.done, (v) => v === VCPUS, 'every vCPU to finish');
        expect(Atomics.load(h.ctl.rootChecks, 0), `seed ${h.seed}`).toBeGreaterThan(0);
        expect(vmStats(h.vm).zapAllFast).toBe(rounds);
        expect(auditLocked(h.vm, h.coordinator)).toEqual([]);
        await h.stop();
        h.expectClean();
        // Every vCPU handled the reloads (coalesced when rounds came faster than its next entry).
        expect(h.unloads).toHaveLength(VCPUS);
        for (const u of h.unloads) expect(u).toBeGreaterThan(0);
        await h.expectTornDown();
      } finally {
        await h.stop().catch(() => {});
      }
    });
  }

  it('mmu_lock orders plain read-modify-writes from every worker', async () => {
    const per = 20_000;
    const h = new Harness({ name: 'lock', mode: 'long4', shadowPaging: false, wp: () => true, accesses: per, writeRatio: 0, kind: 'lock' });
    h.start();
    await h.go();
    await h.stop();
    expect(h.ctl.lockCounter[0]).toBe(VCPUS * per);
    expect(h.vm.lock.holder()).toBe(-1);
  });
});

/**
 * The arena: its layouts, the hash function, reclaim when the arena is full
 * (oldest unused pages first), the walkers' grace period before a zapped
 * page is reused, a VM that runs out of pages reporting it, and a
 * fast-check property: random faults, guest table edits, CR3 switches,
 * zap-alls, limit changes and in-flight walkers never break the cache's
 * invariants, never hand out a page in use, and never translate to a stale
 * mapping.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkNoOverlap } from '../../src/layout/layout.js';
import { PageTableBuilder } from '../../src/paging/index.js';
import { PAGE_ROLE } from '../../src/role/page-role.js';
import {
  agentStats,
  audit,
  changeMaxPages,
  getPage,
  hashGfn,
  HASH_BUCKETS,
  makePagesAvailable,
  NIL,
  PAGE_STATE,
  trackedWrite,
  vmStats,
  zapAllFast,
} from '../../src/shadow/index.js';
import { SHADOW_AGENT_LAYOUT, SHADOW_PAGE_LAYOUT, shadowVmLayout } from '../../src/shadow/layout.js';
import { reclaimLimbo } from '../../src/shadow/lists.js';
import { context, DATA_GPA, shadowSetup, tdpSetup, testSeed } from './fixtures.js';
import { SimVcpu } from './sim-vcpu.js';

const GOLDEN_RATIO_64 = 0x61c8864680b583ebn;
const hashRef = (gfn: bigint): number => Number(((gfn * GOLDEN_RATIO_64) & 0xffff_ffff_ffff_ffffn) >> 52n);

describe('layouts and hash', () => {
  it('every shadow layout allocates with disjoint, aligned fields; agents sit on their own cache lines', () => {
    for (const l of [SHADOW_PAGE_LAYOUT, SHADOW_AGENT_LAYOUT, shadowVmLayout(1), shadowVmLayout(2048)]) expect(() => checkNoOverlap(l)).not.toThrow();
    expect(SHADOW_AGENT_LAYOUT.stride % 64).toBe(0);
    expect(SHADOW_AGENT_LAYOUT.fields.stats.offset).toBe(64);
    expect(shadowVmLayout(4).fields.hashHeads.count).toBe(HASH_BUCKETS);
  });

  it('hashGfn is hash_64(gfn, 12) exactly (property, against BigInt arithmetic)', () => {
    for (const g of [0, 1, 0xfff, 2 ** 32 - 1, 2 ** 32, 2 ** 40 - 1, 2 ** 53 - 1]) expect(hashGfn(g)).toBe(hashRef(BigInt(g)));
    fc.assert(fc.property(fc.maxSafeNat(), (g) => hashGfn(g) === hashRef(BigInt(g))), { numRuns: 2000 });
  });
});

describe('reclaim', () => {
  it('fills the arena past n_max_mmu_pages: oldest unused pages are zapped, the limit holds, nothing is handed out twice', () => {
    const { vm, vcpu, pt } = shadowSetup('long4', { maxPages: 32 });
    // 128 guest level-1 tables (one per 2 MiB of address space): 128 shadow pages wanted, 32 allowed.
    for (let i = 0; i < 128; i++) pt.map({ gva: BigInt(i) * 0x20_0000n, gpa: BigInt(DATA_GPA + i * 0x1000) });
    vcpu.guest = pt.root;
    let peak = 0;
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 128; i++) {
        expect(vcpu.access(BigInt(i) * 0x20_0000n, { write: i % 2 === 0 })).toMatchObject({ kind: 'hit', gpa: DATA_GPA + i * 0x1000 });
        peak = Math.max(peak, vm.nUsed);
      }
    }
    const s = agentStats(vm, 0);
    expect(s.recycled).toBeGreaterThan(0);
    expect(s.pagesCreated).toBeGreaterThan(vm.nMax);
    // make_mmu_pages_available is soft: one fault may take a few pages past it.
    expect(peak).toBeLessThanOrEqual(vm.nMax + 4);
    // Every handout is one increment of the page's allocation sequence: no page was handed out without being freed.
    let handouts = 0;
    for (let p = 0; p < vm.capacity; p++) handouts += vm.allocSeqOf(p);
    expect(handouts).toBe(s.pagesCreated);
    expect(audit(vm, new Map([[vcpu.roots.rootHpa, 1]]))).toEqual([]);
  });

  it('changing n_max_mmu_pages zaps down to it, roots excepted', () => {
    const { vm, vcpu } = tdpSetup({ maxPages: 64 });
    for (let i = 0; i < 40; i++) vcpu.access(BigInt(i * 0x20_0000) % BigInt(8 << 20));
    expect(changeMaxPages(vm, 0, 4)).toBe(4);
    expect(vm.nUsed).toBeLessThanOrEqual(4);
    expect(vm.rootCountOf(vcpu.roots.rootHpa)).toBe(1);
    expect(() => changeMaxPages(vm, 0, vm.capacity + 1)).toThrow(/capacity/);
  });

  it('a zapped page waits in limbo while a walker that may see it is walking', async () => {
    const { vm, vcpu } = tdpSetup({ maxPages: 7, capacity: 7 });
    expect(vcpu.access(BigInt(DATA_GPA)).kind).toBe('hit');
    // Agent 1 starts a lockless walk now (before the zap).
    Atomics.store(vm.agentEpoch[1]!, 0, Atomics.load(vm.h.zapSeq, 0) + 1);
    await zapAllFast(vm, 1, { request: () => undefined, wait: async () => {} });
    vcpu.unload();
    expect(vm.limboCount).toBe(4);
    expect(vm.freeCount).toBe(3);
    const limbo = [...Array(vm.capacity).keys()].filter((p) => vm.stateOf(p) === PAGE_STATE.LIMBO);
    const seqs = limbo.map((p) => vm.allocSeqOf(p));
    // Three free pages give the root and two levels, not the leaf's table: reported, limbo untouched.
    expect(vcpu.access(BigInt(DATA_GPA)).kind).toBe('no-pages');
    expect(limbo.map((p) => vm.stateOf(p))).toEqual(limbo.map(() => PAGE_STATE.LIMBO));
    expect(limbo.map((p) => vm.allocSeqOf(p))).toEqual(seqs);
    // The walker ends: the next allocation reclaims limbo.
    Atomics.store(vm.agentEpoch[1]!, 0, 0);
    expect(vcpu.access(BigInt(DATA_GPA)).kind).toBe('hit');
    expect(agentStats(vm, 0).limboReclaimed).toBeGreaterThanOrEqual(4);
    expect(audit(vm, new Map([[vcpu.roots.rootHpa, 1]]))).toEqual([]);
  });

  it('a VM whose pages are all held as roots reports it and corrupts nothing', () => {
    const { vm, mem, alloc } = shadowSetup('long4', { maxPages: 6, capacity: 6, agents: 3 });
    const vcpus = [0, 1, 2].map((a) => new SimVcpu(vm, a, context('long4', { shadow: true }), mem, { pgd: 0n }));
    const outcomes: string[] = [];
    for (let i = 0; i < 4; i++) {
      for (const v of vcpus) {
        const pt = PageTableBuilder.create(mem, alloc, { kind: 'long', levels: 4 });
        pt.map({ gva: 0n, gpa: BigInt(DATA_GPA) });
        v.switchPgd(pt.root);
        outcomes.push(v.access(0n).kind);
      }
    }
    expect(outcomes).toContain('no-pages');
    expect(vmStats(vm).noPages).toBeGreaterThan(0);
    const held = new Map<number, number>();
    for (const v of vcpus) for (const p of v.roots.heldPages()) held.set(p, (held.get(p) ?? 0) + 1);
    expect(audit(vm, held)).toEqual([]);
    for (const v of vcpus) v.unload();
    expect(audit(vm, new Map())).toEqual([]);
  });

  it('reclaim skips pages held as roots', () => {
    const { vm } = tdpSetup({ maxPages: 8, capacity: 9 });
    const role = { roleBase: PAGE_ROLE.encode({ level: 4, access: 7 }), directMap: true };
    const rooted = vm.lock.with(0, () => getPage(vm, 0, role, 7, 0n, 4, true, 7));
    Atomics.add(vm.i32, rooted * vm.sw32 + vm.oRootCount, 1);
    for (let i = 0; i < 50; i++) vm.lock.with(0, () => (makePagesAvailable(vm, 0), getPage(vm, 0, role, 100 + i, 0n, 1, true, 7)));
    expect(vm.stateOf(rooted)).toBe(PAGE_STATE.ACTIVE);
    expect(vm.allocSeqOf(rooted)).toBe(1);
  });
});

type Op =
  | { k: 'access'; v: number; page: number; write: boolean }
  | { k: 'edit'; page: number; to: number }
  | { k: 'cr3'; v: number; space: number }
  | { k: 'zap-all' }
  | { k: 'limit'; max: number }
  | { k: 'unload'; v: number }
  | { k: 'walker'; on: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ k: fc.constant('access' as const), v: fc.nat(2), page: fc.nat(63), write: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('edit' as const), page: fc.nat(63), to: fc.nat(255) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('cr3' as const), v: fc.nat(2), space: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.constant({ k: 'zap-all' as const }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('limit' as const), max: fc.integer({ min: 6, max: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('unload' as const), v: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('walker' as const), on: fc.boolean() }) },
);

describe('property: random use never breaks the cache', () => {
  it('audit passes after every step, roots are counted exactly, and every hit translates to the current guest mapping', async () => {
    const seed = testSeed('shadow-arena-property');
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 60 }), async (ops) => {
        const s = shadowSetup('long4', { maxPages: 24, capacity: 40, agents: 4 });
        // Four address spaces; 64 pages spread over 32 MiB of address space (16 level-1 tables each).
        const spaces = [s.pt, ...[1, 2, 3].map(() => PageTableBuilder.create(s.mem, s.alloc, { kind: 'long', levels: 4 }))];
        const gvaOf = (page: number): bigint => BigInt(page) * 0x8_0000n;
        spaces.forEach((pt, sp) => {
          for (let p = 0; p < 64; p++) pt.map({ gva: gvaOf(p), gpa: BigInt(DATA_GPA + ((p + 16 * sp) % 256) * 0x1000) });
        });
        const vcpus = [0, 1, 2].map((a) => new SimVcpu(s.vm, a, context('long4', { shadow: true, wp: a !== 1 }), s.mem, spaces[0]!.root));
        const space = [0, 0, 0];
        for (const op of ops) {
          await step(op);
          const held = new Map<number, number>();
          for (const v of vcpus) for (const p of v.roots.heldPages()) held.set(p, (held.get(p) ?? 0) + 1);
          const bad = audit(s.vm, held);
          if (bad.length) throw new Error(`after ${JSON.stringify(op)}: ${bad.join('; ')}`);
        }
        async function step(op: Op): Promise<void> {
          switch (op.k) {
            case 'access': {
              const v = vcpus[op.v]!;
              const r = v.access(gvaOf(op.page), { write: op.write });
              const want = Number(spaces[space[op.v]!]!.leafAddress(spaces[space[op.v]!]!.leaf(gvaOf(op.page))!));
              if (r.kind === 'hit' && r.gpa !== want) throw new Error(`stale translation: ${r.gpa} instead of ${want}`);
              if (r.kind !== 'hit' && r.kind !== 'no-pages') throw new Error(`access ended with ${r.kind}`);
              return;
            }
            case 'edit': {
              // The guest edits a leaf of space 0, then the write is reported (page tracking).
              const pt = spaces[0]!;
              const e = pt.remap(gvaOf(op.page), BigInt(DATA_GPA + op.to * 0x1000));
              trackedWrite(s.vm, 3, e.pa);
              return;
            }
            case 'cr3':
              space[op.v] = op.space;
              vcpus[op.v]!.switchPgd(spaces[op.space]!.root);
              return;
            case 'zap-all':
              await zapAllFast(s.vm, 3, { request: () => undefined, wait: async () => {} });
              // Every vCPU handles its MMU_RELOAD before its next entry.
              for (const v of vcpus) v.unload();
              return;
            case 'limit':
              changeMaxPages(s.vm, 3, op.max);
              return;
            case 'unload':
              vcpus[op.v]!.unload();
              return;
            case 'walker':
              Atomics.store(s.vm.agentEpoch[3]!, 0, op.on ? Atomics.load(s.vm.h.zapSeq, 0) + 1 : 0);
              return;
          }
        }
        Atomics.store(s.vm.agentEpoch[3]!, 0, 0);
        for (const v of vcpus) v.unload();
        expect(audit(s.vm, new Map())).toEqual([]);
        // With nobody walking, zapped pages all come back.
        s.vm.lock.with(3, () => reclaimLimbo(s.vm, 3));
        expect(s.vm.limboCount).toBe(0);
        expect(s.vm.h.activeHead[0] === NIL || s.vm.nUsed > 0).toBe(true);
      }),
      { seed, numRuns: 60 },
    );
  });
});

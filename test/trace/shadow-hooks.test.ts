/**
 * The shadow cache's kvmmmu tracepoints, driven through the shadow tests'
 * single-thread fixtures: a shadow-paging fault walks the guest tables
 * (kvm_mmu_pagetable_walk) and creates pages (kvm_mmu_get_page new), a
 * second fault on the same tables finds them (existing), a guest fault ends
 * in kvm_mmu_walker_error, and a zap-all traces kvm_mmu_zap_all_fast with
 * the old generation, then kvm_mmu_prepare_zap_page for each page. Without
 * a tracer the same paths run untraced.
 */
import { describe, expect, it } from 'vitest';
import { PFERR } from '../../src/paging/index.js';
import { PAGE_ROLE } from '../../src/role/page-role.js';
import { vmStats, zapAllFast, type ReloadBroadcast } from '../../src/shadow/index.js';
import { allocateTraceRings, EV, EVENT_WORDS, ftraceText, readTraceRings, Tracer, type RingSnapshot } from '../../src/trace/index.js';
import { W } from '../../src/trace/ring.js';
import { DATA_GPA, shadowSetup } from '../shadow/fixtures.js';

const GVA = 0x4000_0000n;

const noWaitReload: ReloadBroadcast<void> = { request: () => {}, wait: async () => {} };

/** [kind, a0, a1, a2, a3] of every event. */
function rows(s: RingSnapshot): number[][] {
  const out: number[][] = [];
  for (let o = 0; o < s.events.length; o += EVENT_WORDS) out.push([s.events[o + W.KIND]!, s.events[o + W.A0]!, s.events[o + W.A1]!, s.events[o + W.A2]!, s.events[o + W.A3]!]);
  return out;
}

function tracedSetup() {
  const s = shadowSetup('long4');
  const rings = allocateTraceRings(1, 1024);
  const vcpuTracer = Tracer.attach(rings, 0);
  const coordTracer = Tracer.attach(rings, 'coordinator');
  // Agent 0 is the vCPU, agent 1 the coordinator (the fixtures' VM has two agents).
  s.vm.setHooks(0, { ...s.vm.hooks[0], trace: vcpuTracer });
  s.vm.setHooks(1, { ...s.vm.hooks[1], trace: coordTracer });
  return { ...s, rings };
}

describe('kvmmmu tracepoints of the shadow cache', () => {
  it('a shadow fault: the root, then one pagetable walk, then new pages down to level 1; a reload finds the root', () => {
    const { vcpu, pt, rings } = tracedSetup();
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
    pt.map({ gva: GVA + 0x1000n, gpa: BigInt(DATA_GPA + 0x1000) });
    expect(vcpu.access(GVA, { write: true }).kind).toBe('hit');
    // kvm_mmu_unload, then the next entry's kvm_mmu_load looks the root up again; FNAME(fetch) calls
    // kvm_mmu_get_page only below a non-present SPTE, so the second fault creates nothing.
    vcpu.unload();
    expect(vcpu.access(GVA + 0x1000n).kind).toBe('hit');
    const ev = rows(readTraceRings(rings)[0]!);
    const kinds = ev.map((r) => r[0]);
    expect(kinds).toEqual([
      EV.GET_PAGE, // kvm_mmu_load: the level-4 root
      EV.PAGETABLE_WALK,
      EV.GET_PAGE, // level 3
      EV.GET_PAGE, // level 2
      EV.GET_PAGE, // level 1
      EV.GET_PAGE, // the root again, existing
      EV.PAGETABLE_WALK,
    ]);
    const created = ev.filter((r) => r[0] === EV.GET_PAGE).map((r) => r[4]! % 2);
    expect(created).toEqual([1, 1, 1, 1, 0]);
    const levels = ev.filter((r) => r[0] === EV.GET_PAGE).map((r) => PAGE_ROLE.get(r[2]!, 'level'));
    expect(levels).toEqual([4, 3, 2, 1, 4]);
    // The walk traces the address and the error code less RSVD (FNAME(page_fault)).
    expect(ev[1]!.slice(1, 4)).toEqual([Number(GVA & 0xffff_ffffn), 0, PFERR.WRITE]);
    // Roots counted at lookup time: the root page itself was created with root_count 0.
    expect(ev[0]![3]).toBe(0);
    const text = ftraceText(rings, { style: 'tracefs', header: false });
    expect(text).toContain('kvm_mmu_pagetable_walk: addr 40000000 pferr 2 W');
    expect(text).toMatch(/kvm_mmu_get_page: sp gen 0 gfn [0-9a-f]+ l1 8-byte q0 wux !?nxe !?ad root 0 sync new/);
    expect(text).toMatch(/kvm_mmu_get_page: sp gen 0 gfn [0-9a-f]+ l4 8-byte q0 wux !?nxe !?ad root 0 sync existing/);
  });

  it('a guest fault: pagetable walk, then walker error with the fault\'s error code', () => {
    const { vcpu, pt, rings } = tracedSetup();
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA), perms: { user: false } });
    const r = vcpu.access(GVA, { user: true });
    expect(r.kind).toBe('guest-fault');
    const ev = rows(readTraceRings(rings)[0]!);
    const last = ev.at(-1)!;
    expect(last[0]).toBe(EV.WALKER_ERROR);
    if (r.kind === 'guest-fault') expect(last[1]).toBe(r.fault.errorCode);
    expect(ev.at(-2)![0]).toBe(EV.PAGETABLE_WALK);
    expect(ev.at(-2)![3]).toBe(PFERR.USER);
  });

  it('zap-all: kvm_mmu_zap_all_fast with the old generation on the caller\'s track, then one prepare_zap_page per page', async () => {
    const { vm, vcpu, pt, rings } = tracedSetup();
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
    expect(vcpu.access(GVA).kind).toBe('hit');
    const used = vm.nUsed;
    expect(used).toBe(4);
    const { generation } = await zapAllFast(vm, 1, noWaitReload);
    expect(generation).toBe(1);
    const co = rows(readTraceRings(rings)[1]!);
    expect(co[0]).toEqual([EV.ZAP_ALL_FAST, 0, used, 0, 0]);
    const zaps = co.slice(1);
    expect(zaps.every((r) => r[0] === EV.PREPARE_ZAP_PAGE)).toBe(true);
    expect(zaps).toHaveLength(vmStats(vm).zapped);
    // Pages of generation 0; the root still held by the vCPU has root count 1.
    expect(zaps.every((r) => r[4] === 0)).toBe(true);
    expect(zaps.filter((r) => r[3] === 1)).toHaveLength(1);
    const text = ftraceText(rings, { style: 'tracefs', header: false });
    expect(text).toContain(`kvm_mmu_zap_all_fast: kvm-mmu-valid-gen 0 used_pages ${used.toString(16)}`);
    expect(text).toMatch(/kvm_mmu_prepare_zap_page: sp gen 0 gfn [0-9a-f]+ l4 8-byte q0 wux !?nxe !?ad root 1 sync/);
  });

  it('without a tracer the same paths run and nothing is recorded', async () => {
    const { vm, vcpu, pt } = shadowSetup('long4');
    const rings = allocateTraceRings(1, 16);
    pt.map({ gva: GVA, gpa: BigInt(DATA_GPA) });
    expect(vcpu.access(GVA).kind).toBe('hit');
    await zapAllFast(vm, 1, noWaitReload);
    expect(readTraceRings(rings).map((r) => r.written)).toEqual([0, 0]);
    expect(vm.hooks[0]?.trace).toBeUndefined();
  });
});

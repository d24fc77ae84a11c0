/**
 * Tracing wired into a running VM (real piscina workers, one per vCPU): the
 * vCPUs and the coordinator write their rings while the VM runs, and after
 * destroy() `writeTrace` leaves a Chrome Trace Event JSON file whose every
 * event has the fields its phase needs, one thread track per vCPU (guest
 * spans, mmu-init spans, the shadow cache's kvmmmu instants), a coordinator
 * track with the broadcasts and their waits and the shadow-pages counter,
 * and an ftrace text file with each vCPU's kvm_mmu_get_page lines. A small
 * ring keeps the newest events only and says how many it dropped.
 * Seeds are printed on failure.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ctx, SEED, vmPerTest } from './fixture.js';
import { DEFAULT_CPUID } from '../../src/cpuid/cpuid.js';
import { DEFAULT_HOST } from '../../src/role/host.js';
import type { ChromeEvent } from '../../src/trace/index.js';
import { REQ } from '../../src/vcpu/requests.js';

const dir = mkdtempSync(join(tmpdir(), 'kvm-mmu-emu-trace-vm-'));

const createVm = vmPerTest({ policy: 'legacy' });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const waitFor = async (cond: () => boolean, what: string, ms = 30_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} ${ctx}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

/** The fields each phase needs (Trace Event Format): the first problem, or null. */
function badEvent(e: Partial<ChromeEvent>): string | null {
  const where = () => JSON.stringify(e).slice(0, 200);
  if (typeof e.name !== 'string' || !e.name) return `no name: ${where()}`;
  if (!['X', 'i', 'C', 'M'].includes(e.ph as string)) return `unexpected ph: ${where()}`;
  if (typeof e.ts !== 'number' || !Number.isFinite(e.ts) || e.ts < 0) return `bad ts: ${where()}`;
  if (!Number.isInteger(e.pid) || !Number.isInteger(e.tid)) return `bad pid/tid: ${where()}`;
  if (e.ph === 'X' && (typeof e.dur !== 'number' || !Number.isFinite(e.dur) || e.dur < 0)) return `X without dur: ${where()}`;
  if (e.ph === 'i' && !['t', 'p', 'g'].includes(e.s as string)) return `i without s: ${where()}`;
  if (e.ph === 'C' && (typeof e.args !== 'object' || !Object.values(e.args!).every((v) => typeof v === 'number'))) return `C without numeric args: ${where()}`;
  if (e.ph === 'M' && typeof e.args !== 'object') return `M without args: ${where()}`;
  return null;
}

function readChrome(path: string): { otherData: Record<string, unknown>; traceEvents: ChromeEvent[] } {
  const j = JSON.parse(readFileSync(path, 'utf8'));
  expect(Array.isArray(j.traceEvents), ctx).toBe(true);
  expect(j.traceEvents.map(badEvent).filter(Boolean).slice(0, 5), ctx).toEqual([]);
  return j;
}

const SHADOW_HOST = { ...DEFAULT_HOST, tdpEnabled: false };

describe('a VM recording a trace', () => {
  it('writes a Chrome trace with one track per vCPU and a coordinator track, and kvmmmu ftrace text', async () => {
    const N = 3;
    const v = await createVm({ vcpus: N, host: SHADOW_HOST, trace: { capacity: 1 << 16 }, editTarget: true, check: 'sampled', mix: { hlt: 1 } });
    expect(v.tracer, ctx).toBeDefined();
    const busy = (id: number) => v.vcpuStats(id).guestEntries > 20 && v.vcpuStats(id).shadowExits > 0 && v.vcpuStats(id).halts > 0;
    await waitFor(() => v.records.every((_, id) => busy(id)), 'guest entries, shadow faults and halts on every vCPU');
    for (let k = 1; k <= 2; k++) await v.broadcastCpuid({ ...DEFAULT_CPUID, maxPhyAddr: 38 + k });
    await v.makeAllCpusRequest(REQ.MMU_RELOAD, { wait: true });
    await v.makeAllCpusRequest(REQ.TLB_FLUSH, { wait: false });
    await v.ping();
    await v.zapAllFast();
    v.flipEditTarget();
    await v.zapAllPages();
    await waitFor(() => v.totals().guestEntries > 200, 'more guest entries');
    await v.destroy();

    const chrome = join(dir, 'vm.json');
    const ftrace = join(dir, 'vm.txt');
    expect(v.writeTrace({ chrome, ftrace, metadata: { test: 'trace-vm' } })).toEqual([chrome, ftrace]);

    const j = readChrome(chrome);
    expect(j.otherData, ctx).toMatchObject({ generator: 'kvm-mmu-emu', strategy: 'valid-bit', vcpus: N, test: 'trace-vm' });
    const names = (tid: number, ph?: string) => new Set(j.traceEvents.filter((e) => e.tid === tid && (!ph || e.ph === ph)).map((e) => e.name));
    const count = (tid: number, pred: (e: ChromeEvent) => boolean) => j.traceEvents.filter((e) => e.tid === tid && pred(e)).length;
    const threadNames = j.traceEvents.filter((e) => e.ph === 'M' && e.name === 'thread_name').map((e) => [e.tid, (e.args as { name: string }).name]);
    expect(new Map(threadNames as [number, string][]), ctx).toEqual(new Map([[0, 'coordinator'], ...Array.from({ length: N }, (_, i) => [i + 1, `vCPU ${i}`] as [number, string])]));

    for (let id = 0; id < N; id++) {
      const tid = id + 1;
      const spans = names(tid, 'X');
      expect(spans.has('guest'), `vCPU ${id} guest spans ${ctx}`).toBe(true);
      expect(count(tid, (e) => e.ph === 'X' && e.name.startsWith('mmu-init')), `vCPU ${id} mmu-init spans ${ctx}`).toBeGreaterThan(0);
      expect(spans.has('requests'), `vCPU ${id} request spans ${ctx}`).toBe(true);
      expect(spans.has('shadow-fault'), `vCPU ${id} shadow-fault spans ${ctx}`).toBe(true);
      expect(spans.has('halt'), `vCPU ${id} halt spans ${ctx}`).toBe(true);
      expect(spans.has('mmu-load'), `vCPU ${id} mmu-load spans ${ctx}`).toBe(true);
      expect(names(tid, 'i').has('kvm_mmu_get_page'), `vCPU ${id} get_page ${ctx}`).toBe(true);
      // The vCPU's spans are on its own track only: nothing of the coordinator's.
      expect([...spans].some((n) => n.startsWith('broadcast') || n.startsWith('wait')), ctx).toBe(false);
    }
    const init = j.traceEvents.find((e) => e.name.startsWith('mmu-init'))!;
    expect(init.args, ctx).toMatchObject({ context: expect.stringMatching(/^(root|guest|nested)_mmu$/), path: expect.stringMatching(/^(fast|rebuild)$/) });
    const fault = j.traceEvents.find((e) => e.name === 'shadow-fault')!;
    expect(fault.args, ctx).toMatchObject({ addr: expect.stringMatching(/^0x/), outcome: expect.any(String) });

    // (No 'wait reload' required: a waiting request waits only for the vCPUs it caught in guest mode, maybe none.)
    const coord = names(0);
    for (const n of ['broadcast cpuid', 'wait cpuid', 'broadcast reload', 'broadcast other', 'broadcast ping', 'wait ping', 'broadcast zap-all', 'shadow-pages', 'kvm_mmu_zap_all_fast']) {
      expect(coord.has(n), `coordinator ${n} ${ctx}`).toBe(true);
    }
    expect(count(0, (e) => e.name === 'broadcast cpuid'), ctx).toBe(2);
    const cpuid = j.traceEvents.find((e) => e.name === 'broadcast cpuid')!;
    expect(cpuid.args, ctx).toEqual({ kind: 'cpuid', targets: N });
    // The coordinator's wait lies inside its broadcast.
    const wait = j.traceEvents.find((e) => e.name === 'wait cpuid')!;
    expect(wait.ts, ctx).toBeGreaterThanOrEqual(cpuid.ts);
    expect(wait.ts + wait.dur!, ctx).toBeLessThanOrEqual(cpuid.ts + cpuid.dur! + 0.002);
    // The counter ends at zero: teardown zapped every page.
    const pages = j.traceEvents.filter((e) => e.name === 'shadow-pages');
    expect((pages.at(-1)!.args as { pages: number }).pages, ctx).toBe(0);
    expect(Math.max(...pages.map((e) => (e.args as { pages: number }).pages)), ctx).toBeGreaterThan(0);

    const text = readFileSync(ftrace, 'utf8');
    expect(text.split('\n')[0], ctx).toBe(`cpus=${N + 1}`);
    for (let id = 0; id < N; id++) {
      const pid = 4001 + id;
      const re = new RegExp(`^ +vcpu-${id}-${pid} +\\[00${id}\\] \\.\\.\\.1\\. +\\d+\\.\\d{6}: kvm_mmu_get_page: +(new|existing) sp gfn [0-9a-f]+ `, 'm');
      expect(text, `vCPU ${id} kvm_mmu_get_page lines ${ctx}`).toMatch(re);
    }
    expect(text, ctx).toMatch(/kvm-mmu-emu-4000 +\[003\] \.\.\.1\. +\d+\.\d{6}: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen \d+ used_pages [0-9a-f]+/);
  }, 120_000);

  it('keeps only the newest events of a small ring and says how many it dropped', async () => {
    const v = await createVm({ vcpus: 2, trace: { capacity: 64 } });
    await waitFor(() => v.records.every((_, id) => v.vcpuStats(id).guestEntries > 200), 'guest entries on every vCPU');
    await v.broadcastCpuid({ ...DEFAULT_CPUID, maxPhyAddr: 40 });
    await v.destroy();
    const chrome = join(dir, 'small.json');
    v.writeTrace({ chrome });
    const j = readChrome(chrome);
    const dropped = j.otherData.droppedEvents as Record<string, number>;
    expect(dropped['vCPU 0'], ctx).toBeGreaterThan(0);
    expect(dropped['vCPU 1'], ctx).toBeGreaterThan(0);
    for (const tid of [1, 2]) {
      expect(j.traceEvents.filter((e) => e.tid === tid && e.ph !== 'M').length, ctx).toBe(64);
      const name = j.traceEvents.find((e) => e.tid === tid && e.name === 'thread_name')!.args as { name: string };
      expect(name.name, ctx).toMatch(/^vCPU \d \(\d+ older events dropped\)$/);
    }
  }, 120_000);

  it('a VM without trace records nothing and has nothing to write', async () => {
    const v = await createVm({ vcpus: 1 });
    expect(v.tracer, ctx).toBeUndefined();
    expect(v.traceRings, ctx).toBeNull();
    await v.destroy();
    expect(() => v.writeTrace({ chrome: join(dir, 'none.json') }), ctx).toThrow(/records no trace/);
  }, 60_000);
});

/**
 * Rings → Chrome Trace Event JSON: the file parses, every event has the
 * fields its phase requires (name, ph, ts, pid, tid; dur for X; s for i;
 * an args object for C and M), tracks are named, times are µs from the
 * earliest event, arguments are decoded, drops are reported.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FORMAT_V517 } from '../../src/role/ext-role.js';
import { PAGE_ROLE } from '../../src/role/page-role.js';
import { allocateTraceRings, chromeTraceText, EV, requestNames, Tracer, writeChromeTrace, type ChromeEvent, type TraceRingsHandle } from '../../src/trace/index.js';
import { REQ } from '../../src/vcpu/requests.js';

const dir = mkdtempSync(join(tmpdir(), 'trace-chrome-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface ChromeFile {
  traceEvents: ChromeEvent[];
  displayTimeUnit: string;
  otherData: { droppedEvents: Record<string, number>; writtenEvents: Record<string, number>; timeBase: number; strategy?: string };
}

const ROLE = PAGE_ROLE.encode({ level: 4, direct: 1, access: 7, efer_nx: 1, cr0_wp: 1 });
const EXT = FORMAT_V517.ext.encode({ valid: 1, cr0_pg: 1, cr4_pae: 1, efer_lma: 1 });

/** Every kind of event on two vCPUs and the coordinator; vCPU 1's ring overflows. */
function everyKind(): TraceRingsHandle {
  const h = allocateTraceRings(2, 16);
  const v0 = Tracer.attach(h, 0);
  const v1 = Tracer.attach(h, 1);
  const co = Tracer.attach(h, 'coordinator');
  // The earliest event: every later one is stamped with now() >= t0.
  const t0 = v0.now();
  v0.span(EV.GUEST, t0, t0 + 2.5);
  v0.span(EV.REQUESTS, t0 + 2.5, t0 + 2.75, (1 << REQ.MMU_RELOAD.bit) | (1 << REQ.TLB_FLUSH.bit));
  v0.mmuInit(v0.now(), 'root_mmu', true, ROLE, EXT);
  v0.mmuInit(v0.now(), 'guest_mmu', false, ROLE, EXT);
  v0.shadowFault(v0.now(), 0xffff_8000_0000_1000n, 0x3, 'fixed');
  v0.halt(v0.now());
  v0.mmuLoad(v0.now(), 'no-pages');
  v0.getPage(0x1234, ROLE, true, 0, 0);
  v0.prepareZap(0x1234, ROLE, 1, 0);
  v0.pagetableWalk(0x4000_1000n, 0x2);
  v0.walkerError(0x6);
  co.broadcast(co.now(), 'cpuid', 2);
  co.wait(co.now(), 'zap-all', 2);
  co.zapAllFast(0, 12);
  co.shadowPages(12);
  for (let i = 0; i < 19; i++) v1.guest(v1.now());
  return h;
}

const parse = (text: string): ChromeFile => JSON.parse(text) as ChromeFile;

function checkRequiredFields(e: ChromeEvent): void {
  expect(typeof e.name).toBe('string');
  expect(['X', 'i', 'C', 'M']).toContain(e.ph);
  expect(Number.isFinite(e.ts)).toBe(true);
  expect(Number.isInteger(e.pid)).toBe(true);
  expect(Number.isInteger(e.tid)).toBe(true);
  if (e.ph === 'X') expect(e.dur! >= 0 && Number.isFinite(e.dur)).toBe(true);
  if (e.ph === 'i') expect(e.s).toBe('t');
  if (e.ph === 'C' || e.ph === 'M') expect(typeof e.args).toBe('object');
}

describe('Chrome trace JSON', () => {
  it('round trip: parses, and every event has the fields its phase requires', () => {
    const path = join(dir, 'every.json');
    const chars = writeChromeTrace(path, everyKind(), { metadata: { strategy: 'valid-bit' } });
    const text = readFileSync(path, 'utf8');
    expect(text.length).toBe(chars);
    const f = parse(text);
    expect(f.displayTimeUnit).toBe('ms');
    expect(f.otherData.strategy).toBe('valid-bit');
    for (const e of f.traceEvents) checkRequiredFields(e);
    const phases = new Set(f.traceEvents.map((e) => e.ph));
    expect([...phases].sort()).toEqual(['C', 'M', 'X', 'i']);
  });

  it('one pid, one named thread per vCPU and the coordinator; drops in otherData and the thread name', () => {
    const f = parse(chromeTraceText(everyKind()));
    expect(new Set(f.traceEvents.map((e) => e.pid))).toEqual(new Set([1]));
    const names = f.traceEvents.filter((e) => e.name === 'thread_name').map((e) => [e.tid, (e.args as { name: string }).name]);
    expect(names).toEqual([
      [0, 'coordinator'],
      [1, 'vCPU 0'],
      [2, 'vCPU 1 (3 older events dropped)'],
    ]);
    expect(f.traceEvents.find((e) => e.name === 'process_name')?.args).toEqual({ name: 'kvm-mmu-emu VM' });
    expect(f.otherData.droppedEvents).toEqual({ coordinator: 0, 'vCPU 0': 0, 'vCPU 1': 3 });
    expect(f.otherData.writtenEvents['vCPU 1']).toBe(19);
    expect(f.traceEvents.filter((e) => e.tid === 2 && e.ph === 'X')).toHaveLength(16);
  });

  it('times are µs from the earliest event; spans keep their duration', () => {
    const f = parse(chromeTraceText(everyKind()));
    const timed = f.traceEvents.filter((e) => e.ph !== 'M');
    expect(Math.min(...timed.map((e) => e.ts))).toBe(0);
    const guest = f.traceEvents.find((e) => e.name === 'guest' && e.tid === 1)!;
    expect(guest.ts).toBe(0);
    expect(guest.dur).toBe(2500);
    const req = f.traceEvents.find((e) => e.name === 'requests')!;
    expect([req.ts, req.dur]).toEqual([2500, 250]);
  });

  it('decodes arguments: request names, roles in hex and kvmmmu notation, codes by name', () => {
    const f = parse(chromeTraceText(everyKind()));
    const by = (name: string) => f.traceEvents.find((e) => e.name === name)!;
    expect(by('requests').args).toEqual({ bits: '0x12', requests: 'MMU_RELOAD|TLB_FLUSH' });
    expect(by('mmu-init rebuild').args).toMatchObject({ context: 'root_mmu', path: 'rebuild', base: `0x${ROLE.toString(16)}`, baseRole: 'l4 8-byte q0 direct wux nxe ad' });
    expect((by('mmu-init rebuild').args as { extRole: string }).extRole).toContain('valid=1');
    expect(by('mmu-init fast').args).toMatchObject({ context: 'guest_mmu', path: 'fast' });
    expect(by('shadow-fault').args).toEqual({ addr: '0xffff800000001000', errorCode: '0x3', flags: 'P|W', outcome: 'fixed' });
    expect(by('mmu-load').args).toEqual({ result: 'no-pages' });
    expect(by('broadcast cpuid').args).toEqual({ kind: 'cpuid', targets: 2 });
    expect(by('wait zap-all').args).toEqual({ kind: 'zap-all', targets: 2 });
    expect(by('shadow-pages')).toMatchObject({ ph: 'C', args: { pages: 12 } });
    expect(by('kvm_mmu_get_page')).toMatchObject({ ph: 'i', s: 't', cat: 'kvmmmu', args: { gfn: '0x1234', created: true, text: 'sp gen 0 gfn 1234 l4 8-byte q0 direct wux nxe ad root 0 sync new' } });
    expect(by('kvm_mmu_prepare_zap_page').args).toMatchObject({ rootCount: 1 });
    expect(by('kvm_mmu_zap_all_fast').args).toMatchObject({ gen: 0, usedPages: 12, text: 'kvm-mmu-valid-gen 0 used_pages c' });
    expect(by('kvm_mmu_pagetable_walk').args).toEqual({ addr: '0x40001000', pferr: '0x2', text: 'addr 40001000 pferr 2 W' });
    expect(by('kvm_mmu_walker_error').args).toEqual({ pferr: '0x6', text: 'pferr 6 W|U' });
    expect(requestNames(1 << 31)).toBe('bit31');
  });

  it('a span nested in another stays inside it after rounding to ns', () => {
    const h = allocateTraceRings(1, 4_096);
    const t = Tracer.attach(h, 0);
    let x = 0x2545f491;
    const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32) * 0.01;
    const pairs = 1_000;
    for (let i = 0, at = 0; i < pairs; i++, at += 1) {
      const cs = at + rnd();
      const ce = cs + rnd();
      t.span(EV.MMU_INIT, cs, ce);
      t.span(EV.REQUESTS, at, ce + rnd() / 1e6);
    }
    const f = parse(chromeTraceText(h));
    const inits = f.traceEvents.filter((e) => e.name.startsWith('mmu-init'));
    const reqs = f.traceEvents.filter((e) => e.name === 'requests');
    expect(inits).toHaveLength(pairs);
    const outside = inits.filter((c, i) => c.ts < reqs[i]!.ts || c.ts + c.dur! > reqs[i]!.ts + reqs[i]!.dur! + 1e-9);
    expect(outside).toEqual([]);
  });

  it('an empty set is still a valid trace', () => {
    const f = parse(chromeTraceText(allocateTraceRings(1, 4)));
    for (const e of f.traceEvents) checkRequiredFields(e);
    expect(f.traceEvents.every((e) => e.ph === 'M')).toBe(true);
  });
});

/**
 * The kvmmmu ftrace text. Expected lines are written by hand from the
 * formats they reproduce (cited per case), not from the exporter:
 *
 * - bodies: Linux v5.17 arch/x86/kvm/mmu/mmutrace.h TP_printk, e.g.
 *   KVM_MMU_PAGE_PRINTK "sp gen %u gfn %llx l%u %u-byte q%u%s %s%s %snxe
 *   %sad root %u %s%c"; kvm_mmu_get_page "%s %s" (page, new/existing);
 *   kvm_mmu_zap_all_fast "kvm-mmu-valid-gen %u used_pages %x";
 *   kvm_mmu_pagetable_walk "addr %llx pferr %x %s"; kvm_mmu_walker_error
 *   "pferr %x %s", the %s being __print_flags(pferr, "|", P W U RSVD F);
 * - tracefs line: kernel/trace/trace_output.c trace_print_context
 *   "%16s-%-7d " "[%03d] ", trace_print_lat_fmt (5 flag characters),
 *   trace_print_time " %5lu.%06lu", then ": " and "%s: " (event name);
 * - trace-cmd line: trace-cmd 3.4 trace-read.c "%16s-%-5d [%03d]", " %s"
 *   (latency), " %6.1000d:" (libtraceevent: "%5llu.%06llu"), " %s: " padded
 *   to 20 name characters; bodies of get_page / prepare_zap_page from
 *   libtraceevent plugin_kvm.c: "%s " (new/existing) "sp gfn %llx " then
 *   "%u q%u%s %s%s %spae %snxe %swp%s%s%s" " root %u " "%s" (sync).
 */
import { describe, expect, it } from 'vitest';
import { PAGE_ROLE } from '../../src/role/page-role.js';
import { allocateTraceRings, EV, ftraceText, kvmmmuBody, printFlags, PFERR_FLAGS, readTraceRings, Tracer, type TraceRingsHandle } from '../../src/trace/index.js';

/** level 4, direct, access wux, efer_nx: "l4 8-byte q0 direct wux nxe ad". */
const ROLE_DIRECT = PAGE_ROLE.encode({ level: 4, direct: 1, access: 7, efer_nx: 1 });
/** level 2, 4-byte, quadrant 3, wux, invalid, cr0_wp, smm; efer_nx clear. */
const ROLE_32 = PAGE_ROLE.encode({ level: 2, has_4_byte_gpte: 1, quadrant: 3, access: 7, invalid: 1, cr0_wp: 1, smm: 1 });

/** A trace with known timestamps (ms): a guest span at 0 sets the base. */
function sample(): TraceRingsHandle {
  const h = allocateTraceRings(2, 64);
  const v0 = Tracer.attach(h, 0);
  const v1 = Tracer.attach(h, 1);
  const co = Tracer.attach(h, 'coordinator');
  v0.span(EV.GUEST, 0, 5);
  // span(kind, start, end, ...) stamps an event at `start`: used here to pin instants' times.
  v0.span(EV.PAGETABLE_WALK, 1.001, 1.001, 0x0040_1000, 0x7f00, 0x7);
  v0.span(EV.GET_PAGE, 1.002, 1.002, 0x1234, ROLE_DIRECT, 0, 0 * 2 + 1);
  v1.span(EV.WALKER_ERROR, 1.0016, 1.0016, 0x25);
  v1.span(EV.GET_PAGE, 2_000.5, 2_000.5, 0x1234, ROLE_DIRECT, 3, 1 * 2 + 0);
  co.span(EV.ZAP_ALL_FAST, 1_500, 1_500, 1, 26);
  co.span(EV.PREPARE_ZAP_PAGE, 1_500.25, 1_500.25, 0xabc, ROLE_32, 2, 1);
  v0.span(EV.WALKER_ERROR, 3_000, 3_000, 0);
  return h;
}

describe('kvmmmu bodies (mmutrace.h TP_printk, v5.17)', () => {
  it('__print_flags: names joined by "|", unknown bits as 0x…, nothing for 0', () => {
    expect(printFlags(0x7, '|', PFERR_FLAGS)).toBe('P|W|U');
    expect(printFlags(0x19, '|', PFERR_FLAGS)).toBe('P|RSVD|F');
    expect(printFlags(0x25, '|', PFERR_FLAGS)).toBe('P|U|0x20');
    expect(printFlags(0, '|', PFERR_FLAGS)).toBe('');
  });

  it('every kvmmmu kind, kernel text', () => {
    expect(kvmmmuBody(EV.GET_PAGE, 0x1234, ROLE_DIRECT, 0, 1)).toBe('sp gen 0 gfn 1234 l4 8-byte q0 direct wux nxe ad root 0 sync new');
    expect(kvmmmuBody(EV.GET_PAGE, 0x1234, ROLE_DIRECT, 3, 2)).toBe('sp gen 1 gfn 1234 l4 8-byte q0 direct wux nxe ad root 3 sync existing');
    expect(kvmmmuBody(EV.PREPARE_ZAP_PAGE, 0xabc, ROLE_32, 2, 1)).toBe('sp gen 1 gfn abc l2 4-byte q3 wux invalid !nxe ad root 2 sync');
    expect(kvmmmuBody(EV.ZAP_ALL_FAST, 1, 26, 0, 0)).toBe('kvm-mmu-valid-gen 1 used_pages 1a');
    expect(kvmmmuBody(EV.PAGETABLE_WALK, 0x0040_1000, 0x7f00, 0x7, 0)).toBe('addr 7f0000401000 pferr 7 P|W|U');
    expect(kvmmmuBody(EV.PAGETABLE_WALK, 0x1000, 0, 0x10, 0)).toBe('addr 1000 pferr 10 F');
    expect(kvmmmuBody(EV.WALKER_ERROR, 0x25, 0, 0, 0)).toBe('pferr 25 P|U|0x20');
    expect(kvmmmuBody(EV.WALKER_ERROR, 0, 0, 0, 0)).toBe('pferr 0 ');
    expect(kvmmmuBody(EV.GUEST, 0, 0, 0, 0)).toBeNull();
  });

  it('get_page and prepare_zap_page as trace-cmd\'s kvm plugin prints them', () => {
    expect(kvmmmuBody(EV.GET_PAGE, 0x1234, ROLE_DIRECT, 0, 1, 'trace-cmd')).toBe('new sp gfn 1234 4 q0 direct wux !pae nxe !wp root 0 sync');
    expect(kvmmmuBody(EV.PREPARE_ZAP_PAGE, 0xabc, ROLE_32, 2, 1, 'trace-cmd')).toBe('2 q3 wux invalid pae !nxe wp smm root 2 sync');
    expect(kvmmmuBody(EV.ZAP_ALL_FAST, 1, 26, 0, 0, 'trace-cmd')).toBe('kvm-mmu-valid-gen 1 used_pages 1a');
  });
});

describe('whole files', () => {
  it('tracefs style: header, one task per vCPU, merged in timestamp order', () => {
    const text = ftraceText(sample(), { style: 'tracefs' });
    expect(text.split('\n')).toEqual([
      '# tracer: nop',
      '#',
      '# entries-in-buffer/entries-written: 7/7   #P:3',
      '#',
      '#                                _-----=> irqs-off/BH-disabled',
      '#                               / _----=> need-resched',
      '#                              | / _---=> hardirq/softirq',
      '#                              || / _--=> preempt-depth',
      '#                              ||| / _-=> migrate-disable',
      '#                              |||| /     delay',
      '#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION',
      '#              | |         |   |||||     |         |',
      '          vcpu-0-4001    [000] .....     0.001001: kvm_mmu_pagetable_walk: addr 7f0000401000 pferr 7 P|W|U',
      '          vcpu-1-4002    [001] .....     0.001002: kvm_mmu_walker_error: pferr 25 P|U|0x20',
      '          vcpu-0-4001    [000] ...1.     0.001002: kvm_mmu_get_page: sp gen 0 gfn 1234 l4 8-byte q0 direct wux nxe ad root 0 sync new',
      '     kvm-mmu-emu-4000    [002] ...1.     1.500000: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen 1 used_pages 1a',
      '     kvm-mmu-emu-4000    [002] ...1.     1.500250: kvm_mmu_prepare_zap_page: sp gen 1 gfn abc l2 4-byte q3 wux invalid !nxe ad root 2 sync',
      '          vcpu-1-4002    [001] ...1.     2.000500: kvm_mmu_get_page: sp gen 1 gfn 1234 l4 8-byte q0 direct wux nxe ad root 3 sync existing',
      '          vcpu-0-4001    [000] .....     3.000000: kvm_mmu_walker_error: pferr 0 ',
      '',
    ]);
  });

  it('trace-cmd style: cpus=N, padded event names, the kvm plugin\'s page bodies', () => {
    const lines = ftraceText(sample()).split('\n');
    expect(lines.slice(0, 4)).toEqual([
      'cpus=3',
      '          vcpu-0-4001  [000] .....     0.001001: kvm_mmu_pagetable_walk: addr 7f0000401000 pferr 7 P|W|U',
      '          vcpu-1-4002  [001] .....     0.001002: kvm_mmu_walker_error: pferr 25 P|U|0x20',
      '          vcpu-0-4001  [000] ...1.     0.001002: kvm_mmu_get_page:     new sp gfn 1234 4 q0 direct wux !pae nxe !wp root 0 sync',
    ]);
    expect(lines[4]).toBe('     kvm-mmu-emu-4000  [002] ...1.     1.500000: kvm_mmu_zap_all_fast: kvm-mmu-valid-gen 1 used_pages 1a');
    expect(lines[5]).toBe('     kvm-mmu-emu-4000  [002] ...1.     1.500250: kvm_mmu_prepare_zap_page: 2 q3 wux invalid pae !nxe wp smm root 2 sync');
    expect(lines.length).toBe(9);
  });

  it('options: QEMU-like comms cut to 15 characters, a pid base, Unix clock', () => {
    const h = sample();
    const text = ftraceText(h, { style: 'tracefs', header: false, comm: (i) => `CPU ${i}/KVM-with-a-long-name`, pidBase: 100, clock: 'unix' });
    const first = text.split('\n')[0]!;
    expect(first.startsWith(' CPU 0/KVM-with--101     [000] ..... ')).toBe(true);
    const secs = Number(first.split(' ').filter(Boolean)[4]!.replace(':', ''));
    const base = readTraceRings(h)[0]!.epoch;
    expect(Math.abs(secs - (base + 0.001001 * 1000) / 1000)).toBeLessThan(1e-5);
  });

  it('trace-cmd style marks a ring that lost events, as trace-cmd marks lost events on a CPU', () => {
    const h = allocateTraceRings(1, 2);
    const t = Tracer.attach(h, 0);
    for (let i = 0; i < 5; i++) t.walkerError(i);
    const lines = ftraceText(h).split('\n');
    expect(lines[1]).toBe('CPU:0 [3 EVENTS DROPPED]');
    expect(lines.slice(2, 4).map((l) => l.slice(l.indexOf('pferr')))).toEqual(['pferr 3 P|W', 'pferr 4 U']);
  });
});

/**
 * The kvmmmu events as ftrace text, so KVM developers can read and diff
 * them with the tools they use on real traces. Formats reproduced (output
 * only, no code) from:
 *
 * - Linux v5.17 arch/x86/kvm/mmu/mmutrace.h, each event's TP_printk (the
 *   event body, and KVM_MMU_PAGE_PRINTK for a page);
 * - Linux v5.17 kernel/trace/trace_output.c trace_print_context,
 *   trace_print_lat_fmt, trace_print_time (the `tracefs` line: what
 *   /sys/kernel/tracing/trace and `trace-cmd show` print);
 * - trace-cmd 3.4 tracecmd/trace-read.c trace_show_data / print_event_name
 *   and libtraceevent 1.8 print_event_time (the `trace-cmd` line: what
 *   `trace-cmd report` prints), with libtraceevent's plugin_kvm.c, which
 *   trace-cmd loads by default and which replaces the bodies of
 *   kvm_mmu_get_page and kvm_mmu_prepare_zap_page with its own rendering of
 *   the role (from an older kvm_mmu_page_role union: bit 4 is printed as
 *   `pae`, where v5.17 keeps has_4_byte_gpte).
 *
 * One task per vCPU (comm `vcpu-N`, pid pidBase + 1 + N, CPU column N) and
 * one for the coordinator (pid pidBase, CPU column = vCPU count); lines are
 * merged across tasks in timestamp order.
 */
import { formatPageRoleTrace, PAGE_ROLE } from '../role/page-role.js';
import { mergeByTime, traceSetOf, tracksOf, type TraceSet, type Track } from './collect.js';
import { EV, EVENT_BY_ID } from './events.js';
import { EVENT_WORDS, W, type TraceRingsHandle } from './ring.js';
import { joinChunks, writeChunks } from './sink.js';

/** `tracefs`: the kernel's own text; `trace-cmd`: `trace-cmd report` with its default plugins. */
export type FtraceStyle = 'trace-cmd' | 'tracefs';

export interface FtraceOptions {
  readonly style?: FtraceStyle;
  /** The coordinator's pid; vCPU N gets pidBase + 1 + N (default 4000). */
  readonly pidBase?: number;
  /** comm of vCPU N's task (default `vcpu-N`; QEMU names its threads `CPU N/KVM`). Cut to 15 characters, as TASK_COMM_LEN. */
  readonly comm?: (vcpu: number) => string;
  readonly coordinatorComm?: string;
  /** Timestamps from the first event (default) or seconds since the Unix epoch. */
  readonly clock?: 'relative' | 'unix';
  /** The style's header lines (default true). */
  readonly header?: boolean;
}

/** kvm_mmu_trace_pferr_flags (mmutrace.h): PFERR_{PRESENT,WRITE,USER,RSVD,FETCH}_MASK. */
export const PFERR_FLAGS: readonly (readonly [number, string])[] = [
  [1 << 0, 'P'],
  [1 << 1, 'W'],
  [1 << 2, 'U'],
  [1 << 3, 'RSVD'],
  [1 << 4, 'F'],
];

/** __print_flags as ftrace renders it (trace_print_flags_seq): names joined by `delim`, unknown bits as 0x…, "" for 0. */
export function printFlags(value: number, delim: string, table: readonly (readonly [number, string])[]): string {
  let v = value >>> 0;
  const out: string[] = [];
  for (const [mask, name] of table) {
    if (!v) break;
    if ((v & mask) >>> 0 !== mask) continue;
    out.push(name);
    v = (v & ~mask) >>> 0;
  }
  if (v) out.push(`0x${v.toString(16)}`);
  return out.join(delim);
}

/** %llx of a 64-bit value stored as two 32-bit halves. */
export const hex64 = (lo: number, hi: number): string => (hi ? hi.toString(16) + (lo >>> 0).toString(16).padStart(8, '0') : (lo >>> 0).toString(16));

const ACCESS_STR = ['---', '--x', 'w--', 'w-x', '-u-', '-ux', 'wu-', 'wux'] as const;

/**
 * The role as libtraceevent's plugin_kvm.c kvm_mmu_print_role prints it:
 * `%u q%u%s %s%s %spae %snxe %swp%s%s%s` over its own union (level 0-3,
 * "cr4_pae" 4, quadrant 5-6, direct 7, access 8-10, invalid 11, nxe 12,
 * cr0_wp 13, smep_and_not_wp 14, smap_and_not_wp 15, smm 24-31). Those
 * positions agree with v5.17's except bit 4, v5.17's has_4_byte_gpte.
 */
export function pluginRoleText(role: number): string {
  const r = PAGE_ROLE.decode(role);
  return (
    `${r.level} q${r.quadrant}${r.direct ? ' direct' : ''} ${ACCESS_STR[r.access]}${r.invalid ? ' invalid' : ''} ` +
    `${r.has_4_byte_gpte ? '' : '!'}pae ${r.efer_nx ? '' : '!'}nxe ${r.cr0_wp ? '' : '!'}wp` +
    `${r.smep_andnot_wp ? ' smep' : ''}${r.smap_andnot_wp ? ' smap' : ''}${r.smm ? ' smm' : ''}`
  );
}

/** KVM_MMU_PAGE_PRINTK (v5.17); `unsync` is always false here (unsync pages are not modelled). */
export const kernelPageText = (gfn: number, role: number, rootCount: number, gen: number): string =>
  `sp gen ${gen} gfn ${gfn.toString(16)} ${formatPageRoleTrace(role)} root ${rootCount} sync`;

/** The body of a kvmmmu event (after `name: `), or null for another kind. */
export function kvmmmuBody(kind: number, a0: number, a1: number, a2: number, a3: number, style: FtraceStyle = 'tracefs'): string | null {
  switch (kind) {
    case EV.GET_PAGE: {
      const created = a3 % 2 === 1;
      const gen = Math.floor(a3 / 2);
      // mmutrace.h: TP_printk("%s %s", KVM_MMU_PAGE_PRINTK(), created ? "new" : "existing"); plugin: "%s sp gfn %llx " + role.
      if (style === 'trace-cmd') return `${created ? 'new' : 'existing'} sp gfn ${a0.toString(16)} ${pluginRoleText(a1)} root ${a2} sync`;
      return `${kernelPageText(a0, a1, a2, gen)} ${created ? 'new' : 'existing'}`;
    }
    case EV.PREPARE_ZAP_PAGE:
      // kvm_mmu_page_class: TP_printk("%s", KVM_MMU_PAGE_PRINTK()); plugin: the role only.
      if (style === 'trace-cmd') return `${pluginRoleText(a1)} root ${a2} sync`;
      return kernelPageText(a0, a1, a2, a3);
    case EV.ZAP_ALL_FAST:
      // TP_printk("kvm-mmu-valid-gen %u used_pages %x", ...)
      return `kvm-mmu-valid-gen ${a0} used_pages ${a1.toString(16)}`;
    case EV.PAGETABLE_WALK:
      // TP_printk("addr %llx pferr %x %s", addr, pferr, __print_flags(pferr, "|", kvm_mmu_trace_pferr_flags))
      return `addr ${hex64(a0, a1)} pferr ${(a2 >>> 0).toString(16)} ${printFlags(a2, '|', PFERR_FLAGS)}`;
    case EV.WALKER_ERROR:
      // TP_printk("pferr %x %s", pferr, __print_flags(pferr, "|", kvm_mmu_trace_pferr_flags))
      return `pferr ${(a0 >>> 0).toString(16)} ${printFlags(a0, '|', PFERR_FLAGS)}`;
    default:
      return null;
  }
}

/**
 * The latency column (irqs-off, need-resched, hard/softirq, preempt depth,
 * migrate-disable). KVM emits get_page, prepare_zap_page and zap_all_fast
 * with mmu_lock (an rwlock: preemption off) held, the walk events with
 * preemption on; interrupts are on for all of them.
 */
const latencyOf = (kind: number): string => (kind === EV.PAGETABLE_WALK || kind === EV.WALKER_ERROR ? '.....' : '...1.');

const isKvmmmu = (kind: number): boolean => EVENT_BY_ID[kind]?.kvmmmu ?? false;

interface Task {
  readonly comm: string;
  readonly pid: number;
  readonly cpu: number;
}

function tasksOf(tracks: readonly Track[], vcpuCount: number, o: FtraceOptions): Task[] {
  const pidBase = o.pidBase ?? 4000;
  const comm = o.comm ?? ((i: number) => `vcpu-${i}`);
  return tracks.map((t) =>
    t.vcpu === null
      ? { comm: (o.coordinatorComm ?? 'kvm-mmu-emu').slice(0, 15), pid: pidBase, cpu: vcpuCount }
      : { comm: comm(t.vcpu).slice(0, 15), pid: pidBase + 1 + t.vcpu, cpu: t.vcpu },
  );
}

/** " %5lu.%06lu" of a time in µs (both styles print it so). */
const timeText = (us: number): string => `${String(Math.floor(us / 1e6)).padStart(5)}.${String(us % 1e6).padStart(6, '0')}`;

/** One line, without the newline. */
export function ftraceLine(style: FtraceStyle, task: Task, us: number, kind: number, body: string): string {
  const name = EVENT_BY_ID[kind]!.name;
  const cpu = String(task.cpu).padStart(3, '0');
  if (style === 'tracefs') {
    // "%16s-%-7d " "[%03d] " lat " %5lu.%06lu" ": " "%s: " body
    return `${task.comm.padStart(16)}-${String(task.pid).padEnd(7)} [${cpu}] ${latencyOf(kind)} ${timeText(us)}: ${name}: ${body}`;
  }
  // "%16s-%-5d [%03d]" " %s"(latency) " %6.1000d:" " %s: " + pad to 20 + info
  return `${task.comm.padStart(16)}-${String(task.pid).padEnd(5)} [${cpu}] ${latencyOf(kind)} ${timeText(us)}: ${name}: ${' '.repeat(Math.max(0, 20 - name.length))}${body}`;
}

/** The ftrace text of a VM's trace, in chunks (see writeFtrace). */
export function* ftraceChunks(source: TraceSet | TraceRingsHandle, o: FtraceOptions = {}): Generator<string> {
  const style = o.style ?? 'trace-cmd';
  const set = traceSetOf(source);
  const { tracks, base } = tracksOf(set);
  const tasks = tasksOf(tracks, set.vcpus.length, o);
  const cpus = set.vcpus.length + (set.coordinator ? 1 : 0);
  const clockBase = o.clock === 'unix' ? base : 0;
  if (o.header ?? true) yield headerOf(style, tracks, cpus);
  const announced = tracks.map((t) => t.ring.dropped === 0);
  let out: string[] = [];
  for (const [t, off] of mergeByTime(tracks, isKvmmmu)) {
    const ev = tracks[t]!.ring.events;
    if (!announced[t]) {
      // trace-cmd marks lost events before the next record of that CPU: the ring lost its oldest events of every kind.
      if (style === 'trace-cmd') out.push(`CPU:${tasks[t]!.cpu} [${tracks[t]!.ring.dropped} EVENTS DROPPED]`);
      announced[t] = true;
    }
    const kind = ev[off + W.KIND]!;
    const body = kvmmmuBody(kind, ev[off + W.A0]!, ev[off + W.A1]!, ev[off + W.A2]!, ev[off + W.A3]!, style)!;
    const us = Math.round((clockBase + ev[off + W.TS]! + tracks[t]!.shift) * 1000);
    out.push(ftraceLine(style, tasks[t]!, us, kind, body));
    if (out.length >= 4096) {
      yield out.join('\n') + '\n';
      out = [];
    }
  }
  if (out.length) yield out.join('\n') + '\n';
}

/** The irq-info header's indent: 28 spaces and a precision-2 cut of the TGID column. */
const IRQ_PAD = ' '.repeat(30);

function headerOf(style: FtraceStyle, tracks: readonly Track[], cpus: number): string {
  if (style === 'trace-cmd') return `cpus=${cpus}\n`;
  let kept = 0;
  let dropped = 0;
  for (const t of tracks) {
    dropped += t.ring.dropped;
    for (let o = 0; o < t.ring.events.length; o += EVENT_WORDS) if (isKvmmmu(t.ring.events[o + W.KIND]!)) kept++;
  }
  // kernel/trace/trace.c: "# tracer: %s", print_event_info, print_func_help_header_irq (v5.17).
  return [
    '# tracer: nop',
    '#',
    `# entries-in-buffer/entries-written: ${kept}/${kept + dropped}   #P:${cpus}`,
    '#',
    `#${IRQ_PAD}  _-----=> irqs-off/BH-disabled`,
    `#${IRQ_PAD} / _----=> need-resched`,
    `#${IRQ_PAD}| / _---=> hardirq/softirq`,
    `#${IRQ_PAD}|| / _--=> preempt-depth`,
    `#${IRQ_PAD}||| / _-=> migrate-disable`,
    `#${IRQ_PAD}|||| /     delay`,
    '#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION',
    '#              | |         |   |||||     |         |',
    '',
  ].join('\n');
}

/** The whole text as one string (tests, small traces). */
export const ftraceText = (source: TraceSet | TraceRingsHandle, o: FtraceOptions = {}): string => joinChunks(ftraceChunks(source, o));

/** Write the kvmmmu events of every ring to `path`; returns the number of characters written. */
export const writeFtrace = (path: string, source: TraceSet | TraceRingsHandle, o: FtraceOptions = {}): number => writeChunks(path, ftraceChunks(source, o));

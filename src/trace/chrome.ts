/**
 * A VM's trace as Chrome Trace Event JSON (the JSON Object Format:
 * `{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}`),
 * which ui.perfetto.dev and chrome://tracing open.
 *
 * One process (pid 1) for the VM; one thread per vCPU (tid N + 1, named
 * "vCPU N") and one for the coordinator (tid 0), named by `thread_name`
 * metadata events. Spans are complete events (ph "X", ts and dur in µs from
 * the earliest event), kvmmmu tracepoints thread-scoped instants (ph "i",
 * s "t"), shadow pages a counter (ph "C"). Arguments are decoded: role words
 * in hex and in the kvmmmu notation, request bits by name, codes by name.
 * Events each ring dropped are counted in otherData.droppedEvents and in the
 * thread's name.
 */
import { FORMAT_V517, formatExtRole, type RoleFormat } from '../role/ext-role.js';
import { formatPageRoleTrace } from '../role/page-role.js';
import { REQ } from '../vcpu/requests.js';
import { traceSetOf, tracksOf, type TraceSet, type Track } from './collect.js';
import { BROADCAST, codeName, EV, EVENT_BY_ID, FAULT_OUTCOME, LOAD_RESULT, MMU_CONTEXT, MMU_INIT_PATH } from './events.js';
import { hex64, kvmmmuBody, PFERR_FLAGS, printFlags } from './ftrace.js';
import { EVENT_WORDS, W, type TraceRingsHandle } from './ring.js';
import { joinChunks, writeChunks } from './sink.js';

export interface ChromeTraceOptions {
  /** The process's name (default "kvm-mmu-emu VM"). */
  readonly processName?: string;
  /** Layout of the ext role words in mmu-init (the strategy's RoleFormat; default v5.17's). */
  readonly extFormat?: RoleFormat;
  /** Extra entries for otherData (strategy, scenario, seed...). */
  readonly metadata?: Readonly<Record<string, unknown>>;
}

/** A Chrome trace event as written (the fields this exporter uses). */
export interface ChromeEvent {
  name: string;
  ph: 'X' | 'i' | 'C' | 'M';
  ts: number;
  pid: number;
  tid: number;
  cat?: string;
  dur?: number;
  s?: 't';
  args?: Record<string, unknown>;
}

export const VM_PID = 1;
/** tid of a track: 0 for the coordinator, N + 1 for vCPU N. */
export const tidOf = (t: Pick<Track, 'vcpu'>): number => (t.vcpu === null ? 0 : t.vcpu + 1);

const hex = (v: number): string => '0x' + (v >>> 0).toString(16);
/** µs with ns resolution. */
const us = (ms: number): number => Math.round(ms * 1e6) / 1e3;

const REQ_BY_BIT: string[] = [];
for (const d of Object.values(REQ)) REQ_BY_BIT[d.bit] = d.name;

/** The request names of a request word. */
export function requestNames(bits: number): string {
  const out: string[] = [];
  for (let b = 0; b < 32; b++) if ((bits >>> b) & 1) out.push(REQ_BY_BIT[b] ?? `bit${b}`);
  return out.join('|');
}

/** Name and decoded args of one stored event. */
function describe(kind: number, a: readonly number[], o: ChromeTraceOptions): { name: string; cat: string; args: Record<string, unknown> } {
  const def = EVENT_BY_ID[kind];
  if (!def) return { name: `unknown #${kind}`, cat: 'unknown', args: { a0: a[0], a1: a[1], a2: a[2], a3: a[3] } };
  const cat = def.kvmmmu ? 'kvmmmu' : def.track === 'coordinator' ? 'coordinator' : 'vcpu';
  const [a0, a1, a2, a3] = a as [number, number, number, number];
  switch (kind) {
    case EV.REQUESTS:
      return { name: def.name, cat, args: { bits: hex(a0), requests: requestNames(a0) } };
    case EV.MMU_INIT: {
      const path = codeName(MMU_INIT_PATH, a1);
      const args = { context: codeName(MMU_CONTEXT, a0), path, base: hex(a2), baseRole: formatPageRoleTrace(a2), ext: hex(a3), extRole: formatExtRole(a3, o.extFormat ?? FORMAT_V517) };
      return { name: `${def.name} ${path}`, cat, args };
    }
    case EV.SHADOW_FAULT:
      return { name: def.name, cat, args: { addr: '0x' + hex64(a0, a1), errorCode: hex(a2), flags: printFlags(a2, '|', PFERR_FLAGS), outcome: codeName(FAULT_OUTCOME, a3) } };
    case EV.MMU_LOAD:
      return { name: def.name, cat, args: { result: codeName(LOAD_RESULT, a0) } };
    case EV.BROADCAST:
    case EV.WAIT:
      return { name: `${def.name} ${codeName(BROADCAST, a0)}`, cat, args: { kind: codeName(BROADCAST, a0), targets: a1 } };
    case EV.SHADOW_PAGES:
      return { name: def.name, cat, args: { pages: a0 } };
    case EV.GET_PAGE:
      return { name: def.name, cat, args: { gfn: hex(a0), role: hex(a1), created: a3 % 2 === 1, text: kvmmmuBody(kind, a0, a1, a2, a3) } };
    case EV.PREPARE_ZAP_PAGE:
      return { name: def.name, cat, args: { gfn: hex(a0), role: hex(a1), rootCount: a2, text: kvmmmuBody(kind, a0, a1, a2, a3) } };
    case EV.PAGETABLE_WALK:
      return { name: def.name, cat, args: { addr: '0x' + hex64(a0, a1), pferr: hex(a2), text: kvmmmuBody(kind, a0, a1, a2, a3) } };
    case EV.WALKER_ERROR:
      return { name: def.name, cat, args: { pferr: hex(a0), text: kvmmmuBody(kind, a0, a1, a2, a3) } };
    default: {
      const args: Record<string, unknown> = {};
      def.args.forEach((n, i) => (args[n] = a[i]));
      const text = def.kvmmmu ? kvmmmuBody(kind, a0, a1, a2, a3) : null;
      if (text !== null) args.text = text;
      return { name: def.name, cat, args };
    }
  }
}

/** The trace events of one track (metadata first). */
function* trackEvents(t: Track, o: ChromeTraceOptions): Generator<ChromeEvent> {
  const tid = tidOf(t);
  const dropped = t.ring.dropped;
  const name = dropped ? `${t.name} (${dropped} older events dropped)` : t.name;
  yield { name: 'thread_name', ph: 'M', ts: 0, pid: VM_PID, tid, args: { name } };
  yield { name: 'thread_sort_index', ph: 'M', ts: 0, pid: VM_PID, tid, args: { sort_index: tid } };
  const ev = t.ring.events;
  const a = [0, 0, 0, 0];
  for (let off = 0; off < ev.length; off += EVENT_WORDS) {
    const kind = ev[off + W.KIND]!;
    a[0] = ev[off + W.A0]!;
    a[1] = ev[off + W.A1]!;
    a[2] = ev[off + W.A2]!;
    a[3] = ev[off + W.A3]!;
    const { name: evName, cat, args } = describe(kind, a, o);
    const start = ev[off + W.TS]! + t.shift;
    const ts = us(start);
    const phase = EVENT_BY_ID[kind]?.phase ?? 'instant';
    // Round the end, not the duration, so a span that ends inside another still does after rounding.
    if (phase === 'span') yield { name: evName, cat, ph: 'X', ts, dur: Math.max(0, us((us(start + ev[off + W.DUR]!) - ts) / 1e3)), pid: VM_PID, tid, args };
    else if (phase === 'counter') yield { name: evName, cat, ph: 'C', ts, pid: VM_PID, tid, args };
    else yield { name: evName, cat, ph: 'i', s: 't', ts, pid: VM_PID, tid, args };
  }
}

/** The JSON text in chunks (see writeChromeTrace). */
export function* chromeTraceChunks(source: TraceSet | TraceRingsHandle, o: ChromeTraceOptions = {}): Generator<string> {
  const set = traceSetOf(source);
  const { tracks, base } = tracksOf(set);
  const droppedEvents: Record<string, number> = {};
  for (const t of tracks) droppedEvents[t.name] = t.ring.dropped;
  const otherData = {
    generator: 'kvm-mmu-emu',
    // ts 0 is this instant, ms since the Unix epoch.
    timeBase: base,
    droppedEvents,
    writtenEvents: Object.fromEntries(tracks.map((t) => [t.name, t.ring.written])),
    ...o.metadata,
  };
  yield `{"displayTimeUnit":"ms","otherData":${JSON.stringify(otherData)},"traceEvents":[\n`;
  let first = true;
  let out: string[] = [];
  const emit = (e: ChromeEvent): void => {
    out.push((first ? '' : ',\n') + JSON.stringify(e));
    first = false;
  };
  emit({ name: 'process_name', ph: 'M', ts: 0, pid: VM_PID, tid: 0, args: { name: o.processName ?? 'kvm-mmu-emu VM' } });
  for (const t of tracks) {
    for (const e of trackEvents(t, o)) {
      emit(e);
      if (out.length >= 4096) {
        yield out.join('');
        out = [];
      }
    }
  }
  out.push('\n]}\n');
  yield out.join('');
}

/** The whole JSON as one string (tests, small traces). */
export const chromeTraceText = (source: TraceSet | TraceRingsHandle, o: ChromeTraceOptions = {}): string => joinChunks(chromeTraceChunks(source, o));

/** Write the trace of every ring to `path` as Chrome Trace Event JSON; returns characters written. */
export const writeChromeTrace = (path: string, source: TraceSet | TraceRingsHandle, o: ChromeTraceOptions = {}): number => writeChunks(path, chromeTraceChunks(source, o));

/**
 * The last `n` events of vCPU `vcpu`'s track, one line each (ms since the
 * first event of the set, name, duration, arguments): what a report prints
 * next to a finding.
 */
export function lastEvents(source: TraceSet | TraceRingsHandle, vcpu: number, n: number, o: ChromeTraceOptions = {}): string[] {
  const { tracks } = tracksOf(traceSetOf(source));
  const track = tracks.find((t) => t.vcpu === vcpu);
  if (!track) return [];
  const events = [...trackEvents(track, o)].filter((e) => e.ph !== 'M').slice(-n);
  return events.map((e) => {
    const args = e.args && Object.keys(e.args).length ? ` ${JSON.stringify(e.args)}` : '';
    return `${(e.ts / 1000).toFixed(3)} ms ${e.name}${e.dur !== undefined ? ` (${e.dur} µs)` : ''}${args}`;
  });
}

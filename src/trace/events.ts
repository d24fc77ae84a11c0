/**
 * The trace event kinds: one table, the single source of each kind's id,
 * phase, track and argument words. A ring stores the id and four f64
 * argument words; the exporters (chrome.ts, ftrace.ts) decode them with the
 * names and codes declared here.
 *
 * Tracks: `vcpu` events come from a vCPU thread (its ring), `coordinator`
 * events from the coordinator; kvmmmu events come from whichever thread ran
 * the shadow-cache code (a vCPU, or the coordinator for a zap-all).
 */

export type TracePhase = 'span' | 'instant' | 'counter';
export type TraceTrack = 'vcpu' | 'coordinator' | 'any';

export interface TraceEventDef {
  readonly id: number;
  /** Name in the Chrome trace (and the tracepoint name for kvmmmu events). */
  readonly name: string;
  readonly phase: TracePhase;
  readonly track: TraceTrack;
  /** Names of the argument words a0..a3 that are used, in order. */
  readonly args: readonly string[];
  /** A `kvmmmu` tracepoint (exported by ftrace.ts too). */
  readonly kvmmmu: boolean;
  readonly doc: string;
}

const ev = (id: number, name: string, phase: TracePhase, track: TraceTrack, args: readonly string[], doc: string, kvmmmu = false): TraceEventDef => ({
  id,
  name,
  phase,
  track,
  args,
  kvmmmu,
  doc,
});

/** Every kind. Ids are stored in rings: never renumber, only append. */
export const TRACE_EVENTS = {
  GUEST: ev(1, 'guest', 'span', 'vcpu', [], 'a stint in guest mode, from the entry that passed the request re-check to the exit'),
  REQUESTS: ev(2, 'requests', 'span', 'vcpu', ['bits'], 'request handling before an entry; bits = the request word consumed (REQ bit numbers)'),
  MMU_INIT: ev(3, 'mmu-init', 'span', 'vcpu', ['context', 'path', 'base', 'ext'], 'kvm_init_mmu for one context (MMU_CONTEXT), path MMU_INIT_PATH (fast path or rebuild), the role computed (base and ext words)'),
  SHADOW_FAULT: ev(4, 'shadow-fault', 'span', 'vcpu', ['addrLo', 'addrHi', 'errorCode', 'outcome'], 'kvm_mmu_page_fault: address (two 32-bit halves), PFERR error code, outcome FAULT_OUTCOME'),
  HALT: ev(5, 'halt', 'span', 'vcpu', [], 'HLT: blocked until a request or kick'),
  MMU_LOAD: ev(6, 'mmu-load', 'span', 'vcpu', ['result'], 'kvm_mmu_load (root allocation), result LOAD_RESULT'),
  BROADCAST: ev(7, 'broadcast', 'span', 'coordinator', ['kind', 'targets'], 'a request broadcast (BROADCAST kind) to `targets` vCPUs, from the first request to the last acknowledgement'),
  WAIT: ev(8, 'wait', 'span', 'coordinator', ['kind', 'targets'], 'the coordinator waiting for acknowledgements (of a BROADCAST kind, from `targets` vCPUs)'),
  SHADOW_PAGES: ev(9, 'shadow-pages', 'counter', 'any', ['pages'], 'shadow pages in use (n_used_mmu_pages)'),
  GET_PAGE: ev(10, 'kvm_mmu_get_page', 'instant', 'any', ['gfn', 'role', 'rootCount', 'genCreated'], 'trace_kvm_mmu_get_page; genCreated = mmu_valid_gen·2 + created', true),
  PREPARE_ZAP_PAGE: ev(11, 'kvm_mmu_prepare_zap_page', 'instant', 'any', ['gfn', 'role', 'rootCount', 'gen'], 'trace_kvm_mmu_prepare_zap_page', true),
  ZAP_ALL_FAST: ev(12, 'kvm_mmu_zap_all_fast', 'instant', 'any', ['gen', 'usedPages'], 'trace_kvm_mmu_zap_all_fast: the generation before the flip, n_used_mmu_pages', true),
  PAGETABLE_WALK: ev(13, 'kvm_mmu_pagetable_walk', 'instant', 'vcpu', ['addrLo', 'addrHi', 'pferr'], 'trace_kvm_mmu_pagetable_walk: address (two 32-bit halves), access error code', true),
  WALKER_ERROR: ev(14, 'kvm_mmu_walker_error', 'instant', 'vcpu', ['pferr'], 'trace_kvm_mmu_walker_error: the guest fault\'s error code', true),
} as const;

export type TraceKindName = keyof typeof TRACE_EVENTS;

/** Kind ids by name, for hot paths: `tracer.end(EV.GUEST, t)`. */
export const EV = Object.fromEntries(Object.entries(TRACE_EVENTS).map(([k, d]) => [k, d.id])) as { readonly [K in TraceKindName]: (typeof TRACE_EVENTS)[K]['id'] };

/** The definition of a stored kind id (undefined for an unknown id). */
export const EVENT_BY_ID: readonly (TraceEventDef | undefined)[] = (() => {
  const out: (TraceEventDef | undefined)[] = [];
  for (const d of Object.values(TRACE_EVENTS)) {
    if (out[d.id]) throw new Error(`trace event id ${d.id} used twice`);
    if (d.args.length > 4) throw new Error(`trace event ${d.name}: at most four argument words`);
    out[d.id] = d;
  }
  return out;
})();

/** mmu-init `context`: which of the vCPU's three MMU contexts. */
export const MMU_CONTEXT = ['root_mmu', 'guest_mmu', 'nested_mmu'] as const;
/** mmu-init `path`: the cached role matched (fast path) or the context was rebuilt. */
export const MMU_INIT_PATH = ['fast', 'rebuild'] as const;
/** shadow-fault `outcome`: FaultResult kinds (src/shadow/faults.ts). */
export const FAULT_OUTCOME = ['fixed', 'spurious', 'retry', 'emulate', 'guest-fault', 'no-memslot', 'no-pages'] as const;
/** mmu-load `result`: LoadResult (src/shadow/roots.ts). */
export const LOAD_RESULT = ['ok', 'triple-fault', 'no-pages', 'bad-level'] as const;
/** broadcast / wait `kind`. */
export const BROADCAST = ['cpuid', 'zap-all', 'reload', 'ping', 'other'] as const;

export type MmuContextName = (typeof MMU_CONTEXT)[number];
export type FaultOutcome = (typeof FAULT_OUTCOME)[number];
export type LoadResultName = (typeof LOAD_RESULT)[number];
export type BroadcastKind = (typeof BROADCAST)[number];

const codes = <T extends string>(names: readonly T[]): Readonly<Record<T, number>> => Object.fromEntries(names.map((n, i) => [n, i])) as Record<T, number>;

/** Name → code maps for the callers (a switch-free lookup on a hot path). */
export const FAULT_OUTCOME_CODE = codes(FAULT_OUTCOME);
export const LOAD_RESULT_CODE = codes(LOAD_RESULT);
export const BROADCAST_CODE = codes(BROADCAST);
export const MMU_CONTEXT_CODE = codes(MMU_CONTEXT);

/** The name of code `i` in `names`, or `#i` for a code the table does not know. */
export const codeName = (names: readonly string[], i: number): string => names[i] ?? `#${i}`;

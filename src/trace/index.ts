/**
 * Tracing: per-thread rings in shared memory (ring.ts), the event kinds
 * (events.ts), the per-thread writer (tracer.ts), and the exporters to
 * Chrome Trace Event JSON (chrome.ts) and kvmmmu ftrace text (ftrace.ts).
 * See docs/traces.md.
 */
export {
  allocateTraceRings,
  readTraceRings,
  ringIndex,
  traceRingLayout,
  traceRingsBytes,
  TraceRing,
  DEFAULT_RING_CAPACITY,
  MAX_RING_CAPACITY,
  MAX_TRACE_BYTES,
  EVENT_BYTES,
  EVENT_WORDS,
  type RingSnapshot,
  type TraceRingsHandle,
} from './ring.js';
export {
  TRACE_EVENTS,
  EV,
  EVENT_BY_ID,
  MMU_CONTEXT,
  MMU_INIT_PATH,
  FAULT_OUTCOME,
  LOAD_RESULT,
  BROADCAST,
  FAULT_OUTCOME_CODE,
  LOAD_RESULT_CODE,
  BROADCAST_CODE,
  MMU_CONTEXT_CODE,
  type TraceEventDef,
  type TraceKindName,
  type FaultOutcome,
  type LoadResultName,
  type BroadcastKind,
  type MmuContextName,
} from './events.js';
export { Tracer } from './tracer.js';
export type { ShadowTracer } from './shadow-tracer.js';
export { traceSetOf, tracksOf, mergeByTime, type TraceSet, type Track } from './collect.js';
export { chromeTraceChunks, chromeTraceText, writeChromeTrace, requestNames, lastEvents, type ChromeTraceOptions, type ChromeEvent } from './chrome.js';
export { ftraceChunks, ftraceText, writeFtrace, ftraceLine, kvmmmuBody, pluginRoleText, printFlags, PFERR_FLAGS, type FtraceOptions, type FtraceStyle } from './ftrace.js';

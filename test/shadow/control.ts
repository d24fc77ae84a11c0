/**
 * Shared words between the real-thread tests and their vCPU workers
 * (test-only, declared with the project's layout module like every shared
 * buffer). Handshakes only: the coordinator and the workers wait on these
 * words with Atomics.wait / waitAsync, never sleep.
 */
import { defineLayout } from '../../src/layout/layout.js';

export const CONTROL_LAYOUT = defineLayout('shadow-test-control', {
  ready: { type: 'i32', doc: 'workers that attached and wait for `go`. Workers Atomics.add then notify; the coordinator waits for all.' },
  go: { type: 'i32', doc: '1 once the coordinator lets every worker start. Coordinator Atomics.store + notify; workers Atomics.wait on it.' },
  done: { type: 'i32', doc: 'workers that finished their accesses (they then only serve requests until STOP). Workers Atomics.add + notify.' },
  progress: {
    type: 'i32',
    doc: 'guest accesses completed by all workers, added in batches of 64. Workers Atomics.add + notify; the coordinator waits on it between zap rounds.',
  },
  started: { type: 'i32', doc: 'zap-all rounds started. Coordinator Atomics.store before zapAllFast; workers load it around their root check.' },
  completed: { type: 'i32', doc: 'zap-all rounds whose waiting MMU_RELOAD returned. Coordinator Atomics.store after the wait (after completedGen).' },
  completedGen: { type: 'i32', doc: 'the generation of the last completed round. Coordinator Atomics.store before `completed`.' },
  violations: { type: 'i32', doc: 'invariant violations seen by workers (Atomics.add); details go by postMessage.' },
  rootChecks: { type: 'i32', doc: 'root generation checks made after a completed round (Atomics.add): proof the check ran.' },
  editStarted: { type: 'i32', doc: 'guest edits started (coordinator Atomics.store before remapping the shared leaf).' },
  editDone: { type: 'i32', doc: 'guest edits whose trackedWrite returned (coordinator Atomics.store after `editGpa`).' },
  editGpa: { type: 'i32', doc: 'where the edited page maps after edit `editDone`. Coordinator Atomics.store before `editDone`.' },
  editChecks: { type: 'i32', doc: 'hits on the edited page checked against a finished edit (workers Atomics.add).' },
  release: {
    type: 'i32',
    doc: '1 once the coordinator lets workers finish: a worker stops accessing only after its accesses are done and this is set, so the coordinator\'s rounds and edits never depend on how the OS schedules it against the workers. Coordinator Atomics.store; workers Atomics.load it.',
  },
  lockCounter: {
    type: 'i32',
    doc: 'the lock test: incremented by plain read-then-write under mmu_lock only (deliberately not atomic: the lock must order it).',
  },
});

export type ControlView = { [K in keyof typeof CONTROL_LAYOUT.fields]: Int32Array };

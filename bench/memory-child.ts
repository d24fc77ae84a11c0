/**
 * One memory measurement in a fresh process (spawned by bench/memory.ts):
 * the process RSS before creating a VM, then the VM with N vCPUs up and
 * running, then the RSS again (RSS covers every worker thread). A fresh
 * process per N keeps the baseline clean: memory freed by an earlier VM
 * would otherwise be reused by the next one and hide part of its cost.
 *
 *   node --expose-gc dist/bench/memory-child.js N idle|busy SETTLE_MS
 *
 * Prints one JSON line (MemorySample) on stdout.
 */
import { Vm } from '../src/vm/vm.js';
import { IDLE_MIX, type LoadMode } from './reset-broadcast.js';

export interface MemorySample {
  readonly n: number;
  readonly mode: LoadMode;
  /** RSS before the VM was created (after a GC when --expose-gc is given), bytes. */
  readonly baselineRss: number;
  /** RSS at the end of the settle window, bytes. */
  readonly rss: number;
  /** Highest RSS seen in the settle window, bytes. */
  readonly peakRss: number;
  /** This (coordinator) thread's V8 heap in use at the end, bytes. */
  readonly coordinatorHeapUsed: number;
  /** Bytes of SharedArrayBuffers and ArrayBuffers (vCPU records, guest memory), as V8 counts them on this thread. */
  readonly arrayBuffers: number;
  /** Vm.create until every vCPU answered and was resumed, ms. */
  readonly createMs: number;
  /** From creation until idle vCPUs all halted / busy ones all ran two slices, ms. */
  readonly upMs: number;
  /** Guest operations run by all vCPUs by the end (0 for idle ones). */
  readonly guestOps: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function measureMemory(n: number, mode: LoadMode, settleMs: number): Promise<MemorySample> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const baselineRss = process.memoryUsage().rss;
  const t0 = performance.now();
  const vm = await Vm.create({ vcpus: n, policy: 'legacy', deadlineMs: 120_000, ...(mode === 'idle' ? { mix: IDLE_MIX, loop: { haltTimeoutMs: Infinity } } : {}) });
  const createMs = performance.now() - t0;
  try {
    // Up and running: idle vCPUs blocked in HLT; busy ones through at least two run slices each.
    const up = (): boolean =>
      mode === 'idle' ? vm.records.every((r) => Atomics.load(r.halted, 0) === 1) : vm.records.every((_, id) => vm.vcpuStats(id).guestOps >= 512);
    const end = performance.now() + 120_000;
    while (!up()) {
      if (performance.now() > end) throw new Error(`${mode} N=${n}: vCPUs not up after 120 s`);
      await sleep(5);
    }
    const upMs = performance.now() - t0 - createMs;
    let peakRss = 0;
    let rss = 0;
    const settleEnd = performance.now() + settleMs;
    do {
      await sleep(Math.min(50, settleMs));
      rss = process.memoryUsage().rss;
      peakRss = Math.max(peakRss, rss);
    } while (performance.now() < settleEnd);
    const mem = process.memoryUsage();
    return {
      n,
      mode,
      baselineRss,
      rss,
      peakRss,
      coordinatorHeapUsed: mem.heapUsed,
      arrayBuffers: mem.arrayBuffers,
      createMs,
      upMs,
      guestOps: vm.totals().guestOps,
    };
  } finally {
    await vm.destroy();
  }
}

/** Entry point when run as a script. */
async function main(argv: readonly string[]): Promise<void> {
  const n = Number(argv[0]);
  const mode = argv[1] as LoadMode;
  const settleMs = Number(argv[2] ?? 300);
  if (!Number.isInteger(n) || n < 1 || (mode !== 'idle' && mode !== 'busy') || !(settleMs >= 0)) {
    throw new RangeError('usage: memory-child.js N idle|busy [SETTLE_MS]');
  }
  const sample = await measureMemory(n, mode, settleMs);
  process.stdout.write(JSON.stringify(sample) + '\n');
}

await main(process.argv.slice(2));

/**
 * A seeded chaos coordinator for a running VM: at random moments it changes
 * CPUID on every vCPU through shared memory (legacy policy: applied while
 * running) and sends TLB-flush and MMU-reload requests, waiting or not. It
 * runs for a fixed time, then collects statistics and checker findings.
 */
import type { StrategyName } from '../mmu/strategies.js';
import type { FindingWire } from '../rpc/protocol.js';
import { REQ } from '../vcpu/requests.js';
import type { VcpuStat } from '../vcpu/vcpu-layout.js';
import { randomCpuid } from '../workload/random-cpuid.js';
import { Rng } from '../workload/rng.js';
import { Vm, type VmOptions, type WriteTraceOptions } from './vm.js';

export interface ChaosOptions {
  /** How long the vCPUs run (ms). */
  durationMs: number;
  /** Mean time between coordinator actions (ms). */
  actionEveryMs: number;
  seed: number;
  /**
   * Record a trace and write it after the VM stopped (docs/traces.md): the
   * VM traces with vmOpts.trace (default ring size unless given there).
   */
  traceOut?: WriteTraceOptions;
}

export interface ChaosResult {
  readonly strategy: StrategyName;
  readonly vcpus: number;
  readonly elapsedMs: number;
  readonly cpuidBroadcasts: number;
  readonly requests: number;
  readonly stats: Record<VcpuStat, number>;
  readonly findings: FindingWire[];
  readonly dead: Record<number, string>;
  /** The trace files written (ChaosOptions.traceOut). */
  readonly traceFiles: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Drive a VM that is already running. */
export async function chaos(vm: Vm, opts: ChaosOptions): Promise<Pick<ChaosResult, 'cpuidBroadcasts' | 'requests' | 'elapsedMs'>> {
  const rng = new Rng(opts.seed);
  let cpuidBroadcasts = 0;
  let requests = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < opts.durationMs) {
    await sleep(rng.int(2 * opts.actionEveryMs) + 1);
    switch (rng.int(4)) {
      case 0:
      case 1:
        await vm.broadcastCpuid(randomCpuid(rng));
        cpuidBroadcasts++;
        break;
      case 2:
        await vm.makeAllCpusRequest(REQ.TLB_FLUSH, { wait: rng.chance(0.5) });
        requests++;
        break;
      default:
        await vm.makeAllCpusRequest(REQ.MMU_RELOAD, { wait: rng.chance(0.5) });
        requests++;
        break;
    }
  }
  return { cpuidBroadcasts, requests, elapsedMs: performance.now() - t0 };
}

/** Create a VM with checking on, run the chaos coordinator against it, tear it down. */
export async function runChaos(vmOpts: VmOptions & { strategy: StrategyName }, opts: ChaosOptions): Promise<ChaosResult> {
  const trace = opts.traceOut ? (vmOpts.trace ?? {}) : vmOpts.trace;
  const vm = await Vm.create({ policy: 'legacy', check: true, seed: opts.seed, ...vmOpts, trace });
  try {
    const c = await chaos(vm, opts);
    const findings: FindingWire[] = [];
    for (let id = 0; id < vm.vcpus; id++) {
      if (vm.dead.has(id)) continue;
      const f = await vm.call(id, 'findings');
      if (f.ok) findings.push(...f.value.slice(0, 5));
    }
    const stats = await vm.destroy();
    const traceFiles = opts.traceOut ? vm.writeTrace(opts.traceOut) : [];
    return { strategy: vmOpts.strategy, vcpus: vm.vcpus, ...c, stats, findings, dead: Object.fromEntries(vm.dead), traceFiles };
  } finally {
    await vm.destroy();
  }
}

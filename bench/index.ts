/**
 * The registry of benchmark groups and the runner the CLI calls. A new group
 * is one entry in BENCH_GROUPS: either a full BenchGroup (it measures its own
 * cases with bench/harness.ts), or `throughputGroup(...)` around a function
 * that already returns rates.
 */
import { availableParallelism, cpus } from 'node:os';
import { MMU_INIT_GROUP } from './mmu-init.js';
import { MEMORY_GROUP } from './memory.js';
import { RESET_BROADCAST_GROUP } from './reset-broadcast.js';
import { TIMINGS, type BenchGroup, type BenchRun, type CaseProgress, type GroupResult, type MachineInfo, type Timing } from './types.js';
import { benchShadow } from './shadow.js';
import { benchWalker } from './walker.js';
import { ZAP_ALL_GROUP } from './zap-all.js';

/**
 * Wrap a function that measures by itself and returns calls/s per item into
 * a group: one row per item (rate only, no latency figures), a bar chart.
 */
export function throughputGroup(
  name: string,
  description: string,
  unit: string,
  measure: (opts: { quick: boolean }) => Promise<ReadonlyArray<{ name: string; opsPerSec: number }>>,
  notes: readonly string[] = [],
): BenchGroup {
  return {
    name,
    description,
    async run(ctx): Promise<GroupResult> {
      const started = performance.now();
      const items = await measure({ quick: ctx.quick });
      const rows = items.map((it) => ({
        id: it.name,
        labels: { name: it.name },
        opsPerSec: it.opsPerSec,
        medianNs: null,
        p99Ns: null,
        samples: null,
        batch: null,
        rmePct: null,
      }));
      rows.forEach((row, i) => ctx.onCase({ group: name, index: i + 1, total: rows.length, row }));
      return {
        group: name,
        description,
        notes: [...notes, `Measured by the group itself; only rates (${unit}) are reported.`],
        rows,
        ratios: [],
        chart: {
          kind: 'bar',
          title: `${name}: ${unit} (higher is faster)`,
          yLabel: unit,
          logY: false,
          categories: rows.map((r) => r.id),
          series: [{ name: unit, values: rows.map((r) => r.opsPerSec) }],
        },
        elapsedMs: performance.now() - started,
      };
    },
  };
}

/** Every group, in the order `bench` with no names runs them. */
export const BENCH_GROUPS: readonly BenchGroup[] = [
  MMU_INIT_GROUP,
  throughputGroup('walker', 'guest page walks/s per paging mode', 'walks/s', async (o) =>
    (await benchWalker(o)).map((r) => ({ name: r.mode, opsPerSec: r.walksPerSec })),
  ),
  throughputGroup(
    'shadow',
    'shadow page cache: lookups/s and lockless accesses/s (1 thread, N workers), zap-all + reload',
    'ops/s',
    benchShadow,
    ['zap-all + reload rows are rounds/s: flip, waiting MMU_RELOAD, zap obsolete, every vCPU reloads its root and re-faults 64 pages.'],
  ),
  RESET_BROADCAST_GROUP,
  ZAP_ALL_GROUP,
  MEMORY_GROUP,
];

export const benchGroupNames = (groups: readonly BenchGroup[] = BENCH_GROUPS): string[] => groups.map((g) => g.name);

/** A benchmark name that is not in the registry. */
export class UnknownBenchError extends Error {
  override name = 'UnknownBenchError';
  constructor(
    readonly unknown: readonly string[],
    readonly valid: readonly string[],
  ) {
    super(`unknown benchmark${unknown.length > 1 ? 's' : ''} ${unknown.map((n) => `"${n}"`).join(', ')}; valid: ${valid.join(', ')}`);
  }
}

/** The groups named, in registry order; all of them for no names. Throws UnknownBenchError. */
export function resolveGroups(names: readonly string[], groups: readonly BenchGroup[] = BENCH_GROUPS): BenchGroup[] {
  if (names.length === 0) return [...groups];
  const valid = benchGroupNames(groups);
  const unknown = names.filter((n) => !valid.includes(n));
  if (unknown.length) throw new UnknownBenchError(unknown, valid);
  return groups.filter((g) => names.includes(g.name));
}

export function machineInfo(): MachineInfo {
  const c = cpus();
  return {
    cpus: availableParallelism(),
    cpuModel: c[0]?.model.trim() ?? 'unknown',
    node: process.versions.node,
    platform: process.platform,
    arch: process.arch,
  };
}

export interface RunOptions {
  readonly names?: readonly string[];
  readonly quick?: boolean;
  /** Overrides the standard timing (tests use tiny values). */
  readonly timing?: Timing;
  /** Recorded in the results: the command that produced them. */
  readonly command?: string;
  readonly groups?: readonly BenchGroup[];
  readonly onGroupStart?: (group: BenchGroup) => void;
  readonly onCase?: (p: CaseProgress) => void;
  readonly onGroupEnd?: (result: GroupResult) => void;
}

/** Run the named groups one after the other on this thread. */
export async function runBenchmarks(opts: RunOptions = {}): Promise<BenchRun> {
  const quick = opts.quick ?? false;
  const timing = opts.timing ?? (quick ? TIMINGS.quick : TIMINGS.full);
  const selected = resolveGroups(opts.names ?? [], opts.groups);
  const results: GroupResult[] = [];
  for (const g of selected) {
    opts.onGroupStart?.(g);
    const r = await g.run({ quick, timing, onCase: opts.onCase ?? (() => {}) });
    results.push(r);
    opts.onGroupEnd?.(r);
  }
  return {
    tool: 'kvm-mmu-emu bench',
    schemaVersion: 1,
    date: new Date().toISOString(),
    command: opts.command ?? 'kvm-mmu-emu bench',
    quick,
    timing,
    machine: machineInfo(),
    groups: results,
  };
}

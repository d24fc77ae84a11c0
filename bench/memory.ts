/**
 * Group "memory": resident memory per vCPU as N grows, and what creating the
 * VM costs. Each (load, N) is measured in a fresh process (bench/memory-child.ts):
 * process RSS (all threads) with the VM up and running, minus the RSS before
 * creating it, divided by N. The measuring process is started with
 * --expose-gc so the baseline is taken after a full GC.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { MemorySample } from './memory-child.js';
import type { LoadMode } from './reset-broadcast.js';
import { shortNumber } from './svg.js';
import { TIMINGS, type BenchGroup, type BenchRow, type ChartSpec, type GroupResult, type GroupRunContext } from './types.js';

export interface MemorySettings {
  readonly ns: readonly number[];
  readonly modes: readonly LoadMode[];
  /** How long the VM runs, after it is up, before RSS is read (sampled every 50 ms; the last and the peak are kept). */
  readonly settleMs: number;
}

export const MEMORY_SETTINGS: Readonly<Record<'quick' | 'full' | 'smoke', MemorySettings>> = {
  quick: { ns: [1, 2, 4, 8, 16, 32, 64], modes: ['idle', 'busy'], settleMs: 300 },
  full: { ns: [1, 2, 4, 8, 16, 32, 64, 128, 256], modes: ['idle', 'busy'], settleMs: 500 },
  /** Used when a test passes a timing shorter than --quick's. */
  smoke: { ns: [1, 2], modes: ['idle', 'busy'], settleMs: 0 },
};

const MIB = 1024 * 1024;
const CHILD_TIMEOUT_MS = 240_000;

/** The child script: the compiled one from dist/, the TypeScript one through tsx otherwise (as vm.ts starts its workers). */
function childCommand(): { file: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith('.ts');
  const file = fileURLToPath(new URL(`./memory-child.${fromSource ? 'ts' : 'js'}`, import.meta.url));
  return { file, execArgv: ['--expose-gc', ...(fromSource ? ['--import', 'tsx'] : [])] };
}

/** One measurement in a fresh Node process. */
export function sampleMemory(n: number, mode: LoadMode, settleMs: number): Promise<MemorySample> {
  const { file, execArgv } = childCommand();
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [...execArgv, file, String(n), mode, String(settleMs)], { timeout: CHILD_TIMEOUT_MS, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`memory ${mode} N=${n}: child failed: ${err.message}${stderr ? `\n${stderr.trim()}` : ''}`));
        return;
      }
      try {
        const line = stdout.trim().split('\n').pop() ?? '';
        resolve(JSON.parse(line) as MemorySample);
      } catch (e) {
        reject(new Error(`memory ${mode} N=${n}: unreadable child output ${JSON.stringify(stdout.slice(0, 200))}: ${(e as Error).message}`));
      }
    });
  });
}

/** Bytes per vCPU attributed to the VM: (RSS up and running − RSS before) / N. */
export const rssPerVcpu = (s: MemorySample): number => (s.rss - s.baselineRss) / s.n;

/** A row per (load, N): the rate is vCPUs created per second; the memory figures are in `extra` and the tables. */
function memoryRow(s: MemorySample): BenchRow {
  return {
    id: `${s.mode}/N=${s.n}`,
    labels: { mode: s.mode, n: String(s.n), rate: 'vCPUs created/s', rssPerVcpuMiB: (rssPerVcpu(s) / MIB).toFixed(2) },
    opsPerSec: s.createMs > 0 ? (s.n * 1000) / s.createMs : 0,
    medianNs: null,
    p99Ns: null,
    samples: 1,
    batch: null,
    rmePct: null,
  };
}

function memoryChart(samples: readonly MemorySample[], modes: readonly LoadMode[], ns: readonly number[], y: (s: MemorySample) => number, title: string, yLabel: string): ChartSpec {
  const at = (mode: LoadMode, n: number): MemorySample | undefined => samples.find((s) => s.mode === mode && s.n === n);
  return {
    kind: 'line',
    title,
    yLabel,
    logY: false,
    categories: ns.map((n) => `N=${n}`),
    series: modes.map((mode) => ({ name: mode, values: ns.map((n) => (at(mode, n) ? y(at(mode, n)!) : null)) })),
  };
}

export function settingsFor(ctx: GroupRunContext): MemorySettings {
  if (ctx.timing.timeMs < TIMINGS.quick.timeMs) return MEMORY_SETTINGS.smoke;
  return ctx.quick ? MEMORY_SETTINGS.quick : MEMORY_SETTINGS.full;
}

export async function runMemory(ctx: GroupRunContext, settings?: MemorySettings): Promise<GroupResult> {
  const s = settings ?? settingsFor(ctx);
  const started = performance.now();
  const samples: MemorySample[] = [];
  const rows: BenchRow[] = [];
  const total = s.ns.length * s.modes.length;
  for (const n of s.ns) {
    for (const mode of s.modes) {
      const sample = await sampleMemory(n, mode, s.settleMs);
      samples.push(sample);
      const row = memoryRow(sample);
      rows.push(row);
      ctx.onCase({ group: MEMORY_GROUP.name, index: rows.length, total, row });
    }
  }
  const at = (mode: LoadMode, n: number): MemorySample | undefined => samples.find((x) => x.mode === mode && x.n === n);
  const mib = (b: number): string => (b / MIB).toFixed(b < 10 * MIB ? 2 : 1);
  const table = {
    title: 'resident memory: (process RSS with the VM up and running − RSS before creating it) / N; VM creation time',
    header: ['N', ...s.modes.flatMap((m) => [`${m} MiB`, `${m} MiB/vCPU`, `${m} peak MiB/vCPU`]), ...s.modes.map((m) => `${m} create s`), ...s.modes.map((m) => `${m} create ms/vCPU`)],
    rows: s.ns.map((n) => [
      String(n),
      ...s.modes.flatMap((m) => {
        const x = at(m, n);
        return x ? [mib(x.rss - x.baselineRss), mib(rssPerVcpu(x)), mib((x.peakRss - x.baselineRss) / n)] : ['-', '-', '-'];
      }),
      ...s.modes.map((m) => (at(m, n) ? (at(m, n)!.createMs / 1000).toFixed(2) : '-')),
      ...s.modes.map((m) => (at(m, n) ? shortNumber(at(m, n)!.createMs / n) : '-')),
    ]),
    rightAlign: [true, ...s.modes.flatMap(() => [true, true, true]), ...s.modes.map(() => true), ...s.modes.map(() => true)],
  };
  return {
    group: MEMORY_GROUP.name,
    description: MEMORY_GROUP.description,
    notes: [
      'Each (load, N) runs in a fresh `node --expose-gc` process: RSS after a GC, then Vm.create (one piscina worker per vCPU, legacy policy), wait until idle vCPUs all halted / busy ones all ran >= 512 guest ops, run for the settle window, read RSS (process-wide: the coordinator and every worker thread).',
      `MiB/vCPU = (RSS at the end of a ${s.settleMs} ms settle window − RSS before creation) / N; peak = the highest RSS sampled (every 50 ms) in that window. The VM's fixed costs (guest memory it touches, pool, buffers) are spread over N, so small N read high.`,
      'idle = every guest op is HLT (blocked in Atomics.waitAsync); busy = the default guest mix, always running.',
      'create = Vm.create until every vCPU answered the control plane and was resumed. The row rate (ops/s in the JSON) is vCPUs created per second.',
    ],
    rows,
    ratios: [],
    chart: memoryChart(samples, s.modes, s.ns, (x) => rssPerVcpu(x) / MIB, 'memory: resident MiB per vCPU', 'MiB per vCPU'),
    moreCharts: [
      {
        name: 'create',
        chart: memoryChart(samples, s.modes, s.ns, (x) => x.createMs / x.n, 'memory: VM creation ms per vCPU', 'ms per vCPU'),
      },
    ],
    tables: [table],
    extra: { settings: s, samples },
    elapsedMs: performance.now() - started,
  };
}

export const MEMORY_GROUP: BenchGroup = {
  name: 'memory',
  description: 'resident memory per vCPU as N grows (process RSS of all threads, fresh process per N), and VM creation time',
  run: (ctx) => runMemory(ctx),
};

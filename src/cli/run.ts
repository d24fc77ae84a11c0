/**
 * `kvm-mmu-emu run`: the default job. Runs the built-in role tour once per
 * invalidation strategy and prints a side-by-side table and one line saying
 * what the comparison shows. Parsing and printing only.
 */
import type { Command } from 'commander';
import { STRATEGY_NAMES, type StrategyName } from '../mmu/strategies.js';
import { DEFAULT_TOUR, runTour, TOUR_HOSTS } from '../workload/role-tour.js';
import { runChaos } from '../vm/chaos.js';
import { MAX_VCPUS } from '../vm/vm.js';
import { VCPU_STATS, type VcpuStat } from '../vcpu/vcpu-layout.js';
import { EXIT, UsageError, useColor } from './io.js';
import { parseStrategy } from './role.js';

function positiveInt(flag: string, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${flag}: expected an integer in 1..${max}, got "${text}"`);
    return n;
  };
}

/** What a run of one strategy reports, threaded or in one thread. */
export interface RunRow {
  readonly strategy: string;
  readonly cpuidBroadcasts: number;
  readonly stats: Readonly<Record<VcpuStat, number>>;
  readonly elapsedMs: number;
  readonly findings: readonly { severity: string; invariant: string; vcpu: number; strategy: string; detail: string }[];
}

const ROWS: [string, (r: RunRow) => string][] = [
  ['guest operations', (r) => String(r.stats.guestOps)],
  ['memory accesses (walked)', (r) => String(r.stats.accesses)],
  ['guest page faults', (r) => String(r.stats.pageFaults + r.stats.nestedFaults)],
  ['CPUID broadcasts', (r) => String(r.cpuidBroadcasts)],
  ['CPUID applied (vCPU)', (r) => String(r.stats.cpuidApplied)],
  ['nested entries', (r) => String(r.stats.nestedEntries)],
  ['#GP (refused writes)', (r) => String(r.stats.gpFaults)],
  ['MMU resets', (r) => String(r.stats.mmuResets)],
  ['MMU inits', (r) => String(r.stats.mmuInits)],
  ['fast-path hits', (r) => String(r.stats.fastPathHits)],
  ['rebuilds', (r) => String(r.stats.rebuilds)],
  ['contexts invalidated', (r) => String(r.stats.invalidations)],
  ['missed rebuilds (latent)', (r) => String(r.stats.missedRebuildLatent)],
  ['missed rebuilds (observable)', (r) => String(r.stats.missedRebuildObservable)],
  ['invalid-role reads (latent)', (r) => String(r.stats.invalidReadLatent)],
  ['invalid-role reads (observable)', (r) => String(r.stats.invalidReadObservable)],
  ['operations/s', (r) => String(Math.round(r.stats.guestOps / (r.elapsedMs / 1000)))],
];

export function formatTable(results: readonly RunRow[], color: boolean): string {
  const head = ['', ...results.map((r) => r.strategy)];
  const body = ROWS.map(([label, f]) => [label, ...results.map(f)]);
  const widths = head.map((_, c) => Math.max(...[head, ...body].map((row) => row[c]!.length)));
  const fmt = (row: string[], bold = false) =>
    row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').replace(/^/, bold && color ? '\x1b[1m' : '') +
    (bold && color ? '\x1b[0m' : '');
  return [fmt(head, true), ...body.map((r) => fmt(r))].join('\n');
}

/** One line saying what the comparison shows, built from the results. */
export function conclusion(results: readonly RunRow[]): string {
  const observable = (r: RunRow) => r.stats.missedRebuildObservable + r.stats.invalidReadObservable;
  const latent = (r: RunRow) => r.stats.missedRebuildLatent + r.stats.invalidReadLatent;
  const parts: string[] = [];
  for (const r of results.filter((x) => observable(x) > 0)) {
    const first = r.findings.find((f) => f.severity === 'observable');
    parts.push(
      `${r.strategy} is observably wrong: ${r.stats.invalidReadObservable} read(s) of an invalidated role returned a wrong value and ` +
        `${r.stats.missedRebuildObservable} missed rebuild(s) changed products${first ? ` (e.g. ${first.detail})` : ''}`,
    );
  }
  const clean = results.filter((x) => observable(x) === 0).map((x) => x.strategy);
  if (clean.length) parts.push(`no observable problem under ${clean.join(', ')}`);
  const lat = results.filter((x) => latent(x) > 0).map((x) => `${x.strategy} ${x.stats.missedRebuildLatent} missed rebuild(s) + ${x.stats.invalidReadLatent} invalid-role read(s)`);
  if (lat.length) parts.push(`latent (same values, still a design smell): ${lat.join(', ')}`);
  return parts.join('; ') + '.';
}

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run the built-in scenario under each invalidation strategy and compare them')
    .option('--strategy <NAME>', `one strategy, or "all" (${STRATEGY_NAMES.join(', ')})`, 'all')
    .option('--vcpus <N>', 'vCPUs in the scenario', positiveInt('--vcpus', MAX_VCPUS), DEFAULT_TOUR.vcpus)
    .option('--seconds <N>', 'seconds each strategy runs (threaded)', positiveInt('--seconds', 3600), 3)
    .option('--in-thread', 'run the vCPU cores in this thread with a seeded round-robin: deterministic for a seed')
    .option('--ops <N>', 'operations per vCPU (with --in-thread)', positiveInt('--ops', 10_000_000), DEFAULT_TOUR.opsPerVcpu)
    .option('--seed <N>', 'workload and coordinator seed', positiveInt('--seed', 0xffffffff), DEFAULT_TOUR.seed)
    .option('--json', 'print the results as JSON')
    .addHelpText(
      'after',
      '\nThe scenario: vCPUs (one worker thread each) on three host flavours (Intel EPT, AMD NPT, shadow\n' +
        'paging) run seeded guest programs: every paging mode, CR0.WP/CR4.SMEP/SMAP/PKE/PSE/EFER.NX toggles,\n' +
        'memory accesses walked through the current MMU, SMI/RSM, nested entry and exit with L2 paging on and\n' +
        'off, refused writes; a coordinator broadcasts CPUID changes (legacy policy), TLB flushes and MMU\n' +
        'reloads. The role checker reports missed rebuilds and reads of invalidated roles. Threaded runs are\n' +
        'reproducible only up to thread timing; --in-thread runs are exact for a seed. Exit code 0 unless the\n' +
        'input is bad.\n\n' +
        'Examples:\n  kvm-mmu-emu run\n  kvm-mmu-emu run --strategy word-zero --vcpus 32 --seconds 10\n  kvm-mmu-emu run --in-thread --ops 50000 --seed 7 --json',
    )
    .action(async (opts: { strategy: string; vcpus: number; seconds: number; inThread?: boolean; ops: number; seed: number; json?: boolean }) => {
      const names: StrategyName[] = opts.strategy === 'all' ? [...STRATEGY_NAMES] : [parseStrategy(opts.strategy).name];
      const results: RunRow[] = [];
      if (opts.inThread) {
        const tour = { vcpus: opts.vcpus, opsPerVcpu: opts.ops, seed: opts.seed };
        // Warm the JIT so the first strategy's operations/s is comparable.
        runTour(names[0]!, { ...tour, opsPerVcpu: Math.max(1, Math.floor(tour.opsPerVcpu / 10)) });
        for (const n of names) {
          if (!opts.json) process.stderr.write(`running ${n} (in one thread) ...\n`);
          results.push(runTour(n, tour));
        }
      } else {
        for (const n of names) {
          if (!opts.json) process.stderr.write(`running ${n}: ${opts.vcpus} vCPU threads for ${opts.seconds} s ...\n`);
          results.push(await runThreaded(n, opts.vcpus, opts.seconds, opts.seed));
        }
      }
      if (opts.json) {
        console.log(JSON.stringify({ scenario: { builtIn: 'role-tour', ...opts }, results, conclusion: conclusion(results) }, null, 2));
      } else {
        console.log(formatTable(results, useColor()));
        console.log('');
        for (const r of results) for (const f of r.findings.slice(0, 2)) console.log(`  [${f.strategy}] ${f.invariant} (${f.severity}), vCPU ${f.vcpu}: ${f.detail}`);
        console.log('');
        console.log(conclusion(results));
      }
      process.exitCode = EXIT.OK;
    });
}

/** The threaded scenario: vCPUs on the three host flavours are three VMs run side by side. */
async function runThreaded(strategy: StrategyName, vcpus: number, seconds: number, seed: number): Promise<RunRow> {
  const flavours = Object.values(TOUR_HOSTS);
  const share = (i: number) => Math.floor(vcpus / flavours.length) + (i < vcpus % flavours.length ? 1 : 0);
  const runs = await Promise.all(
    flavours
      .map((f, i) => ({ f, n: share(i), i }))
      .filter((x) => x.n > 0)
      .map(({ f, n, i }) => runChaos({ vcpus: n, strategy, host: f.host, seed: seed + i }, { durationMs: seconds * 1000, actionEveryMs: 25, seed: seed + i })),
  );
  const stats = Object.fromEntries(VCPU_STATS.map((k) => [k, runs.reduce((s, r) => s + r.stats[k], 0)])) as Record<VcpuStat, number>;
  return {
    strategy,
    cpuidBroadcasts: runs.reduce((s, r) => s + r.cpuidBroadcasts, 0),
    stats,
    elapsedMs: Math.max(...runs.map((r) => r.elapsedMs)),
    findings: runs.flatMap((r) => r.findings),
  };
}

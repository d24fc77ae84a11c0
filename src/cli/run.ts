/**
 * `kvm-mmu-emu run`: the default job. Runs the built-in role tour once per
 * invalidation strategy and prints a side-by-side table and one line saying
 * what the comparison shows. Parsing and printing only.
 */
import type { Command } from 'commander';
import { STRATEGY_NAMES, type StrategyName } from '../mmu/strategies.js';
import { DEFAULT_TOUR, runTour, type TourResult } from '../workload/role-tour.js';
import { EXIT, UsageError, useColor } from './io.js';
import { parseStrategy } from './role.js';

function positiveInt(flag: string, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${flag}: expected an integer in 1..${max}, got "${text}"`);
    return n;
  };
}

const ROWS: [string, (r: TourResult) => string][] = [
  ['guest operations', (r) => String(r.ops)],
  ['CPUID broadcasts', (r) => String(r.cpuidBroadcasts)],
  ['CPUID applied (vCPU)', (r) => String(r.stats.cpuidApplied)],
  ['nested entries', (r) => String(r.stats.nestedEntries)],
  ['#GP (refused writes)', (r) => String(r.stats.gpFaults)],
  ['MMU resets', (r) => String(r.stats.mmuResets)],
  ['MMU inits', (r) => String(r.stats.mmuInits)],
  ['fast-path hits', (r) => String(r.stats.fastPathHits)],
  ['rebuilds', (r) => String(r.stats.rebuilds)],
  ['contexts invalidated', (r) => String(r.checks.invalidations)],
  ['missed rebuilds (latent)', (r) => String(r.checks.missedRebuildLatent)],
  ['missed rebuilds (observable)', (r) => String(r.checks.missedRebuildObservable)],
  ['invalid-role reads (latent)', (r) => String(r.checks.invalidReadLatent)],
  ['invalid-role reads (observable)', (r) => String(r.checks.invalidReadObservable)],
  ['operations/s', (r) => String(Math.round(r.ops / (r.elapsedMs / 1000)))],
];

export function formatTable(results: readonly TourResult[], color: boolean): string {
  const head = ['', ...results.map((r) => r.strategy)];
  const body = ROWS.map(([label, f]) => [label, ...results.map(f)]);
  const widths = head.map((_, c) => Math.max(...[head, ...body].map((row) => row[c]!.length)));
  const fmt = (row: string[], bold = false) =>
    row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').replace(/^/, bold && color ? '\x1b[1m' : '') +
    (bold && color ? '\x1b[0m' : '');
  return [fmt(head, true), ...body.map((r) => fmt(r))].join('\n');
}

/** One line saying what the comparison shows, built from the results. */
export function conclusion(results: readonly TourResult[]): string {
  const observable = (r: TourResult) => r.checks.missedRebuildObservable + r.checks.invalidReadObservable;
  const latent = (r: TourResult) => r.checks.missedRebuildLatent + r.checks.invalidReadLatent;
  const parts: string[] = [];
  for (const r of results.filter((x) => observable(x) > 0)) {
    const first = r.findings.find((f) => f.severity === 'observable');
    parts.push(
      `${r.strategy} is observably wrong: ${r.checks.invalidReadObservable} read(s) of an invalidated role returned a wrong value and ` +
        `${r.checks.missedRebuildObservable} missed rebuild(s) changed products${first ? ` (e.g. ${first.detail})` : ''}`,
    );
  }
  const clean = results.filter((x) => observable(x) === 0).map((x) => x.strategy);
  if (clean.length) parts.push(`no observable problem under ${clean.join(', ')}`);
  const lat = results.filter((x) => latent(x) > 0).map((x) => `${x.strategy} ${x.checks.missedRebuildLatent} missed rebuild(s) + ${x.checks.invalidReadLatent} invalid-role read(s)`);
  if (lat.length) parts.push(`latent (same values, still a design smell): ${lat.join(', ')}`);
  return parts.join('; ') + '.';
}

export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run the built-in scenario under each invalidation strategy and compare them')
    .option('--strategy <NAME>', `one strategy, or "all" (${STRATEGY_NAMES.join(', ')})`, 'all')
    .option('--vcpus <N>', 'vCPU MMUs in the scenario', positiveInt('--vcpus', 4096), DEFAULT_TOUR.vcpus)
    .option('--ops <N>', 'operations per vCPU', positiveInt('--ops', 10_000_000), DEFAULT_TOUR.opsPerVcpu)
    .option('--seed <N>', 'workload seed', positiveInt('--seed', 0xffffffff), DEFAULT_TOUR.seed)
    .option('--json', 'print the results as JSON')
    .addHelpText(
      'after',
      '\nThe scenario: vCPUs on three host flavours (Intel EPT, AMD NPT, shadow paging) run seeded guest\n' +
        'workloads: every paging mode, CR0.WP/CR4.SMEP/SMAP/PKE/PSE/EFER.NX toggles, SMM, nested entry and\n' +
        'exit with L2 paging on and off, and CPUID changes under the legacy policy. The role checker\n' +
        'reports missed rebuilds and reads of invalidated roles. Exit code 0 unless the input is bad.\n\n' +
        'Examples:\n  kvm-mmu-emu run\n  kvm-mmu-emu run --strategy level-zero --ops 50000 --seed 7 --json',
    )
    .action((opts: { strategy: string; vcpus: number; ops: number; seed: number; json?: boolean }) => {
      const names: StrategyName[] = opts.strategy === 'all' ? [...STRATEGY_NAMES] : [parseStrategy(opts.strategy).name];
      const tour = { vcpus: opts.vcpus, opsPerVcpu: opts.ops, seed: opts.seed };
      // Warm the JIT so the first strategy's operations/s is comparable.
      runTour(names[0]!, { ...tour, opsPerVcpu: Math.max(1, Math.floor(tour.opsPerVcpu / 10)) });
      const results = names.map((n) => {
        if (!opts.json) process.stderr.write(`running ${n} ...\n`);
        return runTour(n, tour);
      });
      if (opts.json) {
        console.log(JSON.stringify({ scenario: { ...tour, builtIn: 'role-tour' }, results, conclusion: conclusion(results) }, null, 2));
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

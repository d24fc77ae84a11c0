/**
 * `kvm-mmu-emu run`: the default job. Runs the built-in role tour once per
 * invalidation strategy and prints a side-by-side table and one line saying
 * what the comparison shows. Parsing and printing only.
 */
import type { Command } from 'commander';
import { STRATEGY_NAMES, type StrategyName } from '../mmu/strategies.js';
import { DEFAULT_TOUR, runTour, TOUR_HOSTS } from '../workload/role-tour.js';
import { runChaos } from '../vm/chaos.js';
import { traceFileName } from '../trace/files.js';
import { LayoutError } from '../layout/layout.js';
import { invariantsOf, sumCounts, sumStats, type InvariantResult } from '../stress/stress.js';
import { MAX_VCPUS } from '../vm/vm.js';
import { VCPU_STATS, type VcpuStat } from '../vcpu/vcpu-layout.js';
import { EXIT, UsageError, useColor } from './io.js';
import { parseStrategy } from './role.js';
import { loadScenario, ScenarioError } from '../scenario/load.js';
import { runScenario } from '../scenario/runner.js';
import { eventSummary } from '../scenario/report.js';
import { DEFAULT_RING_CAPACITY, MAX_RING_CAPACITY, MAX_TRACE_BYTES, traceRingsBytes } from '../trace/ring.js';

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
  /** Threaded runs: the eight stress invariants (src/stress), the coordinator's actions and the shadow cache's counters. */
  readonly invariants?: readonly InvariantResult[];
  readonly coordinator?: { readonly zapAlls: number; readonly tableEdits: number; readonly reloads: number; readonly flushes: number };
  readonly shadow?: { readonly pagesCreated: number; readonly zapped: number } | null;
}

const dash = (v: number | undefined): string => (v === undefined ? '-' : String(v));
const violations = (r: RunRow, kind: 'latent' | 'observable'): number | undefined => r.invariants?.reduce((a, i) => a + i[kind], 0);

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
  ['shadow pages created', (r) => dash(r.shadow?.pagesCreated)],
  ['shadow pages zapped', (r) => dash(r.shadow?.zapped)],
  ['zap-alls', (r) => dash(r.coordinator?.zapAlls)],
  ['requests sent (reload + flush)', (r) => dash(r.coordinator && r.coordinator.reloads + r.coordinator.flushes)],
  ['page-table edits', (r) => dash(r.coordinator?.tableEdits)],
  ['violations, all invariants (latent)', (r) => dash(violations(r, 'latent'))],
  ['violations, all invariants (observable)', (r) => dash(violations(r, 'observable'))],
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
  return [roleConclusion(results), invariantConclusion(results)].filter(Boolean).join(' ');
}

/**
 * Which invariants fail observably under every design (a property of the
 * protocol, not of the design) and which only under some (a design's own).
 */
function invariantConclusion(results: readonly RunRow[]): string {
  if (!results.every((r) => r.invariants)) return '';
  const failing = (id: number) => results.filter((r) => r.invariants![id - 1]!.observable > 0).map((r) => r.strategy);
  const all: string[] = [];
  const some: string[] = [];
  for (const inv of results[0]!.invariants!) {
    const f = failing(inv.id);
    if (f.length === results.length && results.length > 1) all.push(`${inv.id}. ${inv.name}`);
    else if (f.length) some.push(`${inv.id}. ${inv.name} under ${f.join(', ')}`);
  }
  const parts: string[] = [];
  if (some.length) parts.push(results.length > 1 ? `Invariants that separate the designs: ${some.join('; ')}.` : `Invariants violated observably: ${some.join('; ')}.`);
  if (all.length) parts.push(`Failing under every design alike (the legacy CPUID policy itself, e.g. guest_mmu left stale while L2 runs): ${all.join('; ')}.`);
  if (!parts.length) parts.push('No invariant failed observably.');
  return parts.join(' ');
}

function roleConclusion(results: readonly RunRow[]): string {
  const observable = (r: RunRow) => r.stats.missedRebuildObservable + r.stats.invalidReadObservable;
  const latent = (r: RunRow) => r.stats.missedRebuildLatent + r.stats.invalidReadLatent;
  const parts: string[] = [];
  for (const r of results.filter((x) => observable(x) > 0)) {
    const first = r.findings.find((f) => f.severity === 'observable' && (f.invariant === 'no-invalid-role-reads' || f.invariant === 'effective-invalidation'));
    parts.push(
      `${r.strategy} is observably wrong: ${r.stats.invalidReadObservable} read(s) of an invalidated role returned a wrong value and ` +
        `${r.stats.missedRebuildObservable} missed rebuild(s) changed products${first ? ` (e.g. ${first.detail})` : ''}`,
    );
  }
  const clean = results.filter((x) => observable(x) === 0).map((x) => x.strategy);
  if (clean.length) parts.push(`no observable role-checker finding (invariants 7, 8) under ${clean.join(', ')}`);
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
    .option('--scenario <FILE>', 'run a scenario file (JSON, see docs/scenarios.md) instead of the built-in scenario')
    .option('--duration-ms <N>', 'with --scenario: run each strategy this long instead of the file\'s durationMs', positiveInt('--duration-ms', 600_000))
    .option('--trace <FILE>', 'write a Chrome Trace Event JSON timeline (Perfetto) per VM: FILE with .STRATEGY.FLAVOUR before its extension (docs/traces.md)')
    .option('--ftrace <FILE>', 'write the kvmmmu events as trace-cmd report text per VM, named like --trace\'s files')
    .option('--trace-events <N>', 'trace ring size: events kept per thread (default 65536)', positiveInt('--trace-events', MAX_RING_CAPACITY))
    .addHelpText(
      'after',
      '\nThe scenario: vCPUs (one worker thread each) on three host flavours (Intel EPT, AMD NPT, shadow\n' +
        'paging) run seeded guest programs: every paging mode, CR0.WP/CR4.SMEP/SMAP/PKE/PSE/EFER.NX toggles,\n' +
        'memory accesses walked through the current MMU, SMI/RSM, nested entry and exit with L2 paging on and\n' +
        'off, refused writes; a coordinator broadcasts CPUID changes (legacy policy), TLB flushes and MMU\n' +
        'reloads. The role checker reports missed rebuilds and reads of invalidated roles. Threaded runs are\n' +
        'reproducible only up to thread timing; --in-thread runs are exact for a seed. Exit code 0 unless the\n' +
        'input is bad.\n\n' +
        'With --scenario FILE the VM, vCPUs, workload and events come from the file (docs/scenarios.md);\n' +
        '--strategy and --seed given on the command line override the file; an invalid file exits with 2.\n\n' +
        'Examples:\n  kvm-mmu-emu run\n  kvm-mmu-emu run --scenario examples/scenario-tour.json\n  kvm-mmu-emu run --strategy word-zero --vcpus 32 --seconds 10\n  kvm-mmu-emu run --in-thread --ops 50000 --seed 7 --json',
    )
    .action(async (opts: RunOptions, cmd: Command) => {
      const trace = traceOptions(cmd);
      if (opts.scenario !== undefined) return runScenarioFile(opts, opts.scenario, cmd, trace);
      if (opts.durationMs !== undefined) throw new UsageError('--duration-ms: only with --scenario (use --seconds for the built-in scenario)');
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
          results.push(await runThreaded(n, opts.vcpus, opts.seconds, opts.seed, trace));
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

type RunOptions = { strategy: string; vcpus: number; seconds: number; inThread?: boolean; ops: number; seed: number; json?: boolean; scenario?: string; durationMs?: number };

/** `run --scenario FILE`: load and validate the file, run it, print like the built-in scenario. */
async function runScenarioFile(opts: RunOptions, file: string, cmd: Command, trace?: TraceCli): Promise<void> {
  const fromCli = (key: string) => cmd.getOptionValueSource(key) === 'cli';
  const clash = (['vcpus', 'seconds', 'inThread', 'ops'] as const).filter(fromCli);
  if (clash.length) {
    const flags = clash.map((k) => '--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()));
    throw new UsageError(`--scenario: ${flags.join(', ')} cannot be combined with a scenario file (set it in the file)`);
  }
  try {
    const scenario = loadScenario(file);
    const { rows } = await runScenario(scenario, {
      source: file,
      durationMs: opts.durationMs,
      strategies: fromCli('strategy') && opts.strategy !== 'all' ? [parseStrategy(opts.strategy).name] : undefined,
      seed: fromCli('seed') ? opts.seed : undefined,
      progress: opts.json ? undefined : (line) => process.stderr.write(line + '\n'),
      trace: trace && { chrome: trace.chrome, ftrace: trace.ftrace, capacity: trace.capacity },
      traceWritten: trace?.quiet ? undefined : (f) => process.stderr.write(`trace written: ${f}\n`),
    });
    if (opts.json) {
      const { events, vcpuSetup, ...summary } = scenario;
      const echo = { file, ...summary, events: events.length, vcpuSetup: vcpuSetup.length };
      console.log(JSON.stringify({ scenario: echo, results: rows, conclusion: conclusion(rows) }, null, 2));
    } else {
      console.log(`scenario: ${scenario.name} (${file})`);
      console.log(formatTable(rows, useColor()));
      console.log('');
      for (const line of eventSummary(rows)) console.log(line);
      for (const r of rows) for (const f of r.findings.slice(0, 2)) console.log(`  [${f.strategy}] ${f.invariant} (${f.severity}), vCPU ${f.vcpu}: ${f.detail}`);
      console.log('');
      console.log(conclusion(rows));
    }
    process.exitCode = EXIT.OK;
  } catch (e) {
    if (e instanceof ScenarioError) throw new UsageError(e.message);
    // Trace rings that do not fit (src/trace/ring.ts names the largest ring size that would).
    if (e instanceof LayoutError && e.message.startsWith('trace rings:')) throw new UsageError(`--trace-events: ${e.message}`);
    throw e;
  }
}

/** The threaded scenario: vCPUs on the three host flavours are three VMs run side by side. */
async function runThreaded(strategy: StrategyName, vcpus: number, seconds: number, seed: number, trace?: TraceCli): Promise<RunRow> {
  const flavours = Object.values(TOUR_HOSTS);
  const flavourNames = Object.keys(TOUR_HOSTS);
  const share = (i: number) => Math.floor(vcpus / flavours.length) + (i < vcpus % flavours.length ? 1 : 0);
  const runs = await Promise.all(
    flavours
      .map((f, i) => ({ f, n: share(i), i }))
      .filter((x) => x.n > 0)
      .map(({ f, n, i }) =>
        runChaos(
          { vcpus: n, strategy, host: f.host, seed: seed + i, trace: trace && { capacity: trace.capacity } },
          { durationMs: seconds * 1000, actionEveryMs: 25, seed: seed + i, traceOut: trace && traceOut(trace, strategy, flavourNames[i]!) },
        ),
      ),
  );
  if (trace && !trace.quiet) for (const r of runs) for (const f of r.traceFiles) process.stderr.write(`trace written: ${f}\n`);
  const stats = sumStats(runs.map((r) => r.stats));
  const coordinator = sumCounts(runs.map((r) => r.coordinator));
  const crashed = Object.fromEntries(runs.flatMap((r, i) => Object.entries(r.dead).map(([id, why]) => [`${flavourNames[i]}/${id}`, why])));
  const lost = runs.reduce((a, r) => a + r.coordinator.lost.length, 0);
  const shadows = runs.map((r) => r.shadow).filter((x) => x !== null);
  return {
    strategy,
    cpuidBroadcasts: coordinator.cpuidBroadcasts,
    stats,
    elapsedMs: Math.max(...runs.map((r) => r.elapsedMs)),
    findings: runs.flatMap((r) => r.findings),
    invariants: invariantsOf(stats, { waitsChecked: coordinator.waitsChecked, lost }, crashed, runs.reduce((a, r) => a + r.teardown.length, 0), runs.length),
    coordinator,
    shadow: shadows.length ? { pagesCreated: shadows.reduce((a, x) => a + x.pagesCreated, 0), zapped: shadows.reduce((a, x) => a + x.zapped, 0) } : null,
  };
}

/** --trace, --ftrace and --trace-events as parsed (docs/traces.md). */
interface TraceCli {
  readonly chrome?: string;
  readonly ftrace?: string;
  readonly capacity?: number;
  /** --json: no "trace written" lines. */
  readonly quiet: boolean;
}

/** The trace options, checked against the rest of the command line; undefined without --trace/--ftrace. */
function traceOptions(cmd: Command): TraceCli | undefined {
  const o = cmd.opts() as { trace?: string; ftrace?: string; traceEvents?: number; inThread?: boolean; scenario?: string; json?: boolean; vcpus: number };
  if (o.trace === undefined && o.ftrace === undefined) {
    if (o.traceEvents !== undefined) throw new UsageError('--trace-events: only with --trace or --ftrace');
    return undefined;
  }
  const flag = o.trace !== undefined ? '--trace' : '--ftrace';
  if (o.inThread) throw new UsageError(`${flag}: traces come from the threaded run (one worker thread per vCPU); drop --in-thread`);
  if (o.trace !== undefined && o.trace === o.ftrace) throw new UsageError(`--trace and --ftrace: two different files, got "${o.trace}" twice`);
  // The largest VM of the run (the vCPUs are split over the three host flavours) must fit MAX_TRACE_BYTES.
  const capacity = o.traceEvents ?? DEFAULT_RING_CAPACITY;
  const largest = Math.ceil(o.vcpus / Object.keys(TOUR_HOSTS).length);
  if (traceRingsBytes(largest, capacity) > MAX_TRACE_BYTES) {
    throw new UsageError(`--trace-events: ${largest + 1} rings of ${capacity} events exceed ${MAX_TRACE_BYTES / 2 ** 20} MiB of trace memory per VM; use a smaller N`);
  }
  return { chrome: o.trace, ftrace: o.ftrace, capacity: o.traceEvents, quiet: !!o.json };
}


/** What one VM of the run writes. */
function traceOut(t: TraceCli, strategy: StrategyName, flavour: string) {
  return {
    chrome: t.chrome === undefined ? undefined : traceFileName(t.chrome, strategy, flavour),
    ftrace: t.ftrace === undefined ? undefined : traceFileName(t.ftrace, strategy, flavour),
    processName: `kvm-mmu-emu VM (${strategy}, ${flavour})`,
    metadata: { scenario: 'built-in role tour', flavour },
  };
}

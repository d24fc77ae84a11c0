/**
 * `kvm-mmu-emu bench [NAME...]`: run the benchmark groups of bench/. Parsing
 * and printing only; measuring is in bench/harness.ts, the groups are listed
 * in bench/index.ts.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { BENCH_GROUPS, resolveGroups, runBenchmarks, UnknownBenchError } from '../../bench/index.js';
import { describeTiming, formatNs, formatRun, runToJson, writeRunFiles } from '../../bench/report.js';
import { shortNumber } from '../../bench/svg.js';
import { TIMINGS, type CaseProgress, type Timing } from '../../bench/types.js';
import { UsageError } from './io.js';

/** bench/out of this package (the nearest folder above this file with a package.json), wherever the command runs from. */
export function defaultOutDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, 'bench', 'out');
}

const QUICK_HELP = `short runs, the whole run well under 2 min (per case: ${describeTiming(TIMINGS.quick)})`;

export interface BenchCliOptions {
  quick?: boolean;
  json?: string;
  out?: string;
  list?: boolean;
}

export interface BenchIo {
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream & { isTTY?: boolean };
}

/** The names, checked; UsageError (exit 2) listing the valid ones otherwise. */
export function checkBenchNames(names: readonly string[]): void {
  try {
    resolveGroups(names);
  } catch (e) {
    if (e instanceof UnknownBenchError) throw new UsageError(`${e.message} (see bench --list)`);
    throw e;
  }
}

export function listBenches(): string {
  const w = Math.max(...BENCH_GROUPS.map((g) => g.name.length));
  return BENCH_GROUPS.map((g) => `${g.name.padEnd(w)}  ${g.description}`).join('\n');
}

function progressLine(p: CaseProgress): string {
  const r = p.row;
  const ns = r.medianNs === null ? '' : `  median ${formatNs(r.medianNs)} ns  p99 ${formatNs(r.p99Ns)} ns`;
  return `[${p.group} ${p.index}/${p.total}] ${r.id}: ${shortNumber(r.opsPerSec)} ops/s${ns}`;
}

/** Run the command; `timing` is for tests only (no flag sets it). */
export async function benchCommand(names: readonly string[], opts: BenchCliOptions, io: BenchIo, timing?: Timing): Promise<void> {
  if (opts.list) {
    io.out.write(listBenches() + '\n');
    return;
  }
  checkBenchNames(names);
  const tty = !!io.err.isTTY;
  // On a terminal the progress line is rewritten in place; otherwise one plain line per case.
  const progress = (line: string, final: boolean): void => {
    io.err.write(tty ? `\r\x1b[2K${line}${final ? '\n' : ''}` : `${line}\n`);
  };
  const command = ['kvm-mmu-emu', 'bench', ...names, ...(opts.quick ? ['--quick'] : []), ...(opts.json ? ['--json', opts.json] : []), ...(opts.out ? ['--out', opts.out] : [])].join(' ');
  const run = await runBenchmarks({
    names,
    quick: !!opts.quick,
    ...(timing ? { timing } : {}),
    command,
    onGroupStart: (g) => progress(`[${g.name}] running${opts.quick ? ' (quick)' : ''}...`, !tty),
    onCase: (p) => progress(progressLine(p), !tty || p.index === p.total),
    onGroupEnd: (g) => progress(`[${g.group}] done in ${(g.elapsedMs / 1000).toFixed(1)} s`, true),
  });
  const outDir = opts.out === undefined ? defaultOutDir() : resolve(opts.out);
  const written = writeRunFiles(run, outDir);
  if (opts.json && opts.json !== '-') {
    writeFileSync(opts.json, runToJson(run));
    written.push(opts.json);
  }
  if (opts.json === '-') io.out.write(runToJson(run));
  else io.out.write(formatRun(run));
  io.err.write(`wrote ${written.join(', ')}\n`);
}

export function registerBench(program: Command, io: BenchIo = { out: process.stdout, err: process.stderr }): void {
  program
    .command('bench')
    .argument('[NAME...]', `benchmark groups to run (default: all): ${BENCH_GROUPS.map((g) => g.name).join(', ')}`)
    .option('--quick', QUICK_HELP)
    .option('--json <FILE>', 'also write the results as JSON to FILE (- prints JSON instead of tables)')
    .option('--out <DIR>', 'where results.json and one SVG chart per group go (default: bench/out of this package)')
    .option('--list', 'list the benchmark groups and exit')
    .description('measure the MMU machinery on this machine (tinybench: warm-up, many samples, median and p99)')
    .addHelpText(
      'after',
      '\nTimings are for comparison on one machine; ratios between cases of one run are the figures to quote.\n\n' +
        'Examples:\n  kvm-mmu-emu bench --list\n  kvm-mmu-emu bench mmu-init --quick\n  kvm-mmu-emu bench --json results.json --out /tmp/charts',
    )
    .action(async (names: string[], opts: BenchCliOptions) => {
      await benchCommand(names, opts, io);
    });
}

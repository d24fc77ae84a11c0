/**
 * `kvm-mmu-emu stress`: parsing, progress and printing; the work is in
 * src/stress. Exit code 1 when any invariant had an observable violation
 * (or a vCPU thread died), 0 otherwise, 2 on bad input.
 */
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { SingleBar } from 'cli-progress';
import { CHECK_LEVELS, type CheckLevel } from '../check/vcpu-checker.js';
import { isMutantName, MUTANT_NAMES, MUTANTS, type MutantName } from '../check/mutants.js';
import { STRATEGY_NAMES, type StrategyName } from '../mmu/strategies.js';
import { MAX_VCPUS } from '../vm/vm.js';
import { defaultStressVcpus, HOST_FLAVOURS, observableViolations, stress, type HostFlavour, type StressResult } from '../stress/stress.js';
import { EXIT, UsageError, useColor } from './io.js';
import { representative } from '../vm/chaos.js';
import { parseStrategy } from './role.js';

function intIn(flag: string, min: number, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag}: expected an integer in ${min}..${max}, got "${text}"`);
    return n;
  };
}

function oneOf<T extends string>(flag: string, allowed: readonly T[]) {
  return (text: string): T => {
    if (!(allowed as readonly string[]).includes(text)) throw new UsageError(`${flag}: expected one of ${allowed.join(', ')}, got "${text}"`);
    return text as T;
  };
}

function cell(i: { latent: number; observable: number; checked: number }): string {
  if (i.latent + i.observable === 0) return i.checked === 0 ? '-' : 'ok';
  return [i.latent ? `${i.latent}~` : '', i.observable ? `${i.observable}!` : ''].filter(Boolean).join(' ');
}

/** The per-invariant table: one column per strategy; "N!" observable, "N~" latent only, "ok" checked and clean. */
export function formatStressTable(results: readonly StressResult[], color: boolean): string {
  const head = ['invariant', ...results.map((r) => r.strategy)];
  const rows: string[][] = results[0]!.invariants.map((inv, k) => [`${inv.id}. ${inv.name}`, ...results.map((r) => `${cell(r.invariants[k]!)} /${r.invariants[k]!.checked}`)]);
  rows.push(['guest operations', ...results.map((r) => String(r.guestOps))]);
  rows.push(['operations/s', ...results.map((r) => String(Math.round(r.guestOps / (r.elapsedMs / 1000))))]);
  rows.push(['shadow pages created', ...results.map((r) => String(r.shadow?.pagesCreated ?? 0))]);
  rows.push(['CPUID changes / zap-alls / edits', ...results.map((r) => `${r.coordinator.cpuidBroadcasts}/${r.coordinator.zapAlls}/${r.coordinator.tableEdits}`)]);
  const widths = head.map((_, c) => Math.max(...[head, ...rows].map((row) => row[c]!.length)));
  const line = (row: string[]) => row.map((x, c) => (c === 0 ? x.padEnd(widths[c]!) : x.padStart(widths[c]!))).join('  ');
  const bold = (s: string) => (color ? `\x1b[1m${s}\x1b[0m` : s);
  return [bold(line(head)), ...rows.map(line)].join('\n');
}

export function registerStress(program: Command): void {
  program
    .command('stress')
    .description('run many vCPU threads with seeded workloads and a chaos coordinator, checking the MMU invariants')
    .option('--vcpus <N>', `vCPUs, split over the host flavours (default 4 × cores = ${defaultStressVcpus()})`, intIn('--vcpus', 1, MAX_VCPUS))
    .option('--strategy <NAME>', `one invalidation design, or "all" (${STRATEGY_NAMES.join(', ')})`, 'all')
    .option('--seconds <N>', 'how long each strategy runs', intIn('--seconds', 1, 86_400), 5)
    .option('--ops <N>', 'stop a strategy earlier, once its vCPUs executed N guest operations', intIn('--ops', 1, 2 ** 52))
    .option('--check <LEVEL>', `checking: ${CHECK_LEVELS.join(', ')}`, oneOf('--check', CHECK_LEVELS), 'full' as CheckLevel)
    .option('--sample-every <N>', 'with --check sampled: check one guest-mode stint in N', intIn('--sample-every', 1, 1_000_000), 16)
    .option('--policy <P>', 'CPUID policy: legacy (changes applied while running) or strict (refused after the first run)', oneOf('--policy', ['legacy', 'strict'] as const), 'legacy')
    .option('--hosts <LIST>', `host flavours, comma-separated (${HOST_FLAVOURS.join(', ')})`, HOST_FLAVOURS.join(','))
    .option('--mutant <NAME>', `enable a deliberate bug (${MUTANT_NAMES.join(', ')})`)
    .option('--seed <N>', 'workload and coordinator seed', intIn('--seed', 0, 0xffffffff), 1)
    .option('--stop-on-violation', 'end each strategy at its first observable violation and report the time to detection')
    .option('--stop-on <IDS>', 'end each strategy at the first finding (latent or observable) of these invariants, e.g. 5 or 3,4', (t: string) => t.split(',').map((x) => intIn('--stop-on', 1, 8)(x.trim())))
    .option('--last-events <N>', 'trace ring per vCPU (events kept) for the last events printed with a finding; 0: no trace', intIn('--last-events', 0, 1_000_000), 256)
    .option('--report <FILE>', 'write the full results (every counter, the first findings) as JSON; also after Ctrl-C')
    .option('--json', 'print the results as JSON instead of the table')
    .addHelpText(
      'after',
      '\nInvariants (see README): 1 fresh configuration, 2 correct accesses, 3 shadow sharing, 4 no use after\n' +
        'free, 5 no lost invalidation, 6 TLB coherence, 7 no reads of invalidated roles, 8 effective\n' +
        'invalidation. Table cells: "ok /C" clean in C checks, "N~" N latent findings, "N!" N observable.\n' +
        'Exit code 1 when any invariant has an observable violation or a vCPU thread died.\n\n' +
        'Examples:\n  kvm-mmu-emu stress\n  kvm-mmu-emu stress --vcpus 64 --strategy word-zero --seconds 20 --report r.json\n' +
        '  kvm-mmu-emu stress --mutant reload-ignored --strategy valid-bit --seconds 3\n  kvm-mmu-emu stress --check sampled --ops 2000000 --json',
    )
    .action(async (opts: {
      vcpus?: number;
      strategy: string;
      seconds: number;
      ops?: number;
      check: CheckLevel;
      sampleEvery: number;
      policy: 'legacy' | 'strict';
      hosts: string;
      mutant?: string;
      seed: number;
      report?: string;
      json?: boolean;
      stopOnViolation?: boolean;
      stopOn?: number[];
      lastEvents: number;
    }) => {
      const strategies: StrategyName[] = opts.strategy === 'all' ? [...STRATEGY_NAMES] : [parseStrategy(opts.strategy).name];
      const hosts = opts.hosts.split(',').map((h) => oneOf('--hosts', HOST_FLAVOURS)(h.trim())) as HostFlavour[];
      let mutant: MutantName | undefined;
      if (opts.mutant !== undefined) {
        if (!isMutantName(opts.mutant)) throw new UsageError(`--mutant: expected one of ${MUTANT_NAMES.join(', ')}, got "${opts.mutant}"`);
        mutant = opts.mutant;
      }
      const vcpus = opts.vcpus ?? defaultStressVcpus();
      const tty = !opts.json && process.stderr.isTTY === true;
      const bar = tty
        ? new SingleBar({ format: 'stress {strategy} [{bar}] {percentage}% | {elapsed} s | {rate} ops/s | {violations} violation(s)', hideCursor: true, clearOnComplete: true })
        : null;
      // Ctrl-C: finish the current strategy's run cleanly, skip the rest, still print and write the report.
      let interrupted = false;
      const onSigint = () => {
        interrupted = true;
        process.stderr.write('\nstress: interrupted; stopping the vCPUs and writing the report (Ctrl-C again to abort)\n');
        process.once('SIGINT', () => process.exit(130));
      };
      process.once('SIGINT', onSigint);
      let lastLine = 0;
      const total = strategies.length * 100;
      if (!opts.json) {
        process.stderr.write(`stress: ${vcpus} vCPUs over ${hosts.join(', ')}; ${strategies.length} strateg${strategies.length === 1 ? 'y' : 'ies'} × ${opts.seconds} s; check ${opts.check}${mutant ? `; mutant ${mutant}: ${MUTANTS[mutant].what}` : ''}\n`);
      }
      bar?.start(total, 0, { strategy: strategies[0], elapsed: 0, rate: 0, violations: 0 });
      const results = await stress({
        vcpus,
        strategies,
        durationMs: opts.seconds * 1000,
        ops: opts.ops,
        seed: opts.seed,
        check: opts.check,
        sampleEvery: opts.sampleEvery,
        policy: opts.policy,
        hosts,
        mutant,
        stopOnViolation: opts.stopOn ?? opts.stopOnViolation,
        traceEvents: opts.lastEvents,
        shouldStop: () => interrupted,
        onProgress: (p) => {
          const rate = Math.round(p.ops / Math.max(p.elapsedMs / 1000, 1e-3));
          bar?.update(p.index * 100 + Math.floor(p.fraction * 100), { strategy: p.strategy, elapsed: (p.elapsedMs / 1000).toFixed(1), rate, violations: p.violations });
          // Not a terminal: a plain line every 2 s.
          if (!bar && !opts.json && p.elapsedMs - lastLine >= 2000) {
            lastLine = p.elapsedMs;
            process.stderr.write(`stress ${p.strategy}: ${(p.elapsedMs / 1000).toFixed(1)} s, ${p.ops} guest ops (${rate}/s), ${p.violations} violation(s)\n`);
          }
          if (p.elapsedMs < lastLine) lastLine = 0;
        },
      });
      process.off('SIGINT', onSigint);
      bar?.update(total);
      bar?.stop();
      const failed = results.some((r) => observableViolations(r) > 0);
      const doc = { options: { ...opts, vcpus, strategies, hosts, mutant }, results };
      if (opts.report) writeFileSync(opts.report, JSON.stringify(doc, null, 2) + '\n');
      if (opts.json) console.log(JSON.stringify(doc, null, 2));
      else {
        console.log(formatStressTable(results, useColor()));
        console.log('');
        for (const r of results) {
          for (const f of representative(r.findings, 6)) {
            console.log(`  [${r.strategy}] ${f.invariant} (${f.severity}), vCPU ${f.vcpu}: ${f.detail}`);
            if (f.events?.length) console.log(`    last events of vCPU ${f.vcpu} when the run ended (--stop-on-violation ends it near the finding):\n${f.events.map((e) => `      ${e}`).join('\n')}`);
          }
        }
        console.log('');
        if (opts.stopOnViolation || opts.stopOn) for (const r of results) console.log(`  [${r.strategy}] time to detection: ${r.detectedAtMs === null ? 'none' : `${(r.detectedAtMs / 1000).toFixed(1)} s`}`);
        for (const r of results.filter((x) => observableViolations(x) > 0)) {
          const inv = r.invariants.filter((i) => i.observable > 0).map((i) => `${i.id}. ${i.name}`);
          console.log(`VIOLATION: seed ${opts.seed}, strategy ${r.strategy}, ${r.vcpus} vCPUs: ${inv.join('; ')}`);
        }
        if (interrupted) console.log('interrupted by Ctrl-C: results cover the time run');
        console.log(failed ? `observable violations: ${results.filter((r) => observableViolations(r) > 0).map((r) => `${r.strategy} ${observableViolations(r)}`).join(', ')}` : 'no observable violation');
      }
      process.exitCode = failed ? EXIT.VIOLATION : EXIT.OK;
    });
}

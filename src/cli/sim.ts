/**
 * `kvm-mmu-emu sim`: the deterministic simulation. Parsing and printing; the
 * work is in src/sim. Exit code 1 when a run found a violation, 0 when none
 * did, 2 on bad input (a malformed replay token included).
 */
import type { Command } from 'commander';
import { isMutantName, MUTANT_NAMES, type MutantName } from '../check/mutants.js';
import { STRATEGY_NAMES } from '../mmu/strategies.js';
import { hunt, shrink } from '../sim/hunt.js';
import { simulate, type SimResult } from '../sim/sim.js';
import { decodeToken, parseIgnore, parseScheduler, SIM_HOSTS, SIM_INVARIANTS, TokenError, type SimHost, type SimParams } from '../sim/token.js';
import { writeChromeTrace, writeFtrace } from '../trace/index.js';
import { STRATEGIES } from '../mmu/strategies.js';
import { EXIT, UsageError } from './io.js';
import { parseStrategy } from './role.js';

function intIn(flag: string, min: number, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${flag}: expected an integer in ${min}..${max}, got "${text}"`);
    return n;
  };
}

interface SimCliOptions {
  strategy: string;
  host: string;
  vcpus: number;
  seed: number;
  scheduler: string;
  steps: number;
  eventRate: number;
  mutant?: string;
  ignore?: string;
  schedules: number;
  replay?: string;
  shrink?: boolean;
  tail: number;
  trace?: string;
  ftrace?: string;
  json?: boolean;
}

function paramsOf(o: SimCliOptions): SimParams {
  if (o.replay !== undefined) {
    try {
      return decodeToken(o.replay);
    } catch (e) {
      if (e instanceof TokenError) throw new UsageError(e.message);
      throw e;
    }
  }
  if (!(SIM_HOSTS as readonly string[]).includes(o.host)) throw new UsageError(`--host: expected one of ${SIM_HOSTS.join(', ')}, got "${o.host}"`);
  let mutant: MutantName | null = null;
  if (o.mutant !== undefined) {
    if (!isMutantName(o.mutant)) throw new UsageError(`--mutant: expected one of ${MUTANT_NAMES.join(', ')}, got "${o.mutant}"`);
    mutant = o.mutant;
  }
  let scheduler;
  try {
    scheduler = parseScheduler(o.scheduler);
  } catch (e) {
    throw new UsageError(`--scheduler: ${(e as Error).message}`);
  }
  let ignore: SimParams['ignore'] = [];
  try {
    ignore = o.ignore === undefined ? [] : parseIgnore(o.ignore);
  } catch (e) {
    throw new UsageError(`--ignore: ${(e as Error).message}`);
  }
  return { strategy: parseStrategy(o.strategy).name, host: o.host as SimHost, vcpus: o.vcpus, seed: o.seed, scheduler, steps: o.steps, mutant, eventRate: o.eventRate, ignore };
}

const describe = (r: SimResult): string =>
  r.violation
    ? `VIOLATION at step ${r.violation.step}: ${r.violation.invariant}: ${r.violation.detail}\nreplay: kvm-mmu-emu sim --replay ${r.token}`
    : `no violation in ${r.steps} steps (${r.guestOps} guest operations, ${r.coordinatorActions} coordinator actions)\nreplay: kvm-mmu-emu sim --replay ${r.token}`;

export function registerSim(program: Command): void {
  program
    .command('sim')
    .description('run vCPU cores, coordinator and shadow cache in one thread under a seeded scheduler; replay a run exactly from its token')
    .option('--strategy <NAME>', `invalidation design (${STRATEGY_NAMES.join(', ')})`, 'valid-bit')
    .option('--host <FLAVOUR>', `host (${SIM_HOSTS.join(', ')})`, 'shadow')
    .option('--vcpus <N>', 'vCPUs', intIn('--vcpus', 1, 64), 3)
    .option('--seed <N>', 'seed of the first schedule', intIn('--seed', 0, 0xffffffff), 1)
    .option('--scheduler <S>', 'random, or pctD (PCT with depth D, e.g. pct3; pctD/K: change points drawn over K steps, as a failing PCT run\'s token says)', 'random')
    .option('--steps <N>', 'step bound per schedule', intIn('--steps', 1, 100_000_000), 20_000)
    .option('--event-rate <PERMILLE>', 'chance per mille that a coordinator step starts an action', intIn('--event-rate', 0, 1000), 50)
    .option('--mutant <NAME>', `enable a deliberate bug (${MUTANT_NAMES.join(', ')})`)
    .option('--ignore <LIST>', `invariants that do not stop a run, comma-separated (${SIM_INVARIANTS.join(', ')})`)
    .option('--schedules <N>', 'run up to N schedules (seeds seed, seed+1, …), stopping at the first failure', intIn('--schedules', 1, 1_000_000), 1)
    .option('--replay <TOKEN>', 'rerun one schedule exactly and print its event trace')
    .option('--shrink', 'after a failure, search for a smaller failing run and print its token')
    .option('--tail <N>', 'event-trace lines to print (the last N)', intIn('--tail', 0, 100_000_000), 40)
    .option('--trace <FILE>', 'write the run as Chrome trace JSON (Perfetto); 1 step = 1 µs')
    .option('--ftrace <FILE>', 'write the kvmmmu events as trace-cmd report text')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nEvery run prints a replay token: sim2:<strategy>:<host>:<vcpus>:<seed>:<scheduler>:<steps>:<mutant|->:<rate>[:<ignored>].\n' +
        'The same token gives the same trace, byte for byte. Exit code 1 when a violation was found.\n\n' +
        'Examples:\n  kvm-mmu-emu sim\n  kvm-mmu-emu sim --mutant zap-no-wait --schedules 200 --shrink\n' +
        '  kvm-mmu-emu sim --replay sim2:valid-bit:shadow:1:1:random:290:zap-no-wait:50 --trace run.json',
    )
    .action((o: SimCliOptions) => {
      const p = paramsOf(o);
      const wantRings = !!(o.trace || o.ftrace);
      let result: SimResult;
      let schedules = 1;
      let elapsedMs = 0;
      if (o.replay !== undefined || o.schedules === 1) {
        const t0 = performance.now();
        result = simulate(p, { keepTrace: true, rings: wantRings });
        elapsedMs = performance.now() - t0;
      } else {
        const h = hunt(p, o.schedules, (n) => {
          if (!o.json && process.stderr.isTTY) process.stderr.write(`\rschedule ${n}/${o.schedules}`);
        });
        if (!o.json && process.stderr.isTTY) process.stderr.write('\n');
        schedules = h.schedules;
        elapsedMs = h.elapsedMs;
        // Replay the failing (or last) schedule with its trace.
        const last = h.failure ? h.failure.params : { ...p, seed: (p.seed + h.schedules - 1) >>> 0 };
        result = simulate(last, { keepTrace: true, rings: wantRings });
      }
      const shrunk = o.shrink && result.violation ? shrink(result) : null;
      if (o.trace && result.rings) writeChromeTrace(o.trace, result.rings, { extFormat: STRATEGIES[result.params.strategy].format, metadata: { token: result.token } });
      if (o.ftrace && result.rings) writeFtrace(o.ftrace, result.rings);
      const rate = schedules / (elapsedMs / 1000);
      if (o.json) {
        console.log(JSON.stringify({ token: result.token, violation: result.violation, steps: result.steps, guestOps: result.guestOps, schedules, schedulesPerSecond: rate, shrunk: shrunk?.token ?? null, trace: result.trace.slice(-o.tail) }, null, 2));
      } else {
        if (o.tail > 0) console.log(result.trace.slice(-o.tail).join('\n'));
        console.log(describe(result));
        if (schedules > 1) console.log(`${schedules} schedule(s) in ${(elapsedMs / 1000).toFixed(1)} s (${rate.toFixed(1)} schedules/s)`);
        if (shrunk) console.log(shrunk === result ? 'shrink: nothing smaller fails' : `shrunk: kvm-mmu-emu sim --replay ${shrunk.token}  (${shrunk.params.vcpus} vCPUs, event rate ${shrunk.params.eventRate}, fails at step ${shrunk.violation!.step})`);
      }
      process.exitCode = result.violation ? EXIT.VIOLATION : EXIT.OK;
    });
}


/**
 * Replay tokens: everything that decides a simulated run, in one short
 * string a user can paste back (`sim --replay TOKEN`):
 *
 *   sim2:<strategy>:<host>:<vcpus>:<seed>:<scheduler>:<steps>:<mutant|->:<events per mille>[:<ignored invariants, +-separated>]
 *
 * e.g. `sim2:valid-bit:shadow:3:42:pct3:20000:-:50`. `steps` is the bound
 * the run had; a failing run's token names the step it failed at, so a
 * replay stops exactly there.
 *
 * The version names the scheduler that recorded the token: a token replays
 * only under the scheduler (and scheduling points) it was recorded with.
 * sim1 had one point inside a vCPU step (the A/D write); sim2 added the
 * lockless walk's SPTE reads and a fault's taking mmu_lock. An older
 * version's token is refused with a message saying so.
 */
import { isMutantName, type MutantName } from '../check/mutants.js';
import { STRATEGY_NAMES, type StrategyName } from '../mmu/strategies.js';
import type { SchedulerSpec } from './scheduler.js';
import { INVARIANTS, type InvariantFinding } from '../check/invariants.js';

export const SIM_HOSTS = ['intel-ept', 'amd-npt', 'shadow'] as const;

/** The invariants a simulated run checks (and may be told to ignore), by their finding names. */
export const SIM_INVARIANTS: readonly InvariantFinding[] = INVARIANTS.map((d) => d.finding);
export type SimInvariant = InvariantFinding;
export type SimHost = (typeof SIM_HOSTS)[number];

export interface SimParams {
  readonly strategy: StrategyName;
  readonly host: SimHost;
  readonly vcpus: number;
  readonly seed: number;
  readonly scheduler: SchedulerSpec;
  /** Step bound: the run stops after this many steps (or at the first violation). */
  readonly steps: number;
  readonly mutant: MutantName | null;
  /** Chance, per mille, that a coordinator step starts an action (CPUID change, zap-all, edit, request). */
  readonly eventRate: number;
  /** Invariants whose violations do not stop the run (e.g. one every design fails, to look past it). */
  readonly ignore: readonly SimInvariant[];
}

export class TokenError extends Error {
  override name = 'TokenError';
}

/** The version of the tokens this scheduler records and replays. */
export const TOKEN_VERSION = 'sim2';
/** Versions recorded by older schedulers: recognised, refused. */
const OLDER_VERSIONS: readonly string[] = ['sim1'];

const schedText = (s: SchedulerSpec, steps: number): string =>
  s.kind === 'random' ? 'random' : s.horizon === undefined || s.horizon === steps ? `pct${s.depth}` : `pct${s.depth}/${s.horizon}`;

export function encodeToken(p: SimParams): string {
  const fields = [TOKEN_VERSION, p.strategy, p.host, p.vcpus, p.seed, schedText(p.scheduler, p.steps), p.steps, p.mutant ?? '-', p.eventRate];
  if (p.ignore.length) fields.push(p.ignore.join('+'));
  return fields.join(':');
}

const int = (text: string, what: string, min: number, max: number): number => {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw new TokenError(`replay token: ${what} must be an integer in ${min}..${max}, got "${text}"`);
  return n;
};

/** `random`, `pctD`, or `pctD/K` (PCT whose change points are drawn over K steps, not the run's bound). */
export function parseScheduler(text: string): SchedulerSpec {
  if (text === 'random') return { kind: 'random' };
  const m = /^pct(\d+)(?:\/(\d+))?$/.exec(text);
  const k = m?.[2] === undefined ? undefined : Number(m[2]);
  if (m && Number(m[1]) >= 1 && Number(m[1]) <= 64 && (k === undefined || (k >= 1 && k <= 100_000_000))) {
    return k === undefined ? { kind: 'pct', depth: Number(m[1]) } : { kind: 'pct', depth: Number(m[1]), horizon: k };
  }
  throw new TokenError(`scheduler must be "random" or "pctD" with D in 1..64 (e.g. pct3; "pctD/K": change points over K steps), got "${text}"`);
}

export function decodeToken(token: string): SimParams {
  const f = token.trim().split(':');
  if (OLDER_VERSIONS.includes(f[0]!)) {
    throw new TokenError(
      `replay token "${token.trim()}" was recorded by an older scheduler (${f[0]}); this one (${TOKEN_VERSION}) also preempts inside lockless walks and faults, so the run cannot be replayed: record a new token (e.g. hunt again with --schedules)`,
    );
  }
  if ((f.length !== 9 && f.length !== 10) || f[0] !== TOKEN_VERSION) {
    throw new TokenError(`replay token: expected ${TOKEN_VERSION}:<strategy>:<host>:<vcpus>:<seed>:<scheduler>:<steps>:<mutant|->:<rate>[:<ignored>], got "${token}"`);
  }
  const [, strategy, host, vcpus, seed, sched, steps, mutant, rate] = f as [string, string, string, string, string, string, string, string, string];
  if (!(STRATEGY_NAMES as readonly string[]).includes(strategy)) throw new TokenError(`replay token: unknown strategy "${strategy}" (${STRATEGY_NAMES.join(', ')})`);
  if (!(SIM_HOSTS as readonly string[]).includes(host)) throw new TokenError(`replay token: unknown host "${host}" (${SIM_HOSTS.join(', ')})`);
  if (mutant !== '-' && !isMutantName(mutant)) throw new TokenError(`replay token: unknown mutant "${mutant}"`);
  // Checked in field order, so the first bad field is the one reported.
  const vcpuCount = int(vcpus, 'vcpus', 1, 64);
  const seedValue = int(seed, 'seed', 0, 0xffffffff);
  const scheduler = parseScheduler(sched);
  const bound = int(steps, 'steps', 1, 100_000_000);
  return {
    strategy: strategy as StrategyName,
    host: host as SimHost,
    vcpus: vcpuCount,
    seed: seedValue,
    scheduler: withoutOwnHorizon(scheduler, bound),
    steps: bound,
    mutant: mutant === '-' ? null : (mutant as MutantName),
    eventRate: int(rate, 'event rate', 0, 1000),
    ignore: f.length === 10 ? parseIgnore(f[9]!) : [],
  };
}

/** pctD/K with K the run's own bound is pctD. */
const withoutOwnHorizon = (s: SchedulerSpec, steps: number): SchedulerSpec => (s.kind === 'pct' && s.horizon === steps ? { kind: 'pct', depth: s.depth } : s);

/** A +- or comma-separated list of invariant names. */
export function parseIgnore(text: string): SimInvariant[] {
  const names = text.split(/[+,]/).filter(Boolean);
  for (const n of names) if (!(SIM_INVARIANTS as readonly string[]).includes(n)) throw new TokenError(`unknown invariant "${n}" (${SIM_INVARIANTS.join(', ')})`);
  return names as SimInvariant[];
}

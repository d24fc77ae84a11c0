/**
 * Group "reset-broadcast", the headline figure: a CPUID change broadcast to N
 * vCPUs that each invalidate and reset their MMU (Linux v5.17 x86.c
 * `kvm_vcpu_after_set_cpuid` → mmu.c `kvm_mmu_after_set_cpuid`), for
 * N = 1 … 256, on idle (halted) and busy (running) vCPUs.
 *
 * One VM per (load, N), and every protocol on that VM, interleaved round by
 * round (the starting protocol rotates), so compared figures share the
 * machine load and the same threads:
 * - shm:          the shared-memory protocol (`vm.broadcastCpuid`);
 * - rpc:          the same change through the control plane, one comlink
 *                 `setCpuid` per vCPU, one vCPU at a time (`vm.setCpuidViaRpc`);
 * - rpc-parallel: extra: the same calls, all in flight at once;
 * - limit:        the same threads and wake/ack path doing no MMU work (`vm.ping`);
 * - raw:          extra: bare workers blocked in Atomics.wait (bench/raw-broadcast.ts).
 * Each broadcast alternates between two CPUID tables that differ in
 * MAXPHYADDR, so every one is a real change; after each (load, N) every vCPU
 * must have applied exactly the number of changes sent.
 */
import { DEFAULT_CPUID, type CpuidModel } from '../src/cpuid/cpuid.js';
import { STAT_INDEX } from '../src/vcpu/vcpu-layout.js';
import { Vm } from '../src/vm/vm.js';
import type { OpMix } from '../src/workload/guest-program.js';
import { BenchVerifyError, quantile, ratioOf } from './harness.js';
import { RawBroadcaster } from './raw-broadcast.js';
import { broadcastTables, lineChart } from './reset-broadcast-report.js';
import { TIMINGS, type BenchGroup, type BenchRow, type GroupResult, type GroupRunContext, type Ratio } from './types.js';

export const BROADCAST_NS = [1, 2, 4, 8, 16, 32, 64, 128, 256] as const;
export const LOAD_MODES = ['idle', 'busy'] as const;
export type LoadMode = (typeof LOAD_MODES)[number];
export const PROTOCOLS = ['shm', 'rpc', 'rpc-parallel', 'limit', 'raw'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** What each protocol does; `unit` is what its rate counts. */
export const PROTOCOL_INFO: Readonly<Record<Protocol, { readonly unit: 'resets' | 'acks'; readonly what: string }>> = {
  shm: { unit: 'resets', what: 'shared memory: post the table, CPUID_UPDATE request + kick, wait for every ack (vm.broadcastCpuid)' },
  rpc: { unit: 'resets', what: 'control plane: one comlink setCpuid per vCPU, sequential, one vCPU at a time (vm.setCpuidViaRpc)' },
  'rpc-parallel': { unit: 'resets', what: 'extra: the same setCpuid calls, all in flight at once (Promise.all)' },
  limit: { unit: 'acks', what: 'limit: same threads and wake/ack path, no MMU work (PING request, vm.ping)' },
  raw: { unit: 'acks', what: 'extra, truly raw limit: N bare workers in Atomics.wait, one store + notify each, one shared ack counter; no run loop, no event loop' },
};

/** Idle vCPUs: every guest operation is HLT and no timer wakes them; only requests do. */
export const IDLE_MIX: OpMix = { access: 0, toggle: 0, mode: 0, cr3: 0, invlpg: 0, smm: 0, 'nested-enter': 0, 'nested-exit': 0, hlt: 1, invalid: 0 };

/** Two tables that differ in MAXPHYADDR (reserved GPA bits, which no role encodes): every broadcast is a real change. */
const CPUID_TABLES: readonly CpuidModel[] = [DEFAULT_CPUID, { ...DEFAULT_CPUID, maxPhyAddr: DEFAULT_CPUID.maxPhyAddr - 1 }];

export interface ResetBroadcastSettings {
  readonly ns: readonly number[];
  readonly modes: readonly LoadMode[];
  readonly protocols: readonly Protocol[];
  /** Rounds per (load, N) before measuring (JIT, first resets); not recorded. */
  readonly warmupRounds: number;
  /** Rounds recorded at least (unless capMs runs out first, see below). */
  readonly minRounds: number;
  readonly maxRounds: number;
  /** Per (load, N): after minRounds, no new round once this much time was spent measuring. */
  readonly budgetMs: number;
  /** Per (load, N): no new round after this, even below minRounds, once 3 rounds are in. */
  readonly capMs: number;
  /** A protocol whose broadcast is predicted (from the previous N) or seen (last warm-up round) to take longer is not measured at this N or above. */
  readonly skipAboveMs: number;
}

const ALL = { modes: LOAD_MODES, protocols: PROTOCOLS } as const;

export const RESET_BROADCAST_SETTINGS: Readonly<Record<'quick' | 'full' | 'smoke', ResetBroadcastSettings>> = {
  quick: { ...ALL, ns: [1, 2, 4, 8, 16, 32], warmupRounds: 2, minRounds: 10, maxRounds: 400, budgetMs: 500, capMs: 2_500, skipAboveMs: 1_500 },
  full: { ...ALL, ns: BROADCAST_NS, warmupRounds: 3, minRounds: 20, maxRounds: 2_000, budgetMs: 2_500, capMs: 10_000, skipAboveMs: 3_000 },
  /** Used when a test passes a timing shorter than --quick: tiny N, two rounds. */
  smoke: { ...ALL, ns: [1, 2], warmupRounds: 1, minRounds: 2, maxRounds: 2, budgetMs: 0, capMs: 60_000, skipAboveMs: 60_000 },
};

/** How a protocol's broadcast latency grows with N: the sequential control plane on busy vCPUs waits ~N/2 time slices per call. */
const growth = (p: Protocol, mode: LoadMode): number => (p === 'rpc' && mode === 'busy' ? 2 : 1);

/** One (load, N) cell: measured rows per protocol, or why a protocol was not measured. */
export interface CellResult {
  readonly mode: LoadMode;
  readonly n: number;
  readonly createMs: number;
  readonly rounds: number;
  /** Wall time of the whole cell (creation, warm-up, rounds, verification, destroy), ms. */
  readonly cellMs: number;
  readonly rows: ReadonlyMap<Protocol, BenchRow>;
  readonly skipped: ReadonlyMap<Protocol, string>;
}

const rowId = (mode: LoadMode, n: number, p: Protocol): string => `${mode}/N=${n}/${p}`;

/** A row from broadcast latencies (ms): rate = N / mean latency; median and p99 per broadcast, in ns. */
export function broadcastRow(mode: LoadMode, n: number, p: Protocol, latMs: readonly number[]): BenchRow {
  const sorted = [...latMs].sort((a, b) => a - b);
  const k = sorted.length;
  const mean = sorted.reduce((a, x) => a + x, 0) / k;
  const sd = Math.sqrt(sorted.reduce((a, x) => a + (x - mean) ** 2, 0) / Math.max(1, k - 1));
  return {
    id: rowId(mode, n, p),
    labels: { mode, n: String(n), protocol: p, unit: `vCPU ${PROTOCOL_INFO[p].unit}/s` },
    opsPerSec: mean > 0 ? (n * 1000) / mean : 0,
    medianNs: quantile(sorted, 0.5) * 1e6,
    p99Ns: quantile(sorted, 0.99) * 1e6,
    samples: k,
    batch: 1,
    rmePct: mean > 0 && k > 1 ? ((1.96 * sd) / Math.sqrt(k) / mean) * 100 : null,
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** One VM under one load, driven by every protocol; counts the CPUID changes it sends. */
class Cell {
  /** CPUID changes sent (and checked applied): what every vCPU's cpuidApplied must equal. */
  changes = 0;
  private readonly ids: number[];
  /** Guest operations per vCPU when the last busy broadcast started (-1: before the first). */
  private lastOps: number[];

  constructor(
    readonly vm: Vm,
    readonly mode: LoadMode,
    readonly n: number,
    readonly raw: RawBroadcaster | null,
  ) {
    this.ids = [...Array(n).keys()];
    this.lastOps = this.ids.map(() => -1);
  }

  /**
   * Before each broadcast (not timed). Idle: every vCPU blocked in HLT again.
   * Busy: every vCPU ran guest operations since the previous broadcast, so
   * each broadcast finds them all running guest code (without this, on a
   * loaded machine a vCPU can spend a whole run ping-ponging between
   * requests without a single guest operation).
   */
  async ready(deadlineMs = 30_000): Promise<void> {
    const end = performance.now() + deadlineMs;
    const ok =
      this.mode === 'idle'
        ? () => this.vm.records.every((r) => Atomics.load(r.halted, 0) === 1)
        : () => this.vm.records.every((r, id) => r.stats[STAT_INDEX.guestOps]! > this.lastOps[id]!);
    while (!ok()) {
      if (performance.now() > end) throw new BenchVerifyError(`${this.mode}/N=${this.n}: vCPUs not ${this.mode === 'idle' ? 'halted' : 'running guest operations'} after ${deadlineMs} ms`);
      await sleep(1);
    }
    if (this.mode === 'busy') this.lastOps = this.guestOps();
  }

  private nextCpuid(): CpuidModel {
    return CPUID_TABLES[++this.changes % 2]!;
  }

  /** One broadcast of protocol `p`; returns its latency in ms. Throws BenchVerifyError on a wrong answer. */
  async once(p: Protocol): Promise<number> {
    const { vm, n } = this;
    let problem: string | null = null;
    let t0: number;
    let dt: number;
    switch (p) {
      case 'shm': {
        const c = this.nextCpuid();
        t0 = performance.now();
        const r = await vm.broadcastCpuid(c);
        dt = performance.now() - t0;
        if (r.applied.length !== n) problem = `applied on ${r.applied.length} of ${n} vCPUs`;
        break;
      }
      case 'rpc': {
        const c = this.nextCpuid();
        t0 = performance.now();
        const r = await vm.setCpuidViaRpc(c);
        dt = performance.now() - t0;
        const bad = r.filter((x) => !x.ok || x.value !== 'applied').length;
        if (bad) problem = `${bad} of ${n} calls did not apply`;
        break;
      }
      case 'rpc-parallel': {
        const c = this.nextCpuid();
        t0 = performance.now();
        const r = await Promise.all(this.ids.map((id) => vm.call(id, 'setCpuid', c)));
        dt = performance.now() - t0;
        const bad = r.filter((x) => !x.ok || x.value !== 'applied').length;
        if (bad) problem = `${bad} of ${n} calls did not apply`;
        break;
      }
      case 'limit':
        t0 = performance.now();
        await vm.ping();
        dt = performance.now() - t0;
        break;
      case 'raw':
        t0 = performance.now();
        await this.raw!.broadcast(n);
        dt = performance.now() - t0;
        if (this.raw!.lastAcks() !== n) problem = `${this.raw!.lastAcks()} of ${n} acknowledgements`;
        break;
      default: {
        const never: never = p;
        throw new Error(`unknown protocol ${String(never)}`);
      }
    }
    if (problem) throw new BenchVerifyError(`${rowId(this.mode, n, p)}: ${problem}`);
    return dt;
  }

  /** Guest operations per vCPU so far (busy vCPUs must keep running). */
  guestOps(): number[] {
    return this.vm.records.map((r) => r.stats[STAT_INDEX.guestOps]!);
  }

  /** Every vCPU applied every change sent (and reset its MMU for each); busy ones kept running, idle ones never left HLT for the guest. */
  verify(opsBefore: readonly number[]): string | null {
    for (const id of this.ids) {
      const s = this.vm.vcpuStats(id);
      if (s.cpuidApplied !== this.changes) return `vCPU ${id} applied ${s.cpuidApplied} CPUID changes, ${this.changes} were sent`;
      if (s.mmuResets < this.changes) return `vCPU ${id} reset its MMU ${s.mmuResets} times for ${this.changes} changes`;
      if (this.mode === 'busy' && !(s.guestOps > opsBefore[id]!)) return `busy vCPU ${id} ran no guest operation while measured`;
      if (this.mode === 'busy' && s.halts !== 0) return `busy vCPU ${id} halted`;
      if (this.mode === 'idle' && s.guestOps !== opsBefore[id]) return `idle vCPU ${id} ran guest operations while measured`;
    }
    return null;
  }
}

/** Latest median latency (ms) per (load, protocol) and the N it was measured at: for predicting the next N. */
type History = Map<string, { n: number; medianMs: number } | { skippedAt: number; why: string }>;

/** Why `p` is not measured at this N, or null. */
function skipReason(hist: History, mode: LoadMode, n: number, p: Protocol, s: ResetBroadcastSettings): string | null {
  const h = hist.get(`${mode}/${p}`);
  if (!h) return null;
  if ('skippedAt' in h) return h.why;
  const predicted = h.medianMs * (n / h.n) ** growth(p, mode);
  if (predicted <= s.skipAboveMs) return null;
  return `not measured from N=${n}: predicted ${(predicted / 1000).toFixed(1)} s per broadcast (from ${h.medianMs.toFixed(1)} ms at N=${h.n}) > ${s.skipAboveMs / 1000} s`;
}

/**
 * Warm-up rounds (a protocol whose last warm-up broadcast is too slow joins
 * `skipped`), then recorded rounds until the budget is spent. Each round runs
 * every active protocol once, starting one further along each time.
 */
async function runRounds(cell: Cell, protocols: readonly Protocol[], s: ResetBroadcastSettings, skipped: Map<Protocol, string>): Promise<{ rounds: number; lat: Map<Protocol, number[]> }> {
  const lat = new Map<Protocol, number[]>(protocols.map((p) => [p, []]));
  const round = async (r: number, active: readonly Protocol[], record: boolean): Promise<void> => {
    for (let i = 0; i < active.length; i++) {
      const p = active[(i + r) % active.length]!;
      await cell.ready();
      const dt = await cell.once(p);
      if (record) lat.get(p)!.push(dt);
      else if (r === s.warmupRounds - 1 && dt > s.skipAboveMs) {
        skipped.set(p, `not measured from N=${cell.n}: a warm-up broadcast took ${(dt / 1000).toFixed(1)} s > ${s.skipAboveMs / 1000} s`);
      }
    }
  };
  for (let r = 0; r < s.warmupRounds; r++) await round(r, protocols, false);
  const active = protocols.filter((p) => !skipped.has(p));
  let rounds = 0;
  const t0 = performance.now();
  while (rounds < s.maxRounds && active.length > 0) {
    const spent = performance.now() - t0;
    if (rounds >= s.minRounds && spent >= s.budgetMs) break;
    if (rounds >= Math.min(3, s.minRounds) && spent >= s.capMs) break;
    await round(rounds, active, true);
    rounds++;
  }
  for (const p of skipped.keys()) lat.delete(p);
  return { rounds, lat };
}

/** One VM for (load, N), every protocol on it, verified; updates the history the next N's skips are predicted from. */
async function measureCell(mode: LoadMode, n: number, s: ResetBroadcastSettings, raw: RawBroadcaster | null, hist: History): Promise<CellResult> {
  const started = performance.now();
  const skipped = new Map<Protocol, string>();
  for (const p of s.protocols) {
    const why = skipReason(hist, mode, n, p, s);
    if (why) skipped.set(p, why);
  }
  const active = s.protocols.filter((p) => !skipped.has(p));
  const vm = await Vm.create({
    vcpus: n,
    policy: 'legacy',
    seed: n,
    deadlineMs: 120_000,
    ...(mode === 'idle' ? { mix: IDLE_MIX, loop: { haltTimeoutMs: Infinity } } : {}),
  });
  const createMs = performance.now() - started;
  let measured: { rounds: number; lat: Map<Protocol, number[]> };
  try {
    if (raw && active.includes('raw')) await raw.ensure(n);
    const cell = new Cell(vm, mode, n, raw);
    await cell.ready();
    const opsBefore = cell.guestOps();
    measured = await runRounds(cell, active, s, skipped);
    const problem = cell.verify(opsBefore);
    if (problem) throw new BenchVerifyError(`${mode}/N=${n}: ${problem}`);
  } finally {
    await vm.destroy();
  }
  const rows = new Map<Protocol, BenchRow>();
  for (const [p, lat] of measured.lat) rows.set(p, broadcastRow(mode, n, p, lat));
  for (const p of s.protocols) {
    const row = rows.get(p);
    if (row) hist.set(`${mode}/${p}`, { n, medianMs: row.medianNs! / 1e6 });
    else hist.set(`${mode}/${p}`, { skippedAt: n, why: skipped.get(p)! });
  }
  return { mode, n, createMs, rounds: measured.rounds, cellMs: performance.now() - started, rows, skipped };
}

/** Per (load, N): shm vs both limits, the control plane vs shm; each from p50 latencies of the same run. */
export function broadcastRatios(cells: readonly CellResult[]): Ratio[] {
  const out: Ratio[] = [];
  const pairs: [Protocol, Protocol, string][] = [
    ['shm', 'limit', 'shm p50 / limit p50: what the MMU work (invalidate + reset) adds to the same wake/ack path'],
    ['shm', 'raw', 'shm p50 / raw p50: the shared-memory protocol over bare Atomics wake-and-ack'],
    ['rpc', 'shm', 'rpc p50 / shm p50: how many times slower the sequential control plane is'],
    ['rpc-parallel', 'shm', 'rpc-parallel p50 / shm p50: the control plane with every call in flight at once'],
  ];
  for (const c of cells) {
    for (const [a, b, means] of pairs) {
      const ra = c.rows.get(a);
      const rb = c.rows.get(b);
      if (ra && rb) out.push(ratioOf(`${c.mode}/N=${c.n} ${a}/${b}`, ra, rb, means));
    }
  }
  return out;
}

/** The settings a run context asks for: a timing shorter than --quick's is a test's, which gets the smoke sizes. */
export function settingsFor(ctx: GroupRunContext): ResetBroadcastSettings {
  if (ctx.timing.timeMs < TIMINGS.quick.timeMs) return RESET_BROADCAST_SETTINGS.smoke;
  return ctx.quick ? RESET_BROADCAST_SETTINGS.quick : RESET_BROADCAST_SETTINGS.full;
}

export function resetBroadcastNotes(s: ResetBroadcastSettings): string[] {
  return [
    `One VM per (load, N) with the legacy CPUID policy; each broadcast alternates MAXPHYADDR ${CPUID_TABLES[0]!.maxPhyAddr}/${CPUID_TABLES[1]!.maxPhyAddr}, so each vCPU really changes CPUID and runs kvm_mmu_after_set_cpuid (invalidate + reset).`,
    ...s.protocols.map((p) => `${p}: ${PROTOCOL_INFO[p].what}.`),
    'idle = every guest op is HLT, no halt timeout: vCPUs are blocked in Atomics.waitAsync when each broadcast starts (the bench waits, untimed, until all are halted again). busy = the default guest mix, never halting; before each broadcast the bench waits (untimed) until every vCPU ran guest operations since the previous one.',
    'busy on this machine: N running vCPU threads share the cores with the coordinator, so latency is bound by the OS scheduler (a kicked vCPU must get a time slice), not by the protocol.',
    `The protocols take turns round by round on the same VM (starting protocol rotates); ${s.warmupRounds} warm-up rounds, then at least ${s.minRounds} rounds until ${s.budgetMs / 1000} s are spent (at most ${s.maxRounds}; none started after ${s.capMs / 1000} s once 3 are in).`,
    'vCPU resets/s (limits: acks/s) = N / mean broadcast latency; p50/p99 are per broadcast. Ratios divide p50 latencies of the same (load, N).',
    `A protocol predicted (from the previous N) or seen in warm-up to take over ${s.skipAboveMs / 1000} s per broadcast is not measured at that N or above (marked "skipped").`,
    'Verified per (load, N): every vCPU applied exactly the changes sent and reset its MMU for each; busy vCPUs kept running guest ops, idle ones ran none; every ping and raw broadcast was acknowledged by all N.',
  ];
}

export async function runResetBroadcast(ctx: GroupRunContext, settings?: ResetBroadcastSettings): Promise<GroupResult> {
  const s = settings ?? settingsFor(ctx);
  const started = performance.now();
  const raw = s.protocols.includes('raw') ? new RawBroadcaster(Math.max(...s.ns)) : null;
  const hist: History = new Map();
  const cells: CellResult[] = [];
  const total = s.ns.length * s.modes.length * s.protocols.length;
  let index = 0;
  try {
    for (const n of s.ns) {
      for (const mode of s.modes) {
        const cell = await measureCell(mode, n, s, raw, hist);
        cells.push(cell);
        for (const p of s.protocols) {
          const row = cell.rows.get(p);
          if (row) ctx.onCase({ group: RESET_BROADCAST_GROUP.name, index: ++index, total, row });
        }
      }
    }
  } finally {
    await raw?.close();
  }
  return {
    group: RESET_BROADCAST_GROUP.name,
    description: RESET_BROADCAST_GROUP.description,
    notes: resetBroadcastNotes(s),
    rows: cells.flatMap((c) => [...c.rows.values()]),
    ratios: broadcastRatios(cells),
    chart: null,
    moreCharts: s.modes.map((mode) => ({ name: mode, chart: lineChart(cells, mode, s.protocols) })),
    tables: s.modes.flatMap((mode) => broadcastTables(cells, mode, s.protocols)),
    extra: {
      settings: s,
      cells: cells.map((c) => ({ mode: c.mode, n: c.n, createMs: c.createMs, rounds: c.rounds, cellMs: c.cellMs, skipped: Object.fromEntries(c.skipped) })),
    },
    elapsedMs: performance.now() - started,
  };
}

export const RESET_BROADCAST_GROUP: BenchGroup = {
  name: 'reset-broadcast',
  description: 'CPUID change broadcast to N vCPUs (each invalidates + resets its MMU): shared memory vs control plane vs limits, idle and busy',
  run: (ctx) => runResetBroadcast(ctx),
};

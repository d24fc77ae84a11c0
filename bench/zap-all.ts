/**
 * Group "zap-all": zapping the whole shadow page cache while N busy vCPUs
 * run on it, N = 1 … 32, on a shadow-paging host (`tdp_enabled` off, so the
 * cache shadows the guests' own page tables and holds about a thousand pages
 * once the guests' faults have populated it):
 *
 * - fast:       kvm_mmu_zap_all_fast (`vm.zapAllFast`): under mmu_lock flip
 *               mmu_valid_gen and make a waiting MMU_RELOAD on every vCPU,
 *               wait until every vCPU in guest mode left it, then zap the
 *               obsolete pages under the lock;
 * - one-by-one: kvm_mmu_zap_all (`vm.zapAllPages`): every page zapped one by
 *               one in one mmu_lock critical section; roots in use are zapped
 *               but stay until released, and each such zap requests
 *               MMU_RELOAD of every vCPU without waiting.
 *
 * One VM per N and both protocols on it, taking turns repetition by
 * repetition (the first one alternates), so both share the machine load and
 * the same threads. Per repetition: the call's latency, the pages it zapped,
 * and the time from the call until every vCPU was seen entering guest mode on
 * a root allocated after the zap (see `reloaded` below for the exact test).
 * Before each repetition (not timed) the vCPUs repopulate the cache: the
 * bench waits until pages in use are back near the level the VM settled at
 * when it warmed up, so every repetition zaps a comparable number of pages.
 */
import { waitAsync } from '../src/layout/atomics.js';
import { DEFAULT_HOST } from '../src/role/host.js';
import { PR } from '../src/role/page-role.js';
import type { ShadowVm } from '../src/shadow/index.js';
import { STAT_INDEX, type VcpuRecord } from '../src/vcpu/vcpu-layout.js';
import { Vm } from '../src/vm/vm.js';
import { BenchVerifyError, quantile, ratioOf } from './harness.js';
import { formatRatio } from './report.js';
import { formatLatency } from './reset-broadcast-report.js';
import { shortNumber } from './svg.js';
import { TIMINGS, type BenchGroup, type BenchRow, type ChartSpec, type GroupResult, type GroupRunContext, type Ratio, type TextTableSpec } from './types.js';

export const ZAP_NS = [1, 2, 4, 8, 16, 32] as const;
export const ZAP_PROTOCOLS = ['fast', 'one-by-one'] as const;
export type ZapProtocol = (typeof ZAP_PROTOCOLS)[number];

export const ZAP_PROTOCOL_INFO: Readonly<Record<ZapProtocol, string>> = {
  fast: 'kvm_mmu_zap_all_fast (vm.zapAllFast): flip mmu_valid_gen + waiting MMU_RELOAD under mmu_lock, wait for every vCPU to leave guest mode, zap the obsolete pages under mmu_lock, dropping it after every BATCH_ZAP_PAGES (10) zaps while a vCPU waits for it',
  'one-by-one': 'kvm_mmu_zap_all (vm.zapAllPages): zap every page one by one in one mmu_lock critical section; a zapped root in use makes MMU_RELOAD on every vCPU, not waited for',
};

/** The busy vCPUs run on a shadow-paging host: the cache shadows the guest page tables (many more pages than EPT). */
export const ZAP_HOST = { ...DEFAULT_HOST, tdpEnabled: false };

export interface ZapAllSettings {
  readonly ns: readonly number[];
  readonly protocols: readonly ZapProtocol[];
  /** n_max_mmu_pages: large enough that the cap never decides how many pages the cache holds. */
  readonly maxPages: number;
  /** Warm-up: pages in use are sampled every `sampleMs`; per window of `windowMs` their median. */
  readonly sampleMs: number;
  readonly windowMs: number;
  /** The warm-up ends once the window median stopped growing (≤ 5% above the best earlier window), after at least minWarmMs, at most maxWarmMs. */
  readonly minWarmMs: number;
  readonly maxWarmMs: number;
  /** Before each repetition: wait until pages in use ≥ this fraction of the warm level (at most repopMaxMs, then go on and count it). */
  readonly repopFraction: number;
  readonly repopMaxMs: number;
  /** Repetitions per N before measuring (JIT, first zaps); not recorded. */
  readonly warmupRounds: number;
  readonly minRounds: number;
  readonly maxRounds: number;
  /** Per N: after minRounds, no new round once this much time was spent measuring. */
  readonly budgetMs: number;
  /** Per N: no new round after this, even below minRounds, once 3 rounds are in. */
  readonly capMs: number;
}

const BOTH = { protocols: ZAP_PROTOCOLS, maxPages: 2048, sampleMs: 5, windowMs: 100, repopFraction: 0.9 } as const;

export const ZAP_ALL_SETTINGS: Readonly<Record<'quick' | 'full' | 'smoke', ZapAllSettings>> = {
  quick: { ...BOTH, ns: [1, 2, 4, 8], minWarmMs: 300, maxWarmMs: 1_500, repopMaxMs: 1_000, warmupRounds: 1, minRounds: 8, maxRounds: 200, budgetMs: 1_000, capMs: 3_000 },
  full: { ...BOTH, ns: ZAP_NS, minWarmMs: 500, maxWarmMs: 3_000, repopMaxMs: 2_000, warmupRounds: 2, minRounds: 20, maxRounds: 1_000, budgetMs: 3_000, capMs: 10_000 },
  /** Used when a test passes a timing shorter than --quick: tiny N, two rounds. */
  smoke: { ...BOTH, ns: [1, 2], minWarmMs: 100, maxWarmMs: 500, repopMaxMs: 500, warmupRounds: 1, minRounds: 2, maxRounds: 2, budgetMs: 0, capMs: 60_000 },
};

/** One repetition of one protocol. */
export interface ZapSample {
  /** The call, from invocation to its promise settling, ms. */
  readonly callMs: number;
  /** From invocation until every vCPU was seen on a root allocated after the zap, ms. */
  readonly reloadMs: number;
  /** Pages the call zapped (freed; roots still held when the call zapped them are freed later by their holders and not counted). */
  readonly zapped: number;
  /** n_used_mmu_pages just before the call. */
  readonly usedBefore: number;
  /** The bench gave up waiting for the cache to repopulate (repopMaxMs) before this repetition. */
  readonly underfilled: boolean;
  /** Times the call dropped mmu_lock for a waiting vCPU (kvm_zap_obsolete_pages' lock break; fast only, else 0). */
  readonly lockBreaks: number;
}

/** One N: both protocols on one VM. */
export interface ZapCellResult {
  readonly n: number;
  readonly createMs: number;
  readonly warmMs: number;
  /** Pages in use once warm (median of the last warm-up window) and the level each repetition waited for. */
  readonly warmPages: number;
  readonly targetPages: number;
  readonly rounds: number;
  /** Wall time of the whole cell (creation, warm-up, rounds, verification, teardown), ms. */
  readonly cellMs: number;
  readonly samples: ReadonlyMap<ZapProtocol, readonly ZapSample[]>;
  /** Per protocol: the call row (rate = pages zapped/s of call time) and the reload row (rate = vCPU reloads/s). */
  readonly callRows: ReadonlyMap<ZapProtocol, BenchRow>;
  readonly reloadRows: ReadonlyMap<ZapProtocol, BenchRow>;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const median = (xs: readonly number[]): number => quantile([...xs].sort((a, b) => a - b), 0.5);

/** Latency figures shared by both row kinds: p50, p99, sample count and the 95% margin of error of the mean. */
function latencyFigures(latMs: readonly number[]): { mean: number; medianNs: number; p99Ns: number; samples: number; rmePct: number | null } {
  const sorted = [...latMs].sort((a, b) => a - b);
  const k = sorted.length;
  const mean = sorted.reduce((a, x) => a + x, 0) / k;
  const sd = Math.sqrt(sorted.reduce((a, x) => a + (x - mean) ** 2, 0) / Math.max(1, k - 1));
  return {
    mean,
    medianNs: quantile(sorted, 0.5) * 1e6,
    p99Ns: quantile(sorted, 0.99) * 1e6,
    samples: k,
    rmePct: mean > 0 && k > 1 ? ((1.96 * sd) / Math.sqrt(k) / mean) * 100 : null,
  };
}

/** The call row: p50/p99 of call latency; rate = pages zapped per second of call time (Σ zapped / Σ call time). */
export function callRow(n: number, p: ZapProtocol, samples: readonly ZapSample[]): BenchRow {
  const f = latencyFigures(samples.map((s) => s.callMs));
  const totalMs = samples.reduce((a, s) => a + s.callMs, 0);
  const pages = samples.reduce((a, s) => a + s.zapped, 0);
  return {
    id: `N=${n}/${p}/call`,
    labels: { n: String(n), protocol: p, figure: 'call', unit: 'pages zapped/s' },
    opsPerSec: totalMs > 0 ? (pages * 1000) / totalMs : 0,
    medianNs: f.medianNs,
    p99Ns: f.p99Ns,
    samples: f.samples,
    batch: 1,
    rmePct: f.rmePct,
  };
}

/** The reload row: p50/p99 of the time until every vCPU reloaded; rate = N / mean of it (vCPU reloads/s). */
export function reloadRow(n: number, p: ZapProtocol, samples: readonly ZapSample[]): BenchRow {
  const f = latencyFigures(samples.map((s) => s.reloadMs));
  return {
    id: `N=${n}/${p}/reload`,
    labels: { n: String(n), protocol: p, figure: 'reload', unit: 'vCPU reloads/s' },
    opsPerSec: f.mean > 0 ? (n * 1000) / f.mean : 0,
    medianNs: f.medianNs,
    p99Ns: f.p99Ns,
    samples: f.samples,
    batch: 1,
    rmePct: f.rmePct,
  };
}

/** One busy VM on a shadow-paging host, zapped by both protocols. */
class ZapCell {
  private readonly shadow: ShadowVm;
  private lastOps: number[];
  /** Per page, its allocation sequence just before the current call (a page allocated since has another). */
  private allocSnap: Int32Array;
  /** Fast calls made (each must flip the generation). */
  fastCalls = 0;
  warmPages = 0;
  targetPages = 0;

  constructor(
    readonly vm: Vm,
    readonly n: number,
    readonly s: ZapAllSettings,
  ) {
    this.shadow = vm.shadow!;
    this.lastOps = vm.records.map(() => -1);
    this.allocSnap = new Int32Array(this.shadow.capacity);
  }

  guestOps(): number[] {
    return this.vm.records.map((r) => r.stats[STAT_INDEX.guestOps]!);
  }

  /**
   * Warm-up: sample pages in use every sampleMs; stop once a window's median
   * is no more than 5% above the best earlier window (after minWarmMs) or at
   * maxWarmMs. The warm level is the median of the last three windows'
   * samples (pages in use still move a little while the guests fault).
   */
  async warm(): Promise<number> {
    // Start the clock once every vCPU entered guest mode (and so holds a root): on a loaded machine the
    // threads may get no CPU for the first window, whose median would then be 0 and, being no more than
    // 5% above the best earlier window (0), end the warm-up with warmPages = 0.
    const deadline = performance.now() + this.s.maxWarmMs + 30_000;
    while (!this.vm.records.every((r) => Atomics.load(r.ran, 0) === 1)) {
      if (performance.now() > deadline) throw new BenchVerifyError(`N=${this.n}: vCPUs did not all enter guest mode within ${this.s.maxWarmMs + 30_000} ms`);
      await sleep(this.s.sampleMs);
    }
    const t0 = performance.now();
    let best = 0;
    const windows: number[][] = [[]];
    let winStart = t0;
    for (;;) {
      await sleep(this.s.sampleMs);
      const win = windows[windows.length - 1]!;
      win.push(this.shadow.nUsed);
      const now = performance.now();
      if (now - winStart < this.s.windowMs) continue;
      const m = median(win);
      const spent = now - t0;
      if ((spent >= this.s.minWarmMs && m > 0 && m <= best * 1.05) || spent >= this.s.maxWarmMs) break;
      best = Math.max(best, m);
      windows.push([]);
      winStart = now;
    }
    this.warmPages = median(windows.slice(-3).flat());
    this.targetPages = Math.max(1, Math.floor(this.warmPages * this.s.repopFraction));
    return performance.now() - t0;
  }

  /**
   * Before each repetition (not timed): every vCPU ran guest operations
   * since the previous one, and pages in use are back at the target (or
   * repopMaxMs passed: the repetition is marked underfilled).
   */
  async ready(): Promise<boolean> {
    const end = performance.now() + 30_000;
    const ran = () => this.vm.records.every((r, id) => r.stats[STAT_INDEX.guestOps]! > this.lastOps[id]!);
    while (!ran()) {
      if (performance.now() > end) throw new BenchVerifyError(`N=${this.n}: vCPUs not running guest operations after 30 s`);
      await sleep(1);
    }
    const repopEnd = performance.now() + this.s.repopMaxMs;
    let full = this.shadow.nUsed >= this.targetPages;
    while (!full && performance.now() < repopEnd) {
      await sleep(1);
      full = this.shadow.nUsed >= this.targetPages;
    }
    this.lastOps = this.guestOps();
    return !full;
  }

  /**
   * Whether vCPU `id` has reloaded: its record shows a verified guest-mode
   * stint (stintSeq read twice, equal and ≥ 0, with rootPage between: the
   * root belongs to that stint) whose stint sequence is newer than the
   * vCPU's request sequence before the call, on a root page allocated since
   * the call began; for fast, a page of the new generation; for one-by-one
   * (checked only after the call returned, when every older page is
   * zapped), a page that is not role.invalid.
   */
  private reloaded(rec: VcpuRecord, seqBefore: number, p: ZapProtocol, newGen: number): boolean {
    const s1 = Atomics.load(rec.stintSeq, 0);
    if (s1 <= seqBefore) return false;
    const root = Atomics.load(rec.rootPage, 0);
    if (Atomics.load(rec.stintSeq, 0) !== s1 || root < 0) return false;
    const sh = this.shadow;
    if (sh.allocSeqOf(root) === this.allocSnap[root]) return false;
    return p === 'fast' ? sh.genOf(root) === newGen : (sh.roleOf(root) & PR.INVALID) === 0;
  }

  /** One repetition of `p`. Throws BenchVerifyError on a wrong answer. */
  async once(p: ZapProtocol, underfilled: boolean): Promise<ZapSample> {
    const { vm, n } = this;
    const sh = this.shadow;
    const recs = vm.records;
    for (let i = 0; i < sh.capacity; i++) this.allocSnap[i] = sh.allocSeqOf(i);
    const seqBefore = recs.map((r) => Atomics.load(r.requestSeq, 0));
    const newGen = sh.mmuValidGen ^ 1;
    const usedBefore = sh.nUsed;
    const breaksBefore = vm.shadowStats()!.stats.zapLockBreaks;
    const pending = new Set<number>(recs.keys());
    let callMs = -1;
    let zapped = 0;
    let problem: string | null = null;
    let failed: unknown = null;
    const t0 = performance.now();
    const call =
      p === 'fast'
        ? vm.zapAllFast().then((r) => {
            callMs = performance.now() - t0;
            zapped = r.zapped;
            if (r.generation !== newGen) problem = `generation ${r.generation}, expected ${newGen}`;
            else if (r.lostInvalidations.length) problem = `lost invalidations: ${r.lostInvalidations.map((x) => x.detail).join('; ')}`;
          })
        : vm.zapAllPages().then((z) => {
            callMs = performance.now() - t0;
            zapped = z;
          });
    const settled = call.catch((e: unknown) => void (failed = e ?? new Error('zap call failed')));
    // one-by-one: pages allocated after the call began but before its critical section are valid until it runs.
    if (p === 'one-by-one') await settled;
    const deadline = t0 + 30_000;
    let reloadMs = 0;
    for (;;) {
      for (const id of pending) if (this.reloaded(recs[id]!, seqBefore[id]!, p, newGen)) pending.delete(id);
      if (pending.size === 0) {
        reloadMs = performance.now() - t0;
        break;
      }
      if (failed) throw failed;
      if (vm.dead.size) throw new BenchVerifyError(`N=${n}/${p}: vCPU died: ${[...vm.dead.values()].join('; ')}`);
      if (performance.now() > deadline) throw new BenchVerifyError(`N=${n}/${p}: vCPUs ${[...pending].join(', ')} not seen on a new root 30 s after the zap`);
      // Wake at the next exit of one vCPU still pending (after a zap its first access faults: an exit soon after its entry), or after 1 ms.
      const rec = recs[pending.values().next().value!]!;
      await waitAsync(rec.outsideEpoch, 0, Atomics.load(rec.outsideEpoch, 0), 1);
    }
    await settled;
    if (failed) throw failed;
    if (problem) throw new BenchVerifyError(`N=${n}/${p}: ${problem}`);
    if (p === 'fast') this.fastCalls++;
    const lockBreaks = vm.shadowStats()!.stats.zapLockBreaks - breaksBefore;
    return { callMs, reloadMs, zapped, usedBefore, underfilled, lockBreaks };
  }

  /** Busy vCPUs kept running and never halted; none died; the generation flipped once per fast call. */
  verify(opsBefore: readonly number[], genBefore: number): string | null {
    if (this.vm.dead.size) return `vCPUs died: ${[...this.vm.dead.entries()].map(([id, why]) => `${id}: ${why}`).join('; ')}`;
    for (let id = 0; id < this.n; id++) {
      const s = this.vm.vcpuStats(id);
      if (!(s.guestOps > opsBefore[id]!)) return `vCPU ${id} ran no guest operation while measured`;
      if (s.halts !== 0) return `busy vCPU ${id} halted`;
    }
    const gen = this.shadow.mmuValidGen;
    if (gen !== (genBefore ^ (this.fastCalls & 1))) return `generation ${gen} after ${this.fastCalls} fast zaps from ${genBefore}`;
    return null;
  }
}

/** Warm-up rounds, then rounds until the budget is spent; each round runs every protocol once, the first alternating. */
async function runRounds(cell: ZapCell, s: ZapAllSettings): Promise<{ rounds: number; samples: Map<ZapProtocol, ZapSample[]> }> {
  const samples = new Map<ZapProtocol, ZapSample[]>(s.protocols.map((p) => [p, []]));
  const round = async (r: number, record: boolean): Promise<void> => {
    for (let i = 0; i < s.protocols.length; i++) {
      const p = s.protocols[(i + r) % s.protocols.length]!;
      const underfilled = await cell.ready();
      const x = await cell.once(p, underfilled);
      if (record) samples.get(p)!.push(x);
    }
  };
  for (let r = 0; r < s.warmupRounds; r++) await round(r, false);
  let rounds = 0;
  const t0 = performance.now();
  while (rounds < s.maxRounds) {
    const spent = performance.now() - t0;
    if (rounds >= s.minRounds && spent >= s.budgetMs) break;
    if (rounds >= Math.min(3, s.minRounds) && spent >= s.capMs) break;
    await round(rounds, true);
    rounds++;
  }
  return { rounds, samples };
}

/** One VM for N, warmed, both protocols on it, verified (including the cache audit at teardown). */
export async function measureZapCell(n: number, s: ZapAllSettings): Promise<ZapCellResult> {
  const started = performance.now();
  const vm = await Vm.create({ vcpus: n, host: ZAP_HOST, seed: n, shadow: { maxPages: s.maxPages }, deadlineMs: 120_000 });
  const createMs = performance.now() - started;
  let measured: { rounds: number; samples: Map<ZapProtocol, ZapSample[]> };
  let cell: ZapCell;
  let warmMs: number;
  try {
    cell = new ZapCell(vm, n, s);
    warmMs = await cell.warm();
    const opsBefore = cell.guestOps();
    const genBefore = vm.shadow!.mmuValidGen;
    measured = await runRounds(cell, s);
    const problem = cell.verify(opsBefore, genBefore);
    if (problem) throw new BenchVerifyError(`zap-all N=${n}: ${problem}`);
  } finally {
    await vm.destroy();
  }
  const t = vm.shadowTeardown;
  if (!t) throw new BenchVerifyError(`zap-all N=${n}: no shadow teardown (a vCPU died?)`);
  if (t.audit.length) throw new BenchVerifyError(`zap-all N=${n}: cache audit failed: ${t.audit.slice(0, 3).join('; ')}`);
  if (t.rootsLeft.size) throw new BenchVerifyError(`zap-all N=${n}: ${t.rootsLeft.size} pages still held as roots after every vCPU stopped`);
  if (t.freePages !== t.capacity) throw new BenchVerifyError(`zap-all N=${n}: ${t.capacity - t.freePages} pages leaked`);
  const callRows = new Map<ZapProtocol, BenchRow>();
  const reloadRows = new Map<ZapProtocol, BenchRow>();
  for (const [p, xs] of measured.samples) {
    callRows.set(p, callRow(n, p, xs));
    reloadRows.set(p, reloadRow(n, p, xs));
  }
  return {
    n,
    createMs,
    warmMs,
    warmPages: cell.warmPages,
    targetPages: cell.targetPages,
    rounds: measured.rounds,
    cellMs: performance.now() - started,
    samples: measured.samples,
    callRows,
    reloadRows,
  };
}

/** Per N: one-by-one over fast, for the call latency and for the time until every vCPU reloaded (p50 of the same VM, interleaved). */
export function zapRatios(cells: readonly ZapCellResult[]): Ratio[] {
  const out: Ratio[] = [];
  for (const c of cells) {
    const [fc, oc] = [c.callRows.get('fast'), c.callRows.get('one-by-one')];
    const [fr, or] = [c.reloadRows.get('fast'), c.reloadRows.get('one-by-one')];
    if (fc && oc) out.push(ratioOf(`N=${c.n} one-by-one/fast call`, oc, fc, 'one-by-one call p50 / fast call p50 (> 1: zapping page by page takes longer)'));
    if (fr && or) out.push(ratioOf(`N=${c.n} one-by-one/fast reload`, or, fr, 'one-by-one p50 / fast p50 of the time until every vCPU runs on a new root'));
  }
  return out;
}

const pct = (xs: readonly number[], q: number): number => quantile([...xs].sort((a, b) => a - b), q);
const ms = (row: BenchRow | undefined, which: 'medianNs' | 'p99Ns'): number | null => (row?.[which] == null ? null : row[which]! / 1e6);
const p50p99 = (row: BenchRow | undefined): string => (row ? `${formatLatency(ms(row, 'medianNs'))} / ${formatLatency(ms(row, 'p99Ns'))}` : '-');
const ratioText = (a: BenchRow | undefined, b: BenchRow | undefined): string => (a?.medianNs && b?.medianNs ? formatRatio(a.medianNs / b.medianNs) : '-');
const zappedText = (xs: readonly ZapSample[] | undefined): string => (xs?.length ? `${Math.round(pct(xs.map((x) => x.zapped), 0.5))}` : '-');
const breaksText = (xs: readonly ZapSample[] | undefined): string => (xs?.length ? `${Math.round(pct(xs.map((x) => x.lockBreaks), 0.5))}` : '-');

/** Two tables: the call (pages zapped, latency, pages/s, ratio), then the reload (time until every vCPU reloaded, ratio). */
export function zapTables(cells: readonly ZapCellResult[]): TextTableSpec[] {
  const F = 'fast';
  const O = 'one-by-one';
  const call: TextTableSpec = {
    title: 'zap-all, the call: pages zapped per call (p50), lock breaks per fast call (p50), call latency p50 / p99, pages zapped/s (Σ zapped / Σ call time); ratio of p50 latency (x = times slower)',
    header: ['N', 'rounds', 'warm pages', `${F} zapped`, `${O} zapped`, `${F} lock breaks`, `${F} call`, `${O} call`, `${O}/${F}`, `${F} pages/s`, `${O} pages/s`],
    rows: cells.map((c) => [
      String(c.n),
      String(c.rounds),
      String(Math.round(c.warmPages)),
      zappedText(c.samples.get(F)),
      zappedText(c.samples.get(O)),
      breaksText(c.samples.get(F)),
      p50p99(c.callRows.get(F)),
      p50p99(c.callRows.get(O)),
      ratioText(c.callRows.get(O), c.callRows.get(F)),
      c.callRows.has(F) ? shortNumber(c.callRows.get(F)!.opsPerSec) : '-',
      c.callRows.has(O) ? shortNumber(c.callRows.get(O)!.opsPerSec) : '-',
    ]),
    rightAlign: [true, true, true, true, true, true, true, true, true, true, true],
  };
  const reload: TextTableSpec = {
    title: 'zap-all, until every vCPU reloaded: from the call until each vCPU was seen in guest mode on a root allocated after the zap, p50 / p99; vCPU reloads/s = N / mean; ratio of p50',
    header: ['N', `${F} call p50`, `${F} reloaded`, `${O} call p50`, `${O} reloaded`, `${O}/${F}`, `${F} reloads/s`, `${O} reloads/s`],
    rows: cells.map((c) => [
      String(c.n),
      formatLatency(ms(c.callRows.get(F), 'medianNs')),
      p50p99(c.reloadRows.get(F)),
      formatLatency(ms(c.callRows.get(O), 'medianNs')),
      p50p99(c.reloadRows.get(O)),
      ratioText(c.reloadRows.get(O), c.reloadRows.get(F)),
      c.reloadRows.has(F) ? shortNumber(c.reloadRows.get(F)!.opsPerSec) : '-',
      c.reloadRows.has(O) ? shortNumber(c.reloadRows.get(O)!.opsPerSec) : '-',
    ]),
    rightAlign: [true, true, true, true, true, true, true, true],
  };
  return [call, reload];
}

/** Pages zapped/s against N, one line per protocol (the group's chart). */
export function pagesChart(cells: readonly ZapCellResult[], protocols: readonly ZapProtocol[]): ChartSpec {
  return {
    kind: 'line',
    title: 'zap-all, busy vCPUs on a shadow-paging host: pages zapped/s of call time (higher is faster)',
    yLabel: 'pages zapped/s',
    logY: true,
    categories: cells.map((c) => `N=${c.n}`),
    series: protocols.map((p) => ({ name: p, values: cells.map((c) => c.callRows.get(p)?.opsPerSec ?? null) })),
  };
}

/** p50 time until every vCPU reloaded against N, one line per protocol (`zap-all-reload.svg`). */
export function reloadChart(cells: readonly ZapCellResult[], protocols: readonly ZapProtocol[]): ChartSpec {
  return {
    kind: 'line',
    title: 'zap-all: ms from the call until every vCPU runs on a new root, p50 (lower is faster)',
    yLabel: 'ms until all reloaded',
    logY: true,
    categories: cells.map((c) => `N=${c.n}`),
    series: protocols.map((p) => ({ name: p, values: cells.map((c) => ms(c.reloadRows.get(p), 'medianNs')) })),
  };
}

/** The settings a run context asks for: a timing shorter than --quick's is a test's, which gets the smoke sizes. */
export function zapSettingsFor(ctx: GroupRunContext): ZapAllSettings {
  if (ctx.timing.timeMs < TIMINGS.quick.timeMs) return ZAP_ALL_SETTINGS.smoke;
  return ctx.quick ? ZAP_ALL_SETTINGS.quick : ZAP_ALL_SETTINGS.full;
}

export function zapAllNotes(s: ZapAllSettings): string[] {
  return [
    `One VM per N: busy vCPUs (the default guest mix, never halting) on a shadow-paging host (tdp_enabled off), n_max_mmu_pages ${s.maxPages}; the cache shadows the guest page tables: the guests' faults populate it, and between repetitions the bench waits until they have refilled it, so every repetition zaps a comparable number of pages.`,
    ...s.protocols.map((p) => `${p}: ${ZAP_PROTOCOL_INFO[p]}.`),
    `Warm-up: pages in use sampled every ${s.sampleMs} ms until a ${s.windowMs} ms window's median stops growing (≤ 5% above the best earlier window; ${s.minWarmMs / 1000}–${s.maxWarmMs / 1000} s): the warm level is the median of the last three windows. Before each repetition (untimed) every vCPU ran guest operations since the previous one and pages in use are back at ≥ ${s.repopFraction * 100}% of the warm level (waited for at most ${s.repopMaxMs / 1000} s).`,
    'call = the coordinator call until its promise settles; zapped = pages the call freed (roots still held are freed by their holders later, not counted); pages/s = Σ zapped / Σ call time.',
    'reloaded = from the call until every vCPU was seen (seqlock read of stintSeq/rootPage/stintSeq) in a verified guest-mode stint newer than its request sequence before the call, on a root page allocated since the call began and, for fast, of the new generation (one-by-one: checked once the call returned, not role.invalid). The coordinator waits on the outsideEpoch of a vCPU still pending (woken at its next exit, or after 1 ms), so a vCPU is seen at its first exit after entering on the new root. A halted vCPU counts at its next entry (busy vCPUs never halt here).',
    `The two protocols take turns on the same VM (the first alternates); ${s.warmupRounds} warm-up round${s.warmupRounds === 1 ? '' : 's'}, then at least ${s.minRounds} rounds until ${s.budgetMs / 1000} s are spent (at most ${s.maxRounds}; none started after ${s.capMs / 1000} s once 3 are in). Ratios divide p50s of the same N.`,
    'Verified per N: every fast call flipped the generation and found no lost invalidation; every vCPU reloaded after every zap; busy vCPUs kept running and never halted; at teardown no root was left held, no page leaked and the cache audit was clean.',
    'fast lock breaks = times one call dropped mmu_lock for a waiting vCPU (kvm_zap_obsolete_pages: after BATCH_ZAP_PAGES = 10 zaps, cond_resched_rwlock_write when the lock is contended; src/shadow/zap.ts zapObsoleteUntilBreak), p50 per call. A vCPU that reloads needs mmu_lock for its new root: under one-by-one it waits for the whole zap, under fast only for the current batch.',
  ];
}

export async function runZapAll(ctx: GroupRunContext, settings?: ZapAllSettings): Promise<GroupResult> {
  const s = settings ?? zapSettingsFor(ctx);
  const started = performance.now();
  const cells: ZapCellResult[] = [];
  const total = s.ns.length * s.protocols.length * 2;
  let index = 0;
  for (const n of s.ns) {
    const cell = await measureZapCell(n, s);
    cells.push(cell);
    for (const p of s.protocols) {
      for (const row of [cell.callRows.get(p), cell.reloadRows.get(p)]) if (row) ctx.onCase({ group: ZAP_ALL_GROUP.name, index: ++index, total, row });
    }
  }
  const stats = (xs: readonly number[]) => ({ p50: pct(xs, 0.5), min: Math.min(...xs), max: Math.max(...xs) });
  return {
    group: ZAP_ALL_GROUP.name,
    description: ZAP_ALL_GROUP.description,
    notes: zapAllNotes(s),
    rows: cells.flatMap((c) => s.protocols.flatMap((p) => [c.callRows.get(p), c.reloadRows.get(p)].filter((r): r is BenchRow => r !== undefined))),
    ratios: zapRatios(cells),
    chart: pagesChart(cells, s.protocols),
    moreCharts: [{ name: 'reload', chart: reloadChart(cells, s.protocols) }],
    tables: zapTables(cells),
    extra: {
      settings: s,
      cells: cells.map((c) => ({
        n: c.n,
        createMs: c.createMs,
        warmMs: c.warmMs,
        warmPages: c.warmPages,
        targetPages: c.targetPages,
        rounds: c.rounds,
        cellMs: c.cellMs,
        protocols: Object.fromEntries(
          [...c.samples].map(([p, xs]) => [
            p,
            {
              zapped: stats(xs.map((x) => x.zapped)),
              usedBefore: stats(xs.map((x) => x.usedBefore)),
              underfilled: xs.filter((x) => x.underfilled).length,
              lockBreaks: stats(xs.map((x) => x.lockBreaks)),
              callMs: xs.map((x) => x.callMs),
              reloadMs: xs.map((x) => x.reloadMs),
            },
          ]),
        ),
      })),
    },
    elapsedMs: performance.now() - started,
  };
}

export const ZAP_ALL_GROUP: BenchGroup = {
  name: 'zap-all',
  description: 'zap the whole shadow cache under N busy vCPUs (shadow paging): zap-all-fast vs every page one by one; call latency, pages/s, time until every vCPU reloaded',
  run: (ctx) => runZapAll(ctx),
};

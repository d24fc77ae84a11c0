/**
 * Shapes shared by the benchmark harness, the groups, the reports and the
 * CLI. A group is one entry of the registry in bench/index.ts; it measures
 * its cases and returns rows (one per measured case), ratios between rows
 * measured in the same run, and the data of its chart.
 *
 * Timings live here and in bench/README.md; they never gate a test.
 */

/** How long and how finely one case is measured. */
export interface Timing {
  /** Sampling budget per case, ms, split over `rounds` tinybench runs (tinybench `time`). */
  readonly timeMs: number;
  /** Interleaved rounds: compared cases take turns, so outside load hits them alike. */
  readonly rounds: number;
  /** tinybench `warmupTime`: warm-up budget per case, ms. */
  readonly warmupMs: number;
  /** tinybench `iterations`: minimum samples per round (also the warm-up minimum). */
  readonly minSamples: number;
  /**
   * Target duration of one sample, ns. Calls that take tens of nanoseconds
   * cannot be timed one by one with a clock whose read costs about as much,
   * so each sample times a batch of back-to-back calls; the batch size is
   * calibrated per case so a batch lasts at least this long.
   */
  readonly targetSampleNs: number;
  /**
   * Calls of every case of a group, twice round, before any case is measured,
   * so all are measured in the same JIT state (see harness prewarm).
   */
  readonly prewarmCalls: number;
}

/** The two standard settings; `--quick` picks the first. */
export const TIMINGS: Readonly<Record<'quick' | 'full', Timing>> = {
  quick: { timeMs: 48, rounds: 4, warmupMs: 15, minSamples: 16, targetSampleNs: 20_000, prewarmCalls: 5_000 },
  full: { timeMs: 800, rounds: 8, warmupMs: 150, minSamples: 64, targetSampleNs: 50_000, prewarmCalls: 20_000 },
};

/** One measured case. Per-call figures are batch means (see Timing.targetSampleNs). */
export interface BenchRow {
  /** Unique within its group, e.g. "tdp/valid-bit/fast". */
  readonly id: string;
  /** What the case varies, e.g. {path: "tdp", strategy: "valid-bit", case: "fast"}. */
  readonly labels: Readonly<Record<string, string>>;
  /** Calls per second: calls measured / time measured. */
  readonly opsPerSec: number;
  /** Median over samples of (sample time / batch), ns per call; null if the group reports only a rate. */
  readonly medianNs: number | null;
  /** 99th percentile over samples of (sample time / batch), ns per call. */
  readonly p99Ns: number | null;
  /** Samples taken (each of `batch` calls). */
  readonly samples: number | null;
  /** Calls per sample. */
  readonly batch: number | null;
  /** Relative margin of error of the mean sample time, percent. */
  readonly rmePct: number | null;
}

/** One side of a ratio: the row it comes from and the figure used. */
export interface RatioTerm {
  readonly row: string;
  readonly medianNs: number;
}

/** value = numerator.medianNs / denominator.medianNs; both rows measured in the same run. */
export interface Ratio {
  readonly label: string;
  readonly numerator: RatioTerm;
  readonly denominator: RatioTerm;
  readonly value: number;
  /** How to read the value, one line. */
  readonly means: string;
}

export interface ChartSeries {
  readonly name: string;
  /** One value per category; null draws nothing. */
  readonly values: readonly (number | null)[];
}

/** Data of one chart; bench/svg.ts draws it. */
export interface ChartSpec {
  readonly kind: 'bar' | 'line';
  readonly title: string;
  readonly yLabel: string;
  /** Log-scale y axis (needs positive values). */
  readonly logY: boolean;
  readonly categories: readonly string[];
  readonly series: readonly ChartSeries[];
}

/** A table a group formats itself (e.g. one row per vCPU count); cells are ready-made text. */
export interface TextTableSpec {
  readonly title: string;
  readonly header: readonly string[];
  readonly rows: readonly (readonly string[])[];
  /** Per column: right-align it (numbers). */
  readonly rightAlign: readonly boolean[];
}

/** A chart beyond a group's main one; written as `<group>-<name>.svg`. */
export interface NamedChart {
  readonly name: string;
  readonly chart: ChartSpec;
}

export interface GroupResult {
  readonly group: string;
  readonly description: string;
  /** What the reader must know to read the numbers (baselines, caveats). */
  readonly notes: readonly string[];
  readonly rows: readonly BenchRow[];
  readonly ratios: readonly Ratio[];
  readonly chart: ChartSpec | null;
  /** Further charts, one SVG file each (`<group>-<name>.svg`). */
  readonly moreCharts?: readonly NamedChart[];
  /**
   * Tables the group formats itself. When present, the terminal shows them
   * instead of the generic row and ratio tables (which stay in the JSON).
   */
  readonly tables?: readonly TextTableSpec[];
  /** Group-specific figures for machines (JSON only), e.g. per-N records that are not timings. */
  readonly extra?: Readonly<Record<string, unknown>>;
  /** Wall time the group took, ms. */
  readonly elapsedMs: number;
}

/** Progress of one case, for the CLI's progress line. */
export interface CaseProgress {
  readonly group: string;
  readonly index: number;
  readonly total: number;
  readonly row: BenchRow;
}

export interface GroupRunContext {
  readonly quick: boolean;
  readonly timing: Timing;
  /** Called after each case a group measures itself (groups that report only totals may not call it). */
  readonly onCase: (p: CaseProgress) => void;
}

/** One entry of the registry. */
export interface BenchGroup {
  readonly name: string;
  /** One line for `bench --list`. */
  readonly description: string;
  run(ctx: GroupRunContext): Promise<GroupResult>;
}

/** The machine a run happened on. */
export interface MachineInfo {
  readonly cpus: number;
  readonly cpuModel: string;
  readonly node: string;
  readonly platform: string;
  readonly arch: string;
}

/** A whole run: what `--json` writes. */
export interface BenchRun {
  readonly tool: 'kvm-mmu-emu bench';
  readonly schemaVersion: 1;
  readonly date: string;
  readonly command: string;
  readonly quick: boolean;
  readonly timing: Timing;
  readonly machine: MachineInfo;
  readonly groups: readonly GroupResult[];
}

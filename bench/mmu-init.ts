/**
 * Group "mmu-init": init-path calls per second on one thread, for every
 * invalidation design, on three init paths (Linux v5.17 mmu.c
 * `init_kvm_tdp_mmu`, `init_kvm_softmmu`, `init_kvm_nested_mmu`).
 *
 * Cases, per (path, design), measured back to back so their ratios compare
 * figures taken under the same machine load:
 * - limit:    the bare role computation (`kvm_calc_*_role`) on a fixed
 *             register snapshot: what no init can avoid;
 * - fast:     init with unchanged registers: the skip-reconfiguration path;
 * - rebuild:  init with CR0.WP toggled every call: the role changes every
 *             time, so every call stores the role and rebuilds;
 * - baseline: no role cache: the cached role is cleared with
 *             `ctx.storeRole(0, 0)` before every init, so the skip test never
 *             hits and every call rebuilds from the same registers.
 * Every case verifies through the context's stats that it took the path it
 * claims on every call (calibration, warm-up and samples included).
 */
import { DEFAULT_CPUID } from '../src/cpuid/cpuid.js';
import type { MmuContext } from '../src/mmu/context.js';
import { initNestedMmu, initShadowMmu, initTdpMmu, setRoleRegisters } from '../src/mmu/init.js';
import { STRATEGIES, STRATEGY_NAMES, type StrategyName } from '../src/mmu/strategies.js';
import { VcpuMmu } from '../src/mmu/vcpu-mmu.js';
import { calcNestedRole, calcShadowRole, calcTdpRole, type Role } from '../src/role/compute.js';
import { DEFAULT_HOST, type HostSettings } from '../src/role/host.js';
import { CR0, CR4, EFER, type RoleRegs } from '../src/role/regs.js';
import { measureInterleaved, prewarm, ratioOf, yieldToEventLoop, type CaseSpec, type Probe } from './harness.js';
import type { BenchGroup, BenchRow, ChartSpec, GroupResult, GroupRunContext, Ratio } from './types.js';

export const MMU_INIT_PATHS = ['tdp', 'shadow', 'nested'] as const;
export type MmuInitPath = (typeof MMU_INIT_PATHS)[number];
export const MMU_INIT_CASES = ['limit', 'fast', 'rebuild', 'baseline'] as const;
export type MmuInitCase = (typeof MMU_INIT_CASES)[number];

/** A 64-bit Linux guest: long mode, NX, PAE, SMEP, SMAP, PKE, CR0.WP set. */
const LONG_MODE = {
  cr0: (CR0.PE | CR0.ET | CR0.NE | CR0.WP | CR0.PG) >>> 0,
  cr4: (CR4.PAE | CR4.PGE | CR4.OSFXSR | CR4.OSXMMEXCPT | CR4.SMEP | CR4.SMAP | CR4.PKE | CR4.OSXSAVE) >>> 0,
  efer: (EFER.SCE | EFER.LME | EFER.LMA | EFER.NX) >>> 0,
};
/** The same guest with CR0.WP clear: a different role on every path. */
const LONG_MODE_NO_WP = { ...LONG_MODE, cr0: (LONG_MODE.cr0 & ~CR0.WP) >>> 0 };

interface PathSpec {
  /** Model function, for the notes. */
  readonly kernel: string;
  readonly host: HostSettings;
  /** L2 is running (nested_mmu is L2's walk MMU). */
  readonly guestMode: boolean;
  readonly init: (v: VcpuMmu) => boolean;
  readonly ctx: (v: VcpuMmu) => MmuContext;
  /** The role computation the init path starts with, alone. */
  readonly calc: (regs: RoleRegs, v: VcpuMmu) => Role;
}

const PATHS: Readonly<Record<MmuInitPath, PathSpec>> = {
  tdp: {
    kernel: 'init_kvm_tdp_mmu',
    host: DEFAULT_HOST,
    guestMode: false,
    init: initTdpMmu,
    ctx: (v) => v.rootMmu,
    calc: (regs, v) => calcTdpRole(regs, v, v.host, v.rootMmu.format),
  },
  shadow: {
    kernel: 'init_kvm_softmmu',
    host: { ...DEFAULT_HOST, tdpEnabled: false },
    guestMode: false,
    init: initShadowMmu,
    ctx: (v) => v.rootMmu,
    calc: (regs, v) => calcShadowRole(regs, v, v.rootMmu.format),
  },
  nested: {
    kernel: 'init_kvm_nested_mmu',
    host: DEFAULT_HOST,
    guestMode: true,
    init: initNestedMmu,
    ctx: (v) => v.nestedMmu,
    calc: (regs, v) => calcNestedRole(regs, v, v.nestedMmu.format),
  },
};

/** A vCPU on the path's host, with the long-mode registers loaded and one init done. */
function freshVcpu(path: PathSpec, strategy: StrategyName): VcpuMmu {
  const v = new VcpuMmu({ host: path.host, cpuid: DEFAULT_CPUID, strategy: STRATEGIES[strategy] });
  setRoleRegisters(v, LONG_MODE.cr0, LONG_MODE.cr4, LONG_MODE.efer, false, path.guestMode);
  path.init(v);
  return v;
}

/** Check, after measuring, that every init since `make` took (or never took) the fast path. */
function statsVerifier(ctx: MmuContext, expectFast: boolean): () => string | null {
  const before = { ...ctx.stats };
  return () => {
    const inits = ctx.stats.inits - before.inits;
    const fast = ctx.stats.fastPathHits - before.fastPathHits;
    const rebuilds = ctx.stats.rebuilds - before.rebuilds;
    if (inits === 0) return 'no init was measured';
    if (expectFast && rebuilds !== 0) return `expected only fast-path inits, got ${rebuilds} rebuilds of ${inits}`;
    if (!expectFast && fast !== 0) return `expected only rebuilds, got ${fast} fast-path hits of ${inits}`;
    return null;
  };
}

/** The probe for one case. */
export function makeProbe(pathName: MmuInitPath, strategy: StrategyName, kind: MmuInitCase): Probe {
  const path = PATHS[pathName];
  const v = freshVcpu(path, strategy);
  const ctx = path.ctx(v);
  const init = path.init;
  switch (kind) {
    case 'limit': {
      const regs = v.roleRegs();
      return {
        op: () => {
          const r = path.calc(regs, v);
          return r.base ^ r.ext;
        },
        // The computed role must be the one the init stored, or this is not the init's computation.
        verify: () => {
          const r = path.calc(regs, v);
          return ctx.roleEquals(r.base, r.ext) ? null : 'role computed alone differs from the role init stored';
        },
      };
    }
    case 'fast':
      return { op: () => (init(v) ? 1 : 0), verify: statsVerifier(ctx, true) };
    case 'rebuild': {
      let wp = true;
      const op = (): number => {
        wp = !wp;
        const r = wp ? LONG_MODE : LONG_MODE_NO_WP;
        setRoleRegisters(v, r.cr0, r.cr4, r.efer, false, path.guestMode);
        return init(v) ? 1 : 0;
      };
      return { op, verify: statsVerifier(ctx, false) };
    }
    case 'baseline':
      return {
        op: () => {
          ctx.storeRole(0, 0);
          return init(v) ? 1 : 0;
        },
        verify: statsVerifier(ctx, false),
      };
    default: {
      const never: never = kind;
      throw new Error(`unknown case ${String(never)}`);
    }
  }
}

export interface MmuInitSelection {
  readonly paths?: readonly MmuInitPath[];
  readonly strategies?: readonly StrategyName[];
}

/** Every case, grouped so the four cases of one (path, design) run back to back. */
export function mmuInitCases(sel: MmuInitSelection = {}): CaseSpec[] {
  const out: CaseSpec[] = [];
  for (const path of sel.paths ?? MMU_INIT_PATHS) {
    for (const strategy of sel.strategies ?? STRATEGY_NAMES) {
      for (const kind of MMU_INIT_CASES) {
        out.push({ id: `${path}/${strategy}/${kind}`, labels: { path, strategy, case: kind }, make: () => makeProbe(path, strategy, kind) });
      }
    }
  }
  return out;
}

/** Per (path, design): fast-path speedup, rebuild vs baseline, fast path vs limit. */
export function mmuInitRatios(rows: readonly BenchRow[]): Ratio[] {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const out: Ratio[] = [];
  const keys = [...new Set(rows.map((r) => `${r.labels.path}/${r.labels.strategy}`))];
  for (const key of keys) {
    const [limit, fast, rebuild, baseline] = MMU_INIT_CASES.map((c) => byId.get(`${key}/${c}`));
    if (fast && baseline) {
      out.push(ratioOf(`${key} fast-path speedup`, baseline, fast, 'baseline ns / fast ns: how many times cheaper an init is when the cached role matches'));
    }
    if (rebuild && baseline) {
      out.push(ratioOf(`${key} rebuild/baseline`, rebuild, baseline, 'rebuild ns / baseline ns: ~1 means a role change costs what no cache costs'));
    }
    if (fast && limit) {
      out.push(ratioOf(`${key} fast/limit`, fast, limit, 'fast ns / limit ns: the fast path over the role computation it cannot skip'));
    }
  }
  return out;
}

/** Median ns/call per (path, design) and case, log scale. */
export function mmuInitChart(rows: readonly BenchRow[]): ChartSpec {
  const categories = [...new Set(rows.map((r) => `${r.labels.path} ${r.labels.strategy}`))];
  const byKey = new Map(rows.map((r) => [`${r.labels.path} ${r.labels.strategy}/${r.labels.case}`, r]));
  return {
    kind: 'bar',
    title: 'mmu-init: median ns per init call (log scale; lower is faster)',
    yLabel: 'ns per call',
    logY: true,
    categories,
    series: MMU_INIT_CASES.map((c) => ({ name: c, values: categories.map((cat) => byKey.get(`${cat}/${c}`)?.medianNs ?? null) })),
  };
}

const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;

export const MMU_INIT_NOTES = [
  `One thread, one vCPU per case; a long-mode guest: CR0 ${hex(LONG_MODE.cr0)}, CR4 ${hex(LONG_MODE.cr4)} (PAE|SMEP|SMAP|PKE...), EFER ${hex(LONG_MODE.efer)}; rebuild toggles CR0.WP.`,
  'limit = the bare role computation (calcTdpRole / calcShadowRole / calcNestedRole) on a fixed snapshot: the floor no init can go below.',
  'fast = init with unchanged registers (skip-reconfiguration fast path). rebuild = CR0.WP toggled every call, so the role changes and the context is rebuilt every call.',
  'baseline = NO role cache: ctx.storeRole(0, 0) before every init, so the skip test never hits; every call rebuilds from the same registers.',
  'Paths: tdp = init_kvm_tdp_mmu (root_mmu, EPT host); shadow = init_kvm_softmmu (root_mmu, tdp_enabled off); nested = init_kvm_nested_mmu (nested_mmu, L2 running).',
  'The four cases of one (path, design) are measured interleaved (they take turns, round after round) and each pools its rounds, so outside load hits compared cases alike.',
  'Each sample times a calibrated batch of back-to-back calls; median and p99 are over samples, so p99 is the tail of batch means (scheduler, GC), not of single calls.',
  'Before any case is measured, every case runs a few thousand times, so all cases are measured in the same (polymorphic) JIT state and case order does not pick a winner.',
  'Every case checks the context stats afterwards: fast cases took only the fast path, rebuild/baseline cases never did.',
];

export async function runMmuInit(ctx: GroupRunContext, sel: MmuInitSelection = {}): Promise<GroupResult> {
  const started = performance.now();
  const cases = mmuInitCases(sel);
  prewarm(cases, ctx.timing.prewarmCalls);
  const rows: BenchRow[] = [];
  // The four cases of one (path, design) are compared with each other: measure them interleaved.
  for (let i = 0; i < cases.length; i += MMU_INIT_CASES.length) {
    for (const row of measureInterleaved(cases.slice(i, i + MMU_INIT_CASES.length), ctx.timing)) {
      rows.push(row);
      ctx.onCase({ group: 'mmu-init', index: rows.length, total: cases.length, row });
    }
    await yieldToEventLoop();
  }
  return {
    group: 'mmu-init',
    description: MMU_INIT_GROUP.description,
    notes: MMU_INIT_NOTES,
    rows,
    ratios: mmuInitRatios(rows),
    chart: mmuInitChart(rows),
    elapsedMs: performance.now() - started,
  };
}

export const MMU_INIT_GROUP: BenchGroup = {
  name: 'mmu-init',
  description: 'init-path calls/s per design: fast path, rebuild, no-cache baseline, bare role computation (tdp, shadow, nested)',
  run: (ctx) => runMmuInit(ctx),
};

/**
 * The scenario file format (`kvm-mmu-emu run --scenario FILE`), validated with
 * zod: a VM (memory, vCPU count, host flavour), what each vCPU starts with
 * (control registers as KVM_SET_SREGS would set them, CPUID as
 * KVM_SET_CPUID2 would set it before the first KVM_RUN), the guest workload
 * mix, and events a VMM performs while the vCPUs run (CPUID changes, a
 * kvm_mmu_zap_all_fast, control-register writes, guest page-table edits,
 * pause/resume). Every object is strict: an unknown key is an error. Limits
 * (vCPUs, memory, events, duration) are part of the schema so that they get
 * the same kind of message as a type error. docs/scenarios.md is the user's
 * reference for this file; keep the two in step.
 */
import { z } from 'zod';
import { GUEST_VENDORS, MAX_MAXPHYADDR, MIN_MAXPHYADDR, type CpuidModel } from '../cpuid/cpuid.js';
import { STRATEGY_NAMES, type StrategyName } from '../mmu/strategies.js';
import { MAX_VCPUS } from '../vm/vm.js';
import { DEFAULT_MIX, type OpClass } from '../workload/guest-program.js';
import { DEFAULT_GUEST_TABLES, GUEST_TABLE_FORMATS, type GuestTableFormat } from '../workload/guest-tables.js';
import { TOUR_HOSTS } from '../workload/role-tour.js';

/**
 * Scenario limits. The VM itself allows MAX_VCPUS; a scenario file stops at
 * 1024 because every vCPU is a worker thread (~10 MiB, ~0.1 s to start on a
 * small machine) and a file is a user's everyday input, not a scale test.
 */
export const SCENARIO_LIMITS = {
  vcpus: Math.min(1024, MAX_VCPUS),
  /** The built-in guest tables need 2 MiB: the identity EPT/NPT tables for L2 map 2 MiB pages. */
  minMemoryBytes: 2 * 1024 * 1024,
  maxMemoryBytes: 1024 * 1024 * 1024,
  events: 10_000,
  maxDurationMs: 600_000,
  maxOpsBudget: Number.MAX_SAFE_INTEGER,
  /** Largest weight of one operation class in the workload mix. */
  maxMixWeight: 1_000_000,
} as const;

export const PAGE_BYTES = 4096;
export const HOST_FLAVOURS = Object.keys(TOUR_HOSTS) as (keyof typeof TOUR_HOSTS)[];
export type HostFlavour = keyof typeof TOUR_HOSTS;
export const CHECK_LEVELS = ['full', 'sampled', 'off'] as const;
export type CheckLevel = (typeof CHECK_LEVELS)[number];
export const POLICIES = ['strict', 'legacy'] as const;
export const REGISTERS = ['cr0', 'cr3', 'cr4', 'efer'] as const;
export type RegisterName = (typeof REGISTERS)[number];
export const EVENT_KINDS = ['set-cpuid', 'zap-all', 'write-cr', 'edit-pte', 'pause', 'resume'] as const;
export type EventKind = (typeof EVENT_KINDS)[number];
const OP_CLASSES = Object.keys(DEFAULT_MIX) as OpClass[];

/** Defaults of optional top-level fields (docs/scenarios.md lists the same). */
export const SCENARIO_DEFAULTS = {
  description: '',
  memoryBytes: 64 * 1024 * 1024,
  vcpus: 1,
  host: 'intel-ept' as HostFlavour,
  strategy: 'all' as StrategyName | 'all',
  policy: 'legacy' as (typeof POLICIES)[number],
  check: 'full' as CheckLevel,
  seed: 1,
  /** When neither durationMs nor opsBudget is given. */
  durationMs: 2000,
  /** The time cap when only opsBudget is given. */
  durationMsWithBudget: 60_000,
};

// ---------------------------------------------------------------- primitives

const list = (xs: readonly (string | number)[]) => xs.map((x) => (typeof x === 'string' ? `"${x}"` : String(x))).join(', ');

/** A strict object whose "unknown key" message lists the keys allowed there. */
function strict<S extends z.ZodRawShape>(what: string, shape: S) {
  const allowed = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (iss) => (iss.code === 'unrecognized_keys' ? `unknown key; allowed here: ${allowed}` : `expected ${what} (a JSON object)`),
  });
}

const intIn = (lo: number, hi: number, what = 'an integer') => {
  const msg = `expected ${what} in ${lo}..${hi}`;
  return z.number({ error: msg }).int(msg).min(lo, msg).max(hi, msg);
};

const numIn = (lo: number, hi: number, what: string) => {
  const msg = `expected ${what} in ${lo}..${hi}`;
  return z.number({ error: msg }).min(lo, msg).max(hi, msg);
};

const bool = z.boolean({ error: 'expected true or false' });

const enumOf = <T extends readonly [string, ...string[]]>(values: T, what = 'one of') => z.enum(values, { error: `expected ${what} ${list(values)}` });

const HEX_RE = /^0x[0-9a-f]{1,16}$/i;
const HEX_MSG = 'expected a hex string like "0x80050033" (0x and 1 to 16 hex digits, at most 64 bits)';

/** A 64-bit value written as a hex string. */
export const hex64 = z.string({ error: HEX_MSG }).regex(HEX_RE, HEX_MSG).transform((s) => BigInt(s));

/** A reference to a CR3 of the built-in guest tables: `long4:0` is the first 4-level address space. */
export interface TableRef {
  readonly table: GuestTableFormat;
  readonly index: number;
}
const TABLE_RE = new RegExp(`^(${GUEST_TABLE_FORMATS.join('|')}):([0-9]+)$`);
const CR3_MSG =
  `expected a hex string like "0x10000" or a built-in address space "<format>:<n>" ` +
  `(format ${GUEST_TABLE_FORMATS.join('|')}, n 0..${DEFAULT_GUEST_TABLES.addressSpaces - 1})`;

/** CR3: hex, or a table reference resolved against the VM's guest tables when it runs. */
export const cr3Value = z.string({ error: CR3_MSG }).transform((s, ctx): bigint | TableRef => {
  if (HEX_RE.test(s)) return BigInt(s);
  const m = TABLE_RE.exec(s);
  if (m && Number(m[2]) < DEFAULT_GUEST_TABLES.addressSpaces) return { table: m[1] as GuestTableFormat, index: Number(m[2]) };
  ctx.addIssue({ code: 'custom', message: CR3_MSG });
  return z.NEVER;
});
export type RegValue = bigint | TableRef;

const MEM_RE = /^([0-9]+)\s*(KiB|MiB|GiB)?$/;
const MEM_UNITS: Record<string, number> = { KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
const memMsg = `expected bytes (an integer, or a string like "64 MiB"; units KiB, MiB, GiB), a multiple of ${PAGE_BYTES} in 2 MiB..1 GiB`;

/** Guest memory size: bytes, or "<n> KiB|MiB|GiB". */
export const memorySize = z.union([z.number(), z.string()], { error: memMsg }).transform((v, ctx): number => {
  let n: number;
  if (typeof v === 'number') n = v;
  else {
    const m = MEM_RE.exec(v.trim());
    n = m ? Number(m[1]) * (m[2] ? MEM_UNITS[m[2]]! : 1) : NaN;
  }
  const { minMemoryBytes: lo, maxMemoryBytes: hi } = SCENARIO_LIMITS;
  if (!Number.isSafeInteger(n) || n % PAGE_BYTES !== 0 || n < lo || n > hi) {
    const why = !Number.isSafeInteger(n)
      ? memMsg
      : n % PAGE_BYTES !== 0
        ? `must be a multiple of ${PAGE_BYTES} bytes (4 KiB pages)`
        : n > hi
          ? `must be at most 1 GiB (${hi} bytes), the scenario limit`
          : `must be at least 2 MiB (${lo} bytes): the built-in nested tables map 2 MiB pages`;
    ctx.addIssue({ code: 'custom', message: why });
    return z.NEVER;
  }
  return n;
});

/** Which vCPUs: a list of indices, or an inclusive range. */
const vcpuIndex = intIn(0, SCENARIO_LIMITS.vcpus - 1, 'a vCPU index');
export const vcpuTargets = z.union(
  [
    z.array(vcpuIndex, { error: 'expected a list of vCPU indices like [0, 2] or a range {"from": 0, "to": 7}' }).min(1, 'expected at least one vCPU index'),
    strict('a range {"from": N, "to": M}', { from: vcpuIndex, to: vcpuIndex }).refine((r) => r.from <= r.to, { message: '"from" must not be above "to"' }),
  ],
  { error: 'expected a list of vCPU indices like [0, 2] or a range {"from": 0, "to": 7}' },
);
export type VcpuTargets = z.output<typeof vcpuTargets>;

export function targetIds(t: VcpuTargets | undefined, vcpus: number): number[] {
  if (t === undefined) return Array.from({ length: vcpus }, (_, i) => i);
  if (Array.isArray(t)) return [...new Set(t)];
  return Array.from({ length: t.to - t.from + 1 }, (_, i) => t.from + i);
}

/** Guest CPUID fields to change; fields not given keep their value (src/cpuid/cpuid.ts CpuidModel). */
export const cpuidPatch = strict('CPUID fields', {
  vendor: enumOf(GUEST_VENDORS).optional(),
  maxPhyAddr: intIn(MIN_MAXPHYADDR, MAX_MAXPHYADDR, 'MAXPHYADDR (bits)').optional(),
  gbpages: bool.optional(),
  pse36: bool.optional(),
  pku: bool.optional(),
  la57: bool.optional(),
  smep: bool.optional(),
  smap: bool.optional(),
  nx: bool.optional(),
});
export type CpuidPatch = Partial<CpuidModel>;

/** Control registers as KVM_SET_SREGS sets them (src/rpc/protocol.ts RegsWire). */
export const regsPatch = strict('control registers', {
  cr0: hex64.optional(),
  cr3: cr3Value.optional(),
  cr4: hex64.optional(),
  efer: hex64.optional(),
}).refine((r) => Object.keys(r).length > 0, { message: 'expected at least one of cr0, cr3, cr4, efer' });
export type RegsPatch = z.output<typeof regsPatch>;

const weight = numIn(0, SCENARIO_LIMITS.maxMixWeight, 'a weight');
/** Relative weights of guest operation classes (src/workload/guest-program.ts OpMix). */
export const mixSchema = strict('operation weights', Object.fromEntries(OP_CLASSES.map((k) => [k, weight.optional()])) as Record<OpClass, z.ZodOptional<typeof weight>>);

export const vcpuSetupSchema = strict('a vCPU setup entry', {
  vcpus: vcpuTargets.optional(),
  regs: regsPatch.optional(),
  cpuid: cpuidPatch.optional(),
});
export type VcpuSetup = z.output<typeof vcpuSetupSchema>;

// ---------------------------------------------------------------- events

const when = {
  atMs: numIn(0, SCENARIO_LIMITS.maxDurationMs, 'a time in ms since the start').optional(),
  atOps: intIn(0, SCENARIO_LIMITS.maxOpsBudget, 'a count of guest operations (all vCPUs together)').optional(),
};

const events = [
  strict('a set-cpuid event', { kind: z.literal('set-cpuid'), ...when, cpuid: cpuidPatch, vcpus: vcpuTargets.optional() }),
  strict('a zap-all event', { kind: z.literal('zap-all'), ...when }),
  strict('a write-cr event', { kind: z.literal('write-cr'), ...when, vcpu: vcpuIndex, register: enumOf(REGISTERS), value: z.string({ error: HEX_MSG }) }),
  strict('an edit-pte event', { kind: z.literal('edit-pte'), ...when, gpa: hex64, value: hex64 }),
  strict('a pause event', { kind: z.literal('pause'), ...when }),
  strict('a resume event', { kind: z.literal('resume'), ...when }),
] as const;

type EventIn = z.output<(typeof events)[number]>;
type WriteCrIn = Extract<EventIn, { kind: 'write-cr' }>;
/** One scheduled event, with a write-cr value already parsed. */
export type ScenarioEvent = Exclude<EventIn, WriteCrIn> | (Omit<WriteCrIn, 'value'> & { value: RegValue });

export const eventSchema = z
  .discriminatedUnion('kind', [...events], { error: `expected an event object with "kind" one of ${list(EVENT_KINDS)}` })
  .transform((e, ctx): ScenarioEvent => {
    const n = (e.atMs === undefined ? 0 : 1) + (e.atOps === undefined ? 0 : 1);
    if (n !== 1) ctx.addIssue({ code: 'custom', path: n ? ['atOps'] : ['atMs'], message: 'give exactly one of "atMs" (a time) or "atOps" (a guest-operation count)' });
    if (e.kind !== 'write-cr') return e;
    const parsed = (e.register === 'cr3' ? cr3Value : hex64).safeParse(e.value);
    if (!parsed.success) {
      ctx.addIssue({ code: 'custom', path: ['value'], message: e.register === 'cr3' ? CR3_MSG : HEX_MSG });
      return z.NEVER;
    }
    return { ...e, value: parsed.data };
  });

// ---------------------------------------------------------------- scenario

const scenarioObject = strict('a scenario', {
  name: z.string({ error: 'expected a name (a non-empty string)' }).min(1, 'expected a non-empty name').max(200, 'expected at most 200 characters'),
  description: z.string({ error: 'expected a string' }).max(20_000, 'expected at most 20000 characters').default(SCENARIO_DEFAULTS.description),
  memoryBytes: memorySize.default(SCENARIO_DEFAULTS.memoryBytes),
  vcpus: z
    .number({ error: `expected a vCPU count, an integer in 1..${SCENARIO_LIMITS.vcpus}` })
    .int(`expected a vCPU count, an integer in 1..${SCENARIO_LIMITS.vcpus}`)
    .min(1, `expected a vCPU count, an integer in 1..${SCENARIO_LIMITS.vcpus}`)
    .max(
      SCENARIO_LIMITS.vcpus,
      `at most ${SCENARIO_LIMITS.vcpus} vCPUs in a scenario file (the scenario limit; the VM model allows ${MAX_VCPUS}, one worker thread each)`,
    )
    .default(SCENARIO_DEFAULTS.vcpus),
  host: z
    .union([enumOf(HOST_FLAVOURS as [HostFlavour, ...HostFlavour[]], 'a host flavour, one of'), z.array(enumOf(HOST_FLAVOURS as [HostFlavour, ...HostFlavour[]], 'a host flavour, one of')).min(1)], {
      error: `expected a host flavour ${list(HOST_FLAVOURS)} or a list of them`,
    })
    .transform((h, ctx): HostFlavour[] => {
      const hs = Array.isArray(h) ? h : [h];
      if (new Set(hs).size !== hs.length) ctx.addIssue({ code: 'custom', message: 'each host flavour at most once' });
      return hs;
    })
    .default([SCENARIO_DEFAULTS.host]),
  strategy: enumOf(['all', ...STRATEGY_NAMES] as const, 'a strategy, one of').default(SCENARIO_DEFAULTS.strategy),
  policy: enumOf(POLICIES, 'a CPUID policy, one of').default(SCENARIO_DEFAULTS.policy),
  check: enumOf(CHECK_LEVELS, 'a checking level, one of').default(SCENARIO_DEFAULTS.check),
  durationMs: intIn(1, SCENARIO_LIMITS.maxDurationMs, 'a duration in ms').optional(),
  opsBudget: intIn(1, SCENARIO_LIMITS.maxOpsBudget, 'a count of guest operations (all vCPUs together)').optional(),
  seed: intIn(0, 0xffffffff, 'a seed').default(SCENARIO_DEFAULTS.seed),
  cpuid: cpuidPatch.default({}),
  vcpuSetup: z.array(vcpuSetupSchema, { error: 'expected a list of vCPU setup entries' }).max(SCENARIO_LIMITS.vcpus, `at most ${SCENARIO_LIMITS.vcpus} entries`).default([]),
  mix: mixSchema.default({}),
  events: z
    .array(eventSchema, { error: 'expected a list of events' })
    .max(SCENARIO_LIMITS.events, `at most ${SCENARIO_LIMITS.events} events (the scenario limit)`)
    .default([]),
});

/** The file's shape as parsed, before cross-field checks. */
export type ScenarioInput = z.output<typeof scenarioObject>;

export const scenarioSchema = scenarioObject
  .superRefine((s, ctx) => crossCheck(s, ctx))
  .transform((s) => ({ ...s, durationMs: effectiveDurationMs(s) }));

/** A validated scenario, defaults filled in (durationMs always set). */
export type Scenario = z.output<typeof scenarioSchema>;

/** The effective run length: durationMs, or its default for the budget/no-budget case. */
export const effectiveDurationMs = (s: Pick<ScenarioInput, 'durationMs' | 'opsBudget'>): number =>
  s.durationMs ?? (s.opsBudget !== undefined ? SCENARIO_DEFAULTS.durationMsWithBudget : SCENARIO_DEFAULTS.durationMs);

/** Checks that need more than one field: indices against vcpus, addresses against memory, times against the run. */
function crossCheck(s: ScenarioInput, ctx: z.RefinementCtx): void {
  const bad = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  const inVm = (t: VcpuTargets | undefined, path: (string | number)[]) => {
    if (t === undefined) return;
    const ids = Array.isArray(t) ? t : [t.from, t.to];
    ids.forEach((id, i) => {
      if (id >= s.vcpus) bad(Array.isArray(t) ? [...path, i] : [...path, i === 0 ? 'from' : 'to'], `vCPU index must be below vcpus (${s.vcpus})`);
    });
  };
  s.vcpuSetup.forEach((v, i) => inVm(v.vcpus, ['vcpuSetup', i, 'vcpus']));
  const end = effectiveDurationMs(s);
  s.events.forEach((e, i) => {
    if (e.kind === 'set-cpuid') inVm(e.vcpus, ['events', i, 'vcpus']);
    if (e.kind === 'write-cr' && e.vcpu >= s.vcpus) bad(['events', i, 'vcpu'], `vCPU index must be below vcpus (${s.vcpus})`);
    if (e.kind === 'edit-pte') {
      if (e.gpa % 8n !== 0n) bad(['events', i, 'gpa'], 'a page-table entry address must be 8-byte aligned');
      else if (e.gpa >= BigInt(s.memoryBytes)) bad(['events', i, 'gpa'], `must be below the guest memory size (memoryBytes ${s.memoryBytes} = 0x${s.memoryBytes.toString(16)})`);
    }
    if (e.atMs !== undefined && e.atMs > end) bad(['events', i, 'atMs'], `must not be after the end of the run (${end} ms; see durationMs)`);
    if (e.atOps !== undefined && s.opsBudget !== undefined && e.atOps > s.opsBudget) bad(['events', i, 'atOps'], `must not be beyond opsBudget (${s.opsBudget})`);
  });
  const mix = { ...DEFAULT_MIX, ...s.mix };
  if (!Object.values(mix).some((w) => w > 0)) bad(['mix'], 'at least one operation class needs a positive weight');
}

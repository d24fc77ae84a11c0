/**
 * Input shapes of the role probes (`role compute`, `role replay`), validated
 * with zod. Unknown fields are ignored; missing or malformed ones are errors
 * that name the state (or sequence and step) and the field.
 */
import { z } from 'zod';
import { GUEST_VENDORS, MAX_MAXPHYADDR, MIN_MAXPHYADDR } from '../cpuid/cpuid.js';
import { INIT_PATHS } from './init.js';

const U64_LIMIT = 1n << 64n;

/** A register or address: a hex string (`0x...`) or a non-negative integer, up to 64 bits. */
export const hex64 = z.union([z.string(), z.number()]).transform((v, ctx): bigint => {
  let n: bigint;
  try {
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v) || v < 0) throw new Error();
      n = BigInt(v);
    } else {
      if (!/^0x[0-9a-f]+$/i.test(v.trim())) throw new Error();
      n = BigInt(v.trim());
    }
  } catch {
    ctx.addIssue({ code: 'custom', message: `expected a hex string like "0x80000011" or a non-negative integer, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  if (n >= U64_LIMIT) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} does not fit in 64 bits` });
    return z.NEVER;
  }
  return n;
});

const intIn = (lo: number, hi: number) =>
  z.number({ error: `expected an integer in ${lo}..${hi}` }).int(`expected an integer in ${lo}..${hi}`).min(lo, `expected an integer in ${lo}..${hi}`).max(hi, `expected an integer in ${lo}..${hi}`);
const oneOf = <T extends number>(...values: T[]) =>
  z.number().refine((v): v is T => (values as number[]).includes(v), { message: `expected one of ${values.join(', ')}` }) as unknown as z.ZodType<T>;
const bool = z.boolean({ error: 'expected true or false' });

export const cpuidSchema = z.object({
  vendor: z.enum(GUEST_VENDORS, { error: `expected one of ${GUEST_VENDORS.join(', ')}` }),
  maxPhyAddr: intIn(MIN_MAXPHYADDR, MAX_MAXPHYADDR),
  gbpages: bool,
  pse36: bool,
  pku: bool,
  la57: bool,
  smep: bool,
  smap: bool,
  nx: bool,
});

export const hostSchema = z.object({
  tdpEnabled: bool,
  maxTdpLevel: oneOf(4, 5),
  vendor: z.enum(['intel', 'amd'], { error: 'expected "intel" or "amd"' }),
  tdpForcedRootLevel: oneOf(0, 4, 5),
  adDisabled: bool,
  gbpages: bool,
  physBits: intIn(32, 52),
  maxHugePageLevel: oneOf(1, 2, 3),
});

export const eptSchema = z.object({
  execonly: bool,
  accessedDirty: bool,
  level: oneOf(4, 5),
  hugePageLevel: oneOf(1, 2, 3),
});

const pathSchema = z.enum(INIT_PATHS, { error: `expected one of ${INIT_PATHS.join(', ')}` });

const regsShape = {
  cr0: hex64,
  cr4: hex64,
  efer: hex64,
  smm: bool,
  guestMode: bool,
};

const needsEpt = (v: { path: string; ept?: unknown }) => v.path !== 'shadow-ept' || v.ept !== undefined;
const eptMissing = { message: 'required for path "shadow-ept"', path: ['ept'] };

export const computeStateSchema = z
  .object({ path: pathSchema, ...regsShape, cpuid: cpuidSchema, host: hostSchema, ept: eptSchema.optional() })
  .refine(needsEpt, eptMissing);
export type ComputeState = z.output<typeof computeStateSchema>;

export const initStepSchema = z.object({ op: z.literal('init'), path: pathSchema, ...regsShape, ept: eptSchema.optional() });
export const setCpuidStepSchema = z.object({ op: z.literal('setCpuid'), cpuid: cpuidSchema });
export const stepSchema = z.discriminatedUnion('op', [initStepSchema, setCpuidStepSchema], {
  error: 'expected a step with "op": "init" or "setCpuid"',
});
export type ReplayStep = z.output<typeof stepSchema>;

export const sequenceSchema = z
  .object({ host: hostSchema, cpuid: cpuidSchema, ept: eptSchema.optional(), steps: z.array(stepSchema) })
  .superRefine((seq, ctx) => {
    seq.steps.forEach((s, i) => {
      if (s.op === 'init' && s.path === 'shadow-ept' && !s.ept && !seq.ept) {
        ctx.addIssue({ code: 'custom', path: ['steps', i, 'ept'], message: 'required for path "shadow-ept" (here or at the top level)' });
      }
    });
  });
export type ReplaySequence = z.output<typeof sequenceSchema>;

/** One input error: where, what was there, what is allowed. */
export class ProbeInputError extends Error {
  override name = 'ProbeInputError';
}

function describeValue(root: unknown, path: readonly PropertyKey[]): string {
  let v: unknown = root;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return 'missing';
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v === undefined ? 'missing' : JSON.stringify(v);
}

export function formatFieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const k of path) out += typeof k === 'number' ? `[${k}]` : out ? `.${String(k)}` : String(k);
  return out || '(top level)';
}

/** Parse with a schema; on failure throw ProbeInputError naming `where` and each bad field. */
export function parseOrThrow<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const lines = r.error.issues.slice(0, 8).map((iss) => {
    const field = formatFieldPath(iss.path);
    const got = describeValue(value, iss.path);
    if (got === 'missing') return `${where}: ${field}: ${iss.code === 'custom' ? iss.message : 'required field is missing'}`;
    return `${where}: ${field}: ${iss.message} (got ${got})`;
  });
  if (r.error.issues.length > 8) lines.push(`${where}: ... and ${r.error.issues.length - 8} more`);
  throw new ProbeInputError(lines.join('\n'));
}

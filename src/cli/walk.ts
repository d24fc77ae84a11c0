/**
 * `kvm-mmu-emu walk [FILE|-]`: single guest page walks. Each case is a
 * `role compute` state (the walk uses the context that state produces, on a
 * fresh vCPU) plus the root, a fresh guest memory image, an address and an
 * access; each result is the translation or the fault, and the memory image
 * after the walk (accessed/dirty updates). Parsing, context set-up and
 * printing; the walk itself is src/paging's.
 */
import type { Command } from 'commander';
import { z } from 'zod';
import { hexAddr } from '../memory/address.js';
import { DEFAULT_GUEST_MEMORY_BYTES, GuestMemory, GuestMemoryError } from '../memory/guest-memory.js';
import type { MmuContext } from '../mmu/context.js';
import { initTdpMmu, setRoleRegisters } from '../mmu/init.js';
import { runInitStep } from '../mmu/probe.js';
import { computeStateSchema, eptSchema, hex64, parseOrThrow, ProbeInputError, type ComputeState } from '../mmu/probe-schema.js';
import { STRATEGY_NAMES, type InvalidationStrategy } from '../mmu/strategies.js';
import { VcpuMmu } from '../mmu/vcpu-mmu.js';
import { describeAccess, loadPdptrs, nestedTdp, walkEnv, walkGuest, WalkerError, type NestedTdp, type WalkResult, type WalkRoot } from '../paging/index.js';
import { jsonLines, readJson, UsageError } from './io.js';
import { parseStrategy } from './role.js';

const bool = z.boolean({ error: 'expected true or false' });
const u32 = hex64.refine((v) => v <= 0xffffffffn, { message: 'expected a 32-bit value' });

const accessSchema = z.object({
  write: bool.optional(),
  user: bool.optional(),
  fetch: bool.optional(),
  implicitSupervisor: bool.optional(),
  pkru: u32.optional(),
  eflagsAc: bool.optional(),
});

const guestMmuSchema = z.object({
  path: z.enum(['shadow-ept', 'shadow-npt'], { error: 'expected "shadow-ept" or "shadow-npt"' }),
  cr3: hex64,
  cr0: hex64.optional(),
  cr4: hex64.optional(),
  efer: hex64.optional(),
  ept: eptSchema.optional(),
});

/** The fields a walk case adds to a `role compute` state. */
const walkFieldsSchema = z
  .object({
    cr3: hex64,
    memory: z.array(z.object({ gpa: hex64, value: hex64 }), { error: 'expected an array of {"gpa", "value"}' }),
    gva: hex64,
    access: accessSchema,
    pkru: u32.optional(),
    eflagsAc: bool.optional(),
    pdptes: z.array(hex64).length(4, 'expected exactly four PDPTEs').optional(),
    memorySize: hex64.optional(),
    guestMmu: guestMmuSchema.optional(),
  })
  .superRefine((c, ctx) => {
    if (c.access.user && c.access.implicitSupervisor) ctx.addIssue({ code: 'custom', path: ['access', 'implicitSupervisor'], message: 'an access cannot be both user and implicit supervisor' });
    if (c.pkru !== undefined && c.access.pkru !== undefined && c.pkru !== c.access.pkru) ctx.addIssue({ code: 'custom', path: ['pkru'], message: 'differs from access.pkru' });
    if (c.eflagsAc !== undefined && c.access.eflagsAc !== undefined && c.eflagsAc !== c.access.eflagsAc) ctx.addIssue({ code: 'custom', path: ['eflagsAc'], message: 'differs from access.eflagsAc' });
    const g = c.guestMmu;
    if (g?.path === 'shadow-npt') {
      for (const f of ['cr0', 'cr4', 'efer'] as const) if (g[f] === undefined) ctx.addIssue({ code: 'custom', path: ['guestMmu', f], message: 'required for "shadow-npt" (L1\'s register)' });
    }
  });

type WalkFields = z.output<typeof walkFieldsSchema>;
export type WalkCase = ComputeState & WalkFields;

/** Parse case `i`, naming the case and the field on any error. */
export function parseWalkCase(raw: unknown, i: number): WalkCase {
  const where = `case ${i}`;
  const state = parseOrThrow(computeStateSchema, raw, where);
  const fields = parseOrThrow(walkFieldsSchema, raw, where);
  const c = { ...state, ...fields };
  const bad = (field: string, msg: string): never => {
    throw new ProbeInputError(`${where}: ${field}: ${msg}`);
  };
  if (c.path === 'nested' && !c.guestMmu) bad('guestMmu', 'required for path "nested" (the L1 nested-TDP context that translates L2 addresses)');
  if (c.path !== 'nested' && c.guestMmu) bad('guestMmu', 'only allowed with path "nested"');
  if (c.guestMmu?.path === 'shadow-ept' && !c.guestMmu.ept && !c.ept) bad('guestMmu.ept', 'required for "shadow-ept" (here or at the top level)');
  const size = c.memorySize ?? BigInt(DEFAULT_GUEST_MEMORY_BYTES);
  if (size < 4096n || size % 4096n !== 0n || size > 1n << 36n) bad('memorySize', `expected a multiple of 4096 bytes up to 64 GiB, got ${hexAddr(size)}`);
  c.memory.forEach((m, j) => {
    if (m.gpa % 4n !== 0n) bad(`memory[${j}].gpa`, `${hexAddr(m.gpa)} is not 4-byte aligned`);
    if (m.gpa + 8n > size) bad(`memory[${j}].gpa`, `${hexAddr(m.gpa)} is outside the ${hexAddr(size)}-byte guest memory (see memorySize)`);
  });
  return c;
}

const low32 = (v: bigint): number => Number(v & 0xffffffffn);

interface CaseContexts {
  ctx: MmuContext;
  vcpu: VcpuMmu;
  nested: NestedTdp | null;
}

/** The context(s) a case's state produces on a fresh vCPU, in the order KVM's callers build them. */
function buildContexts(c: WalkCase, strategy: InvalidationStrategy): CaseContexts {
  const v = new VcpuMmu({ host: c.host, cpuid: c.cpuid, strategy });
  const regs = { cr0: c.cr0, cr4: c.cr4, efer: c.efer, smm: c.smm, guestMode: c.guestMode };
  if (c.path === 'shadow-ept' || c.path === 'nested') {
    // The shadow-EPT role inherits SMM from root_mmu's stored role (as `role compute`).
    setRoleRegisters(v, low32(c.cr0), low32(c.cr4), low32(c.efer), c.smm, c.guestMode);
    initTdpMmu(v);
  }
  const g = c.guestMmu;
  if (c.path !== 'nested' || !g) return { ctx: runInitStep(v, c.path, regs, c.ept).ctx, vcpu: v, nested: null };
  // Nested entry: guest_mmu first (nested_{ept,svm}_init_mmu_context), then kvm_init_mmu → nested_mmu.
  const l1 = { cr0: g.cr0 ?? 0n, cr4: g.cr4 ?? 0n, efer: g.efer ?? 0n, smm: c.smm, guestMode: c.guestMode };
  runInitStep(v, g.path, l1, g.ept ?? c.ept);
  const ctx = runInitStep(v, 'nested', regs, undefined).ctx;
  return { ctx, vcpu: v, nested: nestedTdp(v.guestMmu, { pgd: g.cr3 }) };
}

type Json = Record<string, unknown>;

/** Run one parsed case: build contexts and memory, load PDPTEs if PAE, walk, report. */
export function runWalkCase(c: WalkCase, strategy: InvalidationStrategy, detail = false): Json {
  const { ctx, vcpu, nested } = buildContexts(c, strategy);
  const mem = GuestMemory.create(Number(c.memorySize ?? BigInt(DEFAULT_GUEST_MEMORY_BYTES)));
  for (const m of c.memory) mem.write64Split(Number(m.gpa), m.value);
  const memoryAfter = () => c.memory.map((m) => ({ gpa: hexAddr(m.gpa), value: hexAddr(mem.read64Split(Number(m.gpa))) }));
  const root: WalkRoot = { pgd: c.cr3 };
  if (ctx.gvaToGpa === 'paging64' && ctx.rootLevel === 3) {
    if (c.pdptes) root.pdptes = c.pdptes;
    else if (ctx !== vcpu.guestMmu) {
      // The PDPTE registers as MOV to CR3 (load_pdptrs) would have loaded them; a bad one is #GP(0).
      const load = loadPdptrs(mem, c.cr3, vcpu.reservedGpaBits, nested);
      if (!load.ok) return { ok: false, errorCode: '0x0', vector: 'GP', reason: `load_pdptrs: ${load.reason}`, memoryAfter: memoryAfter() };
      root.pdptes = load.pdptes;
    }
  }
  const env = walkEnv({
    write: c.access.write,
    user: c.access.user,
    fetch: c.access.fetch,
    implicitSupervisor: c.access.implicitSupervisor,
    eflagsAc: c.eflagsAc ?? c.access.eflagsAc,
    pkru: low32(c.pkru ?? c.access.pkru ?? 0n),
  });
  const r = walkGuest(ctx, mem, root, c.gva, env, { nested, isWalkMmu: ctx === vcpu.walkMmu });
  return { ...resultJson(r, c.path === 'nested', detail, ctx.gvaToGpa === 'ept'), memoryAfter: memoryAfter() };
}

function resultJson(r: WalkResult, nestedCase: boolean, detail: boolean, ept: boolean): Json {
  if (r.ok) {
    const out: Json = { ok: true, gpa: hexAddr(r.gpa), pageSize: r.pageSize };
    if (detail) Object.assign(out, { level: r.level, access: describeAccess(r.access, ept), pteAccess: r.pteAccess, pkey: r.pkey, retries: r.retries });
    return out;
  }
  const f = r.fault;
  const out: Json = { ok: false, errorCode: hexAddr(BigInt(f.errorCode)) };
  if (nestedCase) out.nested = f.nested;
  if (detail) Object.assign(out, { level: f.level, address: hexAddr(f.address), outerLevel: f.outerLevel, eptQual: hexAddr(BigInt(f.eptQual)) });
  return out;
}

/** walk: JSON array of cases in, JSON array of results out. */
export function walkCommand(file: string | undefined, strategy: InvalidationStrategy, detail = false): string {
  const input = readJson(file);
  const cases = Array.isArray(input) ? input : [input];
  const results = cases.map((raw, i) => {
    try {
      return runWalkCase(parseWalkCase(raw, i), strategy, detail);
    } catch (e) {
      if (e instanceof ProbeInputError) throw new UsageError(e.message);
      if (e instanceof GuestMemoryError || e instanceof WalkerError) throw new UsageError(`case ${i}: ${e.message}`);
      throw e;
    }
  });
  return jsonLines(results);
}

export function registerWalk(program: Command): void {
  program
    .command('walk')
    .argument('[FILE]', 'JSON array of walk cases; - or nothing for stdin')
    .option('--strategy <NAME>', `invalidation design of the vCPU (${STRATEGY_NAMES.join(', ')})`, 'valid-bit')
    .option('--detail', 'add level, permissions, fault address and EPT qualification to each result')
    .description('walk guest page tables as KVM v5.17 walk_addr_generic does, one case per fresh vCPU and memory')
    .addHelpText(
      'after',
      '\nEach case: a `role compute` state plus "cr3" (CR3, nested CR3 or EPTP), "memory": [{"gpa","value"}]\n' +
        '(64-bit writes, 4-byte aligned), "gva", "access": {"write","user","fetch","implicitSupervisor"?},\n' +
        'optional "pkru", "eflagsAc", "pdptes" (PAE registers; default: loaded from memory at cr3),\n' +
        '"memorySize" (default 64 MiB). For EPT walks "user" means a read (KVM\'s convention).\n' +
        'Path "nested" also needs "guestMmu": {"path": "shadow-ept"|"shadow-npt",\n' +
        '"cr3", "ept"? , "cr0"/"cr4"/"efer" (L1, for NPT)}.\n' +
        'Result: {"ok": true, "gpa", "pageSize"} or {"ok": false, "errorCode"} (+ "nested" for path nested),\n' +
        'always with "memoryAfter".\n\nExamples:\n  kvm-mmu-emu walk examples/walk-long4.json\n  kvm-mmu-emu walk --detail - < cases.json',
    )
    .action((file: string | undefined, opts: { strategy: string; detail?: boolean }) => {
      console.log(walkCommand(file, parseStrategy(opts.strategy), !!opts.detail));
    });
}

/**
 * Property tests (fast-check): what the builder maps, the walker finds; a
 * faulting walk never writes guest memory; and a MAXPHYADDR change moves
 * the reserved-bit boundary only for contexts that are rebuilt, while a
 * context left alone keeps its old (stale) answer — as in KVM.
 * Seeds are printed by fast-check on failure; SEED=n replays.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { initShadowEptMmu, setCpuid } from '../../src/mmu/init.js';
import { runInitStep } from '../../src/mmu/probe.js';
import {
  ACC,
  PAGE_1G,
  PAGE_2M,
  PAGE_4K,
  PAGE_4M,
  PFERR,
  walkGuest,
  type PagePerms,
  type TableFormat,
  type WalkMmu,
} from '../../src/paging/index.js';
import { eptContext, eptVcpu, fixture, testSeed, x86Context, x86Regs, x86Vcpu } from './helpers.js';

interface Spec {
  readonly name: string;
  readonly format: TableFormat;
  readonly ctx: () => WalkMmu;
  readonly pageSizes: readonly number[];
  readonly vaBits: number;
  readonly gpaBits: (pageSize: number) => number;
  readonly ept: boolean;
}

const SPECS: readonly Spec[] = [
  { name: '32-bit', format: { kind: 'paging32' }, ctx: () => x86Context('paging32', { pse: true }), pageSizes: [PAGE_4K, PAGE_4M], vaBits: 32, gpaBits: (s) => (s === PAGE_4M ? 36 : 32), ept: false },
  { name: 'PAE', format: { kind: 'pae' }, ctx: () => x86Context('pae'), pageSizes: [PAGE_4K, PAGE_2M], vaBits: 32, gpaBits: () => 46, ept: false },
  { name: '4-level', format: { kind: 'long', levels: 4 }, ctx: () => x86Context('long4'), pageSizes: [PAGE_4K, PAGE_2M, PAGE_1G], vaBits: 48, gpaBits: () => 46, ept: false },
  { name: '5-level', format: { kind: 'long', levels: 5 }, ctx: () => x86Context('long5'), pageSizes: [PAGE_4K, PAGE_2M, PAGE_1G], vaBits: 57, gpaBits: () => 46, ept: false },
  { name: 'EPT 4', format: { kind: 'ept', levels: 4, accessedDirty: true }, ctx: () => eptContext({ execonly: true }), pageSizes: [PAGE_4K, PAGE_2M, PAGE_1G], vaBits: 48, gpaBits: () => 46, ept: true },
  { name: 'EPT 5', format: { kind: 'ept', levels: 5 }, ctx: () => eptContext({ levels: 5, ad: false, execonly: true }), pageSizes: [PAGE_4K, PAGE_2M, PAGE_1G], vaBits: 57, gpaBits: () => 46, ept: true },
];

interface Mapping {
  gva: bigint;
  gpa: bigint;
  pageSize: number;
  perms: { read: boolean; write: boolean; exec: boolean; user: boolean };
  offset: bigint;
}

const pageAligned = (bits: number, pageSize: number) =>
  fc.bigInt(0n, (1n << BigInt(bits)) / BigInt(pageSize) - 1n).map((n) => n * BigInt(pageSize));

function mappingArb(spec: Spec): fc.Arbitrary<Mapping> {
  return fc.constantFrom(...spec.pageSizes).chain((pageSize) =>
    fc.record({
      gva: pageAligned(spec.vaBits, pageSize),
      gpa: pageAligned(spec.gpaBits(pageSize), pageSize),
      pageSize: fc.constant(pageSize),
      // EPT: readable, or execute-only (the context allows it); never write without read.
      perms: fc.record({ read: spec.ept ? fc.boolean() : fc.constant(true), write: fc.boolean(), exec: fc.boolean(), user: fc.boolean() }).map((p) =>
        spec.ept && !p.read ? { ...p, write: false, exec: true } : spec.format.kind === 'paging32' ? { ...p, exec: true } : p,
      ),
      offset: fc.bigInt(0n, BigInt(pageSize - 1)),
    }),
  );
}

const overlaps = (a: Mapping, b: Mapping) => a.gva < b.gva + BigInt(b.pageSize) && b.gva < a.gva + BigInt(a.pageSize);

const toPerms = (m: Mapping, ept: boolean): PagePerms => (ept ? { read: m.perms.read, write: m.perms.write, exec: m.perms.exec } : { write: m.perms.write, exec: m.perms.exec, user: m.perms.user });

/** An access the page allows: the strongest of write/fetch/read that its permissions grant. */
function allowedAccess(m: Mapping, ept: boolean): { write?: boolean; fetch?: boolean; user?: boolean } {
  if (ept) return m.perms.read ? { user: true, write: m.perms.write } : { fetch: true };
  return { user: m.perms.user, write: m.perms.write, fetch: !m.perms.write && m.perms.exec };
}

function expectedAcc(m: Mapping, ept: boolean): number {
  if (ept) return (m.perms.read ? ACC.USER : 0) | (m.perms.write ? ACC.WRITE : 0) | (m.perms.exec ? ACC.EXEC : 0);
  return (m.perms.user ? ACC.USER : 0) | (m.perms.write ? ACC.WRITE : 0) | (m.perms.exec ? ACC.EXEC : 0);
}

const params = (name: string, numRuns: number): fc.Parameters<unknown> => ({ seed: testSeed(name), numRuns });

describe('property: what the builder maps, the walker finds', () => {
  for (const spec of SPECS) {
    it(spec.name, () => {
      const ctx = spec.ctx();
      fc.assert(
        fc.property(fc.array(mappingArb(spec), { minLength: 1, maxLength: 12 }), (maps) => {
          const { mem, pt } = fixture(spec.format);
          const kept: Mapping[] = [];
          for (const m of maps) {
            if (kept.some((k) => overlaps(k, m))) continue;
            pt.map({ gva: m.gva, gpa: m.gpa, pageSize: m.pageSize, perms: toPerms(m, spec.ept) });
            kept.push(m);
          }
          for (const m of kept) {
            const r = walkGuest(ctx, mem, pt.root, m.gva + m.offset, allowedAccess(m, spec.ept));
            expect(r).toMatchObject({ ok: true, gpa: m.gpa + m.offset, pageSize: m.pageSize, access: expectedAcc(m, spec.ept) });
          }
        }),
        params(spec.name, 60),
      );
    });
  }
});

/** A GuestMemory view that counts every write method called on it. */
function countingWrites(mem: GuestMemory): { view: GuestMemory; writes: () => number } {
  let n = 0;
  const view = Object.create(mem) as GuestMemory;
  for (const k of ['store64', 'cmpxchg64', 'or64', 'andNot64', 'store32', 'cmpxchg32', 'or32', 'andNot32', 'write64Split', 'clearPage'] as const) {
    const orig = mem[k].bind(mem) as (...a: never[]) => unknown;
    (view as unknown as Record<string, unknown>)[k] = (...a: never[]) => {
      n++;
      return orig(...a);
    };
  }
  return { view, writes: () => n };
}

describe('property: a walk that faults writes nothing to guest memory', () => {
  for (const spec of SPECS) {
    it(spec.name, () => {
      const ctx = spec.ctx();
      const levels = spec.format.kind === 'paging32' ? 2 : spec.format.kind === 'pae' ? 2 : (spec.format as { levels: number }).levels;
      fc.assert(
        fc.property(
          mappingArb(spec),
          fc.integer({ min: 1, max: levels }),
          fc.bigInt(0n, (1n << 64n) - 1n),
          fc.boolean(),
          fc.record({ write: fc.boolean(), user: fc.boolean(), fetch: fc.boolean() }),
          (m, level, bits, clear, access) => {
            const { mem, alloc, pt } = fixture(spec.format);
            pt.map({ gva: m.gva, gpa: m.gpa, pageSize: m.pageSize, perms: toPerms(m, spec.ept) });
            const e = pt.entry(m.gva, level);
            if (e === null) return; // the level is below a large page
            const width = spec.format.kind === 'paging32' ? 0xffffffffn : (1n << 64n) - 1n;
            pt.writeEntry(m.gva, level, (clear ? e.value & ~bits : e.value | bits) & width);
            const used = 0x100000 + (0x300000 / 4096 - alloc.remaining) * 4096;
            const before = snapshotRange(mem, 0x100000, used);
            const { view, writes } = countingWrites(mem);
            const r = walkGuest(ctx, view, pt.root, m.gva + m.offset, access);
            if (!r.ok) {
              expect(writes()).toBe(0);
              const after = snapshotRange(mem, 0x100000, used);
              const changed = after.findIndex((v, i) => v !== before[i]);
              expect(changed, `word at ${(0x100000 + changed * 8).toString(16)} changed`).toBe(-1);
            }
          },
        ),
        params(spec.name, 150),
      );
    });
  }
});

function snapshotRange(mem: GuestMemory, from: number, to: number): bigint[] {
  const out: bigint[] = [];
  for (let pa = from; pa < to; pa += 8) out.push(mem.load64(pa));
  return out;
}

describe('property: MAXPHYADDR moves the reserved-bit boundary only in rebuilt contexts', () => {
  const RSVD = PFERR.PRESENT | PFERR.RSVD;

  it('x86 (4-level and PAE): nested_mmu is rebuilt by the CPUID change, root_mmu keeps the old masks', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('long4' as const, 'pae' as const),
        fc.integer({ min: 36, max: 52 }),
        fc.integer({ min: 36, max: 52 }),
        fc.integer({ min: 36, max: 51 }),
        fc.integer({ min: 1, max: 2 }),
        (mode, m1, m2, bit, level) => {
          const { vcpu, ctx: rootMmu } = x86Vcpu(mode, { cpuid: { maxPhyAddr: m1 } });
          const r = x86Regs(mode);
          const regs = { cr0: BigInt(r.cr0), cr4: BigInt(r.cr4), efer: BigInt(r.efer), smm: false, guestMode: true };
          const nestedMmu = runInitStep(vcpu, 'nested', regs, undefined).ctx;
          const { mem, pt } = fixture({ kind: mode === 'pae' ? 'pae' : 'long', levels: 4 } as TableFormat);
          pt.map({ gva: 0x1000n, gpa: 0x9000n });
          pt.setBits(0x1000n, level, 1n << BigInt(bit));
          const faults = (ctx: WalkMmu) => {
            const w = walkGuest(ctx, mem, pt.root, 0x1000n, {});
            return !w.ok && w.fault.errorCode === RSVD;
          };
          expect(faults(rootMmu)).toBe(bit >= m1);
          expect(faults(nestedMmu)).toBe(bit >= m1);
          // KVM_SET_CPUID2 before the first run: invalidate all three roles, reset → re-init the walk MMU (nested).
          setCpuid(vcpu, { ...vcpu.cpuid, maxPhyAddr: m2 });
          expect(faults(nestedMmu)).toBe(bit >= m2);
          expect(faults(rootMmu)).toBe(bit >= m1);
        },
      ),
      params('maxphyaddr-x86', 100),
    );
  });

  it('EPT: guest_mmu keeps the old masks until the next nested entry re-initialises it', () => {
    fc.assert(
      fc.property(fc.integer({ min: 36, max: 52 }), fc.integer({ min: 36, max: 52 }), fc.integer({ min: 36, max: 51 }), fc.integer({ min: 1, max: 4 }), (m1, m2, bit, level) => {
        const { vcpu, ctx } = eptVcpu({ cpuid: { maxPhyAddr: m1 } });
        const { mem, pt } = fixture({ kind: 'ept', levels: 4 });
        pt.map({ gva: 0x1000n, gpa: 0x9000n });
        pt.setBits(0x1000n, level, 1n << BigInt(bit));
        const faults = () => {
          const w = walkGuest(ctx, mem, pt.root, 0x1000n, { user: true }, { isWalkMmu: false });
          return !w.ok && (w.fault.errorCode & PFERR.RSVD) !== 0;
        };
        expect(faults()).toBe(bit >= m1);
        setCpuid(vcpu, { ...vcpu.cpuid, maxPhyAddr: m2 });
        expect(faults()).toBe(bit >= m1);
        initShadowEptMmu(vcpu, { execonly: false, accessedDirty: true, level: 4, hugePageLevel: 3 });
        expect(faults()).toBe(bit >= m2);
      }),
      params('maxphyaddr-ept', 100),
    );
  });
});

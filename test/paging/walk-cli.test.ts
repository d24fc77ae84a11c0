/**
 * `kvm-mmu-emu walk`: cases in, results out, one per case, in order; clear
 * errors naming the case and the field; nested cases; and the same answers
 * as the library walker on tables the builder made.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { walkCommand } from '../../src/cli/walk.js';
import { STRATEGIES } from '../../src/mmu/strategies.js';
import { UsageError } from '../../src/cli/io.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { EPTE, FrameAllocator, PageTableBuilder, PTE } from '../../src/paging/index.js';

const strategy = STRATEGIES['valid-bit'];
const EXAMPLE = new URL('../../examples/walk-long4.json', import.meta.url).pathname;
const example = () => JSON.parse(readFileSync(EXAMPLE, 'utf8')) as Record<string, unknown>[];
const run = (cases: unknown): unknown[] => {
  const file = join(tmpdir(), `walk-cli-${process.pid}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(cases));
  try {
    return JSON.parse(walkCommand(file, strategy)) as unknown[];
  } finally {
    rmSync(file);
  }
};

/** Every non-zero 64-bit word of [from, to) as a case's memory image. */
function image(mem: GuestMemory, from: number, to: number): Array<{ gpa: string; value: string }> {
  const out: Array<{ gpa: string; value: string }> = [];
  for (let pa = from; pa < to; pa += 8) {
    const v = mem.load64(pa);
    if (v !== 0n) out.push({ gpa: `0x${pa.toString(16)}`, value: `0x${v.toString(16)}` });
  }
  return out;
}

describe('walk command', () => {
  it('prints one result per case, in order, with lower-case hex and memoryAfter', () => {
    const out = run(example());
    expect(out).toHaveLength(3);
    expect(out[0]).toEqual({
      ok: true,
      gpa: '0x5234',
      pageSize: 4096,
      memoryAfter: [
        { gpa: '0x1000', value: '0x2027' },
        { gpa: '0x2000', value: '0x3027' },
        { gpa: '0x3000', value: '0x4027' },
        { gpa: '0x4008', value: '0x5067' },
      ],
    });
    expect(Object.keys(out[0] as object)).toEqual(['ok', 'gpa', 'pageSize', 'memoryAfter']);
    // A read leaves D clear; an NX leaf is still readable.
    expect((out[1] as { memoryAfter: Array<{ value: string }> }).memoryAfter[3]!.value).toBe('0x8000000000005027');
    // A supervisor fetch from a user page with SMEP: P | I/D, nothing written.
    expect(out[2]).toMatchObject({ ok: false, errorCode: '0x11', memoryAfter: example()[2]!.memory });
  });

  it('reads pkru and eflagsAc at the case level or inside access', () => {
    const base = example()[0]!;
    const smap = { ...base, cr4: '0x360220', access: { write: false, user: false, fetch: false } };
    expect(run([smap])[0]).toMatchObject({ ok: false, errorCode: '0x1' });
    expect(run([{ ...smap, eflagsAc: true }])[0]).toMatchObject({ ok: true });
    expect(run([{ ...smap, access: { ...smap.access, eflagsAc: true } }])[0]).toMatchObject({ ok: true });
    expect(run([{ ...smap, access: { implicitSupervisor: true }, eflagsAc: true }])[0]).toMatchObject({ ok: false, errorCode: '0x1' });
  });

  it('PAE: PDPTEs are loaded from memory at cr3, and a bad one is #GP(0)', () => {
    const base = example()[0]!;
    const pae = { ...base, cr4: '0x20', efer: '0x800', cr3: '0x1000', gva: '0x1234' };
    const memory = [{ gpa: '0x1000', value: '0x3001' }, { gpa: '0x3000', value: '0x4007' }, { gpa: '0x4008', value: '0x5007' }];
    expect(run([{ ...pae, memory }])[0]).toMatchObject({ ok: true, gpa: '0x5234' });
    const bad = [{ ...memory[0]!, value: '0x3003' }, ...memory.slice(1)];
    expect(run([{ ...pae, memory: bad }])[0]).toMatchObject({ ok: false, errorCode: '0x0', vector: 'GP' });
    // Explicit PDPTE registers are used as given.
    expect(run([{ ...pae, memory: bad, pdptes: ['0x3001', '0x0', '0x0', '0x0'] }])[0]).toMatchObject({ ok: true });
  });

  it('nested (EPT): matches the library on builder-made tables, and tells L2 faults from EPT violations', () => {
    const mem = GuestMemory.create(8 << 20);
    const ept = PageTableBuilder.create(mem, FrameAllocator.create(mem, { start: 0x100000, end: 0x180000 }), { kind: 'ept', levels: 4, accessedDirty: true });
    const l2 = PageTableBuilder.create(mem, FrameAllocator.create(mem, { start: 0x200000, end: 0x280000 }), { kind: 'long', levels: 4 });
    ept.map({ gva: 0x200000n, gpa: 0x200000n, size: 0x80000 });
    ept.map({ gva: 0x4000_0000n, gpa: 0x60_0000n });
    l2.map({ gva: 0x7000_0000_0000n, gpa: 0x4000_0000n });
    l2.map({ gva: 0x7000_0000_1000n, gpa: 0x4000_1000n }); // not in EPT
    const memory = [...image(mem, 0x100000, 0x180000), ...image(mem, 0x200000, 0x280000)];
    const base = example()[0]!;
    const c = {
      ...base,
      path: 'nested',
      guestMode: true,
      cr3: `0x${l2.pgd.toString(16)}`,
      memory,
      guestMmu: { path: 'shadow-ept', cr3: `0x${ept.pgd.toString(16)}`, ept: { execonly: false, accessedDirty: true, level: 4, hugePageLevel: 3 } },
    };
    const [ok, l2fault, violation] = run([
      { ...c, gva: '0x700000000abc', access: { write: true } },
      { ...c, gva: '0x700000002000', access: {} },
      { ...c, gva: '0x700000001000', access: { user: true } },
    ]) as Array<Record<string, unknown>>;
    expect(ok).toMatchObject({ ok: true, gpa: '0x600abc', pageSize: 4096 });
    expect(l2fault).toEqual({ ok: false, errorCode: '0x0', nested: false, memoryAfter: expect.any(Array) });
    expect(violation).toMatchObject({ ok: false, errorCode: '0x4', nested: true });
    // The write set D in L2's leaf and in the EPT leaf of the data page.
    const after = new Map((ok!.memoryAfter as Array<{ gpa: string; value: string }>).map((m) => [m.gpa, BigInt(m.value)]));
    expect(after.get(`0x${l2.entry(0x7000_0000_0000n, 1)!.pa.toString(16)}`)! & BigInt(PTE.D)).toBe(BigInt(PTE.D));
    expect(after.get(`0x${ept.entry(0x4000_0000n, 1)!.pa.toString(16)}`)! & BigInt(EPTE.D)).toBe(BigInt(EPTE.D));
  });

  it('names the case and the field of bad input', () => {
    const base = example()[0]!;
    const attempt = (cases: unknown[]) => {
      try {
        run(cases);
        return 'no error';
      } catch (e) {
        expect(e).toBeInstanceOf(UsageError);
        return (e as Error).message;
      }
    };
    const { gva: _gva, ...noGva } = base;
    expect(attempt([base, noGva])).toMatch(/^case 1: gva: required field is missing/);
    expect(attempt([{ ...base, access: { write: 'yes' } }])).toMatch(/^case 0: access\.write: expected true or false/);
    expect(attempt([{ ...base, memory: [{ gpa: '0x10000000', value: '0x1' }] }])).toMatch(/^case 0: memory\[0\]\.gpa: .*outside/);
    expect(attempt([{ ...base, memory: [{ gpa: '0x1002', value: '0x1' }] }])).toMatch(/^case 0: memory\[0\]\.gpa: .*aligned/);
    expect(attempt([{ ...base, path: 'nested' }])).toMatch(/^case 0: guestMmu: required/);
    expect(attempt([{ ...base, guestMmu: { path: 'shadow-ept', cr3: '0x0' } }])).toMatch(/^case 0: guestMmu: only allowed/);
    expect(attempt([{ ...base, pkru: '0x100000000' }])).toMatch(/^case 0: pkru: expected a 32-bit value/);
    expect(attempt([{ ...base, access: { user: true, implicitSupervisor: true } }])).toMatch(/^case 0: access\.implicitSupervisor/);
    expect(attempt([{ ...base, cr3: 'zz' }])).toMatch(/^case 0: cr3: expected a hex string/);
  });

  it('exits with code 2 and a one-line message on bad input (process)', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'walk', '-'], { input: '[{"path":"tdp"}]', encoding: 'utf8', cwd: new URL('../..', import.meta.url).pathname });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^kvm-mmu-emu: case 0: cr0: required field is missing/);
    expect(r.stdout).toBe('');
  });
});

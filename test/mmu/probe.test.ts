/**
 * The role probes behind `role compute` and `role replay`: the worked
 * example (what Linux v5.17 computes), replay semantics, and input errors
 * that name the state and the field.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { computeState, replaySequence } from '../../src/mmu/probe.js';
import { computeStateSchema, parseOrThrow, ProbeInputError, sequenceSchema } from '../../src/mmu/probe-schema.js';
import { STRATEGIES } from '../../src/mmu/strategies.js';

const states = JSON.parse(readFileSync(new URL('../../examples/role-states.json', import.meta.url), 'utf8')) as unknown[];
const sequence = JSON.parse(readFileSync(new URL('../../examples/role-sequence.json', import.meta.url), 'utf8')) as unknown;

describe('role compute', () => {
  it('reproduces the Linux v5.17 result of the issue example (TDP, Intel host, AMD guest, L2, SMAP+PKE, WP=0, no NX)', () => {
    const r = computeState(parseOrThrow(computeStateSchema, states[0], 'state 0'));
    expect(r).toEqual({
      base: '0x00020784',
      ext: '0x0000026d',
      rootLevel: 4,
      shadowRootLevel: 4,
      directMap: true,
      rsvdBitsMask: [
        ['0x800fc00000000000', '0x800fc00000000000', '0x800fc00000000000', '0x800fc00000000180', '0x0'],
        ['0x800fc00000000000', '0x800fc000001fe000', '0x800fc0003fffe000', '0x800fc00000000180', '0x0'],
      ],
      badMtXwr: '0x0',
      permissions: [240, 240, 15, 63, 0, 0, 15, 63, 0, 0, 15, 63, 0, 0, 15, 63],
      pkruMask: '0xd500',
      gvaToGpa: 'paging64',
      eptAd: false,
      shadowZeroCheck: {
        rsvdBitsMask: [
          ['0xff80000000000', '0xff80000000078', '0xff80000000078', '0xff800000000f8', '0xff800000000f8'],
          ['0xff80000000000', '0xff800001ff000', '0xff8003ffff000', '0xff800000000f8', '0xff800000000f8'],
        ],
        badMtXwr: '0xff545454ffff5454',
      },
      newPgdRole: '0x00020784',
    });
  });

  it('reference §16 example 1: TDP, 64-bit guest, MAXPHYADDR 52 (kvm-mmu-reference.md)', () => {
    const r = computeState(parseOrThrow(computeStateSchema, states[1], 'state 1'));
    expect([r.base, r.ext, r.rootLevel]).toEqual(['0x00003784', '0x0000028d', 4]);
    expect(r.rsvdBitsMask[0]).toEqual(['0x0', '0x0', '0x0', '0x80', '0x0']);
    expect(r.rsvdBitsMask[1]).toEqual(['0x0', '0x1fe000', '0x3fffe000', '0x80', '0x0']);
    expect(r.permissions).toEqual([0, 51, 15, 63, 0, 51, 15, 63, 245, 247, 95, 127, 245, 247, 95, 127]);
    expect([r.pkruMask, r.gvaToGpa]).toEqual(['0x0', 'paging64']);
  });

  it('reference §16 example 2: shadow paging, 2-level guest with PSE, WP=0, MAXPHYADDR 37', () => {
    const r = computeState(parseOrThrow(computeStateSchema, states[2], 'state 2'));
    expect([r.base, r.ext, r.rootLevel, r.shadowRootLevel, r.gvaToGpa, r.directMap]).toEqual(['0x00000713', '0x00000015', 2, 3, 'paging32', false]);
    expect(r.rsvdBitsMask).toEqual([
      ['0x0', '0x0', '0x0', '0x0', '0x0'],
      ['0x0', '0x3e0000', '0x0', '0x0', '0x0'],
    ]);
    expect(r.permissions).toEqual([0, 0, 15, 63, 0, 0, 15, 63, 0, 0, 15, 63, 0, 0, 15, 63]);
  });

  it('reference §16 example 3: shadow EPT, execute-only, A/D off, 4-level, 1G caps, MAXPHYADDR 42', () => {
    const r = computeState(parseOrThrow(computeStateSchema, states[3], 'state 3'));
    expect([r.base, r.ext, r.gvaToGpa, r.eptAd, r.newPgdRole]).toEqual(['0x00030704', '0x00000003', 'ept', false, '0x00030704']);
    const high = 0xffc0000000000n;
    const h = (v: bigint) => '0x' + (high | v).toString(16);
    expect(r.rsvdBitsMask).toEqual([
      [h(0n), h(0x78n), h(0x78n), h(0xf8n), h(0xf8n)],
      [h(0n), h(0x1ff000n), h(0x3ffff000n), h(0xf8n), h(0xf8n)],
    ]);
    expect(r.badMtXwr).toBe('0xff444444ffff4444');
    expect(r.permissions).toEqual([0, 51, 15, 63, 0, 51, 15, 63, 85, 119, 95, 127, 85, 119, 95, 127]);
  });

  it('nested_mmu never gets shadow_zero_check or a newPgdRole; its levels stay at creation zeros', () => {
    const r = computeState(parseOrThrow(computeStateSchema, states[5], 'state 5'));
    expect([r.shadowZeroCheck, r.newPgdRole, r.shadowRootLevel, r.directMap, r.rootLevel, r.gvaToGpa]).toEqual([null, null, 0, false, 0, 'nonpaging']);
    // Paging off: reset_guest_paging_metadata returns early, so everything stays zero.
    expect(r.permissions.every((p) => p === 0)).toBe(true);
  });

  it('the ext word follows each design layout', () => {
    const st = parseOrThrow(computeStateSchema, states[0], 'state 0');
    expect(computeState(st, STRATEGIES['level-zero']).ext).toBe('0x00000136');
    expect(computeState(st, STRATEGIES['cpuid-stale']).ext).toBe('0x0000026c');
    expect(computeState(st, STRATEGIES['word-zero']).ext).toBe('0x0000026d');
  });
});

describe('role replay', () => {
  it('reports the touched context per step; setCpuid resets the walk context (nested_mmu while L2 runs)', () => {
    const out = replaySequence(parseOrThrow(sequenceSchema, sequence, 'sequence'));
    expect(out.map((r) => [r.mmu, r.skipped])).toEqual([
      ['root', false],
      ['root', true],
      ['guest', false],
      ['nested', false],
      ['nested', false],
      ['nested', true],
      ['guest', false],
      ['root', false],
    ]);
    // The MAXPHYADDR change reaches guest_mmu's EPT masks at its next init.
    expect(out[2]!.rsvdBitsMask[0][0]).toBe('0xfc00000000000'); // rsvd_bits(46, 51)
    expect(out[6]!.rsvdBitsMask[0][0]).toBe('0xfff8000000000'); // rsvd_bits(39, 51)
  });

  it('level-zero takes the fast path at the reset after the CPUID change (nested_mmu, L2 paging off)', () => {
    const out = replaySequence(parseOrThrow(sequenceSchema, sequence, 'sequence'), STRATEGIES['level-zero']);
    expect(out[4]).toMatchObject({ mmu: 'nested', skipped: true });
  });
});

describe('input errors name the state and the field', () => {
  const good = states[0] as Record<string, unknown>;
  const cases: [string, unknown, RegExp][] = [
    ['unknown path', { ...good, path: 'ept' }, /state 7: path: expected one of tdp, shadow/],
    ['MAXPHYADDR too large', { ...good, cpuid: { ...(good.cpuid as object), maxPhyAddr: 60 } }, /state 7: cpuid\.maxPhyAddr: expected an integer in 24\.\.52 \(got 60\)/],
    ['EPT level 3', { ...good, path: 'shadow-ept', ept: { ...(good.ept as object), level: 3 } }, /state 7: ept\.level: expected one of 4, 5 \(got 3\)/],
    ['missing host', { ...good, host: undefined }, /state 7: host: required field is missing/],
    ['bad register', { ...good, cr0: 'zz' }, /state 7: cr0: expected a hex string/],
    ['register over 64 bits', { ...good, cr4: '0x10000000000000000' }, /state 7: cr4: .* does not fit in 64 bits/],
    ['shadow-ept without ept', { ...good, path: 'shadow-ept', ept: undefined }, /state 7: ept: required for path "shadow-ept"/],
  ];
  for (const [what, bad, msg] of cases) {
    it(what, () => {
      expect(() => parseOrThrow(computeStateSchema, bad, 'state 7')).toThrow(ProbeInputError);
      expect(() => parseOrThrow(computeStateSchema, bad, 'state 7')).toThrow(msg);
    });
  }

  it('a replay step error names the step', () => {
    const seq = { ...(sequence as object), steps: [{ op: 'init', path: 'tdp', cr0: '0x1', cr4: '0x0', efer: '0x0', smm: 'no', guestMode: false }] };
    expect(() => parseOrThrow(sequenceSchema, seq, 'sequence 2')).toThrow(/sequence 2: steps\[0\]\.smm: expected true or false/);
  });
});

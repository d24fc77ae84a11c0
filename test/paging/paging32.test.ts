/**
 * 32-bit paging (SDM vol. 3A §4.3, Tables 4-4 to 4-6), as KVM v5.17's
 * paging32 walker implements it. Where KVM departs from the SDM, the test
 * says so and follows KVM (this emulator is bit-exact with the kernel).
 */
import { describe, expect, it } from 'vitest';
import { PAGE_4M, PFERR, PTE, walkGuest } from '../../src/paging/index.js';
import { fixture, snapshot, x86Context, x86Vcpu } from './helpers.js';

const F = { kind: 'paging32' } as const;

describe('32-bit paging: 4 KiB pages (SDM Table 4-6)', () => {
  it('translates through the PDE and PTE (10-bit indices, 4-byte entries)', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0xc0801000n, gpa: 0x00345000n });
    const r = walkGuest(x86Context('paging32'), mem, pt.root, 0xc0801abcn, { write: false });
    expect(r).toMatchObject({ ok: true, gpa: 0x345abcn, pageSize: 4096, level: 1 });
  });

  it('sets A in the PDE and PTE, and D in the PTE on a write, touching only those 4-byte entries', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x5000n });
    pt.map({ gva: 0x2000n, gpa: 0x6000n }); // the neighbouring PTE shares the 8-byte word
    const ctx = x86Context('paging32');
    const before = snapshot(mem, 0x100000, 0x110000);
    expect(walkGuest(ctx, mem, pt.root, 0x1000n, { write: true }).ok).toBe(true);
    const pte = pt.entry(0x1000n, 1)!.value;
    expect(pte & BigInt(PTE.A | PTE.D)).toBe(BigInt(PTE.A | PTE.D));
    expect(pt.entry(0x1000n, 2)!.value & BigInt(PTE.A | PTE.D)).toBe(BigInt(PTE.A));
    expect(pt.entry(0x2000n, 1)!.value & BigInt(PTE.A | PTE.D)).toBe(0n);
    expect(snapshot(mem, 0x100000, 0x110000).size).toBe(before.size);
  });

  it('has no reserved bits in a 4 KiB PDE or PTE: PAT, G and bits 9-11 are ignored', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x5000n, perms: { extraBits: BigInt(PTE.PS | PTE.G | (7 << 9)) } });
    pt.setBits(0x1000n, 2, BigInt(PTE.G | (7 << 9)));
    expect(walkGuest(x86Context('paging32', { pse: true }), mem, pt.root, 0x1000n, {}).ok).toBe(true);
  });

  it('a non-present PDE faults at level 2 with P = 0 and the access bits (SDM §4.7)', () => {
    const { mem, pt } = fixture(F);
    const r = walkGuest(x86Context('paging32'), mem, pt.root, 0x00400000n, { write: true, user: true });
    expect(r).toMatchObject({ ok: false, fault: { errorCode: PFERR.WRITE | PFERR.USER, level: 2 } });
  });
});

describe('32-bit paging: 4 MiB pages with CR4.PSE (SDM Table 4-5, §4.3 PSE-36)', () => {
  it('maps a 4 MiB page when CR4.PSE = 1', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x80000000n, gpa: 0x00c00000n, pageSize: PAGE_4M });
    const r = walkGuest(x86Context('paging32', { pse: true }), mem, pt.root, 0x803fedcbn, {});
    expect(r).toMatchObject({ ok: true, gpa: 0x00ffedcbn, pageSize: PAGE_4M, level: 2 });
  });

  it('PDE bits 16:13 supply physical address bits 35:32 (PSE-36)', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x80000000n, gpa: 0xa_4040_0000n, pageSize: PAGE_4M });
    expect(pt.entry(0x80000000n, 2)!.value & BigInt(PTE.PSE36_MASK)).toBe(0xan << 13n);
    const r = walkGuest(x86Context('paging32', { pse: true }), mem, pt.root, 0x80001234n, {});
    expect(r).toMatchObject({ ok: true, gpa: 0xa_4040_1234n });
  });

  it('KVM (is_cpuid_PSE36 hard-wired): bits 21:17 of a 4 MiB PDE are reserved whatever MAXPHYADDR is', () => {
    // SDM: bits 21 and 20:(M-19) are reserved, so with M = 40 bits 17-20 would be address bits;
    // KVM v5.17 always uses rsvd_bits(17, 21).
    for (const maxPhyAddr of [32, 36, 40, 46]) {
      for (let bit = 17; bit <= 21; bit++) {
        const { mem, pt } = fixture(F);
        pt.map({ gva: 0x80000000n, gpa: 0x00c00000n, pageSize: PAGE_4M, perms: { extraBits: 1n << BigInt(bit) } });
        const r = walkGuest(x86Context('paging32', { pse: true, cpuid: { maxPhyAddr } }), mem, pt.root, 0x80000000n, { write: true });
        expect(r, `bit ${bit}, MAXPHYADDR ${maxPhyAddr}`).toMatchObject({ ok: false, fault: { errorCode: PFERR.PRESENT | PFERR.RSVD | PFERR.WRITE, level: 2 } });
      }
    }
  });

  it('KVM: PSE-36 bits are never reserved, even when they name memory above MAXPHYADDR = 32', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x80000000n, gpa: 0xf_0000_0000n, pageSize: PAGE_4M });
    const r = walkGuest(x86Context('paging32', { pse: true, cpuid: { maxPhyAddr: 32 } }), mem, pt.root, 0x80000000n, {});
    expect(r).toMatchObject({ ok: true, gpa: 0xf_0000_0000n });
  });

  it('with CR4.PSE = 0, PS is ignored: the PDE points to a page table and bits 21:17 are address bits', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x5000n });
    pt.setBits(0x1000n, 2, BigInt(PTE.PS));
    const ctx = x86Context('paging32', { pse: false });
    expect(walkGuest(ctx, mem, pt.root, 0x1000n, {})).toMatchObject({ ok: true, gpa: 0x5000n, level: 1, pageSize: 4096 });
  });

  it('is_last_gpte reads ext.cr4_pse from the role: a context not rebuilt after CR4.PSE changes keeps 4 MiB pages', () => {
    const { vcpu, ctx } = x86Vcpu('paging32', { pse: true });
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x80000000n, gpa: 0x00c00000n, pageSize: PAGE_4M });
    vcpu.cr4 = 0; // registers change, the context is not re-initialised
    expect(walkGuest(ctx, mem, pt.root, 0x80000000n, {})).toMatchObject({ ok: true, pageSize: PAGE_4M });
  });
});

describe('32-bit paging: instruction fetches', () => {
  it('has no XD bit: supervisor fetches from writable pages are allowed even with EFER.NXE', () => {
    const { mem, pt } = fixture(F);
    pt.map({ gva: 0x1000n, gpa: 0x5000n, perms: { user: false } });
    expect(walkGuest(x86Context('paging32', { nx: true }), mem, pt.root, 0x1000n, { fetch: true }).ok).toBe(true);
  });

  it('KVM: a fetch fault sets I/D when the role has EFER.NX, even under 32-bit paging (SDM: only with PAE/4-level NXE or SMEP)', () => {
    const { mem, pt } = fixture(F);
    const nxOn = walkGuest(x86Context('paging32', { nx: true }), mem, pt.root, 0x1000n, { fetch: true });
    const nxOff = walkGuest(x86Context('paging32', { nx: false }), mem, pt.root, 0x1000n, { fetch: true });
    const smep = walkGuest(x86Context('paging32', { nx: false, smep: true }), mem, pt.root, 0x1000n, { fetch: true });
    expect(nxOn).toMatchObject({ ok: false, fault: { errorCode: PFERR.FETCH } });
    expect(nxOff).toMatchObject({ ok: false, fault: { errorCode: 0 } });
    expect(smep).toMatchObject({ ok: false, fault: { errorCode: PFERR.FETCH } });
  });
});

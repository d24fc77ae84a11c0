/**
 * The permission matrix, checked against an oracle written from the Intel
 * SDM vol. 3A §4.6 "Access Rights" (4.6.1 determination of access rights,
 * 4.6.2 protection keys) and §4.7 "Page-Fault Exceptions" (error code), not
 * from KVM's bitmask code. Every combination of U/S and R/W at two levels,
 * NX at two levels, EFER.NXE, CR0.WP, CR4.SMEP, CR4.SMAP, EFLAGS.AC and the
 * access (read/write/fetch by user, supervisor, implicit supervisor).
 */
import { describe, expect, it } from 'vitest';
import { GuestWalker, gvaToGpa, PFERR, PTE, walkEnv, type AccessFlags } from '../../src/paging/index.js';
import { fixture, formatOf, x86Context } from './helpers.js';

const GVA = 0x40201000n;
const GPA = 0x700000n;
const NX = 1n << 63n;

interface Tables {
  leafUS: boolean;
  pdeUS: boolean;
  leafRW: boolean;
  pdeRW: boolean;
  leafNX: boolean;
  pdeNX: boolean;
  pkey: number;
}

interface Ctl {
  nxe: boolean;
  wp: boolean;
  smep: boolean;
  smap: boolean;
  pke: boolean;
}

type Kind = 'read' | 'write' | 'fetch';
type Mode = 'user' | 'supervisor' | 'implicit';

interface Access {
  kind: Kind;
  mode: Mode;
  ac: boolean;
  pkru: number;
}

/** The SDM's answer: 0 (allowed) or the page-fault error code. */
function sdmOracle(t: Tables, c: Ctl, a: Access): number {
  const fetch = a.kind === 'fetch';
  const write = a.kind === 'write';
  // §4.7: W/R = write; U/S = user-mode access (implicit supervisor accesses are supervisor);
  // I/D = fetch with NXE or SMEP.
  const base = (write ? PFERR.WRITE : 0) | (a.mode === 'user' ? PFERR.USER : 0) | (fetch && (c.nxe || c.smep) ? PFERR.FETCH : 0);
  // §4.5.4 / Table 4-19: with IA32_EFER.NXE = 0, bit 63 is reserved → P | RSVD.
  if (!c.nxe && (t.pdeNX || t.leafNX)) return base | PFERR.PRESENT | PFERR.RSVD;
  // §4.6.1: user-mode address iff U/S = 1 at every level; writable iff R/W = 1 at every level;
  // executable iff NXE = 0 or XD = 0 at every level.
  const userAddr = t.leafUS && t.pdeUS;
  const writable = t.leafRW && t.pdeRW;
  const executable = !c.nxe || (!t.leafNX && !t.pdeNX);
  let denied: boolean;
  if (a.mode === 'user') {
    denied = !userAddr || (write && !writable) || (fetch && !executable);
  } else {
    // SMAP override only for explicit accesses at CPL < 3 with EFLAGS.AC = 1.
    const smapBlocks = c.smap && userAddr && !(a.mode === 'supervisor' && a.ac);
    if (fetch) denied = (c.smep && userAddr) || !executable;
    else if (write) denied = smapBlocks || (c.wp && !writable);
    else denied = smapBlocks;
  }
  // §4.6.2: protection keys (CR4.PKE, 4/5-level paging) govern data accesses to user-mode addresses.
  let pk = false;
  if (c.pke && userAddr && !fetch) {
    const ad = (a.pkru >>> (2 * t.pkey)) & 1;
    const wd = (a.pkru >>> (2 * t.pkey + 1)) & 1;
    pk = ad === 1 || (write && wd === 1 && (a.mode === 'user' || c.wp));
  }
  if (!denied && !pk) return 0;
  return base | PFERR.PRESENT | (pk ? PFERR.PK : 0);
}

const bools = [false, true] as const;

function* tableConfigs(withPkey: boolean): Generator<Tables> {
  for (const leafUS of bools)
    for (const pdeUS of bools)
      for (const leafRW of bools)
        for (const pdeRW of bools)
          for (const leafNX of withPkey ? [false] : bools)
            for (const pdeNX of withPkey ? [false] : bools) yield { leafUS, pdeUS, leafRW, pdeRW, leafNX, pdeNX, pkey: withPkey ? 5 : 0 };
}

function* accesses(pkrus: number[]): Generator<Access> {
  for (const kind of ['read', 'write', 'fetch'] as const)
    for (const mode of ['user', 'supervisor', 'implicit'] as const)
      for (const ac of bools) {
        if (kind === 'fetch' && mode === 'implicit') continue; // fetches are never implicit accesses
        for (const pkru of pkrus) yield { kind, mode, ac, pkru };
      }
}

/** Build the tables once and rewrite the leaf and PDE for each configuration. */
function runMatrix(ctls: Ctl[], withPkey: boolean, pkrus: number[], mode: 'long4' | 'pae' = 'long4'): { walks: number; mismatches: string[] } {
  const { mem, pt } = fixture(formatOf(mode));
  pt.map({ gva: GVA, gpa: GPA });
  const w = new GuestWalker();
  const mismatches: string[] = [];
  let walks = 0;
  for (const c of ctls) {
    const ctx = x86Context(mode, { nx: c.nxe, wp: c.wp, smep: c.smep, smap: c.smap, pke: c.pke });
    for (const t of tableConfigs(withPkey)) {
      for (const a of accesses(pkrus)) {
        const leaf = (GPA | BigInt(PTE.P | (t.leafRW ? PTE.RW : 0) | (t.leafUS ? PTE.US : 0))) | (t.leafNX ? NX : 0n) | (BigInt(t.pkey) << 59n);
        const pdeTable = pt.entry(GVA, 2)!.value & 0x000ffffffffff000n;
        const pde = pdeTable | BigInt(PTE.P | (t.pdeRW ? PTE.RW : 0) | (t.pdeUS ? PTE.US : 0)) | (t.pdeNX ? NX : 0n);
        pt.writeEntry(GVA, 1, leaf);
        pt.writeEntry(GVA, 2, pde);
        const flags: AccessFlags = {
          write: a.kind === 'write',
          fetch: a.kind === 'fetch',
          user: a.mode === 'user',
          implicitSupervisor: a.mode === 'implicit',
          eflagsAc: a.ac,
          pkru: a.pkru,
        };
        const ok = gvaToGpa(w, ctx, mem, pt.root, GVA, walkEnv(flags));
        const got = ok ? 0 : w.fault.errorCode;
        const want = sdmOracle(t, c, a);
        walks++;
        if (got !== want) mismatches.push(`${JSON.stringify({ t, c, a })}: walker 0x${got.toString(16)}, SDM 0x${want.toString(16)}`);
        if (ok) expect(w.gpa).toBe(GPA | (GVA & 0xfffn));
      }
    }
  }
  return { walks, mismatches };
}

describe('permission matrix, 4-level paging (SDM §4.6.1, §4.7)', () => {
  it('U/S, R/W, NX at two levels × NXE, WP, SMEP, SMAP × read/write/fetch × user/supervisor/implicit × AC', () => {
    const ctls: Ctl[] = [];
    for (const nxe of bools) for (const wp of bools) for (const smep of bools) for (const smap of bools) ctls.push({ nxe, wp, smep, smap, pke: false });
    const { walks, mismatches } = runMatrix(ctls, false, [0]);
    expect(walks).toBe(16 * 64 * 16);
    expect(mismatches.slice(0, 5)).toEqual([]);
  });
});

describe('permission matrix, PAE paging (SDM §4.6.1, §4.7)', () => {
  it('the same rules hold with PAE tables (bit 63 is XD or reserved alike)', () => {
    const ctls: Ctl[] = [];
    for (const nxe of bools) for (const wp of bools) for (const smep of bools) for (const smap of bools) ctls.push({ nxe, wp, smep, smap, pke: false });
    const { walks, mismatches } = runMatrix(ctls, false, [0], 'pae');
    expect(walks).toBe(16 * 64 * 16);
    expect(mismatches.slice(0, 5)).toEqual([]);
  });
});

describe('protection keys (SDM §4.6.2)', () => {
  it('AD and WD of the page key, for user and supervisor data accesses, with CR0.WP both ways', () => {
    const ctls: Ctl[] = [];
    for (const wp of bools) for (const smap of bools) ctls.push({ nxe: true, wp, smep: false, smap, pke: true });
    // Key 5: AD, WD, both, neither; plus AD|WD of another key only (must not matter).
    const k5 = (ad: number, wd: number) => (ad | (wd << 1)) << 10;
    const pkrus = [0, k5(1, 0), k5(0, 1), k5(1, 1), 0x3 << 4];
    const { walks, mismatches } = runMatrix(ctls, true, pkrus);
    expect(walks).toBe(4 * 16 * 16 * 5);
    expect(mismatches.slice(0, 5)).toEqual([]);
  });

  it('keys are ignored without CR4.PKE (pkru_mask = 0)', () => {
    const { walks, mismatches } = runMatrix([{ nxe: true, wp: true, smep: false, smap: false, pke: false }], true, [0xffffffff]);
    expect(walks).toBeGreaterThan(0);
    expect(mismatches.slice(0, 5)).toEqual([]);
  });

  it('reports the key of the leaf in the result', () => {
    const { mem, pt } = fixture({ kind: 'long', levels: 4 });
    pt.map({ gva: GVA, gpa: GPA, perms: { pkey: 9 } });
    const w = new GuestWalker();
    expect(gvaToGpa(w, x86Context('long4', { pke: true }), mem, pt.root, GVA, walkEnv({}))).toBe(true);
    expect(w.pkey).toBe(9);
  });
});

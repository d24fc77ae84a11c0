/**
 * Accessed and dirty flags (SDM vol. 3A §4.8; KVM v5.17
 * FNAME(update_accessed_dirty_bits), FNAME(protect_clean_gpte)): A on every
 * level walked, D on the leaf of a write, nothing when the walk faults, and
 * KVM's compare-exchange with a restart of the whole walk when another
 * writer changed the entry in between — forced here deterministically.
 */
import { describe, expect, it } from 'vitest';
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { ACC, GuestWalker, gvaToGpa, PTE, walkEnv, walkGuest } from '../../src/paging/index.js';
import { fixture, snapshot, x86Context } from './helpers.js';

const AD = BigInt(PTE.A | PTE.D);

/**
 * A view of `mem` whose compare-exchanges first let "another vCPU" change
 * the target entry, `times` times: the walker's compare-exchange then fails.
 */
function racingMemory(mem: GuestMemory, interfere: (pa: number) => void, times = 1): GuestMemory {
  const racy = Object.create(mem) as GuestMemory;
  let left = times;
  racy.cmpxchg64 = (pa, expected, replacement) => {
    if (left-- > 0) interfere(pa);
    return mem.cmpxchg64(pa, expected, replacement);
  };
  return racy;
}

describe('accessed and dirty flags', () => {
  it('a read sets A everywhere and no D; the result drops W until the leaf is dirty', () => {
    const { mem, pt } = fixture({ kind: 'long', levels: 4 });
    pt.map({ gva: 0x1000n, gpa: 0x9000n });
    const ctx = x86Context('long4');
    const r = walkGuest(ctx, mem, pt.root, 0x1000n, {});
    expect(r).toMatchObject({ ok: true, access: ACC.ALL, pteAccess: ACC.ALL & ~ACC.WRITE });
    for (let l = 4; l >= 1; l--) expect(pt.entry(0x1000n, l)!.value & AD).toBe(BigInt(PTE.A));
    walkGuest(ctx, mem, pt.root, 0x1000n, { write: true });
    expect(pt.entry(0x1000n, 1)!.value & AD).toBe(AD);
    expect(walkGuest(ctx, mem, pt.root, 0x1000n, {})).toMatchObject({ pteAccess: ACC.ALL });
  });

  it('writes nothing once every flag it would set is already set', () => {
    const { mem, pt } = fixture({ kind: 'long', levels: 4 });
    pt.map({ gva: 0x1000n, gpa: 0x9000n });
    const ctx = x86Context('long4');
    walkGuest(ctx, mem, pt.root, 0x1000n, { write: true });
    const before = snapshot(mem, 0x100000, 0x110000);
    const quiet = Object.create(mem) as GuestMemory;
    quiet.cmpxchg64 = () => {
      throw new Error('no compare-exchange expected');
    };
    expect(walkGuest(ctx, quiet, pt.root, 0x1000n, { write: true }).ok).toBe(true);
    expect(snapshot(mem, 0x100000, 0x110000)).toEqual(before);
  });

  it('a faulting walk writes nothing, even when upper levels lack A', () => {
    const { mem, pt } = fixture({ kind: 'long', levels: 4 });
    pt.map({ gva: 0x1000n, gpa: 0x9000n, perms: { write: false } });
    const before = snapshot(mem, 0, mem.size);
    expect(walkGuest(x86Context('long4'), mem, pt.root, 0x1000n, { write: true }).ok).toBe(false);
    expect(snapshot(mem, 0, mem.size)).toEqual(before);
  });

  it('a lost compare-exchange restarts the walk; the other writer\'s bit and ours both survive', () => {
    const { mem, pt } = fixture({ kind: 'long', levels: 4 });
    pt.map({ gva: 0x1000n, gpa: 0x9000n });
    const leafPa = pt.entry(0x1000n, 1)!.pa;
    const avl = 1n << 10n; // an ignored bit the guest OS uses
    // The first compare-exchange (on the PML4E) loses: another vCPU sets a bit in the leaf... and in the PML4E.
    const racy = racingMemory(mem, (pa) => {
      mem.or64(leafPa, avl);
      mem.or64(pa, avl);
    });
    const w = new GuestWalker();
    expect(gvaToGpa(w, x86Context('long4'), racy, pt.root, 0x1000n, walkEnv({ write: true }))).toBe(true);
    expect(w.retries).toBe(1);
    expect(pt.entry(0x1000n, 1)!.value & (AD | avl)).toBe(AD | avl);
    expect(pt.entry(0x1000n, 4)!.value & (BigInt(PTE.A) | avl)).toBe(BigInt(PTE.A) | avl);
  });

  it('a race that removes the mapping turns the restarted walk into a fault', () => {
    const { mem, pt } = fixture({ kind: 'long', levels: 4 });
    pt.map({ gva: 0x1000n, gpa: 0x9000n });
    const leafPa = pt.entry(0x1000n, 1)!.pa;
    const racy = racingMemory(mem, () => mem.andNot64(leafPa, 1n));
    const w = new GuestWalker();
    expect(gvaToGpa(w, x86Context('long4'), racy, pt.root, 0x1000n, walkEnv({}))).toBe(false);
    expect(w.retries).toBe(1);
    expect(w.fault).toMatchObject({ errorCode: 0, level: 1 });
  });

  it('32-bit entries race the same way (32-bit compare-exchange)', () => {
    const { mem, pt } = fixture({ kind: 'paging32' });
    pt.map({ gva: 0x1000n, gpa: 0x9000n });
    const leafPa = pt.entry(0x1000n, 1)!.pa;
    const racy = Object.create(mem) as GuestMemory;
    let once = true;
    racy.cmpxchg32 = (pa, expected, replacement) => {
      if (once) {
        once = false;
        mem.or32(leafPa, 1 << 9);
      }
      return mem.cmpxchg32(pa, expected, replacement);
    };
    const w = new GuestWalker();
    expect(gvaToGpa(w, x86Context('paging32'), racy, pt.root, 0x1000n, walkEnv({ write: true }))).toBe(true);
    expect(w.retries).toBe(1);
    expect(pt.entry(0x1000n, 1)!.value & (AD | (1n << 9n))).toBe(AD | (1n << 9n));
  });
});

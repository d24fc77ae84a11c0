/**
 * Guest physical memory: one SharedArrayBuffer per VM, whole-entry Atomics
 * access, and the compare-exchange failure contract.
 */
import { describe, expect, it } from 'vitest';
import { asGpa } from '../../src/memory/address.js';
import { DEFAULT_GUEST_MEMORY_BYTES, GuestMemory, GuestMemoryError } from '../../src/memory/guest-memory.js';

describe('GuestMemory', () => {
  it('defaults to 64 MiB of zeroed, shared memory', () => {
    const m = GuestMemory.create();
    expect(m.size).toBe(DEFAULT_GUEST_MEMORY_BYTES);
    expect(m.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(m.load64(m.size - 8)).toBe(0n);
  });

  it('works with 1 GiB: the last entry is reachable', () => {
    const m = GuestMemory.create(1 << 30);
    m.store64((1 << 30) - 8, 0xdead_beef_0000_0001n);
    expect(m.load64((1 << 30) - 8)).toBe(0xdead_beef_0000_0001n);
    expect(m.contains((1 << 30) - 8)).toBe(true);
    expect(m.contains(1 << 30)).toBe(false);
  });

  it('rejects sizes that are not whole pages, and says why', () => {
    expect(() => GuestMemory.create(1000)).toThrow(GuestMemoryError);
    expect(() => GuestMemory.create(4096 * 3 + 8)).toThrow(/multiple of 4096/);
    expect(() => GuestMemory.create(0)).toThrow(GuestMemoryError);
  });

  it('rejects accesses outside memory or misaligned', () => {
    const m = GuestMemory.create(1 << 20);
    expect(() => m.load64(1 << 20)).toThrow(GuestMemoryError);
    expect(() => m.load64(4)).toThrow(/misaligned/);
    expect(() => m.store32(2, 1)).toThrow(GuestMemoryError);
    expect(() => m.paOf(asGpa(1 << 20))).toThrow(/outside/);
    expect(m.paOf(asGpa(0x1000))).toBe(0x1000);
  });

  it('keeps 64-bit values whole, bit 63 included', () => {
    const m = GuestMemory.create(1 << 20);
    m.store64(8, (1n << 64n) - 1n);
    expect(m.load64(8)).toBe((1n << 64n) - 1n);
    m.store64(16, -1n);
    expect(m.load64(16)).toBe((1n << 64n) - 1n);
  });

  it('compare-exchange: on success writes and returns the old value; on failure writes nothing', () => {
    const m = GuestMemory.create(1 << 20);
    m.store64(0, 5n);
    expect(m.cmpxchg64(0, 5n, 7n)).toBe(5n);
    expect(m.load64(0)).toBe(7n);
    expect(m.cmpxchg64(0, 5n, 9n)).toBe(7n);
    expect(m.load64(0)).toBe(7n);
    m.store32(8, 1);
    expect(m.cmpxchg32(8, 2, 3)).toBe(1);
    expect(m.load32(8)).toBe(1);
  });

  it('OR and AND-NOT are atomic read-modify-writes returning the old value', () => {
    const m = GuestMemory.create(1 << 20);
    expect(m.or64(0, 0x21n)).toBe(0n);
    expect(m.andNot64(0, 1n)).toBe(0x21n);
    expect(m.load64(0)).toBe(0x20n);
    expect(m.or32(8, 0x80000000)).toBe(0);
    expect(m.andNot32(8, 0x80000000)).toBe(0x80000000);
  });

  it('32-bit slots alias the 64-bit ones, little endian', () => {
    const m = GuestMemory.create(1 << 20);
    m.store64(0x100, 0x1111_2222_3333_4444n);
    expect(m.load32(0x100)).toBe(0x3333_4444);
    expect(m.load32(0x104)).toBe(0x1111_2222);
    m.write64Split(0x204, 0xaaaa_bbbb_cccc_ddddn);
    expect(m.load32(0x204)).toBe(0xcccc_dddd);
    expect(m.load32(0x208)).toBe(0xaaaa_bbbb);
    expect(m.read64Split(0x204)).toBe(0xaaaa_bbbb_cccc_ddddn);
  });

  it('read64Split reads 8 bytes at any byte address, little endian', () => {
    const m = GuestMemory.create(1 << 20);
    m.store64(0x300, 0x8877_6655_4433_2211n);
    m.store64(0x308, 0x00ff_eedd_ccbb_aa99n);
    expect(m.read64Split(0x303)).toBe(0xbbaa_9988_7766_5544n);
    m.store64((1 << 20) - 8, 0x0102_0304_0506_0708n);
    expect(m.read64Split((1 << 20) - 8)).toBe(0x0102_0304_0506_0708n);
    expect(() => m.read64Split((1 << 20) - 7)).toThrow(GuestMemoryError);
  });

  it('attach: a second view (another worker) sees the same memory', () => {
    const a = GuestMemory.create(1 << 20);
    const b = GuestMemory.attach(a.buffer);
    a.store64(0x1000, 42n);
    expect(b.load64(0x1000)).toBe(42n);
  });

  it('clearPage zeroes exactly one page', () => {
    const m = GuestMemory.create(1 << 20);
    m.store64(0x1ff8, 1n);
    m.store64(0x2000, 2n);
    m.store64(0x3000, 3n);
    m.clearPage(0x2000);
    expect([m.load64(0x1ff8), m.load64(0x2000), m.load64(0x3000)]).toEqual([1n, 0n, 3n]);
    expect(() => m.clearPage(0x2008)).toThrow(GuestMemoryError);
  });
});

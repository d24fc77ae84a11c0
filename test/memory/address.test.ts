import { describe, expect, it } from 'vitest';
import { AddressError, asGfn, asGpa, asGva, gfnToGpa, gpaToGfn, hexAddr, offsetInPage } from '../../src/memory/address.js';

describe('typed guest addresses', () => {
  it('convert between gpa and gfn', () => {
    expect(gpaToGfn(asGpa(0x12345678n))).toBe(0x12345n);
    expect(gfnToGpa(asGfn(0x12345n))).toBe(0x12345000n);
    expect(offsetInPage(asGpa(0x12345678n))).toBe(0x678);
  });

  it('accept numbers and BigInts within 64 bits; a negative gva is two\'s complement', () => {
    expect(asGpa(4096)).toBe(4096n);
    expect(asGva(-4096n)).toBe(0xffff_ffff_ffff_f000n);
    expect(() => asGpa(-1)).toThrow(AddressError);
    expect(() => asGpa(1n << 64n)).toThrow(AddressError);
    expect(() => asGpa(2 ** 60)).toThrow(/safe integer/);
  });

  it('print lower-case hex with 0x', () => {
    expect(hexAddr(0xABCn)).toBe('0xabc');
    expect(hexAddr(-1n)).toBe('0xffffffffffffffff');
  });
});

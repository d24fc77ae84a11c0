/**
 * Typed guest addresses (after rust-vmm vm-memory's GuestAddress): a guest
 * physical address, a guest virtual address and a guest frame number are all
 * 64-bit integers, branded so that one cannot be passed where another is
 * expected. Values are unsigned 64-bit BigInts.
 */

/** A guest physical address (KVM's `gpa_t`). For L2, an L2 GPA is still a Gpa of L2's space. */
export type Gpa = bigint & { readonly __brand: 'Gpa' };
/** A guest virtual (linear) address (KVM's `gva_t`). */
export type Gva = bigint & { readonly __brand: 'Gva' };
/** A guest frame number, gpa >> 12 (KVM's `gfn_t`). */
export type Gfn = bigint & { readonly __brand: 'Gfn' };

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;
const PAGE_SHIFT_N = 12n;
const U64_LIMIT = 1n << 64n;

export class AddressError extends RangeError {
  override name = 'AddressError';
}

function checkU64(v: bigint | number, what: string): bigint {
  const n = typeof v === 'number' ? numberToBigInt(v, what) : v;
  if (n < 0n || n >= U64_LIMIT) throw new AddressError(`${what}: ${String(v)} is not an unsigned 64-bit value`);
  return n;
}

function numberToBigInt(v: number, what: string): bigint {
  if (!Number.isSafeInteger(v)) throw new AddressError(`${what}: ${v} is not a safe integer`);
  return BigInt(v);
}

/** A Gpa from a number or BigInt; throws AddressError outside 0..2^64-1. */
export const asGpa = (v: bigint | number): Gpa => checkU64(v, 'gpa') as Gpa;
/** A Gva from a number or BigInt; negative BigInts are taken as 64-bit two's complement. */
export const asGva = (v: bigint | number): Gva =>
  (typeof v === 'bigint' && v < 0n ? BigInt.asUintN(64, v) : checkU64(v, 'gva')) as Gva;
export const asGfn = (v: bigint | number): Gfn => checkU64(v, 'gfn') as Gfn;

/** gpa_to_gfn. */
export const gpaToGfn = (gpa: Gpa): Gfn => (gpa >> PAGE_SHIFT_N) as Gfn;
/** gfn_to_gpa. */
export const gfnToGpa = (gfn: Gfn): Gpa => BigInt.asUintN(64, gfn << PAGE_SHIFT_N) as Gpa;
/** offset_in_page. */
export const offsetInPage = (addr: Gpa | Gva): number => Number(addr & 0xfffn);

/** Lower-case hex with 0x, no padding (the CLI's notation). */
export const hexAddr = (v: bigint): string => '0x' + BigInt.asUintN(64, v).toString(16);

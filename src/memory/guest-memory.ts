/**
 * Guest physical memory: one SharedArrayBuffer per VM, shared by every vCPU
 * worker (DESIGN.md "Data plane"). This is the only module that reads or
 * writes guest memory, and it does so only through `Atomics`, on 64-bit
 * (BigUint64Array) or 32-bit (Uint32Array, for 32-bit paging entries) slots,
 * so an entry is never seen half-written (STYLE.md pattern 8).
 *
 * Who writes, who reads, what orders it (the `ram` field below says the same):
 * - writers: the page-table builder (on whichever thread runs the workload:
 *   whole-entry stores for new entries, atomic OR/AND for edits, a
 *   compare-exchange loop for remaps) and every vCPU's guest walker, which
 *   only sets accessed/dirty bits, by compare-exchange (tmpl.h
 *   FNAME(cmpxchg_gpte)). Nothing else writes.
 * - readers: every vCPU's walker, the builder, checkers.
 * - ordering: every access is a sequentially consistent `Atomics` operation
 *   on a whole entry. A compare-exchange that finds another value writes
 *   nothing; the walker then restarts its walk (KVM's `retry_walk`), so two
 *   vCPUs racing on one entry never lose each other's bits.
 *
 * Addresses: the public methods take a guest physical byte address as a
 * plain number (`pa`), always below `size` (at most 2^40 here, so exact in a
 * double). Use `paOf(gpa)` to turn a typed Gpa into one with a range check.
 */
import { allocate, bindRecord, defineLayout } from '../layout/layout.js';
import { hexAddr, PAGE_SIZE, type Gpa } from './address.js';

/** Default size of a VM's guest memory. */
export const DEFAULT_GUEST_MEMORY_BYTES = 64 * 1024 * 1024;
/** Largest guest memory this model allocates (1 TiB; the host decides what actually fits). */
export const MAX_GUEST_MEMORY_BYTES = 2 ** 40;

export class GuestMemoryError extends RangeError {
  override name = 'GuestMemoryError';
}

/** The layout of guest memory: one field, the RAM, declared once. */
function guestMemoryLayout(bytes: number) {
  return defineLayout('guest-memory', {
    ram: {
      type: 'u64',
      count: bytes / 8,
      doc:
        'guest physical memory. Written by the page-table builder (Atomics store/or/and/compareExchange) and by ' +
        'vCPU walkers (accessed/dirty bits by Atomics.compareExchange only); read by walkers, builder and ' +
        'checkers with Atomics.load. Whole entries only; a lost compare-exchange restarts the walk.',
    },
  });
}

function checkSize(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < PAGE_SIZE || bytes % PAGE_SIZE !== 0 || bytes > MAX_GUEST_MEMORY_BYTES) {
    throw new GuestMemoryError(
      `guest memory size must be a multiple of ${PAGE_SIZE} bytes between ${PAGE_SIZE} and ${MAX_GUEST_MEMORY_BYTES}, got ${bytes}`,
    );
  }
}

export class GuestMemory {
  /** Size in bytes; guest physical addresses 0..size-1 exist ("have a memslot"). */
  readonly size: number;
  private readonly q: BigUint64Array;
  private readonly d: Uint32Array;

  private constructor(readonly buffer: SharedArrayBuffer) {
    checkSize(buffer.byteLength);
    this.size = buffer.byteLength;
    this.q = bindRecord(guestMemoryLayout(this.size), buffer).ram;
    // The same field seen as 32-bit slots, for 4-byte guest page-table entries.
    this.d = new Uint32Array(buffer, this.q.byteOffset, this.q.length * 2);
  }

  /** A fresh, zero-filled guest memory of `bytes` bytes. */
  static create(bytes: number = DEFAULT_GUEST_MEMORY_BYTES): GuestMemory {
    checkSize(bytes);
    let buffer: SharedArrayBuffer;
    try {
      buffer = allocate(guestMemoryLayout(bytes));
    } catch (e) {
      throw new GuestMemoryError(`cannot allocate ${bytes} bytes of guest memory: ${(e as Error).message}`);
    }
    return new GuestMemory(buffer);
  }

  /** Views over a buffer made by `create` (in another worker). */
  static attach(buffer: SharedArrayBuffer): GuestMemory {
    return new GuestMemory(buffer);
  }

  /** Whether `bytes` bytes at `pa` are guest memory (KVM: the gfn has a memslot). */
  contains(pa: number, bytes = 8): boolean {
    return pa >= 0 && pa + bytes <= this.size;
  }

  /** A typed Gpa as a byte address, checked against the size and an alignment. */
  paOf(gpa: Gpa, align: 1 | 4 | 8 = 8): number {
    if (gpa >= BigInt(this.size) || (gpa & BigInt(align - 1)) !== 0n) {
      throw new GuestMemoryError(`gpa ${hexAddr(gpa)} is outside the ${this.size}-byte guest memory or not ${align}-byte aligned`);
    }
    return Number(gpa);
  }

  private i64(pa: number): number {
    if (pa % 8 !== 0 || !this.contains(pa, 8)) throw new GuestMemoryError(`64-bit access at ${hexAddr(BigInt(pa))}: outside memory or misaligned`);
    return pa / 8;
  }

  private i32(pa: number): number {
    if (pa % 4 !== 0 || !this.contains(pa, 4)) throw new GuestMemoryError(`32-bit access at ${hexAddr(BigInt(pa))}: outside memory or misaligned`);
    return pa / 4;
  }

  /** Whole 64-bit entry, sequentially consistent. */
  load64(pa: number): bigint {
    return Atomics.load(this.q, this.i64(pa));
  }

  store64(pa: number, value: bigint): void {
    Atomics.store(this.q, this.i64(pa), BigInt.asUintN(64, value));
  }

  /**
   * Compare-exchange a 64-bit entry; returns the value found. Failure
   * contract: when the result differs from `expected`, nothing was written.
   */
  cmpxchg64(pa: number, expected: bigint, replacement: bigint): bigint {
    return Atomics.compareExchange(this.q, this.i64(pa), expected, replacement);
  }

  /** Atomically OR bits into a 64-bit entry; returns the previous value. */
  or64(pa: number, bits: bigint): bigint {
    return Atomics.or(this.q, this.i64(pa), BigInt.asUintN(64, bits));
  }

  /** Atomically clear bits in a 64-bit entry; returns the previous value. */
  andNot64(pa: number, bits: bigint): bigint {
    return Atomics.and(this.q, this.i64(pa), BigInt.asUintN(64, ~bits));
  }

  /** Whole 32-bit entry (32-bit paging), sequentially consistent. */
  load32(pa: number): number {
    return Atomics.load(this.d, this.i32(pa));
  }

  store32(pa: number, value: number): void {
    Atomics.store(this.d, this.i32(pa), value >>> 0);
  }

  /** 32-bit compare-exchange; same failure contract as cmpxchg64. */
  cmpxchg32(pa: number, expected: number, replacement: number): number {
    return Atomics.compareExchange(this.d, this.i32(pa), expected >>> 0, replacement >>> 0);
  }

  or32(pa: number, bits: number): number {
    return Atomics.or(this.d, this.i32(pa), bits >>> 0);
  }

  andNot32(pa: number, bits: number): number {
    return Atomics.and(this.d, this.i32(pa), ~bits >>> 0);
  }

  /**
   * 64 bits at any byte address, little endian, from the aligned 64-bit
   * words that hold them (KVM's byte-wise guest reads, e.g. a PDPTE at an
   * odd nested CR3). Not tear-free when unaligned: never for a racy entry.
   */
  read64Split(pa: number): bigint {
    if (pa % 8 === 0) return this.load64(pa);
    if (!Number.isSafeInteger(pa) || !this.contains(pa, 8)) throw new GuestMemoryError(`64-bit read at ${hexAddr(BigInt(pa))}: outside memory`);
    const r = pa % 8;
    const shift = BigInt(r * 8);
    const a = this.load64(pa - r);
    const b = this.load64(pa - r + 8);
    return BigInt.asUintN(64, (a >> shift) | (b << (64n - shift)));
  }

  /**
   * 64 bits at a 4-byte-aligned address as two 32-bit stores (little endian):
   * for loading test images only (32-bit page tables), never for a racy entry.
   */
  write64Split(pa: number, value: bigint): void {
    if (pa % 8 === 0) return this.store64(pa, value);
    const v = BigInt.asUintN(64, value);
    this.store32(pa, Number(v & 0xffffffffn));
    this.store32(pa + 4, Number(v >> 32n));
  }

  /** Zero one 4 KiB page; used on table pages before they are linked in (not yet shared). */
  clearPage(pa: number): void {
    const first = this.i64(pa);
    if (pa % PAGE_SIZE !== 0 || !this.contains(pa, PAGE_SIZE)) throw new GuestMemoryError(`clearPage: ${hexAddr(BigInt(pa))} is not a page in memory`);
    for (let i = 0; i < PAGE_SIZE / 8; i++) Atomics.store(this.q, first + i, 0n);
  }
}

/**
 * The page hash, kvm->arch.mmu_page_hash (Linux v5.17 mmu.c
 * kvm_page_table_hashfn = hash_64(gfn, KVM_MMU_HASH_SHIFT), hlist_add_head,
 * hlist_del). Buckets are doubly linked through the pages' hashNext /
 * hashPrev words; every function here requires mmu_lock.
 */
import type { ShadowVm } from './arena.js';
import { HASH_SHIFT, NIL } from './layout.js';

/** GOLDEN_RATIO_64 (include/linux/hash.h) as 32-bit halves. */
const K_HI = 0x61c88646;
const K_LO = 0x80b583eb;

/** High 32 bits of the 64-bit product of two unsigned 32-bit numbers, from 16-bit limbs. */
function mulHi32(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const mid = ((a0 * b0) >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  return (a1 * b1 + Math.floor(p01 / 0x10000) + Math.floor(p10 / 0x10000) + Math.floor(mid / 0x10000)) >>> 0;
}

/**
 * hash_64(gfn, 12): the top 12 bits of the low 64 bits of gfn ×
 * GOLDEN_RATIO_64, computed exactly in 32-bit pieces (gfn below 2^53).
 */
export function hashGfn(gfn: number): number {
  const lo = gfn >>> 0;
  const hi = Math.floor(gfn / 0x1_0000_0000) >>> 0;
  const top = (mulHi32(lo, K_LO) + Math.imul(lo, K_HI) + Math.imul(hi, K_LO)) >>> 0;
  return top >>> (32 - HASH_SHIFT);
}

/** hlist_add_head(&sp->hash_link, bucket). */
export function hashInsert(vm: ShadowVm, page: number, bucket: number): void {
  const heads = vm.h.hashHeads;
  const b = page * vm.sw32;
  const first = heads[bucket]!;
  vm.i32[b + vm.oHashNext] = first;
  vm.i32[b + vm.oHashPrev] = NIL;
  if (first !== NIL) vm.i32[first * vm.sw32 + vm.oHashPrev] = page;
  heads[bucket] = page;
}

/** hlist_del(&sp->hash_link). */
export function hashRemove(vm: ShadowVm, page: number): void {
  const b = page * vm.sw32;
  const next = vm.i32[b + vm.oHashNext]!;
  const prev = vm.i32[b + vm.oHashPrev]!;
  if (prev !== NIL) vm.i32[prev * vm.sw32 + vm.oHashNext] = next;
  else vm.h.hashHeads[hashGfn(vm.gfnOf(page))] = next;
  if (next !== NIL) vm.i32[next * vm.sw32 + vm.oHashPrev] = prev;
  vm.i32[b + vm.oHashNext] = vm.i32[b + vm.oHashPrev] = NIL;
}

/** First page of a bucket, and the next one after `page`. */
export const bucketFirst = (vm: ShadowVm, bucket: number): number => vm.h.hashHeads[bucket]!;
export const bucketNext = (vm: ShadowVm, page: number): number => vm.i32[page * vm.sw32 + vm.oHashNext]!;

/** Every page (valid or not) hashed under `gfn`'s bucket with that gfn. */
export function pagesOfGfn(vm: ShadowVm, gfn: number): number[] {
  const out: number[] = [];
  for (let p = bucketFirst(vm, hashGfn(gfn)); p !== NIL; p = bucketNext(vm, p)) if (vm.gfnOf(p) === gfn) out.push(p);
  return out;
}

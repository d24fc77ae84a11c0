/**
 * The guest page walker (Linux v5.17 paging_tmpl.h FNAME(walk_addr_generic)
 * in its three instances — 32-bit, 64-bit/PAE, EPT — with FNAME(gva_to_gpa),
 * nonpaging_gva_to_gpa, kvm_translate_gpa and translate_nested_gpa).
 *
 * Driven only by the context (walker slot, root level, reserved masks,
 * permission bitmasks, role bits): it never reads CR0/CR4/EFER, so a stale
 * context gives the stale answer KVM would give.
 *
 * Shared memory: entries are read whole with Atomics (GuestMemory); the only
 * writes are the accessed/dirty compare-exchanges of accessed-dirty.ts, made
 * after every check has passed, so a faulting walk writes nothing to the
 * tables it walked (a nested walk may already have set A/D in L1's EPT
 * entries for the L2 tables it read, as hardware does).
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { updateAccessedDirtyBits } from './accessed-dirty.js';
import { ACC, entryFrame, GEOMETRY, hi32, hi32u, leafAddress, lo32, pageSizeAt, PFERR, pse36Delta, ptIndex, PTE_HI, type WalkerGeometry } from './format.js';
import type { WalkMmu } from './mmu-view.js';
import { gpteAccess, gptePkey, isLastGpte, isPresentGpte, isRsvdBitsSet, permissionFault, protectCleanGpte, type WalkEnv } from './permission.js';
import { GuestWalker, WalkerError, type NestedTdp, type WalkRoot } from './walker-state.js';

const U64_END = 1n << 64n;
const OK = 1;
const FAULT = 0;
const RETRY = 2;
type Outcome = typeof OK | typeof FAULT | typeof RETRY;

/**
 * FNAME(gva_to_gpa) / nonpaging_gva_to_gpa, chosen by the context's
 * `gva_to_gpa` slot. Fills `w` (gpa, pageSize, access...) or `w.fault`.
 * `nested`: the guest_mmu side when `mmu` is nested_mmu (kvm_translate_gpa
 * translates only for nested_mmu); `isWalkMmu`: whether `mmu` is
 * vcpu->arch.walk_mmu (its faults are then not "nested").
 */
export function gvaToGpa(
  w: GuestWalker,
  mmu: WalkMmu,
  mem: GuestMemory,
  root: WalkRoot,
  addr: bigint,
  env: WalkEnv,
  nested: NestedTdp | null = null,
  isWalkMmu = true,
): boolean {
  const kind = mmu.gvaToGpa;
  if (kind === null) throw new WalkerError('the context has no walker (gva_to_gpa is unset: never initialised)');
  if (kind !== 'nonpaging') return walkAddrGeneric(w, GEOMETRY[kind], mmu, mem, root, addr, env, nested, isWalkMmu);
  // nonpaging_gva_to_gpa: the address itself, through kvm_translate_gpa.
  w.retries = 0;
  w.level = 0;
  w.maxLevel = 0;
  w.access = w.pteAccess = ACC.ALL;
  w.pkey = 0;
  w.pageSize = 4096;
  w.outerGpa = addr;
  if (nested === null) {
    w.gpa = addr;
    return true;
  }
  if (!translateNestedGpa(nested, mem, addr, env.pfec, env, w, 0)) return false;
  w.gpa = nested.walker.gpa;
  return true;
}

/** FNAME(walk_addr_generic): walk until done, restarting after a lost A/D race (retry_walk). */
export function walkAddrGeneric(
  w: GuestWalker,
  g: WalkerGeometry,
  mmu: WalkMmu,
  mem: GuestMemory,
  root: WalkRoot,
  addr: bigint,
  env: WalkEnv,
  nested: NestedTdp | null,
  isWalkMmu: boolean,
): boolean {
  const level = mmu.rootLevel;
  if (!Number.isInteger(level) || level < 1 || level > g.maxLevels) {
    throw new WalkerError(`the ${g.kind} walker cannot walk from root level ${level}`);
  }
  w.retries = 0;
  for (;;) {
    const r: Outcome = walkOnce(w, g, mmu, mem, root, addr, env, nested, isWalkMmu);
    if (r !== RETRY) return r === OK;
    w.retries++;
  }
}

/** One pass of walk_addr_generic, from retry_walk to return. */
function walkOnce(
  w: GuestWalker,
  g: WalkerGeometry,
  mmu: WalkMmu,
  mem: GuestMemory,
  root: WalkRoot,
  addr: bigint,
  env: WalkEnv,
  nested: NestedTdp | null,
  isWalkMmu: boolean,
): Outcome {
  w.addrLo = lo32(addr);
  w.addrHi = addr >= 0n && addr < U64_END ? hi32u(addr, w.addrLo) : hi32(addr);
  // PT_HAVE_ACCESSED_DIRTY: always for x86, mmu->ept_ad for EPT.
  const haveAd = g.kind === 'ept' ? mmu.eptAd : true;
  let level = mmu.rootLevel;
  w.level = level;
  w.accLo = w.accHi = 0xffffffff;
  // The "entry" above the top table is the root pointer (32-bit: pt_element_t is u32).
  if (w.pgd !== root.pgd) w.setPgd(root.pgd);
  w.lo = w.pgdLo;
  w.hi = g.entryBytes === 4 ? 0 : w.pgdHi;
  const check = mmu.guestRsvdCheck;
  w.useRsvdMasks(check.mask);
  if (g.kind === 'ept') {
    w.badLo = lo32(check.badMtXwr);
    w.badHi = hi32(check.badMtXwr);
  }
  if (g.kind === 'paging64' && level === 3) {
    // PAE: the PDPTE comes from get_pdptr, checked only when it was loaded.
    const pdpte = getPdptr(mem, root, (w.addrLo >>> 30) & 3);
    w.lo = lo32(pdpte);
    w.hi = hi32(pdpte);
    if ((w.lo & 1) === 0) return raiseFault(w, g, mmu, env, addr, 0, isWalkMmu);
    level--;
  }
  w.maxLevel = level;
  // Table reads through L1's tables are writes when A/D exist (tmpl.h FIXME: even PDPTE loads).
  const nestedAccess = (haveAd ? PFERR.WRITE : 0) | PFERR.USER;
  for (;;) {
    w.level = level;
    const r = readLevel(w, g, mmu, mem, addr, env, nested, isWalkMmu, nestedAccess);
    if (r !== OK) return r;
    if (isLastGpte(mmu, g, level, w.lo)) break;
    level--;
  }
  return finishWalk(w, g, mmu, mem, addr, env, nested, isWalkMmu, haveAd);
}

/** One iteration of the walk loop: locate, (translate,) read and check the entry at w.level. */
function readLevel(
  w: GuestWalker,
  g: WalkerGeometry,
  mmu: WalkMmu,
  mem: GuestMemory,
  addr: bigint,
  env: WalkEnv,
  nested: NestedTdp | null,
  isWalkMmu: boolean,
  nestedAccess: number,
): Outcome {
  const level = w.level;
  const index = ptIndex(g, w.addrLo, w.addrHi, level);
  const tableGpa = entryFrame(g, w.lo, w.hi);
  w.tableGpa[level - 1] = tableGpa;
  w.pteGpa[level - 1] = tableGpa + index * g.entryBytes;
  let table = tableGpa;
  if (nested !== null) {
    if (!translateNestedGpa(nested, mem, BigInt(tableGpa), nestedAccess, env, w, level)) return FAULT;
    table = Number(nested.walker.gpa);
  }
  const pa = table + index * g.entryBytes;
  // kvm_vcpu_gfn_to_hva_prot failing (no memslot) is an error with no error-code bits.
  if (!mem.contains(pa, g.entryBytes)) return raiseFault(w, g, mmu, env, addr, 0, isWalkMmu);
  let pte: bigint;
  let lo: number;
  let hi = 0;
  if (g.entryBytes === 8) {
    pte = mem.load64(pa);
    lo = lo32(pte);
    hi = hi32u(pte, lo);
  } else {
    lo = mem.load32(pa);
    pte = BigInt(lo);
  }
  w.lo = lo;
  w.hi = hi;
  w.ptePa[level - 1] = pa;
  w.accLo &= lo;
  w.accHi &= hi ^ g.nxHi;
  if (!isPresentGpte(g, lo)) return raiseFault(w, g, mmu, env, addr, 0, isWalkMmu);
  if (isRsvdBitsSet(w.rsvdWords, g, lo, hi, level, w.badLo, w.badHi)) return raiseFault(w, g, mmu, env, addr, PFERR.RSVD | PFERR.PRESENT, isWalkMmu);
  w.ptes[level - 1] = pte;
  return OK;
}

/** The end of walk_addr_generic: permissions, the gfn, final translation, A/D. */
function finishWalk(
  w: GuestWalker,
  g: WalkerGeometry,
  mmu: WalkMmu,
  mem: GuestMemory,
  addr: bigint,
  env: WalkEnv,
  nested: NestedTdp | null,
  isWalkMmu: boolean,
  haveAd: boolean,
): Outcome {
  const level = w.level;
  const lo = w.lo;
  w.pkey = gptePkey(g, w.hi);
  let accessedDirty = haveAd ? (w.accLo >>> g.accessedBit) & 1 : 0;
  const anyNx = g.nxHi !== 0 && (w.accHi & PTE_HI.NX) === 0;
  const access = gpteAccess(g, w.accLo, anyNx);
  w.access = access;
  const errcode = permissionFault(mmu, env, access, w.pkey, env.pfec);
  if (errcode !== 0) return raiseFault(w, g, mmu, env, addr, errcode, isWalkMmu);

  let gpa = leafAddress(g, lo, w.hi, level, w.addrLo, w.addrHi);
  // is_cpuid_PSE36() is hard-wired to 1: a 32-bit large page always adds PDE bits 16:13.
  if (g.kind === 'paging32' && level > 1) gpa += pse36Delta(lo);
  const offset = w.addrLo & 0xfff;
  if (nested !== null) {
    w.outerGpa = BigInt(gpa);
    if (!translateNestedGpa(nested, mem, BigInt(gpa - offset), env.pfec, env, w, 0)) return FAULT;
    gpa = Number(nested.walker.gpa) + offset;
    w.gpa = BigInt(gpa);
  } else w.gpa = w.outerGpa = BigInt(gpa);
  w.pageSize = pageSizeAt(g, level);

  const writeFault = (env.pfec & PFERR.WRITE) !== 0;
  if (!writeFault) w.pteAccess = protectCleanGpte(g, haveAd, access, lo);
  else {
    w.pteAccess = access;
    // On a write the leaf's D joins A in accessed_dirty.
    accessedDirty &= (lo >>> g.dirtyBit) & 1;
  }
  if (accessedDirty === 0 && updateAccessedDirtyBits(w, g, mem, haveAd, writeFault)) return RETRY;
  return OK;
}

/**
 * The error path of walk_addr_generic: add the access's W and U bits, and F
 * only if the role has EFER.NX or CR4.SMEP; EPT violations also get their
 * exit-qualification bits. The fault is nested iff this MMU is not walk_mmu.
 */
function raiseFault(w: GuestWalker, g: WalkerGeometry, mmu: WalkMmu, env: WalkEnv, addr: bigint, errcode: number, isWalkMmu: boolean): Outcome {
  const pfec = env.pfec;
  errcode |= pfec & (PFERR.WRITE | PFERR.USER);
  if ((pfec & PFERR.FETCH) !== 0) {
    const reader = 'FNAME(walk_addr_generic)';
    if (mmu.eferNx(reader) || mmu.ext('cr4_smep', reader)) errcode |= PFERR.FETCH;
  }
  const f = w.fault;
  f.vector = 'PF';
  f.errorCode = errcode;
  f.level = w.level;
  f.address = addr;
  f.nested = !isWalkMmu;
  f.outerLevel = 0;
  f.eptQual = 0;
  if (g.kind === 'ept' && (errcode & PFERR.RSVD) === 0) {
    // EPT_VIOLATION_ACC_READ/WRITE/INSTR and the R/W/X the walk accumulated.
    f.eptQual = (pfec & PFERR.WRITE ? 2 : 0) | (pfec & PFERR.USER ? 1 : 0) | (pfec & PFERR.FETCH ? 4 : 0) | ((w.accLo & 7) << 3);
  }
  return FAULT;
}

/**
 * get_pdptr for a PAE root: the loaded PDPTE registers, or — without them —
 * the entry read from memory at the root (nested_svm_get_tdp_pdptr; a read
 * outside memory gives 0, not present).
 */
function getPdptr(mem: GuestMemory, root: WalkRoot, index: number): bigint {
  if (root.pdptes) return root.pdptes[index] ?? 0n;
  const pa = root.pgd + BigInt(index * 8);
  if (pa + 8n > BigInt(mem.size)) return 0n;
  return mem.read64Split(Number(pa));
}

/**
 * kvm_translate_gpa → translate_nested_gpa: an L2 address walked through
 * guest_mmu as a user access ("NPT walks are always user-walks"). On failure
 * the inner walker's fault becomes the outer walker's, marked nested.
 */
export function translateNestedGpa(n: NestedTdp, mem: GuestMemory, gpa: bigint, access: number, env: WalkEnv, outer: GuestWalker, outerLevel: number): boolean {
  const ienv = n.env;
  ienv.pfec = access | PFERR.USER;
  ienv.cpl = env.cpl;
  ienv.eflagsAc = env.eflagsAc;
  ienv.pkru = env.pkru;
  if (gvaToGpa(n.walker, n.mmu, mem, n.root, gpa, ienv, null, false)) return true;
  const from = n.walker.fault;
  const to = outer.fault;
  to.vector = from.vector;
  to.errorCode = from.errorCode;
  to.level = from.level;
  to.address = from.address;
  to.nested = true;
  to.outerLevel = outerLevel;
  to.eptQual = from.eptQual;
  return false;
}

/** A fresh walker (for callers that do not keep one). */
export const newWalker = (): GuestWalker => new GuestWalker();

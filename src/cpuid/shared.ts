/**
 * The CPUID model's shared-memory encoding: three 32-bit words (vendor index,
 * MAXPHYADDR, feature flags). Encoded by the writer, decoded by the reader;
 * the words are published with Atomics.store before the request that refers
 * to them, and read with Atomics.load after it (see src/vcpu/requests.ts).
 */
import { GUEST_VENDORS, normaliseCpuid, type CpuidModel } from './cpuid.js';

export const CPUID_WORDS = 3;

const FLAGS = ['gbpages', 'pse36', 'pku', 'la57', 'smep', 'smap', 'nx'] as const;

export function encodeCpuid(c: CpuidModel, out: Int32Array, offset = 0): void {
  const n = normaliseCpuid(c);
  let flags = 0;
  FLAGS.forEach((f, i) => {
    if (n[f]) flags |= 1 << i;
  });
  Atomics.store(out, offset, GUEST_VENDORS.indexOf(n.vendor));
  Atomics.store(out, offset + 1, n.maxPhyAddr);
  Atomics.store(out, offset + 2, flags);
}

export function decodeCpuid(words: Int32Array, offset = 0): CpuidModel {
  const vendor = GUEST_VENDORS[Atomics.load(words, offset)];
  if (!vendor) throw new RangeError(`CPUID word ${offset}: bad vendor index ${Atomics.load(words, offset)}`);
  const flags = Atomics.load(words, offset + 2);
  const bit = (f: (typeof FLAGS)[number]) => (flags & (1 << FLAGS.indexOf(f))) !== 0;
  return {
    vendor,
    maxPhyAddr: Atomics.load(words, offset + 1),
    gbpages: bit('gbpages'),
    pse36: bit('pse36'),
    pku: bit('pku'),
    la57: bit('la57'),
    smep: bit('smep'),
    smap: bit('smap'),
    nx: bit('nx'),
  };
}

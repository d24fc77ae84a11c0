/**
 * Stress invariant 5, no lost invalidation, checked by the requester the
 * moment a waiting request (zap-all, MMU reload, CPUID update) returned:
 *
 * - no target may still run guest code in a stint that began before the
 *   request (its verified stint sequence is older than the request's);
 * - after a zap-all, no target may be in guest mode on a root of the old
 *   generation in a stint that began after the request (it must have
 *   reloaded its roots before entering).
 *
 * Reads only shared words, with the owner's publication order (vcpu-layout.ts
 * `rootPage`, `stintSeq`): stintSeq, rootPage, mode, stintSeq again; two equal
 * sequences mean the root and mode belong to that verified stint.
 */
import type { ShadowVm } from '../shadow/index.js';
import { MODE } from '../vcpu/requests.js';
import type { VcpuRecord } from '../vcpu/vcpu-layout.js';

export interface LostInvalidation {
  readonly vcpu: number;
  readonly kind: 'old-stint' | 'old-generation-root';
  readonly detail: string;
}

/** Before making a request: the sequence each target's request will get (requestAndKick adds 1 first). */
export const nextRequestSeqs = (records: readonly VcpuRecord[]): number[] => records.map((r) => Atomics.load(r.requestSeq, 0) + 1);

/**
 * After the waiting request returned. `seq`: nextRequestSeqs taken before the
 * request; `oldGeneration`: the generation a zap-all flipped away from.
 */
export function checkAfterWait(
  records: readonly VcpuRecord[],
  targets: Iterable<number>,
  seq: readonly number[],
  zap?: { readonly shadow: ShadowVm; readonly oldGeneration: number },
): LostInvalidation[] {
  const out: LostInvalidation[] = [];
  for (const id of targets) {
    const rec = records[id]!;
    const s1 = Atomics.load(rec.stintSeq, 0);
    const root = Atomics.load(rec.rootPage, 0);
    const mode = Atomics.load(rec.mode, 0);
    const s2 = Atomics.load(rec.stintSeq, 0);
    // EXITING counts: a kicked vCPU runs guest code until it notices the kick.
    if (s1 < 0 || s1 !== s2 || (mode !== MODE.IN_GUEST && mode !== MODE.EXITING_GUEST)) continue;
    if (s1 < seq[id]!) {
      out.push({ vcpu: id, kind: 'old-stint', detail: `vCPU ${id} still in guest mode in a stint verified at request ${s1}, older than the waited request ${seq[id]}` });
    } else if (zap && root >= 0 && zap.shadow.genOf(root) === zap.oldGeneration && zap.shadow.mmuValidGen !== zap.oldGeneration) {
      out.push({ vcpu: id, kind: 'old-generation-root', detail: `vCPU ${id} entered after the zap-all request but runs on root page ${root} of the old generation ${zap.oldGeneration}` });
    }
  }
  return out;
}

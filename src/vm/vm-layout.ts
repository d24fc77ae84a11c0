/**
 * The VM-wide control record: words every vCPU and the coordinator share
 * that belong to no single vCPU (one per VM, in its own SharedArrayBuffer).
 */
import { allocate, bindRecord, defineLayout, type RecordView } from '../layout/layout.js';

const VM_FIELDS = {
  editSeq: {
    type: 'i32',
    doc: 'seqlock over guest page-table edits made by the coordinator: it Atomics.add 1 (odd) before storing the entry and 1 again (even) after the write-tracking zap returned. Checkers Atomics.load it before an access and after their reference walk; equal even values mean no edit overlapped the access.',
  },
} as const;

export const VM_LAYOUT = defineLayout('vm', VM_FIELDS);
export type VmRecord = RecordView<typeof VM_FIELDS>;

export const allocateVmRecord = (): SharedArrayBuffer => allocate(VM_LAYOUT, 1);
export const bindVmRecord = (buf: SharedArrayBuffer): VmRecord => bindRecord(VM_LAYOUT, buf, 0);

import { expectedFrame, remapEverywhere, type EditTarget, type GuestTableSet } from '../workload/guest-tables.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { trackedWrite, type ShadowVm } from '../shadow/index.js';

export { expectedFrame, type EditTarget } from '../workload/guest-tables.js';

/**
 * The first half of an edit-target flip: the edit seqlock goes odd, then the
 * target's entry in every address space is rewritten to the other frame.
 * Returns the entries written and the frame they now map.
 */
export function beginEditFlip(rec: VmRecord, mem: GuestMemory, tables: GuestTableSet, t: EditTarget): { leaves: number[]; frame: number } {
  const seq = Atomics.add(rec.editSeq, 0, 1) + 1; // odd: editing
  const frame = expectedFrame(t, seq + 1);
  return { leaves: remapEverywhere(mem, tables, BigInt(t.gvaPage) << 12n, BigInt(frame)), frame };
}

/** The second half: write tracking zaps what shadowed each entry, then the seqlock goes even. */
export function commitEditFlip(rec: VmRecord, shadow: ShadowVm | null, agent: number, leaves: readonly number[]): void {
  if (shadow) for (const pa of leaves) trackedWrite(shadow, agent, pa);
  Atomics.add(rec.editSeq, 0, 1); // even: done
}

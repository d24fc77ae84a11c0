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

export { expectedFrame, type EditTarget } from '../workload/guest-tables.js';

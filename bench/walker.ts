/**
 * Guest page walks per second per paging mode (the `walker` group). Each
 * mode walks 64 consecutive 4 KiB pages round-robin, so every table level
 * stays in the CPU caches; accessed/dirty bits are set before measuring, so
 * no walk writes or faults (a fault throws). Contexts come from the MMU init
 * paths exactly as KVM builds them; tables and loop from src/paging.
 * Measured with the shared harness (tinybench, batches, interleaved rounds).
 */
import { DEFAULT_CPUID } from '../src/cpuid/cpuid.js';
import type { MmuContext } from '../src/mmu/context.js';
import { initTdpMmu, setRoleRegisters, type EptInit } from '../src/mmu/init.js';
import { runInitStep } from '../src/mmu/probe.js';
import { VcpuMmu } from '../src/mmu/vcpu-mmu.js';
import { makeWalkLoop, type TableFormat, type WalkLoopOptions } from '../src/paging/index.js';
import { DEFAULT_HOST } from '../src/role/host.js';
import { CR0, CR4, EFER } from '../src/role/regs.js';
import { measureInterleaved, prewarm, type CaseSpec } from './harness.js';
import { TIMINGS } from './types.js';

type Regs = { cr0: number; cr4: number; efer: number };

const PG = (CR0.PE | CR0.PG | CR0.WP) >>> 0;
const REGS: Record<'long4' | 'long5' | 'pae' | 'paging32', Regs> = {
  long4: { cr0: PG, cr4: CR4.PAE, efer: EFER.LME | EFER.LMA | EFER.NX },
  long5: { cr0: PG, cr4: CR4.PAE | CR4.LA57, efer: EFER.LME | EFER.LMA | EFER.NX },
  pae: { cr0: PG, cr4: CR4.PAE, efer: EFER.NX },
  paging32: { cr0: PG, cr4: CR4.PSE, efer: 0 },
};

const step = (r: Regs, guestMode: boolean) => ({ cr0: BigInt(r.cr0), cr4: BigInt(r.cr4), efer: BigInt(r.efer), smm: false, guestMode });
const eptInit = (level: 4 | 5): EptInit => ({ execonly: true, accessedDirty: true, level, hugePageLevel: 3 });

/** root_mmu of a fresh vCPU after init_kvm_tdp_mmu. */
function tdpContext(r: Regs): MmuContext {
  const v = new VcpuMmu({ host: DEFAULT_HOST, cpuid: DEFAULT_CPUID });
  return runInitStep(v, 'tdp', step(r, false), undefined).ctx;
}

/** A vCPU running L2 with EPT: guest_mmu (shadow EPT) and nested_mmu (L2's registers). */
function nestedVcpu(level: 4 | 5, l2: Regs): { guest: MmuContext; nested: MmuContext } {
  const v = new VcpuMmu({ host: DEFAULT_HOST, cpuid: DEFAULT_CPUID });
  setRoleRegisters(v, l2.cr0, l2.cr4, l2.efer, false, true);
  initTdpMmu(v);
  const guest = runInitStep(v, 'shadow-ept', step(l2, true), eptInit(level)).ctx;
  const nested = runInitStep(v, 'nested', step(l2, true), undefined).ctx;
  return { guest, nested };
}

interface Mode {
  readonly mode: string;
  readonly make: () => { mmu: MmuContext; format: TableFormat; opts?: WalkLoopOptions };
}

const READ_EPT = { user: true } as const;

/** The modes measured, in report order. */
export const WALKER_MODES: readonly Mode[] = [
  { mode: '4-level', make: () => ({ mmu: tdpContext(REGS.long4), format: { kind: 'long', levels: 4 } }) },
  { mode: '5-level', make: () => ({ mmu: tdpContext(REGS.long5), format: { kind: 'long', levels: 5 } }) },
  { mode: 'PAE', make: () => ({ mmu: tdpContext(REGS.pae), format: { kind: 'pae' } }) },
  { mode: '32-bit', make: () => ({ mmu: tdpContext(REGS.paging32), format: { kind: 'paging32' } }) },
  {
    mode: 'EPT 4-level',
    make: () => ({ mmu: nestedVcpu(4, REGS.long4).guest, format: { kind: 'ept', levels: 4, accessedDirty: true }, opts: { access: READ_EPT } }),
  },
  {
    mode: 'EPT 5-level',
    make: () => ({ mmu: nestedVcpu(5, REGS.long4).guest, format: { kind: 'ept', levels: 5, accessedDirty: true }, opts: { access: READ_EPT } }),
  },
  {
    mode: 'nested 4-level over EPT',
    make: () => {
      const { guest, nested } = nestedVcpu(4, REGS.long4);
      return { mmu: nested, format: { kind: 'long', levels: 4 }, opts: { nested: { mmu: guest, format: { kind: 'ept', levels: 4, accessedDirty: true } } } };
    },
  },
];

function caseOf(m: Mode): CaseSpec {
  return {
    id: m.mode,
    labels: { mode: m.mode },
    make: () => {
      const { mmu, format, opts } = m.make();
      const loop = makeWalkLoop(mmu, format, opts);
      return { op: loop.walk };
    },
  };
}

/** Walks per second per mode (4-level, all levels cached, no faults, no A/D writes). */
export async function benchWalker(opts: { quick: boolean }): Promise<Array<{ mode: string; walksPerSec: number }>> {
  const timing = opts.quick ? TIMINGS.quick : TIMINGS.full;
  const specs = WALKER_MODES.map(caseOf);
  prewarm(specs, timing.prewarmCalls);
  const rows = measureInterleaved(specs, timing);
  return rows.map((r) => ({ mode: r.id, walksPerSec: r.opsPerSec }));
}

/**
 * The vCPU core in one thread: exits and #GP, the strict and legacy CPUID
 * policies, the request order, and halting — against a scripted guest.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CPUID } from '../../src/cpuid/cpuid.js';
import { STRATEGIES } from '../../src/mmu/strategies.js';
import { DEFAULT_HOST } from '../../src/role/host.js';
import { CPUID_RESULT, VcpuCore, type CpuidPolicy } from '../../src/vcpu/core.js';
import type { GuestOp } from '../../src/vcpu/guest-ops.js';
import { MODE, REQ } from '../../src/vcpu/requests.js';
import { allocateVcpus, bindVcpu, STAT_INDEX } from '../../src/vcpu/vcpu-layout.js';
import { postCpuid, requestAndKick } from '../../src/vm/requests.js';
import { ScriptedProgram } from '../../src/workload/scripted-program.js';

const LONG_MODE: GuestOp[] = [
  { k: 'wrmsr-efer', v: 0x900n }, // LME | NX
  { k: 'mov-cr4', v: 0x20n }, // PAE
  { k: 'mov-cr3', v: 0x1000n },
  { k: 'mov-cr0', v: 0x80010031n }, // PG | WP | NE | ET | PE
];

function makeCore(ops: GuestOp[], policy: CpuidPolicy = 'strict') {
  const buf = allocateVcpus(1);
  const record = bindVcpu(buf, 0);
  const program = new ScriptedProgram(ops);
  const core = new VcpuCore({ id: 0, record, host: DEFAULT_HOST, cpuid: DEFAULT_CPUID, strategy: STRATEGIES['valid-bit'], policy, program });
  return { core, record, program };
}

const stat = (core: VcpuCore, s: keyof typeof STAT_INDEX) => core.rec.stats[STAT_INDEX[s]]!;

describe('exits', () => {
  it('enters long mode the architectural way; each role-changing write resets the MMU (kvm_post_set_cr0/cr4, set_efer)', () => {
    const { core } = makeCore(LONG_MODE);
    core.run(LONG_MODE.length + 1);
    expect([core.cr0, core.cr4, core.efer]).toEqual([0x80010031n, 0x20n, 0xd00n]); // LMA set by the CR0 write
    expect(core.mmu.rootMmu.roleBase).toBe(0x3784);
    expect(stat(core, 'gpFaults')).toBe(0);
    expect(stat(core, 'mmuResets')).toBe(3); // EFER.NX, CR4.PAE, CR0.PG|WP; the CR3 load is kvm_mmu_new_pgd
  });

  const refused: [string, GuestOp][] = [
    ['CR0.PG without CR0.PE', { k: 'mov-cr0', v: 0x80000000n }],
    ['CR0 bits 63:32', { k: 'mov-cr0', v: 0x1_8001_0031n }],
    ['CR0.NW without CR0.CD', { k: 'mov-cr0', v: 0xa0010031n }],
    ['a reserved CR4 bit', { k: 'mov-cr4', v: 0x20n | (1n << 28n) }],
    ['clearing CR4.PAE in long mode', { k: 'mov-cr4', v: 0n }],
    ['changing EFER.LME while paging', { k: 'wrmsr-efer', v: 0x800n }],
    ['CR3 above MAXPHYADDR', { k: 'mov-cr3', v: 1n << 50n }],
  ];
  for (const [what, op] of refused) {
    it(`${what} raises #GP and leaves registers and roles untouched`, () => {
      const { core } = makeCore([...LONG_MODE, op]);
      core.run(LONG_MODE.length);
      const before = { regs: [core.cr0, core.cr3, core.cr4, core.efer], roles: Array.from(core.rec.roles), resets: stat(core, 'mmuResets') };
      core.run(1);
      expect(stat(core, 'gpFaults')).toBe(1);
      expect([core.cr0, core.cr3, core.cr4, core.efer]).toEqual(before.regs);
      expect(Array.from(core.rec.roles)).toEqual(before.roles);
      expect(stat(core, 'mmuResets')).toBe(before.resets);
    });
  }
});

describe('CPUID policy (kvm_set_cpuid)', () => {
  const changed = { ...DEFAULT_CPUID, maxPhyAddr: 39 };

  it('strict: a change before the first run is applied and runs the invalidation', () => {
    const { core } = makeCore([]);
    expect(core.setCpuid(changed)).toBe(CPUID_RESULT.APPLIED);
    expect(core.mmu.maxPhyAddr).toBe(39);
  });

  it('strict: after the first run a changed table is refused, an identical one accepted and ignored', () => {
    const { core } = makeCore(LONG_MODE);
    core.run(2);
    expect(core.hasRun).toBe(true);
    const inits = core.mmu.rootMmu.stats.inits;
    expect(core.setCpuid(changed)).toBe(CPUID_RESULT.REFUSED);
    expect(core.setCpuid({ ...DEFAULT_CPUID })).toBe(CPUID_RESULT.IDENTICAL);
    expect(core.mmu.maxPhyAddr).toBe(DEFAULT_CPUID.maxPhyAddr);
    expect(core.mmu.rootMmu.stats.inits).toBe(inits);
  });

  it('legacy: a change after the first run is applied and resets the MMU', () => {
    const { core } = makeCore(LONG_MODE, 'legacy');
    core.run(LONG_MODE.length);
    const rebuilds = core.mmu.rootMmu.stats.rebuilds;
    expect(core.setCpuid(changed)).toBe(CPUID_RESULT.APPLIED);
    expect(core.mmu.rootMmu.stats.rebuilds).toBe(rebuilds + 1);
  });

  it('CPUID_UPDATE through the record: applied before the next entry, outcome stored before the epoch', () => {
    const { core, record } = makeCore(LONG_MODE, 'legacy');
    core.run(LONG_MODE.length);
    postCpuid([record], changed, 7);
    expect(Atomics.load(record.cpuidAppliedEpoch, 0)).toBe(0);
    core.run(1);
    expect(Atomics.load(record.cpuidAppliedEpoch, 0)).toBe(7);
    expect(Atomics.load(record.cpuidResult, 0)).toBe(CPUID_RESULT.APPLIED);
    expect(core.mmu.maxPhyAddr).toBe(39);
  });
});

describe('run loop', () => {
  it('a pending request makes the entry back out, then is handled before the guest runs', () => {
    const { core, record } = makeCore([]);
    requestAndKick(record, 0, REQ.TLB_FLUSH);
    core.run(1);
    expect(stat(core, 'tlbFlushes')).toBe(1);
    expect(Atomics.load(record.requests, 0)).toBe(0);
    expect(Atomics.load(record.mode, 0)).toBe(MODE.OUTSIDE_GUEST);
  });

  it('every guest-mode stint counts an entry and bumps outsideEpoch on the way out', () => {
    const { core, record } = makeCore([]);
    const epoch = Atomics.load(record.outsideEpoch, 0);
    core.run(10);
    expect(Atomics.load(record.outsideEpoch, 0)).toBeGreaterThan(epoch);
    expect(Atomics.load(record.guestEntries, 0)).toBeGreaterThan(0);
  });

  it('HLT halts; requests are still processed while halted; STOP ends the loop', () => {
    const { core, record } = makeCore([{ k: 'hlt' }]);
    expect(core.run(5)).toBe('halt');
    expect(core.halted).toBe(true);
    postCpuid([record], { ...DEFAULT_CPUID, gbpages: false }, 1);
    expect(core.run(5)).toBe('halt');
    expect(Atomics.load(record.cpuidAppliedEpoch, 0)).toBe(1);
    requestAndKick(record, 0, REQ.STOP);
    expect(core.run(5)).toBe('stop');
  });

  it('USERSPACE_EXIT returns to the host', () => {
    const { core, record } = makeCore([]);
    requestAndKick(record, 0, REQ.USERSPACE_EXIT);
    expect(core.run(5)).toBe('userspace');
  });
});

describe('guest accesses through the walk MMU', () => {
  it('translate through the current address space, set accessed bits, and fault beyond the mapping', async () => {
    const { GuestMemory } = await import('../../src/memory/guest-memory.js');
    const { buildGuestTables } = await import('../../src/workload/guest-tables.js');
    const memory = GuestMemory.create(8 * 1024 * 1024);
    const tables = buildGuestTables(memory, { addressSpaces: 1, pages: 8, seed: 3 });
    const cr3 = tables.cr3.long4[0]!;
    const ops: GuestOp[] = [
      { k: 'wrmsr-efer', v: 0x900n },
      { k: 'mov-cr4', v: 0x20n },
      { k: 'mov-cr3', v: cr3 },
      { k: 'mov-cr0', v: 0x80000031n }, // WP = 0: supervisor writes ignore R/W
      { k: 'access', gva: 0x1008n, write: false, fetch: false, user: false },
      { k: 'access', gva: 0x2000n, write: true, fetch: false, user: false },
      { k: 'access', gva: 0x100000n, write: false, fetch: false, user: false }, // page 256: not mapped
    ];
    const buf = allocateVcpus(1);
    const core = new VcpuCore({
      id: 0,
      record: bindVcpu(buf, 0),
      host: DEFAULT_HOST,
      cpuid: DEFAULT_CPUID,
      strategy: STRATEGIES['valid-bit'],
      policy: 'strict',
      program: new ScriptedProgram(ops, { k: 'hlt' }),
      memory,
    });
    expect(core.run(50)).toBe('halt');
    expect(stat(core, 'accesses')).toBe(3);
    expect(stat(core, 'pageFaults')).toBe(1);
    // The PML4 entry the walk went through now has A (bit 5) set.
    expect(memory.load64(Number(cr3)) & 0x20n).toBe(0x20n);
  });
});

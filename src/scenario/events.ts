/**
 * What each scheduled scenario event does to a running VM, as a VMM would do
 * it: a CPUID change (shared-memory broadcast to running vCPUs, or
 * KVM_SET_CPUID2 over the control plane while they are paused), a
 * kvm_mmu_zap_all_fast, a KVM_SET_SREGS-like control-register write, a write
 * to a guest page-table entry, pause/resume (a VMM not calling KVM_RUN).
 * Each event ends in an outcome; one that KVM would refuse is reported as
 * refused, never thrown.
 */
import { normaliseCpuid, type CpuidModel } from '../cpuid/cpuid.js';
import type { RegsWire } from '../rpc/protocol.js';
import type { Vm } from '../vm/vm.js';
import { targetIds, type CpuidPatch, type RegValue, type ScenarioEvent } from './schema.js';

export type EventResult = 'ok' | 'refused' | 'failed' | 'not-reached';

/** What happened to one event in one VM. */
export interface EventOutcome {
  /** Index in the scenario's `events` list. */
  readonly index: number;
  readonly kind: ScenarioEvent['kind'];
  /** Host flavour of the VM it ran in. */
  readonly host: string;
  readonly result: EventResult;
  /** When it ran: ms since start and total guest operations then (-1 when not reached). */
  readonly ranAtMs: number;
  readonly ranAtOps: number;
  readonly detail: string;
}

/** The state of one running scenario VM that events read and change. */
export interface EventTarget {
  readonly vm: Vm;
  /** Each vCPU's CPUID as last accepted (set-cpuid patches apply on top of it). */
  readonly cpuid: CpuidModel[];
  paused: boolean;
  cpuidBroadcasts: number;
}

const hex = (v: bigint): string => '0x' + v.toString(16);

/** A register value with table references resolved against the VM's guest tables. */
export function resolveReg(vm: Vm, v: RegValue): bigint {
  return typeof v === 'bigint' ? v : vm.tables.cr3[v.table][v.index]!;
}

export function regsWire(vm: Vm, regs: Partial<Record<keyof RegsWire, RegValue>>): Partial<RegsWire> {
  const out: Partial<Record<keyof RegsWire, string>> = {};
  for (const [k, v] of Object.entries(regs) as [keyof RegsWire, RegValue | undefined][]) if (v !== undefined) out[k] = hex(resolveReg(vm, v));
  return out;
}

export const applyPatch = (base: CpuidModel, patch: CpuidPatch): CpuidModel => normaliseCpuid({ ...base, ...patch });

type Done = { result: EventResult; detail: string };

/** Run one event; never throws for what KVM would refuse or a dead vCPU. */
export async function runEvent(t: EventTarget, e: ScenarioEvent): Promise<Done> {
  try {
    switch (e.kind) {
      case 'set-cpuid':
        return await setCpuid(t, e.cpuid, targetIds(e.vcpus, t.vm.vcpus));
      case 'zap-all':
        return await zapAll(t.vm);
      case 'write-cr': {
        const r = await t.vm.call(e.vcpu, 'setRegs', regsWire(t.vm, { [e.register]: e.value }));
        return r.ok
          ? { result: 'ok', detail: `vCPU ${e.vcpu} ${e.register} = ${hex(resolveReg(t.vm, e.value))}` }
          : { result: r.code === 'VCPU_DEAD' || r.code === 'TIMEOUT' ? 'failed' : 'refused', detail: `vCPU ${e.vcpu} ${e.register}: ${r.code}: ${r.message}` };
      }
      case 'edit-pte':
        return editPte(t.vm, Number(e.gpa), e.value);
      case 'pause':
        await t.vm.pauseAll();
        t.paused = true;
        return { result: 'ok', detail: 'every vCPU paused' };
      case 'resume':
        await t.vm.resumeAll();
        t.paused = false;
        return { result: 'ok', detail: 'every vCPU resumed' };
    }
  } catch (err) {
    return { result: 'failed', detail: (err as Error).message };
  }
}

/**
 * A CPUID change on the targets, each getting its current CPUID with the
 * patch applied. Running vCPUs: one shared-memory broadcast per distinct
 * resulting table (Vm.broadcastCpuid: CPUID_UPDATE request, wait for all).
 * Paused vCPUs do not process requests, so then it is KVM_SET_CPUID2 over the
 * control plane, one vCPU at a time, as a VMM does outside KVM_RUN.
 */
async function setCpuid(t: EventTarget, patch: CpuidPatch, ids: number[]): Promise<Done> {
  const groups = new Map<string, { model: CpuidModel; ids: number[] }>();
  for (const id of ids) {
    if (t.vm.dead.has(id)) continue;
    const model = applyPatch(t.cpuid[id]!, patch);
    const key = JSON.stringify(model);
    const g = groups.get(key) ?? groups.set(key, { model, ids: [] }).get(key)!;
    g.ids.push(id);
  }
  const applied: number[] = [];
  const identical: number[] = [];
  const refused: number[] = [];
  for (const { model, ids: group } of groups.values()) {
    if (t.paused) {
      for (const id of group) {
        const r = await t.vm.call(id, 'setCpuid', model);
        if (r.ok) (r.value === 'identical' ? identical : applied).push(id);
        else if (r.code === 'NOT_ALLOWED') refused.push(id);
        else throw new Error(`vCPU ${id}: ${r.code}: ${r.message}`);
      }
    } else {
      const r = await t.vm.broadcastCpuid(model, group);
      applied.push(...r.applied);
      identical.push(...r.identical);
      refused.push(...r.refused);
    }
    for (const id of group) if (!refused.includes(id)) t.cpuid[id] = model;
  }
  t.cpuidBroadcasts++;
  const how = t.paused ? ' (KVM_SET_CPUID2 while paused)' : '';
  const detail = `${applied.length} applied, ${identical.length} identical${refused.length ? `, ${refused.length} refused (strict policy: changed CPUID after the first run)` : ''}${how}`;
  return { result: refused.length && !applied.length && !identical.length ? 'refused' : 'ok', detail };
}

/**
 * kvm_mmu_zap_all_fast (Vm.zapAllFast): new generation, waiting MMU_RELOAD on
 * every vCPU, obsolete pages zapped. A vCPU still on an old-generation root
 * when the wait returned (invariant 5) makes the event "failed".
 */
async function zapAll(vm: Vm): Promise<Done> {
  const r = await vm.zapAllFast();
  const lost = r.lostInvalidations;
  const detail = `generation ${r.generation}, ${r.zapped} shadow page(s) zapped`;
  if (!lost.length) return { result: 'ok', detail };
  return { result: 'failed', detail: `${detail}; ${lost.length} lost invalidation(s), e.g. vCPU ${lost[0]!.vcpu}: ${lost[0]!.detail}` };
}

/** A VMM's write of a guest page-table entry (Vm.writeGuestPte: store, then the write-tracking zap). */
function editPte(vm: Vm, gpa: number, value: bigint): Done {
  const old = vm.memory.load64(gpa);
  const zapped = vm.writeGuestPte(gpa, value);
  return { result: 'ok', detail: `[${hex(BigInt(gpa))}] ${hex(old)} -> ${hex(value)}, ${zapped} shadow page(s) zapped by write tracking` };
}

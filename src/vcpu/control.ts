/**
 * The vCPU side of the control plane: ioctl-like calls a VMM makes while the
 * vCPU is outside its run loop (the host loop only lets them run between
 * slices, on a halt, or while paused). Every call answers with a result;
 * what KVM would refuse gets an explicit NOT_ALLOWED or INVALID_ARGUMENT.
 */
import { normaliseCpuid, type CpuidModel } from '../cpuid/cpuid.js';
import { hex32 } from '../role/bitfield.js';
import { fail, ok, PROTOCOL_VERSION, type FindingWire, type RegsWire, type RpcResult, type VcpuControl, type VcpuSnapshot } from '../rpc/protocol.js';
import { CPUID_RESULT, type VcpuCore } from './core.js';
import { checkSetCr0, checkSetCr3, checkSetCr4, checkSetEfer, type CrRegs, type CrState } from './cr-checks.js';
import { crState, loadRegs } from './exits.js';
import type { HostLoop } from './host-loop.js';
import { STAT_INDEX, VCPU_STATS } from './vcpu-layout.js';
import { resetContext } from '../mmu/init.js';

const hex = (v: bigint): string => '0x' + v.toString(16);

function parseReg(name: string, text: string | undefined, fallback: bigint): bigint {
  if (text === undefined) return fallback;
  if (!/^0x[0-9a-f]+$/i.test(text)) throw new RangeError(`${name}: expected a hex string, got ${JSON.stringify(text)}`);
  const v = BigInt(text);
  if (v >= 1n << 64n) throw new RangeError(`${name}: ${text} does not fit in 64 bits`);
  return v;
}

export function regsWire(core: VcpuCore): RegsWire {
  return { cr0: hex(core.cr0), cr3: hex(core.cr3), cr4: hex(core.cr4), efer: hex(core.efer) };
}

/**
 * Registers written by the VMM (KVM_SET_SREGS-like), held to a stricter rule
 * than KVM's: the target must be reachable by guest writes that each pass the
 * v5.17 checks — tried as EFER, CR4, CR3, CR0 (entering a mode) and as CR0,
 * EFER, CR4, CR3 (leaving one). Any refusal leaves everything unchanged. The
 * MMU is reset, as __set_sregs_common does when any of them differ.
 */
function setRegs(core: VcpuCore, want: Partial<RegsWire>): RpcResult<RegsWire> {
  if (core.guestMode) return fail('NOT_ALLOWED', `vCPU ${core.id} is running L2; set L1 state with a nested exit first (KVM needs KVM_SET_NESTED_STATE here)`);
  let target: CrRegs;
  try {
    target = {
      cr0: parseReg('cr0', want.cr0, core.cr0),
      cr3: parseReg('cr3', want.cr3, core.cr3),
      cr4: parseReg('cr4', want.cr4, core.cr4),
      efer: parseReg('efer', want.efer, core.efer),
    };
  } catch (e) {
    return fail('INVALID_ARGUMENT', (e as Error).message);
  }
  const state = (r: CrRegs): CrState => crState(core, r);
  type Step = [string, (s: CrState) => ReturnType<typeof checkSetCr4>];
  const efer: Step = ['efer', (s) => checkSetEfer(s, target.efer, { hostInitiated: true })];
  const cr4: Step = ['cr4', (s) => checkSetCr4(s, target.cr4)];
  const cr3: Step = ['cr3', (s) => checkSetCr3(s, target.cr3)];
  const cr0: Step = ['cr0', (s) => checkSetCr0(s, target.cr0)];
  let firstError = '';
  for (const order of [[efer, cr4, cr3, cr0], [cr0, efer, cr4, cr3]]) {
    let regs: CrRegs = { cr0: core.cr0, cr3: core.cr3, cr4: core.cr4, efer: core.efer };
    let failed = '';
    for (const [name, step] of order) {
      const r = step(state(regs));
      if (!r.ok) {
        failed = `${name}: ${r.reason}`;
        break;
      }
      regs = r.regs;
    }
    if (!failed) {
      loadRegs(core, regs);
      resetContext(core.mmu);
      core.count('mmuResets');
      core.publish();
      return ok(regsWire(core));
    }
    firstError ||= failed;
  }
  return fail('INVALID_ARGUMENT', firstError);
}

export function snapshot(core: VcpuCore, loop: HostLoop | null): VcpuSnapshot {
  core.publish();
  const r = core.rec.roles;
  const stats = Object.fromEntries(VCPU_STATS.map((s) => [s, core.rec.stats[STAT_INDEX[s]]!]));
  return {
    id: core.id,
    regs: regsWire(core),
    smm: core.smm,
    guestMode: core.guestMode,
    halted: core.halted,
    hasRun: core.hasRun,
    paused: loop?.isPaused ?? false,
    roles: { root: [hex32(r[0]!), hex32(r[1]!)], guest: [hex32(r[2]!), hex32(r[3]!)], nested: [hex32(r[4]!), hex32(r[5]!)] },
    cpuid: core.cpuid,
    stats,
  };
}

/** The control endpoint of one vCPU. */
export function vcpuControl(core: VcpuCore, loop: HostLoop, findings: () => FindingWire[] = () => []): VcpuControl {
  let stopped = false;
  const guard = <T>(fn: () => RpcResult<T>): RpcResult<T> => {
    if (stopped) return fail('STOPPED', `vCPU ${core.id} was stopped`);
    try {
      return fn();
    } catch (e) {
      return fail('INTERNAL', `vCPU ${core.id}: ${(e as Error).message}`);
    }
  };
  return {
    hello: (version) =>
      version === PROTOCOL_VERSION ? ok(PROTOCOL_VERSION) : fail('VERSION_MISMATCH', `coordinator speaks ${version}, vCPU ${core.id} speaks ${PROTOCOL_VERSION}`),
    snapshot: () => guard(() => ok(snapshot(core, loop))),
    getRegs: () => guard(() => ok(regsWire(core))),
    setRegs: (regs) => guard(() => setRegs(core, regs)),
    setCpuid: (cpuid: CpuidModel) =>
      guard(() => {
        let c: CpuidModel;
        try {
          c = normaliseCpuid(cpuid);
        } catch (e) {
          return fail('INVALID_ARGUMENT', (e as Error).message);
        }
        const r = core.setCpuid(c);
        core.publish();
        if (r === CPUID_RESULT.REFUSED) {
          return fail('NOT_ALLOWED', `vCPU ${core.id} has run: the strict policy (Linux 5.16+) refuses a changed CPUID after the first KVM_RUN`);
        }
        return ok(r === CPUID_RESULT.IDENTICAL ? 'identical' : 'applied');
      }),
    findings: () => guard(() => ok(findings())),
    pause: () => guard(() => (loop.pause(), ok(undefined))),
    resume: () => guard(() => (loop.resume(), ok(undefined))),
    stop: () =>
      guard(() => {
        stopped = true;
        loop.stop();
        return ok(undefined);
      }),
  };
}

/**
 * What a vCPU host receives to run one vCPU: its index in the VM's record
 * buffer and the configuration that is plain data (structured-clonable).
 * `startVcpu` builds the core, the host loop and the control endpoint; the
 * worker entry point only binds the endpoint to a transport.
 */
import type { CpuidModel } from '../cpuid/cpuid.js';
import { STRATEGIES, type StrategyName } from '../mmu/strategies.js';
import type { HostSettings } from '../role/host.js';
import type { VcpuControl } from '../rpc/protocol.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { RandomGuestProgram, type OpMix } from '../workload/guest-program.js';
import type { GuestTableSet } from '../workload/guest-tables.js';
import { RoleChecker } from '../check/role-checker.js';
import { vcpuControl } from './control.js';
import { VcpuCore, type CpuidPolicy } from './core.js';
import type { NestedKind } from './guest-ops.js';
import { HostLoop, type HostLoopOptions } from './host-loop.js';
import { bindVcpu } from './vcpu-layout.js';
import { ShadowVm, type ShadowVmHandle } from '../shadow/index.js';
import { remoteRequestHooks } from '../vm/requests.js';
import { VcpuShadow } from './shadow-mmu.js';
import { setMutant, type MutantName } from '../check/mutants.js';
import { VcpuChecker, type CheckLevel } from '../check/vcpu-checker.js';
import { bindVmRecord, type EditTarget } from '../vm/vm-layout.js';
import { Tracer } from '../trace/tracer.js';
import type { TraceRingsHandle } from '../trace/ring.js';

export interface VcpuConfig {
  readonly host: HostSettings;
  readonly cpuid: CpuidModel;
  readonly strategy: StrategyName;
  readonly policy: CpuidPolicy;
  readonly program: { readonly seed: number; readonly nestedKind: NestedKind; readonly mix?: Partial<OpMix>; readonly tables?: GuestTableSet; readonly hotPage?: number };
  readonly loop: HostLoopOptions;
  /**
   * Checking: the role checker (invariants 7, 8: every init, whatever the
   * level) and the stress invariants of src/check/vcpu-checker.ts (1-4, 6: on
   * every stint at `full`, one stint in `sampleEvery` at `sampled`). true = full.
   */
  readonly check?: boolean | CheckLevel;
  readonly sampleEvery?: number;
  /** The stress edit target (invariant 6), when the coordinator edits it. */
  readonly editTarget?: EditTarget;
  /** A deliberate bug to enable in this thread (src/check/mutants.ts). */
  readonly mutant?: MutantName;
}

export interface VcpuTask {
  readonly id: number;
  /** The VM's vCPU record buffer (VCPU_LAYOUT × vCPU count). */
  readonly vcpuBuffer: SharedArrayBuffer;
  /** The VM's guest physical memory (GuestMemory buffer). */
  readonly memoryBuffer?: SharedArrayBuffer;
  /** vCPUs in the VM (records in vcpuBuffer); needed to reach the others (remote requests). */
  readonly vcpuCount?: number;
  /** The VM's shadow page cache; this vCPU is agent `id` (needs memoryBuffer). */
  readonly shadow?: ShadowVmHandle;
  /** The VM-wide control record (src/vm/vm-layout.ts). */
  readonly vmRecord?: SharedArrayBuffer;
  /** The VM's trace rings (src/trace): this vCPU writes ring `id`. */
  readonly trace?: TraceRingsHandle;
  /** The trace clock (ms since the rings' epoch) instead of the wall clock: an in-thread host's step counter. Not structured-clonable: in-thread hosts only. */
  readonly traceClock?: () => number;
  readonly config: VcpuConfig;
}

export interface StartedVcpu {
  readonly core: VcpuCore;
  readonly loop: HostLoop;
  readonly control: VcpuControl;
}

/**
 * This vCPU's handle on the shared cache, with the hooks that reach the other
 * vCPUs: kvm_reload_remote_mmus and kvm_flush_remote_tlbs set the request on
 * every vCPU and kick, without waiting (they run under mmu_lock).
 */
function shadowFor(task: VcpuTask, memory: GuestMemory | undefined, tracer: Tracer | undefined): VcpuShadow | undefined {
  if (!task.shadow) return undefined;
  if (!memory) throw new RangeError('a vCPU with a shadow page cache needs the guest memory');
  const vm = ShadowVm.attach(task.shadow);
  const n = task.vcpuCount ?? 1;
  const records = Array.from({ length: n }, (_, i) => bindVcpu(task.vcpuBuffer, i));
  vm.setHooks(task.id, {
    ...remoteRequestHooks(records),
    trace: tracer,
  });
  return new VcpuShadow(vm, task.id, memory);
}

/** The checking level a config asks for. */
export const checkLevelOf = (check: VcpuConfig['check']): CheckLevel => (check === true ? 'full' : check ? check : 'off');

export function startVcpu(task: VcpuTask): StartedVcpu {
  const { config } = task;
  setMutant(config.mutant);
  const memory = task.memoryBuffer ? GuestMemory.attach(task.memoryBuffer) : undefined;
  const tracer = task.trace ? Tracer.attach(task.trace, task.id, task.traceClock) : undefined;
  const core = new VcpuCore({
    id: task.id,
    record: bindVcpu(task.vcpuBuffer, task.id),
    host: config.host,
    cpuid: config.cpuid,
    strategy: STRATEGIES[config.strategy],
    policy: config.policy,
    program: new RandomGuestProgram(config.program),
    memory,
    shadow: shadowFor(task, memory, tracer),
    tracer,
  });
  const loop = new HostLoop(core, config.loop);
  let checker: RoleChecker | null = null;
  const level = checkLevelOf(config.check);
  if (level !== 'off' && memory) {
    checker = new RoleChecker(task.id);
    checker.attach(core.mmu);
    core.checkCounts = checker.counts;
    core.checker = new VcpuChecker(core, {
      level,
      sampleEvery: config.sampleEvery,
      memory: memory!,
      shadow: core.shadow?.vm ?? null,
      vm: task.vmRecord ? bindVmRecord(task.vmRecord) : null,
      editTarget: config.editTarget ?? null,
    });
  }
  const findings = () => [...(checker?.findings ?? []), ...(core.checker?.findings ?? [])];
  return { core, loop, control: vcpuControl(core, loop, findings) };
}

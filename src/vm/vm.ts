/**
 * The coordinator (the VMM): creates a VM — vCPU records in one
 * SharedArrayBuffer, one piscina worker per vCPU running one long task —
 * makes requests with and without waiting, broadcasts CPUID through shared
 * memory or through the control plane, reports dead vCPUs by id, and shuts
 * down so the process can exit on its own.
 */
import { MessageChannel } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { DEFAULT_CPUID, normaliseCpuid, type CpuidModel } from '../cpuid/cpuid.js';
import type { StrategyName } from '../mmu/strategies.js';
import { DEFAULT_HOST, type HostSettings } from '../role/host.js';
import { RpcClient } from '../rpc/client.js';
import { PROTOCOL_VERSION, type RpcResult, type VcpuControl } from '../rpc/protocol.js';
import type { CpuidPolicy } from '../vcpu/core.js';
import type { HostLoopOptions } from '../vcpu/host-loop.js';
import { REQ, type RequestDef } from '../vcpu/requests.js';
import type { VcpuConfig, VcpuTask } from '../vcpu/task.js';
import { allocateVcpus, bindVcpu, STAT_INDEX, VCPU_STATS, type VcpuRecord, type VcpuStat } from '../vcpu/vcpu-layout.js';
import type { OpMix } from '../workload/guest-program.js';
import { buildGuestTables, DEFAULT_GUEST_TABLES, prepareEditTarget, type GuestTableSet } from '../workload/guest-tables.js';
import { DEFAULT_GUEST_MEMORY_BYTES, GuestMemory } from '../memory/guest-memory.js';
import { acknowledged, cpuidHandled, makeAllCpusRequest, postCpuid, remoteRequestHooks, requestAndKick, type AckWait } from './requests.js';
import { audit, ShadowVm, teardownCache, trackedWrite, vmGauges, vmStats, zapAll, zapAllFast, type ShadowCounters, type ShadowGauges, type ShadowTeardown } from '../shadow/index.js';
import { waitAll, type AckWord } from './wait.js';
import { checkAfterWait, nextRequestSeqs, type LostInvalidation } from '../check/lost-invalidation.js';
import { mutant, setMutant, type MutantName } from '../check/mutants.js';
import type { CheckLevel } from '../check/vcpu-checker.js';
import { allocateVmRecord, beginEditFlip, bindVmRecord, commitEditFlip, type EditTarget, type VmRecord } from './vm-layout.js';
import { STRATEGIES } from '../mmu/strategies.js';
import { allocateTraceRings, DEFAULT_RING_CAPACITY, type TraceRingsHandle } from '../trace/ring.js';
import { Tracer } from '../trace/tracer.js';
import type { BroadcastKind } from '../trace/events.js';
import { traceSetOf } from '../trace/collect.js';
import { writeChromeTrace } from '../trace/chrome.js';
import { writeFtrace } from '../trace/ftrace.js';

export const MAX_VCPUS = 4096;

/** Extra start-up allowance per vCPU for the hello handshake (worker boot on a loaded 2-core machine). */
export const STARTUP_MS_PER_VCPU = 1000;

export interface VmOptions {
  vcpus: number;
  strategy?: StrategyName;
  policy?: CpuidPolicy;
  host?: HostSettings;
  cpuid?: CpuidModel;
  seed?: number;
  mix?: Partial<OpMix>;
  loop?: Partial<HostLoopOptions>;
  /** Per-vCPU fault injection for tests: vCPU id → throw after that many guest ops. */
  throwAfterOps?: ReadonlyMap<number, number>;
  /** Deadline for control-plane calls and broadcasts (ms). */
  deadlineMs?: number;
  /** Leave every vCPU paused after creation (call resumeAll to run them). */
  startPaused?: boolean;
  /** Guest physical memory in bytes (default 64 MiB). */
  memoryBytes?: number;
  /** Checking in every vCPU (src/vcpu/task.ts VcpuConfig.check): true = full. */
  check?: boolean | CheckLevel;
  /** One stint in this many is checked at level `sampled`. */
  sampleEvery?: number;
  /**
   * Prepare the stress edit target (invariant 6): one guest-virtual page of
   * every address space, which `flipEditTarget` remaps between two frames.
   */
  editTarget?: boolean;
  /** A deliberate bug in every thread of the VM (src/check/mutants.ts). */
  mutant?: MutantName;
  /**
   * The VM-wide shadow page cache every vCPU's accesses go through (default
   * on; false: accesses only walk the guest tables). `maxPages` is
   * n_max_mmu_pages (default: KVM's kvm_mmu_calculate_default_mmu_pages).
   */
  shadow?: false | { readonly maxPages?: number; readonly prove?: boolean };
  /**
   * Record a trace (docs/traces.md): one ring of `capacity` events per vCPU
   * and one for the coordinator (default 65 536 events each), written out by
   * `writeTrace`. Absent: tracing off, nothing allocated.
   */
  trace?: { readonly capacity?: number };
}

/** What `Vm.writeTrace` writes: a Chrome Trace Event JSON file, a kvmmmu ftrace text file, or both. */
export interface WriteTraceOptions {
  readonly chrome?: string;
  readonly ftrace?: string;
  /** Extra entries for the Chrome trace's otherData (strategy, host and vCPU count are always there). */
  readonly metadata?: Readonly<Record<string, unknown>>;
  /** The Chrome trace's process name (default "kvm-mmu-emu VM"). */
  readonly processName?: string;
}

export interface ZapAllResult {
  /** The new mmu_valid_gen. */
  readonly generation: number;
  /** Obsolete pages zapped after the wait. */
  readonly zapped: number;
  /** Invariant 5 findings taken when the reload wait returned (empty when correct). */
  readonly lostInvalidations: readonly LostInvalidation[];
}

/** The seed of vCPU `id`'s guest program in a VM seeded with `seed` (the same in every host: threads or simulation). */
export const programSeed = (seed: number, id: number): number => (seed * 1_000_003 + id) >>> 0;

/** kvm_mmu_calculate_default_mmu_pages: 20 per mille of guest pages, at least KVM_MIN_ALLOC_MMU_PAGES (64). */
export const defaultMmuPages = (guestPages: number): number => Math.max(64, Math.floor((guestPages * 20) / 1000));

export interface CpuidBroadcastResult {
  readonly applied: number[];
  readonly identical: number[];
  /** vCPUs that refused (strict policy after their first run). */
  readonly refused: number[];
}

const DEFAULT_LOOP: HostLoopOptions = { batch: 256, yieldEvery: 4, haltTimeoutMs: 1 };

/** The compiled worker when running from dist/, the TypeScript one through tsx otherwise. */
function workerEntry(): { filename: string; execArgv: string[] } {
  const fromSource = import.meta.url.endsWith('.ts');
  const url = new URL(`../../workers/vcpu-worker.${fromSource ? 'ts' : 'js'}`, import.meta.url);
  return { filename: fileURLToPath(url), execArgv: fromSource ? ['--import', 'tsx'] : [] };
}

export class Vm {
  readonly records: VcpuRecord[];
  readonly rpc: RpcClient[] = [];
  /** vCPU id → why its worker died. */
  readonly dead = new Map<number, string>();
  private readonly tasks: Promise<void>[] = [];
  private cpuidEpoch = 0;
  private pingEpoch = 0;
  private destroyed = false;
  /** The coordinator's agent id in the shadow cache (the vCPUs are 0..N-1). */
  readonly shadowAgent: number;
  /** Filled by destroy() when the VM has a shadow cache and every vCPU stopped normally. */
  shadowTeardown: ShadowTeardown | null = null;
  /** The VM-wide control record (edit seqlock). */
  readonly vmBuffer = allocateVmRecord();
  readonly vmRecord: VmRecord = bindVmRecord(this.vmBuffer);
  /** The stress edit target, when the VM was created with editTarget. */
  readonly editTarget: EditTarget | null;
  /** The coordinator's tracer (ring `vcpus` of traceRings), when the VM records a trace. */
  readonly tracer: Tracer | undefined;

  private constructor(
    readonly options: Required<Pick<VmOptions, 'vcpus' | 'strategy' | 'policy' | 'deadlineMs'>> & VmOptions,
    readonly buffer: SharedArrayBuffer,
    readonly memory: GuestMemory,
    readonly tables: GuestTableSet,
    private readonly pool: Piscina,
    /** The shadow page cache (null when the VM runs without one). */
    readonly shadow: ShadowVm | null,
    /** The trace rings (one per vCPU, then the coordinator's), when the VM records a trace. */
    readonly traceRings: TraceRingsHandle | null,
  ) {
    this.records = Array.from({ length: options.vcpus }, (_, i) => bindVcpu(buffer, i));
    this.shadowAgent = options.vcpus;
    this.tracer = traceRings ? Tracer.attach(traceRings, 'coordinator') : undefined;
    this.editTarget = options.editTarget ? prepareEditTarget(this.memory, this.tables) : null;
    // The coordinator's own zaps reach the vCPUs like a vCPU's do: set, kick, never wait under the lock.
    this.shadow?.setHooks(this.shadowAgent, {
      ...remoteRequestHooks(this.records),
      trace: this.tracer,
    });
    this.traceShadowPages();
  }

  get vcpus(): number {
    return this.records.length;
  }

  /** Create the VM and start every vCPU; resolves once all answer the control plane. */
  static async create(opts: VmOptions): Promise<Vm> {
    if (!Number.isInteger(opts.vcpus) || opts.vcpus < 1 || opts.vcpus > MAX_VCPUS) {
      throw new RangeError(`vcpus: expected an integer in 1..${MAX_VCPUS}, got ${opts.vcpus}`);
    }
    const full = { strategy: 'valid-bit' as StrategyName, policy: 'strict' as CpuidPolicy, deadlineMs: 30_000, ...opts };
    // The coordinator's side of a mutant (e.g. zap-all-fast without waiting); the workers get it in their task.
    setMutant(opts.mutant);
    const cpuid = normaliseCpuid(opts.cpuid ?? DEFAULT_CPUID);
    const memory = GuestMemory.create(opts.memoryBytes ?? DEFAULT_GUEST_MEMORY_BYTES);
    const tables = buildGuestTables(memory, { ...DEFAULT_GUEST_TABLES, seed: opts.seed ?? 1 });
    const guestPages = memory.size / 4096;
    const shadow =
      opts.shadow === false
        ? null
        : ShadowVm.create({
            maxPages: opts.shadow?.maxPages ?? defaultMmuPages(guestPages),
            agents: opts.vcpus + 1,
            guestPages,
            host: opts.host ?? DEFAULT_HOST,
            prove: opts.shadow?.prove,
          });
    // Allocated before the pool starts its threads (minThreads = vCPUs): a refused size (over MAX_TRACE_BYTES)
    // fails here, with nothing to clean up.
    const traceRings = opts.trace ? allocateTraceRings(opts.vcpus, opts.trace.capacity ?? DEFAULT_RING_CAPACITY) : null;
    const { filename, execArgv } = workerEntry();
    const pool = new Piscina({
      filename,
      execArgv,
      minThreads: opts.vcpus,
      maxThreads: opts.vcpus,
      concurrentTasksPerWorker: 1,
      // Workers must not park in Atomics.wait between tasks: port messages would not arrive.
      atomics: 'disabled',
      idleTimeout: 2 ** 31 - 1,
    });
    const vm = new Vm(full, allocateVcpus(opts.vcpus), memory, tables, pool, shadow, traceRings);
    for (let id = 0; id < opts.vcpus; id++) vm.startVcpu(id, cpuid);
    // Workers boot one after another on few cores: the handshake's deadline grows with N.
    const startDeadline = full.deadlineMs + STARTUP_MS_PER_VCPU * opts.vcpus;
    const hello = await Promise.all(vm.rpc.map((c) => c.callWithin(startDeadline, 'hello', PROTOCOL_VERSION)));
    const bad = hello.map((r, id) => [id, r] as const).filter(([, r]) => !r.ok);
    if (bad.length) {
      await vm.destroy();
      throw new Error(`vCPUs did not start: ${bad.map(([, r]) => (!r.ok ? r.message : '')).join('; ')}`);
    }
    // Every vCPU thread exists and answers: now let them all run (shared memory, no message).
    if (!opts.startPaused) vm.start();
    return vm;
  }

  private startVcpu(id: number, cpuid: CpuidModel): void {
    const o = this.options;
    const host = o.host ?? DEFAULT_HOST;
    const config: VcpuConfig = {
      host,
      cpuid,
      strategy: o.strategy,
      policy: o.policy,
      program: {
        seed: programSeed(o.seed ?? 1, id),
        nestedKind: !host.tdpEnabled ? 'shadow' : host.vendor === 'amd' ? 'npt' : 'ept',
        mix: o.mix,
        tables: this.tables,
        hotPage: this.editTarget?.gvaPage,
      },
      loop: { ...DEFAULT_LOOP, ...o.loop, throwAfterOps: o.throwAfterOps?.get(id), startPaused: true },
      check: o.check ?? false,
      sampleEvery: o.sampleEvery,
      editTarget: this.editTarget ?? undefined,
      mutant: o.mutant,
    };
    const { port1, port2 } = new MessageChannel();
    const task: VcpuTask & { port: typeof port2 } = {
      id,
      vcpuBuffer: this.buffer,
      vcpuCount: this.vcpus,
      memoryBuffer: this.memory.buffer,
      shadow: this.shadow?.handle,
      vmRecord: this.vmBuffer,
      trace: this.traceRings ?? undefined,
      config,
      port: port2,
    };
    const rec = this.records[id]!;
    this.rpc[id] = new RpcClient(port1, id, () => requestAndKick(rec, id, REQ.USERSPACE_EXIT), o.deadlineMs);
    this.tasks[id] = this.pool.run(task, { transferList: [port2] }).then(
      () => undefined,
      (e: unknown) => {
        const why = `worker died: ${(e as Error)?.message ?? String(e)}`;
        this.dead.set(id, why);
        this.rpc[id]!.markDead(`vCPU ${id}: ${why}`);
      },
    );
  }

  private deadReason = (id: number) => (): string | null => this.dead.get(id) ?? null;

  /**
   * kvm_make_all_cpus_request: set the request on every target and kick; with
   * `wait` (and a WAIT request) return only once every target that was in
   * guest mode has left it. Fails as a whole, naming each vCPU that did not.
   */
  async makeAllCpusRequest(req: RequestDef, opts: { targets?: number[]; wait?: boolean } = {}): Promise<void> {
    this.assertLive();
    const tracer = this.tracer;
    const t = tracer ? tracer.now() : 0;
    const acks = makeAllCpusRequest(this.records, req, opts.targets);
    const kind: BroadcastKind = req === REQ.MMU_RELOAD ? 'reload' : 'other';
    if (opts.wait) await this.waitAcks(req.name, acks, kind);
    if (tracer) {
      // Without wait the span is only the setting and kicking; with wait it ends at the last acknowledgement.
      tracer.broadcast(t, kind, opts.targets?.length ?? this.vcpus);
      this.traceShadowPages();
    }
  }

  /** Wait until every acknowledgement of a WAIT request arrived (the targets left guest mode). */
  private async waitAcks(what: string, acks: readonly AckWait[], kind: BroadcastKind): Promise<void> {
    if (acks.length === 0) return;
    const t = this.tracer ? this.tracer.now() : 0;
    const waits = new Map<number, AckWord>(
      acks.map((a) => {
        const rec = this.records[a.vcpu]!;
        return [a.vcpu, { view: rec.outsideEpoch, index: 0, done: () => acknowledged(rec, a), dead: this.deadReason(a.vcpu) }];
      }),
    );
    try {
      await waitAll(`${what} request`, waits, performance.now() + this.options.deadlineMs);
    } finally {
      this.tracer?.wait(t, kind, acks.length);
    }
  }

  private requireShadow(): ShadowVm {
    if (!this.shadow) throw new Error('this VM runs without a shadow page cache (shadow: false)');
    return this.shadow;
  }

  /**
   * kvm_mmu_zap_all_fast from the coordinator: flip the generation and make
   * a waiting MMU_RELOAD on every vCPU under mmu_lock, wait until every vCPU
   * that was in guest mode left it (so none runs on an old root any more),
   * then zap the obsolete pages.
   */
  async zapAllFast(opts: { watchMs?: number } = {}): Promise<ZapAllResult> {
    this.assertLive();
    const shadow = this.requireShadow();
    const t = this.tracer ? this.tracer.now() : 0;
    let lost: LostInvalidation[] = [];
    let seq: number[] = [];
    let oldGeneration = 0;
    const r = await zapAllFast(shadow, this.shadowAgent, {
      request: () => {
        oldGeneration = shadow.mmuValidGen ^ 1;
        seq = nextRequestSeqs(this.records);
        return makeAllCpusRequest(this.records, REQ.MMU_RELOAD);
      },
      wait: async (acks) => {
        if (!mutant['zap-no-wait']) await this.waitAcks('MMU_RELOAD (zap all)', acks, 'zap-all');
        // Invariant 5, the moment the wait returned: nobody left on the old generation. With watchMs,
        // keep looking that long: every stint that begins after the request must run on a new root.
        const until = performance.now() + (opts.watchMs ?? 0);
        do lost = checkAfterWait(this.records, this.records.keys(), seq, { shadow, oldGeneration });
        while (lost.length === 0 && performance.now() < until);
      },
    });
    if (this.tracer) {
      this.tracer.broadcast(t, 'zap-all', this.vcpus);
      this.traceShadowPages();
    }
    return { ...r, lostInvalidations: lost };
  }

  /**
   * kvm_mmu_zap_all (what KVM does at VM teardown and what zap-all-fast
   * replaced): zap every page one by one under mmu_lock; roots still in use
   * are zapped but stay allocated until their holders reload (the zap makes
   * MMU_RELOAD on every vCPU, without waiting). Returns pages zapped.
   */
  async zapAllPages(): Promise<number> {
    this.assertLive();
    const shadow = this.requireShadow();
    if (!this.tracer) return zapAll(shadow, this.shadowAgent);
    const t = this.tracer.now();
    const zapped = await zapAll(shadow, this.shadowAgent);
    this.tracer.broadcast(t, 'zap-all', this.vcpus);
    this.traceShadowPages();
    return zapped;
  }

  /**
   * A guest page-table edit made by the VMM or the emulator: store the 64-bit
   * entry at `gpa` (Atomics), then the write-tracking path
   * (kvm_page_track_write → zap the shadow pages of that gfn). Returns the
   * shadow pages zapped.
   */
  writeGuestPte(gpa: number, value: bigint): number {
    this.assertLive();
    const t = this.tracer ? this.tracer.now() : 0;
    Atomics.add(this.vmRecord.editSeq, 0, 1); // odd: editing (checkers skip overlapping accesses)
    try {
      this.memory.store64(gpa, value);
      return this.shadow ? trackedWrite(this.shadow, this.shadowAgent, gpa) : 0;
    } finally {
      Atomics.add(this.vmRecord.editSeq, 0, 1);
      if (this.tracer) {
        this.tracer.broadcast(t, 'other', 0);
        this.traceShadowPages();
      }
    }
  }

  /** A full consistency audit of the shadow cache under mmu_lock, while the vCPUs run (empty when consistent). */
  async auditShadow(): Promise<string[]> {
    const shadow = this.requireShadow();
    await shadow.lock.lockAsync(this.shadowAgent);
    try {
      return audit(shadow);
    } finally {
      shadow.lock.unlock(this.shadowAgent);
    }
  }

  /** The last guest page of the address spaces, mapped to the first of two frames at the top of memory. */
  /**
   * A guest page-table edit under the VM's edit seqlock: remap the edit
   * target in every address space to the other frame, then the write-tracking
   * zap of every leaf written. Once this returns, no vCPU may translate the
   * target to the old frame (invariant 6). Returns the frame now mapped.
   */
  flipEditTarget(): number {
    this.assertLive();
    const t = this.editTarget;
    if (!t) throw new Error('this VM was created without an edit target (editTarget: true)');
    const tr = this.tracer ? this.tracer.now() : 0;
    const { leaves, frame: next } = beginEditFlip(this.vmRecord, this.memory, this.tables, t);
    commitEditFlip(this.vmRecord, this.shadow, this.shadowAgent, leaves);
    if (this.tracer) {
      this.tracer.broadcast(tr, 'other', 0);
      this.traceShadowPages();
    }
    return next;
  }

  /** Shadow cache counters (VM-wide sum over agents) and gauges; null without a cache. */
  shadowStats(): { stats: ShadowCounters; gauges: ShadowGauges } | null {
    return this.shadow ? { stats: vmStats(this.shadow), gauges: vmGauges(this.shadow) } : null;
  }

  /**
   * CPUID change through shared memory: post the table to each target, make
   * CPUID_UPDATE, and wait until every target handled it (applied, identical,
   * or refused by the strict policy).
   */
  async broadcastCpuid(cpuid: CpuidModel, targets?: number[]): Promise<CpuidBroadcastResult> {
    this.assertLive();
    const list = targets ?? [...this.records.keys()];
    const t = this.tracer ? this.tracer.now() : 0;
    const epoch = ++this.cpuidEpoch;
    postCpuid(this.records, normaliseCpuid(cpuid), epoch, list);
    const waits = new Map<number, AckWord>(
      list.map((id) => {
        const rec = this.records[id]!;
        return [id, { view: rec.cpuidAppliedEpoch, index: 0, done: () => cpuidHandled(rec, epoch), dead: this.deadReason(id) }];
      }),
    );
    await this.traceWait('cpuid', list.length, waitAll('CPUID broadcast', waits, performance.now() + this.options.deadlineMs));
    const out: CpuidBroadcastResult = { applied: [], identical: [], refused: [] };
    for (const id of list) {
      const r = Atomics.load(this.records[id]!.cpuidResult, 0);
      (r === 0 ? out.applied : r === 1 ? out.identical : out.refused).push(id);
    }
    if (this.tracer) {
      this.tracer.broadcast(t, 'cpuid', list.length);
      this.traceShadowPages();
    }
    return out;
  }

  /**
   * The protocol of broadcastCpuid without the MMU work: post an epoch, make
   * PING, wait for every target's acknowledgement. The benchmarks' limit.
   */
  async ping(targets?: number[]): Promise<void> {
    this.assertLive();
    const list = targets ?? [...this.records.keys()];
    const t = this.tracer ? this.tracer.now() : 0;
    const epoch = ++this.pingEpoch;
    for (const id of list) Atomics.store(this.records[id]!.pingPosted, 0, epoch);
    makeAllCpusRequest(this.records, REQ.PING, list);
    const waits = new Map<number, AckWord>(
      list.map((id) => {
        const rec = this.records[id]!;
        return [id, { view: rec.pingAck, index: 0, done: (v) => v >= epoch, dead: this.deadReason(id) }];
      }),
    );
    await this.traceWait('ping', list.length, waitAll('PING', waits, performance.now() + this.options.deadlineMs));
    if (this.tracer) {
      this.tracer.broadcast(t, 'ping', list.length);
      this.traceShadowPages();
    }
  }

  /** A wait span around `waiting` when tracing (recorded even when the wait fails). */
  private async traceWait(kind: BroadcastKind, targets: number, waiting: Promise<void>): Promise<void> {
    const tracer = this.tracer;
    if (!tracer) return waiting;
    const t = tracer.now();
    try {
      await waiting;
    } finally {
      tracer.wait(t, kind, targets);
    }
  }

  /** The shadow-pages counter (n_used_mmu_pages) on the coordinator's track, when tracing with a shadow cache. */
  private traceShadowPages(): void {
    if (this.tracer && this.shadow) this.tracer.shadowPages(this.shadow.nUsed);
  }

  /**
   * Write the trace (VmOptions.trace) as Chrome Trace Event JSON and/or
   * kvmmmu ftrace text. After destroy() the read is exact (every writer
   * stopped); before, it is a racy snapshot of running writers (slots being
   * overwritten are counted as dropped). Returns the paths written.
   */
  writeTrace(o: WriteTraceOptions): string[] {
    if (!this.traceRings) throw new Error('this VM records no trace (create it with trace: {})');
    const set = traceSetOf(this.traceRings, !this.destroyed);
    const written: string[] = [];
    if (o.chrome !== undefined) {
      const host = this.options.host ?? DEFAULT_HOST;
      writeChromeTrace(o.chrome, set, {
        processName: o.processName,
        extFormat: STRATEGIES[this.options.strategy].format,
        metadata: { strategy: this.options.strategy, vcpus: this.vcpus, host, ringCapacity: this.traceRings.capacity, ...o.metadata },
      });
      written.push(o.chrome);
    }
    if (o.ftrace !== undefined) {
      writeFtrace(o.ftrace, set);
      written.push(o.ftrace);
    }
    return written;
  }

  /** The same change through the control plane, one vCPU at a time. */
  async setCpuidViaRpc(cpuid: CpuidModel, targets?: number[]): Promise<RpcResult<string>[]> {
    const out: RpcResult<string>[] = [];
    for (const id of targets ?? [...this.records.keys()]) out.push(await this.rpc[id]!.call('setCpuid', cpuid));
    return out;
  }

  /** Pause every live vCPU (each leaves its run loop and stays out). */
  async pauseAll(): Promise<void> {
    await this.callAll('pause');
  }

  /** Let every vCPU make its first run (the `go` word); idempotent. */
  start(): void {
    for (const rec of this.records) {
      Atomics.store(rec.go, 0, 1);
      Atomics.notify(rec.go, 0);
    }
  }

  /** Resume vCPUs paused over the control plane (and start any not started). */
  async resumeAll(): Promise<void> {
    this.start();
    await this.callAll('resume');
  }

  /** A call on every live vCPU; throws naming each vCPU whose call failed. */
  private async callAll(method: 'pause' | 'resume'): Promise<void> {
    const ids = [...this.records.keys()].filter((id) => !this.dead.has(id));
    const res = await Promise.all(ids.map((id) => this.rpc[id]!.call(method)));
    const bad = res.map((r, i) => [ids[i]!, r] as const).filter(([, r]) => !r.ok);
    if (bad.length) throw new Error(`${method}: ${bad.map(([id, r]) => `vCPU ${id}: ${!r.ok ? r.message : ''}`).join('; ')}`);
  }

  /** A control-plane call on one vCPU. */
  call<M extends keyof VcpuControl>(id: number, method: M, ...args: Parameters<VcpuControl[M]>) {
    const c = this.rpc[id];
    if (!c) throw new RangeError(`no vCPU ${id} (the VM has ${this.vcpus})`);
    return c.call(method, ...args);
  }

  /** Counters of one vCPU, read from shared memory (no message). */
  vcpuStats(id: number): Record<VcpuStat, number> {
    const s = this.records[id]!.stats;
    return Object.fromEntries(VCPU_STATS.map((k) => [k, s[STAT_INDEX[k]]!])) as Record<VcpuStat, number>;
  }

  /** Counters summed over all vCPUs (dead ones included: their last published values). */
  totals(): Record<VcpuStat, number> {
    const t = Object.fromEntries(VCPU_STATS.map((k) => [k, 0])) as Record<VcpuStat, number>;
    for (let i = 0; i < this.vcpus; i++) for (const k of VCPU_STATS) t[k] += this.records[i]!.stats[STAT_INDEX[k]]!;
    return t;
  }

  private assertLive(): void {
    if (this.destroyed) throw new Error('the VM was destroyed');
  }

  /**
   * Stop every vCPU with a STOP request (it wakes halted ones), wait for the
   * tasks, then destroy the pool. Never terminates a worker as the normal
   * path; only one that misses the deadline is terminated by the pool.
   */
  async destroy(): Promise<Record<VcpuStat, number>> {
    if (this.destroyed) return this.totals();
    this.destroyed = true;
    makeAllCpusRequest(this.records, REQ.STOP);
    const all = Promise.all(this.tasks);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((r) => (timer = setTimeout(r, this.options.deadlineMs)))]);
    clearTimeout(timer);
    for (const c of this.rpc) c.close();
    await this.pool.destroy();
    // kvm_mmu_uninit_vm: every vCPU gave its roots back (kvm_mmu_destroy) when it stopped.
    if (this.shadow && this.dead.size === 0) this.shadowTeardown = teardownCache(this.shadow, this.shadowAgent);
    this.traceShadowPages();
    return this.totals();
  }

}

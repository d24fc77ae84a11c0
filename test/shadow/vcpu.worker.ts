/**
 * One vCPU on a real thread for threads.test.ts: attaches to the VM's shadow
 * cache, guest memory and vCPU records, and runs a run loop shaped like
 * vcpu_enter_guest — requests first (STOP, MMU_RELOAD → unload), then
 * kvm_mmu_reload, then guest mode (mode = IN_GUEST, re-check requests) where
 * accesses walk the SPTEs lock-free; a miss is a VM exit, handled outside
 * guest mode by the fault path. Checks, in guest mode, that once a zap-all
 * round's waiting MMU_RELOAD has returned no root of an old generation is in
 * use, that translations match the guest tables, and that pages reached
 * belong to this vCPU's role. A worker keeps accessing past its `accesses`
 * until the coordinator sets `release`, so what the coordinator does
 * between accesses (zap rounds, edits) does not depend on OS scheduling.
 *
 * The lock scenario instead increments a plain counter under mmu_lock.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { bindRecord } from '../../src/layout/layout.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { walkEnv } from '../../src/paging/index.js';
import { PR } from '../../src/role/page-role.js';
import { agentStats, ShadowVm, SPECIAL_ROOT, trackedWrite, WALK, type ShadowVmHandle } from '../../src/shadow/index.js';
import { makeAllCpusRequest } from '../../src/vm/requests.js';
import { checkRequest, MODE, REQ } from '../../src/vcpu/requests.js';
import { bindVcpu, type VcpuRecord } from '../../src/vcpu/vcpu-layout.js';
import { Rng } from '../../src/workload/rng.js';
import { x86Vcpu, type X86Mode } from '../paging/helpers.js';
import { CONTROL_LAYOUT, type ControlView } from './control.js';
import { SimVcpu } from './sim-vcpu.js';

export interface VcpuWorkerData {
  readonly kind: 'vcpu' | 'lock';
  readonly id: number;
  readonly vcpuCount: number;
  readonly shadow: ShadowVmHandle;
  readonly memory: SharedArrayBuffer;
  readonly vcpus: SharedArrayBuffer;
  readonly control: SharedArrayBuffer;
  readonly mode: X86Mode;
  readonly shadowPaging: boolean;
  readonly wp: boolean;
  readonly guest: { readonly pgd: string; readonly pdptes?: readonly string[] };
  /** Address → the GPAs it may translate to (several while the coordinator edits it). */
  readonly targets: ReadonlyArray<readonly [addr: string, gpas: readonly number[]]>;
  /** Index in `targets` of the page the coordinator edits, or -1. */
  readonly edited: number;
  readonly seed: number;
  readonly accesses: number;
  readonly writeRatio: number;
}

const d = workerData as VcpuWorkerData;
const ctl = bindRecord(CONTROL_LAYOUT, d.control) as ControlView;
const vm = ShadowVm.attach(d.shadow);
const report = (msg: string): void => {
  Atomics.add(ctl.violations, 0, 1);
  parentPort!.postMessage({ type: 'violation', id: d.id, msg });
};

function waitFor(word: Int32Array, done: (v: number) => boolean): void {
  for (let v = Atomics.load(word, 0); !done(v); v = Atomics.load(word, 0)) Atomics.wait(word, 0, v, 1000);
}

function startBarrier(): void {
  Atomics.add(ctl.ready, 0, 1);
  Atomics.notify(ctl.ready, 0);
  waitFor(ctl.go, (v) => v !== 0);
}

function runLock(): void {
  startBarrier();
  for (let i = 0; i < d.accesses; i++) {
    vm.lock.with(d.id, () => {
      const v = ctl.lockCounter[0]!;
      ctl.lockCounter[0] = v + 1;
    });
  }
}

class Runner {
  readonly records: VcpuRecord[] = Array.from({ length: d.vcpuCount }, (_, i) => bindVcpu(d.vcpus, i));
  readonly rec = this.records[d.id]!;
  readonly mem = GuestMemory.attach(d.memory);
  readonly ctx = x86Vcpu(d.mode, { shadow: d.shadowPaging, wp: d.wp }).ctx;
  readonly vcpu = new SimVcpu(vm, d.id, this.ctx, this.mem, { pgd: BigInt(d.guest.pgd), pdptes: d.guest.pdptes?.map(BigInt) ?? null });
  readonly rng = new Rng(d.seed);
  readonly addrs = d.targets.map(([a]) => BigInt(a));
  readonly read = walkEnv({});
  readonly write = walkEnv({ write: true });
  done = 0;
  unloads = 0;

  /** Accesses done and the coordinator released the workers (control.ts `release`). */
  finished(): boolean {
    return this.done >= d.accesses && Atomics.load(ctl.release, 0) !== 0;
  }

  constructor() {
    const reloadBit = 1 << REQ.MMU_RELOAD.bit;
    this.vcpu.reloadPending = () => (Atomics.load(this.rec.requests, 0) & reloadBit) !== 0;
    // kvm_reload_remote_mmus from inside the cache: set the bits and kick, never wait (under mmu_lock).
    vm.setHooks(d.id, { reloadRemoteMmus: () => void makeAllCpusRequest(this.records, REQ.MMU_RELOAD) });
  }

  /** Requests in vcpu_enter_guest's order; false on STOP. */
  processRequests(): boolean {
    const q = this.rec.requests;
    if (Atomics.load(q, 0) === 0) return true;
    if (checkRequest(q, 0, REQ.STOP)) return false;
    if (checkRequest(q, 0, REQ.MMU_RELOAD)) {
      this.vcpu.unload();
      this.unloads++;
    }
    checkRequest(q, 0, REQ.LOAD_MMU_PGD);
    checkRequest(q, 0, REQ.TLB_FLUSH);
    return true;
  }

  toOutside(): void {
    Atomics.store(this.rec.mode, 0, MODE.OUTSIDE_GUEST);
    Atomics.add(this.rec.outsideEpoch, 0, 1);
    Atomics.notify(this.rec.outsideEpoch, 0);
  }

  /** Enter guest mode with KVM's ordering; false if a request (or kick) makes it back out. */
  enter(): boolean {
    Atomics.store(this.rec.mode, 0, MODE.IN_GUEST);
    if (Atomics.load(this.rec.requests, 0) !== 0 || Atomics.load(this.rec.mode, 0) !== MODE.IN_GUEST) {
      this.toOutside();
      return false;
    }
    return true;
  }

  /** In guest mode: after a completed zap round (and none in progress), every root in use is of the new generation. */
  checkRoots(): void {
    const s1 = Atomics.load(ctl.started, 0);
    const c = Atomics.load(ctl.completed, 0);
    const g = Atomics.load(ctl.completedGen, 0);
    const r = this.vcpu.roots;
    const pages = r.rootHpa === SPECIAL_ROOT ? r.paeRoot.filter((p) => p >= 0) : [r.rootHpa];
    const gens = pages.map((p) => vm.genOf(p));
    if (c === 0 || s1 !== c || Atomics.load(ctl.started, 0) !== s1) return;
    Atomics.add(ctl.rootChecks, 0, 1);
    if (gens.some((x) => x !== g)) report(`round ${c}: in guest mode on root(s) ${pages} of generation ${gens}, current ${g}`);
  }

  /** A hit: the right GPA, and (prove mode) only pages of this vCPU's role on the way. */
  checkHit(i: number, gpa: number, editBefore: number): void {
    const [, gpas] = d.targets[i]!;
    if (!gpas.includes(gpa)) report(`address ${d.targets[i]![0]} translated to ${gpa}, expected one of ${gpas}`);
    if (i === d.edited && editBefore > 0) {
      // Read the target, then make sure no later edit had started: then it is edit `editBefore`'s.
      const want = Atomics.load(ctl.editGpa, 0);
      if (Atomics.load(ctl.editStarted, 0) === editBefore) {
        Atomics.add(ctl.editChecks, 0, 1);
        if (gpa !== want) report(`edit ${editBefore} done before the walk, but the edited page translated to ${gpa}, not ${want}`);
      }
    }
    const s = this.vcpu.scratch;
    const wp = this.ctx.roleBase & PR.CR0_WP;
    // The roles the walk saw (the walk checked no page was reused under it): by now, outside
    // the lockless section, an edit may have zapped a page and a fault handed it out again.
    for (let k = 0; k < s.n; k++) {
      if ((s.roles[k]! & PR.CR0_WP) !== wp) report(`walk reached page ${s.visited[k]} of another role (role word ${s.roles[k]!.toString(16)})`);
    }
  }

  /** One stay in guest mode: accesses until a miss, a kick, or 64 accesses. Returns the miss, if any. */
  guest(): { addr: bigint; env: ReturnType<typeof walkEnv>; code: number } | null {
    for (let k = 0; k < 64 && !this.finished(); k++) {
      if (Atomics.load(this.rec.mode, 0) !== MODE.IN_GUEST) return null;
      this.checkRoots();
      const i = this.rng.int(this.addrs.length);
      const env = this.rng.chance(d.writeRatio) ? this.write : this.read;
      const editBefore = Atomics.load(ctl.editDone, 0);
      const t = this.vcpu.walk(this.addrs[i]!, env);
      if (t < 0) return { addr: this.addrs[i]!, env, code: t };
      this.checkHit(i, t, editBefore);
      if (++this.done % 64 === 0) {
        Atomics.add(ctl.progress, 0, 64);
        Atomics.notify(ctl.progress, 0);
      }
    }
    return null;
  }

  /** The VM exit for a miss: the fault path, outside guest mode. */
  exit(miss: { addr: bigint; env: ReturnType<typeof walkEnv>; code: number }): void {
    if (miss.code === WALK.NO_ROOT) return;
    const f = this.vcpu.fault(miss.addr, miss.env, miss.code);
    if (f.kind === 'emulate') trackedWrite(vm, d.id, f.gpa);
    else if (f.kind === 'guest-fault' || f.kind === 'no-memslot' || f.kind === 'no-pages') report(`fault on ${miss.addr}: ${f.kind}`);
  }

  run(): void {
    startBarrier();
    let announced = false;
    for (;;) {
      if (!this.processRequests()) break;
      if (this.finished()) {
        if (!announced) {
          announced = true;
          Atomics.add(ctl.done, 0, 1);
          Atomics.notify(ctl.done, 0);
        }
        // Parked outside guest mode (kvm_vcpu_block): announce it, re-check, wait for a request.
        Atomics.store(this.rec.halted, 0, 1);
        if (Atomics.load(this.rec.requests, 0) === 0) Atomics.wait(this.rec.requests, 0, 0, 1000);
        Atomics.store(this.rec.halted, 0, 0);
        continue;
      }
      const load = this.vcpu.reload();
      if (load !== 'ok') {
        report(`kvm_mmu_reload: ${load}`);
        break;
      }
      if (!this.enter()) continue;
      const miss = this.guest();
      this.toOutside();
      if (miss) this.exit(miss);
    }
    // kvm_mmu_unload when the vCPU is destroyed.
    this.vcpu.unload();
  }
}

if (d.kind === 'lock') {
  runLock();
  parentPort!.postMessage({ type: 'result', id: d.id });
} else {
  const r = new Runner();
  r.run();
  parentPort!.postMessage({ type: 'result', id: d.id, unloads: r.unloads, stats: agentStats(vm, d.id) });
}

/**
 * Runs a vCPU core on a real thread: calls `run` in slices, blocks a halted
 * vCPU on its `requests` word with Atomics.waitAsync (so the thread's event
 * loop, and with it the control plane, stays alive), and yields to the event
 * loop between slices and on USERSPACE_EXIT. No worker API is used here; the
 * worker entry point only wires this loop and the control endpoint.
 */
import { waitAsync } from '../layout/atomics.js';
import type { VcpuCore } from './core.js';
import { STAT_INDEX } from './vcpu-layout.js';
import { REQ } from './requests.js';

export interface HostLoopOptions {
  /** Guest operations per `run` slice. */
  batch: number;
  /** Yield to the event loop after this many slices even without a request. */
  yieldEvery: number;
  /** A halted vCPU's "timer interrupt": wake after this long with no request (ms; Infinity = never). */
  haltTimeoutMs: number;
  /** Fault injection for tests: throw after this many guest operations. */
  throwAfterOps?: number;
  /** Wait for the record's `go` word before the first slice (a VMM creates every vCPU thread before the first KVM_RUN). */
  startPaused?: boolean;
  /** End the loop once the guest program has issued this many operations (exactly: the last slice is cut to fit). */
  stopAfterOps?: number;
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class HostLoop {
  private paused = false;
  private stopping = false;
  private resumeWaiter: (() => void) | null = null;

  constructor(
    readonly core: VcpuCore,
    readonly opts: HostLoopOptions,
  ) {}

  get isPaused(): boolean {
    return this.paused;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.resumeWaiter?.();
  }

  stop(): void {
    this.stopping = true;
    this.resumeWaiter?.();
  }

  /** Run until stopped (STOP request or stop()). */
  async loop(): Promise<void> {
    const { core, opts } = this;
    let slices = 0;
    if (opts.startPaused) await this.waitForGo();
    for (;;) {
      if (this.stopping) break;
      if (this.paused) {
        await new Promise<void>((r) => (this.resumeWaiter = r));
        this.resumeWaiter = null;
        continue;
      }
      const left = opts.stopAfterOps === undefined ? Infinity : opts.stopAfterOps - core.rec.stats[STAT_INDEX.guestOps]!;
      if (left <= 0) break;
      const reason = core.run(Math.min(opts.batch, left));
      if (opts.throwAfterOps !== undefined && core.rec.stats[STAT_INDEX.guestOps]! >= opts.throwAfterOps) {
        throw new Error(`vCPU ${core.id}: injected fault after ${core.rec.stats[STAT_INDEX.guestOps]} guest operations`);
      }
      if (reason === 'stop') break;
      if (reason === 'halt') await this.block();
      else if (reason === 'userspace' || ++slices % opts.yieldEvery === 0) await yieldToEventLoop();
    }
    core.shutdown();
  }

  /**
   * Until the coordinator's go, a STOP request or stop(); the control plane
   * stays served. Other requests wait for the first run: a control-plane call
   * kicks with USERSPACE_EXIT, and that must not start a vCPU the VMM holds.
   */
  private async waitForGo(): Promise<void> {
    const { go, requests } = this.core.rec;
    const stop = 1 << REQ.STOP.bit;
    while (Atomics.load(go, 0) === 0 && (Atomics.load(requests, 0) & stop) === 0 && !this.stopping) await waitAsync(go, 0, 0, 50);
  }

  /**
   * kvm_vcpu_block: announce the halt, re-check requests (Dekker with the
   * requester's set-bit-then-load-halted), then wait on the requests word.
   * A timeout is the guest's timer interrupt: the vCPU becomes runnable.
   */
  private async block(): Promise<void> {
    const { requests, halted } = this.core.rec;
    const tracer = this.core.tracer;
    const t = tracer ? tracer.now() : 0;
    Atomics.store(halted, 0, 1);
    if (Atomics.load(requests, 0) === 0) {
      const timeout = Number.isFinite(this.opts.haltTimeoutMs) ? this.opts.haltTimeoutMs : undefined;
      if ((await waitAsync(requests, 0, 0, timeout)) === 'timed-out') this.core.halted = false;
    }
    Atomics.store(halted, 0, 0);
    if (tracer) tracer.halt(t);
  }
}

/**
 * The coordinator's side of one vCPU's control plane: comlink over a
 * MessagePort, with what comlink lacks — a deadline on every call, and every
 * pending call settled (VCPU_DEAD) when the vCPU's worker dies. Before each
 * call the vCPU is kicked out of its run loop (the VMM's signal), so a busy
 * or halted vCPU answers promptly.
 */
import * as Comlink from 'comlink';
import type { MessagePort } from 'node:worker_threads';
import { nodeEndpoint } from './endpoint.js';
import { fail, type RpcResult, type VcpuControl } from './protocol.js';

type Method = keyof VcpuControl;
type Value<M extends Method> = ReturnType<VcpuControl[M]> extends RpcResult<infer T> ? T : never;

export class RpcClient {
  private readonly remote: Comlink.Remote<VcpuControl>;
  private readonly pending = new Set<(r: RpcResult<never>) => void>();
  private deadReason: string | null = null;

  constructor(
    private readonly port: MessagePort,
    readonly vcpu: number,
    private readonly kick: () => void,
    readonly deadlineMs = 10_000,
  ) {
    this.remote = Comlink.wrap<VcpuControl>(nodeEndpoint(port));
  }

  /** Call a control method; always settles: with its result, TIMEOUT or VCPU_DEAD. */
  call<M extends Method>(method: M, ...args: Parameters<VcpuControl[M]>): Promise<RpcResult<Value<M>>> {
    return this.callWithin(this.deadlineMs, method, ...args);
  }

  /** `call` with its own deadline (e.g. the start-up handshake, which waits for the worker to boot). */
  callWithin<M extends Method>(deadlineMs: number, method: M, ...args: Parameters<VcpuControl[M]>): Promise<RpcResult<Value<M>>> {
    if (this.deadReason) return Promise.resolve(fail('VCPU_DEAD', this.deadReason));
    this.kick();
    return new Promise((resolve) => {
      let done = false;
      const settle = (r: RpcResult<Value<M>>): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.pending.delete(settle as (r: RpcResult<never>) => void);
        resolve(r);
      };
      this.pending.add(settle as (r: RpcResult<never>) => void);
      const timer = setTimeout(() => settle(fail('TIMEOUT', `vCPU ${this.vcpu}: no answer to ${method} within ${deadlineMs} ms`)), deadlineMs);
      const fn = this.remote[method] as unknown as (...a: unknown[]) => Promise<RpcResult<Value<M>>>;
      fn(...args).then(settle, (e: unknown) => settle(fail('INTERNAL', `vCPU ${this.vcpu}: ${method}: ${(e as Error)?.message ?? String(e)}`)));
    });
  }

  /** The worker died: settle every pending call and refuse new ones. */
  markDead(reason: string): void {
    this.deadReason = reason;
    for (const settle of [...this.pending]) settle(fail('VCPU_DEAD', reason));
  }

  close(): void {
    this.markDead(this.deadReason ?? `vCPU ${this.vcpu}: control plane closed`);
    this.remote[Comlink.releaseProxy]();
    this.port.close();
  }
}

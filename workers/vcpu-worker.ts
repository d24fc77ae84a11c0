/**
 * Worker entry point: one long-running piscina task per vCPU. Binds the
 * vCPU's control endpoint to the transferred MessagePort with comlink and
 * runs the host loop until the vCPU stops. No logic lives here.
 */
import type { MessagePort } from 'node:worker_threads';
import * as Comlink from 'comlink';
import { nodeEndpoint } from '../src/rpc/endpoint.js';
import { startVcpu, type VcpuTask } from '../src/vcpu/task.js';

export default async function runVcpu(task: VcpuTask & { port: MessagePort }): Promise<{ id: number; guestOps: number }> {
  const { core, loop, control } = startVcpu(task);
  Comlink.expose(control, nodeEndpoint(task.port));
  try {
    await loop.loop();
  } finally {
    // Let a reply in flight (e.g. to the `stop` call that ended the loop) leave before the port closes.
    await new Promise((resolve) => setImmediate(resolve));
    task.port.close();
  }
  return { id: task.id, guestOps: core.rec.stats[0]! };
}

// Plain-JavaScript worker for mmu-lock.test.ts (Node 20 does not apply `--import tsx` to a worker's
// entry module): takes the VM's mmu_lock as agent 1 and records the order of events.
import { workerData } from 'node:worker_threads';
import { tsImport } from 'tsx/esm/api';

const { ShadowVm } = await tsImport('../../src/shadow/arena.ts', import.meta.url);
const vm = ShadowVm.attach(workerData.handle);
const log = new Int32Array(workerData.log);
Atomics.store(log, 0, 1); // started
Atomics.notify(log, 0);
vm.lock.lock(1);
Atomics.store(log, 1, 1); // holds the lock
Atomics.notify(log, 1);
vm.lock.unlock(1);

/**
 * What the real-worker VM tests share: a seed printed on failure (rerun with
 * KVM_MMU_EMU_SEED), and a VM per test, destroyed after it whatever happened.
 */
import { afterEach } from 'vitest';
import { Vm, type VmOptions } from '../../src/vm/vm.js';

export const SEED = Number(process.env.KVM_MMU_EMU_SEED ?? Date.now() % 1_000_000);
export const ctx = `(seed ${SEED}; rerun with KVM_MMU_EMU_SEED=${SEED})`;

/** Register the teardown in this test file; returns createVm (seed SEED and `defaults` under each test's options). */
export function vmPerTest(defaults: Partial<VmOptions> = {}): (o: VmOptions) => Promise<Vm> {
  let vm: Vm | null = null;
  afterEach(async () => {
    await vm?.destroy();
    vm = null;
  });
  return async (o) => {
    vm = await Vm.create({ seed: SEED, ...defaults, ...o });
    return vm;
  };
}

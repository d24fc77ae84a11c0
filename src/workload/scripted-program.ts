/**
 * A guest program that plays a fixed list of operations, then (if asked)
 * keeps issuing a filler operation: for tests, scenario steps and replays.
 */
import type { GuestOp, GuestProgram } from '../vcpu/guest-ops.js';

export class ScriptedProgram implements GuestProgram {
  private i = 0;

  constructor(
    private readonly ops: readonly GuestOp[],
    private readonly filler: GuestOp = { k: 'access', gva: 0n, write: false, fetch: false, user: false },
  ) {}

  /** Operations played so far (the filler not counted). */
  get played(): number {
    return Math.min(this.i, this.ops.length);
  }

  next(): GuestOp {
    return this.i < this.ops.length ? this.ops[this.i++]! : (this.i++, this.filler);
  }
}

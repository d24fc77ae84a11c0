/**
 * kvm->mmu_lock for the shadow page cache: a plain mutex on one shared i32
 * (the three-state futex mutex: 0 free, 1 held, 2 held with waiters), taken
 * by any worker with Atomics.compareExchange / Atomics.exchange and parked
 * with Atomics.wait, or with Atomics.waitAsync by a thread that must keep its
 * event loop (the coordinator).
 *
 * Why a mutex and not a reader/writer lock: in Linux v5.17 every path of the
 * shadow MMU modelled here (faults without the TDP MMU, root allocation and
 * freeing, zaps, write tracking) takes mmu_lock for write; only the TDP MMU
 * takes it for read, and the TDP MMU is not modelled. SPTE readers that do
 * not take the lock (the hardware walk) are protected by the walker-epoch
 * protocol instead (arena.ts), as KVM's lockless walks are by the
 * TLB-flush-before-free rule.
 *
 * What it protects: every field layout.ts marks "under mmu_lock" — the page
 * lists, hash chains, parent/rmap links, SPTE writes, page accounting, the
 * generation flip. What is read without it is listed there too.
 *
 * Ownership: `lockOwner` holds 1 + the agent id of the holder, stored right
 * after the lock is taken and cleared right before it is released, so lock
 * assertions (on in prove mode) can say who holds it.
 *
 * Queued writer: `lockQueuedWriter` is 1 + the agent that re-takes the
 * lock after a lock break (breakAsync), 0 otherwise; lock() waits while it
 * is set by another agent (bounded 1 ms naps, woken by its clearing).
 *
 * Contention: `lockWaiters` counts the agents parked (or about to park) on
 * the lock — incremented before an agent's first park, decremented once it
 * holds the lock. It is what rwlock_is_contended answers (`contended()`), for
 * the holder that breaks a long critical section (kvm_zap_obsolete_pages'
 * cond_resched_rwlock_write); the lock word's state 2 cannot answer it, as it
 * stays 2 for a holder that took the lock after parking.
 */
import { waitAsync } from '../layout/atomics.js';

const FREE = 0;
const HELD = 1;
const CONTENDED = 2;
/** Compare-exchange attempts before parking (the lock is held for microseconds). */
const SPINS = 64;

export class MmuLockError extends Error {
  override name = 'MmuLockError';
}

export class MmuLock {
  constructor(
    /** The `lock` word. */
    private readonly word: Int32Array,
    /** The `lockOwner` word. */
    private readonly owner: Int32Array,
    /** The `lockWaiters` word. */
    private readonly waiters: Int32Array,
    /** The `lockQueuedWriter` word. */
    private readonly queued: Int32Array,
    /** Check ownership on release and in assertions (KVM's lockdep). */
    readonly prove: boolean,
  ) {}

  /**
   * One attempt. Failure contract: on failure nothing is written; the lock
   * word is left as found.
   */
  tryLock(agent: number): boolean {
    if (Atomics.compareExchange(this.word, 0, FREE, HELD) !== FREE) return false;
    Atomics.store(this.owner, 0, agent + 1);
    return true;
  }

  /** write_lock(&kvm->mmu_lock), blocking the thread (workers; Node also allows it on the main thread). */
  lock(agent: number): void {
    if (this.prove) this.assertNotHeldBy(agent, 'lock');
    // Behind a writer queued by a lock break (breakAsync): arrivals after it wait for it.
    for (let q = Atomics.load(this.queued, 0); q !== 0 && q !== agent + 1; q = Atomics.load(this.queued, 0)) Atomics.wait(this.queued, 0, q, 1);
    for (let i = 0; i < SPINS; i++) if (this.tryLock(agent)) return;
    // Announce a waiter (state 2) and sleep until the word changes; the
    // exchange that finds FREE is the one that takes the lock.
    Atomics.add(this.waiters, 0, 1);
    while (Atomics.exchange(this.word, 0, CONTENDED) !== FREE) Atomics.wait(this.word, 0, CONTENDED);
    Atomics.sub(this.waiters, 0, 1);
    Atomics.store(this.owner, 0, agent + 1);
  }

  /** write_lock without blocking the event loop (the coordinator). */
  async lockAsync(agent: number): Promise<void> {
    if (this.prove) this.assertNotHeldBy(agent, 'lockAsync');
    for (let i = 0; i < SPINS; i++) if (this.tryLock(agent)) return;
    Atomics.add(this.waiters, 0, 1);
    while (Atomics.exchange(this.word, 0, CONTENDED) !== FREE) await waitAsync(this.word, 0, CONTENDED);
    Atomics.sub(this.waiters, 0, 1);
    Atomics.store(this.owner, 0, agent + 1);
  }

  /** rwlock_is_contended: some other agent waits for the lock (a snapshot). */
  contended(): boolean {
    return Atomics.load(this.waiters, 0) > 0;
  }

  /**
   * cond_resched_rwlock_write for a holder on an event loop (the
   * coordinator), called when the lock is contended: release it, let a
   * waiter take it, then take it again queued as KVM's qrwlock queues a
   * re-acquiring writer — behind the agents already waiting, ahead of those
   * that arrive later. This mutex alone would let the releaser barge back in
   * and, once it waits on its event loop (a waitAsync wake-up comes later
   * than a parked worker's), let every later arrival barge ahead of it. So:
   * after the release, yield to the event loop until someone else took the
   * lock (at most `handOffMs`); then publish this agent in `lockQueuedWriter`,
   * which makes later lock() calls wait until it is cleared, and take the
   * lock without blocking the event loop (the coordinator observes the vCPUs
   * meanwhile); the futex wait queue serves the earlier waiters first.
   */
  async breakAsync(agent: number, handOffMs = 1): Promise<void> {
    this.unlock(agent);
    const deadline = performance.now() + handOffMs;
    while (Atomics.load(this.word, 0) === FREE && this.contended() && performance.now() < deadline) {
      await new Promise<void>((r) => setImmediate(r));
    }
    Atomics.store(this.queued, 0, agent + 1);
    try {
      await this.lockAsync(agent);
    } finally {
      Atomics.store(this.queued, 0, 0);
      Atomics.notify(this.queued, 0);
    }
  }

  /** write_unlock. Wakes one waiter if any announced itself. */
  unlock(agent: number): void {
    if (this.prove) this.assertHeld(agent, 'unlock');
    Atomics.store(this.owner, 0, 0);
    // HELD -> FREE with no waiter; CONTENDED -> store FREE and wake one.
    if (Atomics.sub(this.word, 0, 1) !== HELD) {
      Atomics.store(this.word, 0, FREE);
      Atomics.notify(this.word, 0, 1);
    }
  }

  /** Run `fn` with the lock held (released on throw too). */
  with<T>(agent: number, fn: () => T): T {
    this.lock(agent);
    try {
      return fn();
    } finally {
      this.unlock(agent);
    }
  }

  /** The holder as an agent id, or -1 (a snapshot). */
  holder(): number {
    return Atomics.load(this.owner, 0) - 1;
  }

  /** lockdep_assert_held_write: only checked in prove mode. */
  assertHeld(agent: number, where: string): void {
    if (!this.prove) return;
    const h = this.holder();
    if (h !== agent) throw new MmuLockError(`${where}: mmu_lock must be held by agent ${agent}, but ${h < 0 ? 'nobody holds it' : `agent ${h} holds it`}`);
  }

  private assertNotHeldBy(agent: number, where: string): void {
    if (this.holder() === agent) throw new MmuLockError(`${where}: agent ${agent} already holds mmu_lock (it is not recursive)`);
  }
}

/**
 * Page-table pages come from a range of guest memory handed out one 4 KiB
 * frame at a time, in increasing order, never freed. The cursor lives in its
 * own small SharedArrayBuffer so builders on several threads can allocate
 * from one range.
 */
import { allocate, bindRecord, defineLayout, type RecordView } from '../layout/layout.js';
import { hexAddr, PAGE_SIZE } from '../memory/address.js';
import type { GuestMemory } from '../memory/guest-memory.js';

const FIELDS = {
  next: {
    type: 'i32',
    doc: 'next free frame number (gpa >> 12). Any builder thread takes a frame with Atomics.add; read by nobody else.',
  },
  end: {
    type: 'i32',
    doc: 'first frame number past the range. Written once by create() before the buffer is shared; read-only after.',
  },
} as const;

export const FRAME_ALLOCATOR_LAYOUT = defineLayout('frame-allocator', FIELDS);

export class FrameAllocatorError extends RangeError {
  override name = 'FrameAllocatorError';
}

export interface FrameRange {
  /** First byte of the range, page aligned. */
  readonly start: number;
  /** One past the last byte, page aligned, at most the memory size. */
  readonly end: number;
}

export class FrameAllocator {
  private readonly view: RecordView<typeof FIELDS>;

  private constructor(
    readonly mem: GuestMemory,
    readonly buffer: SharedArrayBuffer,
  ) {
    this.view = bindRecord(FRAME_ALLOCATOR_LAYOUT, buffer);
  }

  /** An allocator over `range` (default: all of memory above the first page). */
  static create(mem: GuestMemory, range: FrameRange = { start: PAGE_SIZE, end: mem.size }): FrameAllocator {
    const { start, end } = range;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start % PAGE_SIZE || end % PAGE_SIZE || start < 0 || end > mem.size || start >= end) {
      throw new FrameAllocatorError(`frame range ${start}..${end} must be page aligned, non-empty and inside the ${mem.size}-byte memory`);
    }
    if (end / PAGE_SIZE > 0x7fffffff) throw new FrameAllocatorError('frame range ends beyond 8 TiB');
    const a = new FrameAllocator(mem, allocate(FRAME_ALLOCATOR_LAYOUT));
    // Written before the buffer is handed to any other thread.
    Atomics.store(a.view.next, 0, start / PAGE_SIZE);
    Atomics.store(a.view.end, 0, end / PAGE_SIZE);
    return a;
  }

  /** The same allocator on another thread. */
  static attach(mem: GuestMemory, buffer: SharedArrayBuffer): FrameAllocator {
    return new FrameAllocator(mem, buffer);
  }

  /** Frames left. */
  get remaining(): number {
    return Math.max(0, Atomics.load(this.view.end, 0) - Atomics.load(this.view.next, 0));
  }

  /** A fresh zeroed page's guest physical address. Throws when the range is used up. */
  allocPage(): number {
    const frame = Atomics.add(this.view.next, 0, 1);
    if (frame >= Atomics.load(this.view.end, 0)) {
      throw new FrameAllocatorError(`no page-table pages left (range ends at ${hexAddr(BigInt(Atomics.load(this.view.end, 0) * PAGE_SIZE))})`);
    }
    const pa = frame * PAGE_SIZE;
    // Not yet linked into any table, so no other thread can be reading it.
    this.mem.clearPage(pa);
    return pa;
  }
}

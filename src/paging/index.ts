/**
 * Guest page tables: formats, the builder, and the guest page walker
 * modelled on Linux v5.17 FNAME(walk_addr_generic). Depends on role, cpuid,
 * memory and layout only; MMU contexts are read through the WalkMmu
 * interface.
 */
export * from './format.js';
export * from './mmu-view.js';
export * from './permission.js';
export * from './walker-state.js';
export { gvaToGpa, walkAddrGeneric, translateNestedGpa, newWalker } from './walker.js';
export { updateAccessedDirtyBits } from './accessed-dirty.js';
export { loadPdptrs, pdptrRsvdBits, type PdptrLoad } from './pdptr.js';
export * from './table-format.js';
export { PageTableBuilder, BuilderError, type MapRequest, type EntryRef } from './builder.js';
export { FrameAllocator, FrameAllocatorError, FRAME_ALLOCATOR_LAYOUT, type FrameRange } from './frame-alloc.js';
export { walkGuest, describeAccess, type WalkOk, type WalkErr, type WalkResult, type WalkOptions } from './walk.js';
export { makeWalkLoop, type WalkLoop, type WalkLoopOptions } from './walk-loop.js';

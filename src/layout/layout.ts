/**
 * The one way this project declares a SharedArrayBuffer layout.
 *
 * A layout is a named list of fields, each with an element type, an element
 * count and a line saying who writes it, who reads it and with which ordering
 * (STYLE.md pattern 3). Offsets are computed here, once, from the declaration
 * order and each type's natural alignment; nothing else in the project writes
 * a numeric offset. A layout can be repeated as records (one per vCPU, one per
 * shadow page) with a fixed stride.
 */

export const FIELD_TYPES = {
  u8: { bytes: 1, array: Uint8Array },
  i32: { bytes: 4, array: Int32Array },
  u32: { bytes: 4, array: Uint32Array },
  f64: { bytes: 8, array: Float64Array },
  i64: { bytes: 8, array: BigInt64Array },
  u64: { bytes: 8, array: BigUint64Array },
} as const;

export type FieldType = keyof typeof FIELD_TYPES;

/** The typed array class that views a field of each type. */
export interface ViewOf {
  u8: Uint8Array;
  i32: Int32Array;
  u32: Uint32Array;
  f64: Float64Array;
  i64: BigInt64Array;
  u64: BigUint64Array;
}

export interface FieldSpec<T extends FieldType = FieldType> {
  readonly type: T;
  /** Number of elements (default 1). */
  readonly count?: number;
  /** Who writes it, who reads it, and with which ordering. Required. */
  readonly doc: string;
}

export interface PlacedField<T extends FieldType = FieldType> {
  readonly name: string;
  readonly type: T;
  readonly count: number;
  /** Byte offset from the start of a record. */
  readonly offset: number;
  readonly byteLength: number;
  readonly doc: string;
}

export type FieldSpecs = Record<string, FieldSpec>;

export interface Layout<F extends FieldSpecs = FieldSpecs> {
  readonly name: string;
  readonly fields: { readonly [K in keyof F]: PlacedField<F[K]['type']> };
  /** Bytes used by one record, before padding. */
  readonly byteLength: number;
  /** Distance between consecutive records: byteLength rounded up to 8. */
  readonly stride: number;
}

export class LayoutError extends Error {
  override name = 'LayoutError';
}

const align = (n: number, to: number): number => Math.ceil(n / to) * to;

/** Declare a layout. Fields are placed in declaration order, naturally aligned. */
export function defineLayout<F extends FieldSpecs>(name: string, specs: F): Layout<F> {
  let offset = 0;
  const fields: Record<string, PlacedField> = {};
  for (const [fieldName, spec] of Object.entries(specs)) {
    const count = spec.count ?? 1;
    if (!Number.isInteger(count) || count < 1) {
      throw new LayoutError(`${name}.${fieldName}: count must be a positive integer, got ${count}`);
    }
    if (!spec.doc || spec.doc.trim().length === 0) {
      throw new LayoutError(`${name}.${fieldName}: a shared field must say who writes and reads it`);
    }
    const { bytes } = FIELD_TYPES[spec.type];
    offset = align(offset, bytes);
    fields[fieldName] = {
      name: fieldName,
      type: spec.type,
      count,
      offset,
      byteLength: bytes * count,
      doc: spec.doc,
    };
    offset += bytes * count;
  }
  const layout = {
    name,
    fields: fields as Layout<F>['fields'],
    byteLength: offset,
    stride: align(Math.max(offset, 8), 8),
  };
  checkNoOverlap(layout);
  return layout;
}

/** Throws if two fields of a layout share a byte or a field is misaligned. */
export function checkNoOverlap(layout: Layout): void {
  const placed = Object.values(layout.fields as Record<string, PlacedField>).sort((a, b) => a.offset - b.offset);
  for (let i = 0; i < placed.length; i++) {
    const f = placed[i]!;
    if (f.offset % FIELD_TYPES[f.type].bytes !== 0) {
      throw new LayoutError(`${layout.name}.${f.name} is misaligned at byte ${f.offset}`);
    }
    if (f.offset + f.byteLength > layout.byteLength) {
      throw new LayoutError(`${layout.name}.${f.name} runs past the end of the record`);
    }
    const next = placed[i + 1];
    if (next && f.offset + f.byteLength > next.offset) {
      throw new LayoutError(`${layout.name}.${f.name} overlaps ${layout.name}.${next.name}`);
    }
  }
}

/** Allocate a SharedArrayBuffer holding `records` records of a layout, zero-filled. */
export function allocate(layout: Layout, records = 1): SharedArrayBuffer {
  if (!Number.isInteger(records) || records < 1) {
    throw new LayoutError(`${layout.name}: record count must be a positive integer, got ${records}`);
  }
  return new SharedArrayBuffer(layout.stride * records);
}

/** A typed-array view of every field of one record. */
export type RecordView<F extends FieldSpecs> = { readonly [K in keyof F]: ViewOf[F[K]['type']] };

/**
 * Bind the fields of record `index` of `buffer` to typed arrays.
 * The buffer must be large enough; the views alias the shared memory.
 */
export function bindRecord<F extends FieldSpecs>(
  layout: Layout<F>,
  buffer: SharedArrayBuffer | ArrayBuffer,
  index = 0,
): RecordView<F> {
  const base = layout.stride * index;
  if (!Number.isInteger(index) || index < 0 || base + layout.byteLength > buffer.byteLength) {
    throw new LayoutError(`${layout.name}: record ${index} is outside a buffer of ${buffer.byteLength} bytes`);
  }
  const out: Record<string, unknown> = {};
  for (const f of Object.values(layout.fields as Record<string, PlacedField>)) {
    const Ctor = FIELD_TYPES[f.type].array;
    out[f.name] = new Ctor(buffer as ArrayBuffer, base + f.offset, f.count);
  }
  return out as RecordView<F>;
}

/** A human-readable table of a layout: offset, type, count, name, doc. */
export function describeLayout(layout: Layout): string {
  const rows = Object.values(layout.fields as Record<string, PlacedField>).map(
    (f) => `${String(f.offset).padStart(6)}  ${f.type.padEnd(3)} x${String(f.count).padEnd(4)} ${f.name}: ${f.doc}`,
  );
  return [`${layout.name} (${layout.byteLength} bytes, stride ${layout.stride})`, ...rows].join('\n');
}

/**
 * Declared 32-bit bitfields (STYLE.md pattern 2): one table of (shift, width)
 * per field, checked when the module that declares it loads; values are
 * normalised to unsigned 32-bit. Bit-fields follow GCC's LSB-first allocation
 * on little-endian x86-64, which is what the kernel's unions use.
 */

export type FieldTable = Readonly<Record<string, readonly [shift: number, width: number]>>;

export class Bitfield<N extends string> {
  readonly names: readonly N[];
  /** Mask of every bit some field owns. */
  readonly usedMask: number;
  private readonly shift: Record<N, number>;
  private readonly mask: Record<N, number>;

  constructor(
    readonly name: string,
    table: Readonly<Record<N, readonly [number, number]>>,
  ) {
    this.names = Object.keys(table) as N[];
    this.shift = {} as Record<N, number>;
    this.mask = {} as Record<N, number>;
    let used = 0;
    for (const f of this.names) {
      const [shift, width] = table[f];
      if (!Number.isInteger(shift) || !Number.isInteger(width) || width < 1 || shift < 0 || shift + width > 32) {
        throw new Error(`${name}.${f}: bits ${shift}+${width} do not fit a 32-bit word`);
      }
      const m = (width === 32 ? 0xffffffff : ((1 << width) - 1) << shift) >>> 0;
      if ((used & m) !== 0) throw new Error(`${name}.${f} overlaps another field`);
      used = (used | m) >>> 0;
      this.shift[f] = shift;
      this.mask[f] = m;
    }
    this.usedMask = used;
  }

  /** Field value of a word. */
  get(word: number, field: N): number {
    return ((word & this.mask[field]) >>> 0) >>> this.shift[field];
  }

  /** The word with one field replaced. Throws if the value does not fit. */
  set(word: number, field: N, value: number): number {
    const width = this.width(field);
    if (!Number.isInteger(value) || value < 0 || value >= 2 ** width) {
      throw new RangeError(`${this.name}.${field}: ${value} does not fit in ${width} bit(s)`);
    }
    return ((word & ~this.mask[field]) | (value << this.shift[field])) >>> 0;
  }

  /** The single-bit (or multi-bit) mask of a field, for hot paths. */
  maskOf(field: N): number {
    return this.mask[field];
  }

  shiftOf(field: N): number {
    return this.shift[field];
  }

  width(field: N): number {
    let m = this.mask[field] >>> this.shift[field];
    let w = 0;
    while (m !== 0) {
      w++;
      m >>>= 1;
    }
    return w;
  }

  /** Encode an object of field values; missing fields are 0. */
  encode(values: Partial<Record<N, number | boolean>>): number {
    let word = 0;
    for (const f of this.names) {
      const v = values[f];
      if (v !== undefined) word = this.set(word, f, typeof v === 'boolean' ? Number(v) : v);
    }
    return word;
  }

  /** Decode every field of a word. Bits no field owns are returned as `unused`. */
  decode(word: number): Record<N, number> & { unused: number } {
    const out: Record<string, number> = { unused: (word & ~this.usedMask) >>> 0 };
    for (const f of this.names) out[f] = this.get(word, f);
    return out as Record<N, number> & { unused: number };
  }
}

/** `0x` plus eight lower-case hex digits. */
export const hex32 = (word: number): string => '0x' + (word >>> 0).toString(16).padStart(8, '0');

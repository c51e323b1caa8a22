/**
 * Conversions between the stored weight formats and float32 / float16 bits. All stored data is
 * little-endian (safetensors and GGUF both say so).
 */

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Little-endian u16 words of `bytes` (length must be even). Copies when unaligned or on big-endian hosts. */
export function u16View(bytes: Uint8Array): Uint16Array {
  const n = bytes.byteLength >>> 1;
  if (HOST_LITTLE_ENDIAN) {
    if (bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, n);
    return new Uint16Array(bytes.slice().buffer, 0, n);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = dv.getUint16(2 * i, true);
  return out;
}

/** Little-endian f32 values of `bytes` (length a multiple of 4), as a new Float32Array. */
export function f32FromBytes(bytes: Uint8Array): Float32Array {
  const n = bytes.byteLength >>> 2;
  if (HOST_LITTLE_ENDIAN) {
    // Always copy: the caller owns the result and the source buffer may be reused or shared.
    return new Float32Array(bytes.slice().buffer, 0, n);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
  return out;
}

/**
 * Filled by a conversion that is given one: the index of the first NaN or ±Infinity it met, or
 * -1. The test rides along the conversion loop (one OR per value, from the bits), so checking
 * weights while converting them costs almost nothing.
 */
export interface FiniteCheck {
  firstNonFinite: number;
}

/** Index of the first float16 / bfloat16 word in `bits` whose exponent (bits under `expMask`) is all ones, or -1. */
function firstAllOnesExponent(bits: Uint16Array, expMask: number): number {
  for (let i = 0; i < bits.length; i++) if ((bits[i]! & expMask) === expMask) return i;
  return -1;
}

/** bfloat16 bits → float32 (exact: bf16 is the top half of an f32). */
export function bf16ToF32(bits: Uint16Array, check?: FiniteCheck): Float32Array {
  const out = new Uint32Array(bits.length);
  if (!check) {
    for (let i = 0; i < bits.length; i++) out[i] = bits[i]! << 16;
    return new Float32Array(out.buffer);
  }
  // (exponent + 1) carries into bit 15 only when the 8 exponent bits are all ones.
  let bad = 0;
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    out[i] = b << 16;
    bad |= ((b & 0x7f80) + 0x80) & 0x8000;
  }
  check.firstNonFinite = bad === 0 ? -1 : firstAllOnesExponent(bits, 0x7f80);
  return new Float32Array(out.buffer);
}

/** One IEEE half → its exact float value (subnormals, ±Inf and NaN included). */
export function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

let f16Table: Float32Array | undefined;
/** Table of all 65536 halves as float32 (256 KiB, built on first use). */
function halfTable(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToNumber(h);
  }
  return f16Table;
}

/** float16 bits → float32 (exact). */
export function f16ToF32(bits: Uint16Array, check?: FiniteCheck): Float32Array {
  const t = halfTable();
  const out = new Float32Array(bits.length);
  if (!check) {
    for (let i = 0; i < bits.length; i++) out[i] = t[bits[i]!]!;
    return out;
  }
  let bad = 0;
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    out[i] = t[b]!;
    bad |= ((b & 0x7c00) + 0x400) & 0x8000;
  }
  check.firstNonFinite = bad === 0 ? -1 : firstAllOnesExponent(bits, 0x7c00);
  return out;
}

/** Index of the first float16 word that is NaN or ±Infinity, or -1 (a branch-free pass first). */
export function firstNonFiniteF16(bits: Uint16Array): number {
  let bad = 0;
  for (let i = 0; i < bits.length; i++) bad |= ((bits[i]! & 0x7c00) + 0x400) & 0x8000;
  return bad === 0 ? -1 : firstAllOnesExponent(bits, 0x7c00);
}

/** Index of the first NaN or ±Infinity in `values`, or -1. */
export function firstNonFiniteF32(values: Float32Array): number {
  // x · 0 is ±0 for finite x and NaN for NaN and ±Infinity: one branch-free sum tells (about
  // 3× faster than testing each value); the search runs only when something is wrong.
  let acc = 0;
  for (let i = 0; i < values.length; i++) acc += values[i]! * 0;
  if (acc === 0) return -1;
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i]!)) return i;
  return -1;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 value → float16 bits, round to nearest even; overflow → ±Inf, NaN → quiet NaN. */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): value = mant_with_implicit * 2^(e-1-23+...) — shift with rounding.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e; // 24-bit significand → 10-bit field at exponent 0
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1) === 1)) m++;
    return sign | m; // m may carry into the exponent field (0x400), which is the correct smallest normal
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  let out = sign | (e << 10) | m;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1) === 1)) out++; // carry may bump the exponent; to Inf at the top
  return out;
}

/** float32 array → float16 bits (for GPU f16 storage). `check` also catches values beyond ±65504 (they round to ±Infinity). */
export function f32ToF16(values: Float32Array, check?: FiniteCheck): Uint16Array {
  const out = new Uint16Array(values.length);
  let bad = 0;
  for (let i = 0; i < values.length; i++) {
    const h = f32ToF16Bits(values[i]!);
    out[i] = h;
    bad |= ((h & 0x7c00) + 0x400) & 0x8000;
  }
  if (check) check.firstNonFinite = bad === 0 ? -1 : firstAllOnesExponent(out, 0x7c00);
  return out;
}

/**
 * IEEE 754 binary16 ("half", WGSL `f16`) conversion for f16 storage buffers.
 *
 * float32 → half rounds to nearest, ties to even, with gradual underflow to subnormals and
 * overflow to ±Infinity (values ≥ 65520 in magnitude); NaN stays NaN (quiet, sign and top
 * payload bits kept); −0 stays −0. half → float32 is exact.
 */

// Scratch views for the scalar functions (synchronous use only; not shared state in any
// observable sense).
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** Half bits (0..65535) of the float32 nearest to `x` — `x` is first rounded to float32. */
export function float32ToFloat16Bits(x: number): number {
  scratchF32[0] = x;
  return f32BitsToF16Bits(scratchU32[0]!);
}

/** The float value of half bits `h` (exact). */
export function float16BitsToFloat32(h: number): number {
  scratchU32[0] = f16BitsToF32Bits(h & 0xffff);
  return scratchF32[0]!;
}

/** Converts a Float32Array (or number list) to half bits. */
export function toFloat16Bits(src: Float32Array | readonly number[]): Uint16Array {
  const f32 = src instanceof Float32Array ? src : Float32Array.from(src);
  const bits = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
  const out = new Uint16Array(f32.length);
  for (let i = 0; i < out.length; i++) out[i] = f32BitsToF16Bits(bits[i]!);
  return out;
}

/** Converts half bits to a Float32Array (exact). */
export function fromFloat16Bits(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = f16BitsToF32Bits(src[i]!);
  return out;
}

/** Rounds every element to the nearest half value (what a round trip through f16 storage gives). */
export function roundToFloat16(src: Float32Array): Float32Array {
  return fromFloat16Bits(toFloat16Bits(src));
}

/** float32 bit pattern → half bit pattern, round to nearest even. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) {
    // Inf or NaN. NaN: keep the top 10 payload bits and force the quiet bit so it stays NaN.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 112; // rebias 127 → 15
  if (e >= 31) return sign | 0x7c00; // ≥ 2^16: overflow
  if (e >= 1) {
    let h = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h++; // may carry into exp (→ Inf)
    return sign | h;
  }
  // Subnormal half (or zero). Below 2^-25 everything rounds to zero (2^-25 itself ties to 0).
  if (e < -10) return sign;
  const m = mant | 0x800000;
  const shift = 14 - e; // 14..24
  let h = m >>> shift;
  const rest = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && (h & 1) !== 0)) h++; // may carry to the smallest normal
  return sign | h;
}

/** half bit pattern → float32 bit pattern (exact). */
export function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal: normalise. value = mant * 2^-24.
  let m = mant;
  let e = 113; // float32 exponent of 2^-14
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

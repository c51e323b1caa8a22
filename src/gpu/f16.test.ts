import { describe, expect, it } from 'vitest';
import {
  f16BitsToF32Bits,
  f32BitsToF16Bits,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  fromFloat16Bits,
  roundToFloat16,
  toFloat16Bits,
} from './f16.js';
import { seededRandom, testSeed } from '../../test/gpu-helpers.js';

/** Value of half bits by the textbook formula (independent of the implementation). */
function refDecode(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

// val[i] = value of positive half bits i for i in 0..0x7c00, where 0x7c00 stands for 2^16 —
// the value overflow rounds against (so 65520 ties to even = 0x7c00 = Infinity, as in IEEE).
const POS = Array.from({ length: 0x7c01 }, (_, i) => (i === 0x7c00 ? 65536 : refDecode(i)));

/** Nearest half by brute search over all finite positive halves, ties to even. */
function refEncode(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65536) return sign | 0x7c00;
  let lo = 0;
  let hi = 0x7c00; // POS[lo] <= a < POS[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (POS[mid]! <= a) lo = mid;
    else hi = mid;
  }
  if (POS[lo] === a) return sign | lo;
  const dl = a - POS[lo]!;
  const dh = POS[hi]! - a;
  const pick = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
  return sign | pick;
}

const isNanBits = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;


describe('f16 conversion', () => {
  it('decodes all 65536 half values exactly', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const bulk = fromFloat16Bits(all);
    for (let h = 0; h < 65536; h++) {
      const want = refDecode(h);
      const got = float16BitsToFloat32(h);
      if (Number.isNaN(want)) {
        expect(Number.isNaN(got)).toBe(true);
        expect(Number.isNaN(bulk[h]!)).toBe(true);
      } else {
        // Object.is distinguishes -0 from +0.
        if (!Object.is(got, want) || !Object.is(bulk[h], want)) expect([h, got, bulk[h]]).toEqual([h, want, want]);
      }
    }
  });

  it('round-trips every half value (NaN stays NaN with its sign)', () => {
    for (let h = 0; h < 65536; h++) {
      const back = f32BitsToF16Bits(f16BitsToF32Bits(h));
      if (isNanBits(h)) {
        expect(isNanBits(back)).toBe(true);
        expect(back & 0x8000).toBe(h & 0x8000);
      } else if (back !== h) {
        expect(back).toBe(h);
      }
    }
  });

  it('rounds midpoints to even and their float32 neighbours to the nearer half (all adjacent pairs)', () => {
    let checked = 0;
    const bad: string[] = [];
    const check = (x: number, want: number) => {
      checked++;
      const got = float32ToFloat16Bits(x);
      if (got !== want && bad.length < 5) bad.push(`${x} → 0x${got.toString(16)}, want 0x${want.toString(16)}`);
    };
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let i = 0; i < 0x7c00; i++) {
      const lo = POS[i]!;
      const hi = POS[i + 1]!;
      const mid = (lo + hi) / 2; // exactly representable in f32 (12 significant bits)
      if (Math.fround(mid) !== mid) bad.push(`midpoint ${mid} not a float32`);
      const evenPick = i % 2 === 0 ? i : i + 1;
      f[0] = mid;
      const midBits = u[0]!;
      u[0] = midBits - 1;
      const below = f[0]!;
      u[0] = midBits + 1;
      const above = f[0]!;
      for (const s of [1, -1]) {
        const sign = s < 0 ? 0x8000 : 0;
        check(s * mid, sign | evenPick);
        check(s * below, sign | i);
        check(s * above, sign | (i + 1));
      }
    }
    expect(bad).toEqual([]);
    expect(checked).toBe(0x7c00 * 6);
  });

  it('handles overflow, underflow, signed zero, infinities and NaN', () => {
    expect(float32ToFloat16Bits(65504)).toBe(0x7bff);
    expect(float32ToFloat16Bits(65519.99)).toBe(0x7bff);
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00);
    expect(float32ToFloat16Bits(1e9)).toBe(0x7c00);
    expect(float32ToFloat16Bits(-1e9)).toBe(0xfc00);
    expect(float32ToFloat16Bits(Infinity)).toBe(0x7c00);
    expect(float32ToFloat16Bits(-Infinity)).toBe(0xfc00);
    expect(float32ToFloat16Bits(-0)).toBe(0x8000);
    expect(float32ToFloat16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(float32ToFloat16Bits(2 ** -25)).toBe(0x0000); // tie → even (zero)
    expect(float32ToFloat16Bits(2 ** -25 * 1.0001)).toBe(0x0001);
    expect(float32ToFloat16Bits(-(2 ** -26))).toBe(0x8000);
    expect(float32ToFloat16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up into the normals
    expect(isNanBits(float32ToFloat16Bits(NaN))).toBe(true);
    // A NaN whose payload lives only in the low bits must not become Infinity.
    expect(isNanBits(f32BitsToF16Bits(0x7f800001))).toBe(true);
    expect(f32BitsToF16Bits(0xff800001) & 0x8000).toBe(0x8000);
  });

  it('matches the brute-force nearest half on random float32 bit patterns', () => {
    const rand = seededRandom(testSeed('f16 random bits'));
    const n = 200_000;
    const xs = new Float32Array(n);
    const bits = new Uint32Array(xs.buffer);
    for (let i = 0; i < n; i++) {
      // Half the patterns fully random, half with exponents in and around half's range.
      const u = (rand() * 2 ** 32) >>> 0;
      bits[i] = i % 2 ? u : ((u & 0x807fffff) | (((100 + Math.floor(rand() * 45)) & 0xff) << 23)) >>> 0;
    }
    const bulk = toFloat16Bits(xs);
    let mismatches = 0;
    for (let i = 0; i < n; i++) {
      const x = xs[i]!;
      const want = refEncode(x);
      const got = bulk[i]!;
      const ok = Number.isNaN(x) ? isNanBits(got) : got === want;
      if (!ok && mismatches++ < 5) console.log('mismatch', x, bits[i]!.toString(16), got.toString(16), want.toString(16));
    }
    expect(mismatches).toBe(0);
  });

  it('agrees with Math.f16round where the runtime has it', () => {
    const f16round = (Math as unknown as { f16round?: (x: number) => number }).f16round;
    if (!f16round) return;
    const rand = seededRandom(1);
    const xs = new Float32Array(10000).map(() => (rand() - 0.5) * 2 ** (rand() * 40 - 26));
    const ours = roundToFloat16(xs);
    xs.forEach((x, i) => expect(ours[i]).toBe(Math.fround(f16round(x))));
  });

  it('bulk conversion accepts views with an offset and plain arrays', () => {
    const big = new Float32Array([9, 1.5, -2, 65504]);
    const view = big.subarray(1);
    expect(Array.from(toFloat16Bits(view))).toEqual([0x3e00, 0xc000, 0x7bff]);
    expect(Array.from(toFloat16Bits([1.5, -2]))).toEqual([0x3e00, 0xc000]);
    expect(Array.from(roundToFloat16(new Float32Array([0.1])))).toEqual([Math.fround(0.0999755859375)]);
  });
});

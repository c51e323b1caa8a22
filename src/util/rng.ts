/**
 * Seeded pseudo-random numbers, no global state — used for sampling, synthetic benchmarks and
 * tests, so every run can be reproduced from its seed.
 *
 * PRNG: xoshiro128** (Blackman & Vigna, 2018), 128-bit state seeded from the seed by four
 * SplitMix32 outputs. A uniform float in [0, 1) takes two outputs: (a >>> 5) · 2^26 +
 * (b >>> 6), divided by 2^53. All arithmetic is 32-bit integer (Math.imul), so it is exact and
 * identical on every platform.
 */
import { HipAttnError } from '../errors.js';

/** SplitMix32 step: returns [output, next state]. */
function splitMix32(state: number): [number, number] {
  const s = (state + 0x9e3779b9) | 0;
  let z = s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  z ^= z >>> 16;
  return [z >>> 0, s];
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k));

/** xoshiro128** seeded by SplitMix32. */
export class Rng {
  private spare: number | null = null;

  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new HipAttnError('INVALID_OPTION', `seed must be an integer, got ${seed}`);
    // Fold a 53-bit seed into 32 bits (hi ^ lo), so every safe integer is a distinct-ish seed.
    let st = (seed >>> 0) ^ Math.floor(seed / 2 ** 32);
    const out: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [z, next] = splitMix32(st);
      out.push(z);
      st = next;
    }
    [this.s0, this.s1, this.s2, this.s3] = out as [number, number, number, number];
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** Next 32-bit unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9);
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result >>> 0;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const a = this.nextU32() >>> 5;
    const b = this.nextU32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.nextFloat() * n);
  }

  /** Standard normal (Box–Muller, the second value cached). */
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.nextFloat();
    const v = this.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** A Float32Array of n standard-normal values times `scale`. */
  normalArray(n: number, scale = 1): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = this.normal() * scale;
    return a;
  }
}

/** A fresh random seed (for runs that log the seed they used). */
export function freshSeed(): number {
  return (Math.random() * 4294967296) >>> 0;
}

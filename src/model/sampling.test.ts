/**
 * Sampling: the PRNG against values computed by an independent (Python) implementation of
 * SplitMix32 + xoshiro128**, and greedy / temperature / top-k / top-p against the distributions
 * they define, on fresh random logits.
 */
import { describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import { Rng, Sampler, topKIds } from './sampling.js';

const seed = Number(process.env.HIPATTN_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`sampling.test seed ${seed} (set HIPATTN_SEED to reproduce)`);
const rng = new Rng(seed);

function randomLogits(n: number, scale = 3): Float32Array {
  return new Float32Array(n).map(() => (rng.nextFloat() * 2 - 1) * scale);
}
function softmax(logits: Float32Array, t = 1): number[] {
  const m = Math.max(...logits);
  const e = Array.from(logits, (v) => Math.exp((v - m) / t));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
}
/** Draws n samples and returns counts per id. */
function histogram(s: Sampler, logits: Float32Array, n: number): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < n; i++) counts[s.sample(logits)]!++;
  return counts;
}
/** Every count within 5 standard deviations of n·p (and zero where p is zero). */
function expectMatches(counts: number[], probs: number[], n: number): void {
  counts.forEach((c, i) => {
    const p = probs[i]!;
    if (p === 0) expect(c, `id ${i} has probability 0`).toBe(0);
    else expect(Math.abs(c - n * p), `id ${i}: ${c} draws, expected ${(n * p).toFixed(1)}`).toBeLessThanOrEqual(5 * Math.sqrt(n * p * (1 - p)) + 1);
  });
}

describe('Rng (xoshiro128** seeded by SplitMix32)', () => {
  it('matches an independent implementation', () => {
    const expected: Record<number, number[]> = {
      0: [3809008728, 1133695204, 53579671, 2891528803, 139681546],
      42: [2837322924, 544945897, 479756282, 3500138142, 339756180],
      123456789: [4284103975, 1001954530, 2701803082, 2658065534, 3104308804],
    };
    for (const [s, values] of Object.entries(expected)) {
      const r = new Rng(Number(s));
      expect(values.map(() => r.nextU32())).toEqual(values);
    }
  });
  it('floats are in [0, 1) and uniform (16-bin chi-square)', () => {
    const r = new Rng(seed);
    const bins = new Array<number>(16).fill(0);
    const n = 160000;
    let outside = 0;
    for (let i = 0; i < n; i++) {
      const u = r.nextFloat();
      if (!(u >= 0 && u < 1)) outside++;
      else bins[Math.floor(u * 16)]!++;
    }
    expect(outside).toBe(0);
    const chi2 = bins.reduce((s, c) => s + (c - n / 16) ** 2 / (n / 16), 0);
    expect(chi2).toBeLessThan(45); // 15 degrees of freedom; p ≈ 1e-4
  });
});

describe('Sampler', () => {
  it('greedy (temperature 0, or topK 1) is the argmax, first on ties', () => {
    const logits = randomLogits(1000);
    const best = logits.indexOf(Math.max(...logits));
    expect(new Sampler({ temperature: 0 }).sample(logits)).toBe(best);
    expect(new Sampler({ temperature: 0.8, topK: 1, seed: 5 }).sample(logits)).toBe(best);
    expect(new Sampler({ temperature: 0 }).sample(new Float32Array([1, 3, 3, 2]))).toBe(1);
  });

  it('temperature sampling follows softmax(logits / T)', () => {
    const logits = randomLogits(12);
    for (const t of [1, 0.5, 2]) {
      const n = 40000;
      expectMatches(histogram(new Sampler({ temperature: t, seed }), logits, n), softmax(logits, t), n);
    }
  });

  it('top-k samples only the k best, in proportion', () => {
    const logits = randomLogits(50);
    const k = 5;
    const keep = topKIds(logits, k);
    const sorted = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!);
    expect(keep).toEqual(sorted.slice(0, k));
    const probs = new Array<number>(50).fill(0);
    const sm = softmax(new Float32Array(keep.map((i) => logits[i]!)));
    keep.forEach((id, j) => (probs[id] = sm[j]!));
    const n = 30000;
    expectMatches(histogram(new Sampler({ topK: k, seed }), logits, n), probs, n);
  });

  it('top-p keeps the smallest most-likely set reaching p, in proportion', () => {
    const logits = randomLogits(30);
    const p = 0.7;
    const sm = softmax(logits);
    const order = Array.from(sm.keys()).sort((a, b) => sm[b]! - sm[a]!);
    const nucleus: number[] = [];
    let cum = 0;
    for (const id of order) {
      nucleus.push(id);
      cum += sm[id]!;
      if (cum >= p) break;
    }
    const probs = new Array<number>(30).fill(0);
    const z = nucleus.reduce((s, id) => s + sm[id]!, 0);
    for (const id of nucleus) probs[id] = sm[id]! / z;
    const n = 30000;
    expectMatches(histogram(new Sampler({ topP: p, seed }), logits, n), probs, n);
  });

  it('the same seed gives the same tokens; another seed other tokens', () => {
    const logits = randomLogits(200, 1);
    const draw = (s: number) => {
      const sampler = new Sampler({ temperature: 1, topK: 50, topP: 0.9, seed: s });
      return Array.from({ length: 100 }, () => sampler.sample(logits));
    };
    expect(draw(seed)).toEqual(draw(seed));
    expect(draw(seed)).not.toEqual(draw(seed + 1));
  });

  it('rejects bad options with INVALID_OPTION', () => {
    for (const o of [{ temperature: -1 }, { temperature: NaN }, { topK: 1.5 }, { topP: 0 }, { topP: 1.5 }, { seed: 0.5 }]) {
      expect(() => new Sampler(o)).toThrow(HipAttnError);
    }
  });
});

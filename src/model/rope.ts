/**
 * Rotary position embeddings in the Hugging Face `rotate_half` layout: dimension i of a head is
 * paired with dimension i + headDim/2 (not with i + 1 as in the original / llama.cpp layout).
 *
 *   angle(p, i) = p · invFreq[i],  i = 0 … headDim/2 − 1
 *   x'[i]         = x[i] cos − x[i + d/2] sin
 *   x'[i + d/2]   = x[i + d/2] cos + x[i] sin
 *
 * Angles are rounded to float32 as transformers computes them (it multiplies float32 positions
 * by float32 inverse frequencies), which matters at long contexts.
 */
import type { RopeConfig } from './config.js';

/** Inverse frequencies (float32, length headDim/2) with the config's scaling applied. */
export function ropeInvFreq(rope: RopeConfig, headDim: number): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)) in float32
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(rope.theta, Math.fround((2 * i) / headDim));
  const s = rope.scaling;
  switch (s.type) {
    case 'default':
      break;
    case 'linear':
      for (let i = 0; i < half; i++) inv[i] = inv[i]! / s.factor;
      break;
    case 'llama3': {
      const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
      const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
      for (let i = 0; i < half; i++) {
        const f = inv[i]!;
        const wavelen = (2 * Math.PI) / f;
        if (wavelen < highFreqWavelen) continue; // high frequency: unchanged
        if (wavelen > lowFreqWavelen) {
          inv[i] = f / s.factor; // low frequency: interpolated
        } else {
          const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
          inv[i] = (1 - smooth) * (f / s.factor) + smooth * f;
        }
      }
      break;
    }
    case 'freq_factors':
      for (let i = 0; i < half; i++) inv[i] = inv[i]! / s.factors[i]!;
      break;
  }
  return inv;
}

/** cos and sin tables for positions [start, start + count): each [count, headDim/2]. */
export function ropeTables(invFreq: Float32Array, start: number, count: number): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const cos = new Float32Array(count * half);
  const sin = new Float32Array(count * half);
  for (let t = 0; t < count; t++) {
    const p = start + t;
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * invFreq[i]!);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/**
 * Rotates, in place, `heads` head vectors of one token stored contiguously at x[offset …]
 * (layout [heads, headDim]), using row `row` of the cos/sin tables.
 */
export function applyRope(x: Float32Array, offset: number, heads: number, headDim: number, cos: Float32Array, sin: Float32Array, row: number): void {
  const half = headDim / 2;
  const c0 = row * half;
  for (let h = 0; h < heads; h++) {
    const base = offset + h * headDim;
    for (let i = 0; i < half; i++) {
      const c = cos[c0 + i]!;
      const s = sin[c0 + i]!;
      const a = x[base + i]!;
      const b = x[base + half + i]!;
      x[base + i] = a * c - b * s;
      x[base + half + i] = b * c + a * s;
    }
  }
}

/**
 * The one softmax-attention loop of the CPU reference: for every (batch, head, query) it asks
 * a key-set function which key positions the query reads, then computes exact softmax
 * attention over exactly those keys. Dense, StreamingLLM and HiP differ only in the key set.
 */
import { type AttentionInput, type ResolvedShape, kIndex, kvHeadOf, qIndex } from '../shape.js';

/** Writes the key positions read by query (b, h, i) into `out` (ascending) and returns their count. */
export type KeySetFn = (b: number, h: number, i: number, position: number, out: Int32Array) => number;

export type Precision = 'f32' | 'f64';

/**
 * Softmax attention over the given key sets. With precision 'f64' every intermediate (scores,
 * weights, sums, output) is kept in float64; with 'f32' scores and the output are stored as
 * float32 (the arithmetic itself is JavaScript's float64).
 */
export function attendKeySets(input: AttentionInput, s: ResolvedShape, keySet: KeySetFn, precision: 'f64', onProgress?: (f: number) => void): Float64Array;
export function attendKeySets(input: AttentionInput, s: ResolvedShape, keySet: KeySetFn, precision?: 'f32', onProgress?: (f: number) => void): Float32Array;
export function attendKeySets(
  input: AttentionInput,
  s: ResolvedShape,
  keySet: KeySetFn,
  precision: Precision = 'f32',
  onProgress?: (fraction: number) => void,
): Float32Array | Float64Array {
  const { q, k, v } = input;
  const d = s.headDim;
  const scale = 1 / Math.sqrt(d);
  const Out = precision === 'f64' ? Float64Array : Float32Array;
  const out = new Out(s.batch * s.heads * s.queryLength * d);
  const keys = new Int32Array(s.keyLength);
  const scores = new Out(s.keyLength);
  const acc = new Float64Array(d);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < s.heads; h++) {
      const kvh = kvHeadOf(s, h);
      const kvBase = kIndex(s, b, kvh, 0);
      for (let i = 0; i < s.queryLength; i++) {
        const position = s.queryOffset + i;
        const n = keySet(b, h, i, position, keys);
        const qo = qIndex(s, b, h, i);
        let max = -Infinity;
        for (let j = 0; j < n; j++) {
          const ko = kvBase + keys[j]! * d;
          let dot = 0;
          for (let c = 0; c < d; c++) dot += q[qo + c]! * k[ko + c]!;
          const score = dot * scale;
          scores[j] = score;
          if (score > max) max = score;
        }
        acc.fill(0);
        let sum = 0;
        for (let j = 0; j < n; j++) {
          const w = Math.exp(scores[j]! - max);
          sum += w;
          const vo = kvBase + keys[j]! * d;
          for (let c = 0; c < d; c++) acc[c] += w * v[vo + c]!;
        }
        const inv = n > 0 ? 1 / sum : 0;
        for (let c = 0; c < d; c++) out[qo + c] = acc[c]! * inv;
      }
      onProgress?.((b * s.heads + h + 1) / (s.batch * s.heads));
    }
  }
  return out;
}

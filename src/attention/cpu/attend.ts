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
  const qRow = new Float64Array(d);
  const acc = new Float64Array(d);
  for (let b = 0; b < s.batch; b++) {
    for (let h = 0; h < s.heads; h++) {
      const kvh = kvHeadOf(s, h);
      const kvBase = kIndex(s, b, kvh, 0);
      for (let i = 0; i < s.queryLength; i++) {
        const position = s.queryOffset + i;
        const n = keySet(b, h, i, position, keys);
        const qo = qIndex(s, b, h, i);
        for (let c = 0; c < d; c++) qRow[c] = q[qo + c]! * scale;
        // scores = (q / sqrt(d)) · k, four keys per pass over q (the loop is memory-bound)
        let max = -Infinity;
        let j = 0;
        for (; j + 4 <= n; j += 4) {
          const k0 = kvBase + keys[j]! * d;
          const k1 = kvBase + keys[j + 1]! * d;
          const k2 = kvBase + keys[j + 2]! * d;
          const k3 = kvBase + keys[j + 3]! * d;
          let s0 = 0;
          let s1 = 0;
          let s2 = 0;
          let s3 = 0;
          for (let c = 0; c < d; c++) {
            const x = qRow[c]!;
            s0 += x * k[k0 + c]!;
            s1 += x * k[k1 + c]!;
            s2 += x * k[k2 + c]!;
            s3 += x * k[k3 + c]!;
          }
          scores[j] = s0;
          scores[j + 1] = s1;
          scores[j + 2] = s2;
          scores[j + 3] = s3;
          max = Math.max(max, s0, s1, s2, s3);
        }
        for (; j < n; j++) {
          const ko = kvBase + keys[j]! * d;
          let sc = 0;
          for (let c = 0; c < d; c++) sc += qRow[c]! * k[ko + c]!;
          scores[j] = sc;
          if (sc > max) max = sc;
        }
        // softmax weights and the weighted sum of values, four keys per pass over acc
        acc.fill(0);
        let sum = 0;
        j = 0;
        for (; j + 4 <= n; j += 4) {
          const w0 = Math.exp(scores[j]! - max);
          const w1 = Math.exp(scores[j + 1]! - max);
          const w2 = Math.exp(scores[j + 2]! - max);
          const w3 = Math.exp(scores[j + 3]! - max);
          sum += w0 + w1 + w2 + w3;
          const v0 = kvBase + keys[j]! * d;
          const v1 = kvBase + keys[j + 1]! * d;
          const v2 = kvBase + keys[j + 2]! * d;
          const v3 = kvBase + keys[j + 3]! * d;
          for (let c = 0; c < d; c++) acc[c] += w0 * v[v0 + c]! + w1 * v[v1 + c]! + w2 * v[v2 + c]! + w3 * v[v3 + c]!;
        }
        for (; j < n; j++) {
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

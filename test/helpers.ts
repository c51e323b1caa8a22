/**
 * Shared test utilities: fresh seeds that are logged (replay a failure with HIPATTN_SEED),
 * and a naive float64 attention reference written independently of src/attention.
 */
import type { AttentionShape } from '../src/attention/shape.js';
import { Rng } from '../src/util/rng.js';
import { testSeed } from './gpu-helpers.js';

/** A seeded PRNG for this test; the seed is logged (replay with HIPATTN_SEED=…). */
export function seededRng(testName: string): Rng {
  return new Rng(testSeed(testName));
}

/** Shapes as in src/attention/shape.ts (the naive reference reads queryOffset and keyCapacity too). */
export type NaiveShape = AttentionShape;

/**
 * Naive attention in float64: builds the full score row, applies `allowed(b, h, i, pos, t)`,
 * softmax, weighted sum. Returns [batch, heads, queryLength, headDim].
 */
export function naiveAttention(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  s: NaiveShape,
  allowed: (b: number, h: number, i: number, pos: number, t: number) => boolean = (_b, _h, _i, pos, t) => t <= pos,
): Float64Array {
  const d = s.headDim;
  const off = s.queryOffset ?? s.keyLength - s.queryLength;
  const cap = s.keyCapacity ?? s.keyLength;
  const group = s.heads / s.kvHeads;
  const out = new Float64Array(s.batch * s.heads * s.queryLength * d);
  for (let b = 0; b < s.batch; b++)
    for (let h = 0; h < s.heads; h++) {
      const kvh = Math.floor(h / group);
      for (let i = 0; i < s.queryLength; i++) {
        const pos = off + i;
        const qo = ((b * s.heads + h) * s.queryLength + i) * d;
        const scores: number[] = [];
        const idx: number[] = [];
        for (let t = 0; t < s.keyLength; t++) {
          if (t > pos || !allowed(b, h, i, pos, t)) continue;
          const ko = ((b * s.kvHeads + kvh) * cap + t) * d;
          let dot = 0;
          for (let c = 0; c < d; c++) dot += q[qo + c]! * k[ko + c]!;
          scores.push(dot / Math.sqrt(d));
          idx.push(t);
        }
        const m = Math.max(...scores);
        let sum = 0;
        const w = scores.map((x) => {
          const e = Math.exp(x - m);
          sum += e;
          return e;
        });
        for (let j = 0; j < idx.length; j++) {
          const vo = ((b * s.kvHeads + kvh) * cap + idx[j]!) * d;
          for (let c = 0; c < d; c++) out[qo + c] += (w[j]! / sum) * v[vo + c]!;
        }
      }
    }
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** max over rows of ‖a_row − b_row‖ / ‖b_row‖. */
export function maxRowRelativeError(a: ArrayLike<number>, b: ArrayLike<number>, rowLength: number): number {
  let worst = 0;
  for (let r = 0; r < a.length / rowLength; r++) {
    let num = 0;
    let den = 0;
    for (let c = 0; c < rowLength; c++) {
      const x = a[r * rowLength + c]!;
      const y = b[r * rowLength + c]!;
      num += (x - y) ** 2;
      den += y * y;
    }
    worst = Math.max(worst, Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30));
  }
  return worst;
}

/** Random q/k/v for a shape. */
export function randomQkv(rng: Rng, s: NaiveShape, scale = 1): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const cap = s.keyCapacity ?? s.keyLength;
  return {
    q: rng.normalArray(s.batch * s.heads * s.queryLength * s.headDim, scale),
    k: rng.normalArray(s.batch * s.kvHeads * cap * s.headDim, scale),
    v: rng.normalArray(s.batch * s.kvHeads * cap * s.headDim),
  };
}

/**
 * One mask row of `slots` block starts: `count` distinct multiples of blockSizeK below
 * gridBlocks · blockSizeK, ascending, then −1 (the HipMask layout of src/attention/mask.ts).
 */
export function randomBlockStarts(rng: Rng, slots: number, count: number, gridBlocks: number, blockSizeK: number): Int32Array {
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(blockSizeK * rng.int(gridBlocks));
  const row = new Int32Array(slots).fill(-1);
  row.set([...chosen].sort((a, b) => a - b));
  return row;
}

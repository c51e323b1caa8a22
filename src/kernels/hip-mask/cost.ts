/**
 * The work HiP mask estimation must do for a problem: FLOPs of the representative-block q·k
 * tiles and the bytes it must move (strided queries once, gathered keys, the mask), for the
 * benchmark's "% of peak" columns.
 *
 * The tree's exact work depends on which nodes win (single-block nodes are carried without a new
 * score), so this counts the nominal search: round 1 scores every initial node's halves (or the
 * node itself when it is one block), and every later round scores 2n halves while the largest
 * node still spans more than one block — an upper bound on the number of representatives that
 * equals the real count whenever nodes stay balanced.
 */
import { type HipOptions, resolveHipOptions } from '../../attention/options.js';
import { type AttentionShape, resolveShape } from '../../attention/shape.js';
import type { StorageType } from '../types.js';

export interface HipMaskCost {
  /** 2 · rows · keys · headDim multiply-adds over all scored representative blocks. */
  flops: number;
  /** Queries read once, keys gathered (per distinct KV head of a head group), mask written. */
  bytes: number;
  /** Representative blocks scored, over all (batch, head group, query block). */
  representatives: number;
  /** Query blocks that run a tree search (more key blocks than slots). */
  searchedBlocks: number;
  /** Rounds of the longest search. */
  maxRounds: number;
}

/**
 * `reuse` (default false: the CPU reference's work): count the kernels' parent-score reuse — with
 * representative 'center', a split node of 2 or 3 blocks passes its score to one half; with
 * 'first', every split node after round 1 passes it to its left half.
 */
export function hipMaskCost(
  shape: AttentionShape,
  options: Partial<HipOptions> = {},
  dtype: StorageType = 'f16',
  { reuse = false }: { reuse?: boolean } = {},
): HipMaskCost {
  const s = resolveShape(shape);
  const o = resolveHipOptions(options);
  const eb = dtype === 'f16' ? 2 : 4;
  const n = o.topK / o.blockSizeK;
  const G = o.headGroupSize;
  const groups = s.heads / G;
  const ratio = s.heads / s.kvHeads;
  const keysPerRep = Math.ceil(o.blockSizeK / o.blockStrideK);
  const nqb = Math.ceil(s.queryLength / o.blockSizeQ);
  let flops = 0;
  let bytes = 0;
  let reps = 0;
  let searched = 0;
  let maxRounds = 0;
  for (let g = 0; g < groups; g++) {
    const kvHeads = new Set<number>();
    for (let h = g * G; h < (g + 1) * G; h++) kvHeads.add(Math.floor(h / ratio));
    for (let qb = 0; qb < nqb; qb++) {
      const qStart = qb * o.blockSizeQ;
      const qEnd = Math.min(qStart + o.blockSizeQ, s.queryLength);
      const rows = G * Math.ceil((qEnd - qStart) / o.blockStrideQ);
      const p1 = s.queryOffset + qEnd;
      const len = Math.max(0, p1 - o.slidingWindow - o.sinkTokens);
      const nb = Math.ceil(len / o.blockSizeK);
      bytes += G * n * 4;
      if (nb <= n) continue;
      searched++;
      const small = Math.floor(nb / n);
      const big = small + 1;
      const numBig = nb - small * n; // nodes of `big` blocks
      // representatives of a half of (at most) `len` blocks
      const per = (len: number) => Math.min(o.representativeBlocks, len);
      const single = o.representativeBlocks === 1 && reuse; // parent-score reuse needs one representative
      const largest = Math.max(big > 1 && numBig > 0 ? big : small, 2); // blocks of the largest first node
      let r = (small > 1 ? 2 * n : 2 * numBig + (n - numBig)) * per(Math.ceil(largest / 2)); // round 1
      let rounds = 1;
      // later rounds, by the size of the nodes being split (the largest one's halving sequence)
      for (let size = Math.ceil(largest / 2); size > 1; size = Math.ceil(size / 2)) {
        r += (single && (o.representative === 'first' || size <= 3) ? n : 2 * n) * per(Math.ceil(size / 2));
        rounds++;
      }
      maxRounds = Math.max(maxRounds, rounds);
      reps += r;
      flops += 2 * r * rows * keysPerRep * s.headDim;
      bytes += rows * s.headDim * eb + r * keysPerRep * s.headDim * eb * kvHeads.size;
    }
  }
  return {
    flops: flops * s.batch,
    bytes: bytes * s.batch,
    representatives: reps * s.batch,
    searchedBlocks: searched * s.batch,
    maxRounds,
  };
}

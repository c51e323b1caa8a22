/**
 * HiP mask estimation on the CPU (HIP.md, "Mask estimation"): for every (batch, head or head
 * group, query block), the tree search of `tree-search.ts` with blocks scored by q·k tiles.
 */
import { OptionError } from '../../errors.js';
import type { HipMask } from '../mask.js';
import { type HipOptions, resolveHipOptions } from '../options.js';
import { type AttentionInput, type ResolvedShape, kIndex, kvHeadOf, qIndex, validateInput, type RunOptions } from '../shape.js';
import { exactTopBlocks, hierarchicalTopBlocks } from '../tree-search.js';

/** The candidate key range of a query block whose last query sits at `lastPosition`. */
export function candidateRange(lastPosition: number, o: Pick<HipOptions, 'sinkTokens' | 'slidingWindow'>): { start: number; end: number } {
  // R = [sinkTokens, p + 1 − slidingWindow): sink and window are attended anyway.
  return { start: o.sinkTokens, end: Math.max(o.sinkTokens, lastPosition + 1 - o.slidingWindow) };
}

/**
 * Scores key blocks for one (batch, head group, query block): the max over the block's strided
 * queries (every blockStrideQ-th, for every head of the group) and the block's strided keys
 * (every blockStrideK-th, clipped to the candidate range) of q·k / sqrt(d). Every key of R
 * precedes every query of the block (options guarantee blockSizeQ ≤ slidingWindow + 1), so no
 * causal check is needed. Counts the dot products it computes.
 */
class BlockScorer {
  /** Strided queries of the current block, pre-scaled by 1/sqrt(d), packed [rows, d]. */
  private rows = new Float64Array(0);
  private rowKv: number[] = [];
  private numRows = 0;
  private rangeStart = 0;
  private rangeEnd = 0;
  products = 0;

  constructor(
    private readonly input: AttentionInput,
    private readonly s: ResolvedShape,
    private readonly o: HipOptions,
  ) {
    const perHead = Math.ceil(o.blockSizeQ / o.blockStrideQ);
    this.rows = new Float64Array(perHead * o.headGroupSize * s.headDim);
  }

  /** Selects the strided queries of query block `qb` for heads h0 … h0+groupSize−1. */
  setQueries(b: number, h0: number, qb: number): void {
    const { s, o } = this;
    const { q } = this.input;
    const d = s.headDim;
    const scale = 1 / Math.sqrt(d);
    const qStart = qb * o.blockSizeQ;
    const qEnd = Math.min(qStart + o.blockSizeQ, s.queryLength);
    this.rowKv.length = 0;
    let r = 0;
    for (let h = h0; h < h0 + o.headGroupSize; h++) {
      const kvBase = kIndex(s, b, kvHeadOf(s, h), 0);
      // every blockStrideQ-th query, counted back from the block's last query, which is always
      // scored: it is the one that predicts the next token when the block ends the prompt
      for (let i = qStart + ((qEnd - qStart - 1) % o.blockStrideQ); i < qEnd; i += o.blockStrideQ) {
        const qo = qIndex(s, b, h, i);
        for (let c = 0; c < d; c++) this.rows[r * d + c] = q[qo + c]! * scale;
        this.rowKv.push(kvBase);
        r++;
      }
    }
    this.numRows = r;
    const range = candidateRange(s.queryOffset + qEnd - 1, o);
    this.rangeStart = range.start;
    this.rangeEnd = range.end;
  }

  get numBlocks(): number {
    return Math.ceil((this.rangeEnd - this.rangeStart) / this.o.blockSizeK);
  }

  blockStart(block: number): number {
    return this.rangeStart + block * this.o.blockSizeK;
  }

  score = (block: number): number => {
    const { k } = this.input;
    const rows = this.rows;
    const d = this.s.headDim;
    const t0 = this.blockStart(block);
    const t1 = Math.min(t0 + this.o.blockSizeK, this.rangeEnd);
    let best = -Infinity;
    for (let t = t0; t < t1; t += this.o.blockStrideK) {
      let r = 0;
      // four query rows per pass over the key (rows of one head group share a KV head when
      // the group lies inside one GQA group; otherwise fall back to one row at a time)
      for (; r + 4 <= this.numRows && this.rowKv[r] === this.rowKv[r + 3]; r += 4) {
        const ko = this.rowKv[r]! + t * d;
        const r0 = r * d;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        for (let c = 0; c < d; c++) {
          const x = k[ko + c]!;
          s0 += rows[r0 + c]! * x;
          s1 += rows[r0 + d + c]! * x;
          s2 += rows[r0 + 2 * d + c]! * x;
          s3 += rows[r0 + 3 * d + c]! * x;
        }
        best = Math.max(best, s0, s1, s2, s3);
      }
      for (; r < this.numRows; r++) {
        const ko = this.rowKv[r]! + t * d;
        let sc = 0;
        for (let c = 0; c < d; c++) sc += rows[r * d + c]! * k[ko + c]!;
        if (sc > best) best = sc;
      }
      this.products += this.numRows;
    }
    return best;
  };
}

function estimate(
  input: AttentionInput,
  options: Partial<HipOptions>,
  opts: RunOptions | undefined,
  select: (scorer: BlockScorer, n: number, o: HipOptions) => Int32Array,
): HipMask {
  const o = resolveHipOptions(options);
  const s = validateInput(input, opts);
  if (s.heads % o.headGroupSize !== 0) {
    throw new OptionError(`headGroupSize (${o.headGroupSize}) must divide the number of query heads (${s.heads})`);
  }
  const n = o.topK / o.blockSizeK;
  const numQueryBlocks = Math.ceil(s.queryLength / o.blockSizeQ);
  const blockStarts = new Int32Array(s.batch * s.heads * numQueryBlocks * n).fill(-1);
  const scorer = new BlockScorer(input, s, o);
  for (let b = 0; b < s.batch; b++) {
    for (let h0 = 0; h0 < s.heads; h0 += o.headGroupSize) {
      for (let qb = 0; qb < numQueryBlocks; qb++) {
        scorer.setQueries(b, h0, qb);
        const blocks = scorer.numBlocks > 0 ? select(scorer, n, o) : new Int32Array(0);
        for (let h = h0; h < h0 + o.headGroupSize; h++) {
          const slot = ((b * s.heads + h) * numQueryBlocks + qb) * n;
          for (let j = 0; j < blocks.length; j++) blockStarts[slot + j] = scorer.blockStart(blocks[j]!);
        }
      }
      opts?.onProgress?.((b * s.heads + h0 + o.headGroupSize) / (s.batch * s.heads));
    }
  }
  return {
    batch: s.batch,
    heads: s.heads,
    queryLength: s.queryLength,
    queryOffset: s.queryOffset,
    keyLength: s.keyLength,
    numQueryBlocks,
    blocksPerQuery: n,
    blockStarts,
    options: o,
    qkProducts: scorer.products,
  };
}

/** HiP mask estimation by hierarchical pruning: O(T log T) q·k products. */
export function estimateHipMask(input: AttentionInput, options: Partial<HipOptions> = {}, opts?: RunOptions): HipMask {
  return estimate(input, options, opts, (sc, n, o) => hierarchicalTopBlocks(sc.numBlocks, n, sc.score, o.representative, o.representativeBlocks));
}

/**
 * The exact top-k mask under the same block score (brute force, O(T²)): what HiP's tree search
 * approximates. For recall measurements and tests.
 */
export function exactTopKMask(input: AttentionInput, options: Partial<HipOptions> = {}, opts?: RunOptions): HipMask {
  return estimate(input, options, opts, (sc, n) => exactTopBlocks(sc.numBlocks, n, sc.score));
}

/**
 * Recall of `mask` against `reference` (e.g. exactTopKMask): for every (batch, head, query
 * block) with a non-empty reference, the fraction of the reference's blocks that `mask` also
 * selected; returns the mean and the number of query blocks averaged.
 */
export function maskRecall(mask: HipMask, reference: HipMask): { recall: number; queryBlocks: number } {
  if (mask.blockStarts.length !== reference.blockStarts.length || mask.blocksPerQuery !== reference.blocksPerQuery) {
    throw new OptionError('maskRecall: the two masks have different shapes');
  }
  const n = mask.blocksPerQuery;
  let sum = 0;
  let count = 0;
  for (let slot = 0; slot < mask.blockStarts.length; slot += n) {
    const mine = new Set<number>();
    for (let j = 0; j < n && mask.blockStarts[slot + j]! >= 0; j++) mine.add(mask.blockStarts[slot + j]!);
    let total = 0;
    let hit = 0;
    for (let j = 0; j < n && reference.blockStarts[slot + j]! >= 0; j++) {
      total++;
      if (mine.has(reference.blockStarts[slot + j]!)) hit++;
    }
    if (total > 0) {
      sum += hit / total;
      count++;
    }
  }
  return { recall: count > 0 ? sum / count : 1, queryBlocks: count };
}

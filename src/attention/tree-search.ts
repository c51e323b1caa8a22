/**
 * HiP's hierarchical top-k search over key blocks, independent of how a block is scored
 * (the CPU reference scores blocks with q·k tiles; tests can plug in synthetic scores).
 *
 * Blocks are numbered 0 … numBlocks−1. Start with `n` equal nodes (spans of blocks); each round
 * splits every node of more than one block into two halves, scores each half by its
 * representative block (or the max over several evenly spread representatives: `spanScore`,
 * `sampleBlock`), and keeps the n best of the (at most 2n) candidates. Nodes that are
 * already one block are carried over with their score. After ≈ log2(numBlocks / n) rounds
 * every node is one block: those are the selection.
 *
 * Ties are broken towards the lower block index, so results are deterministic and a GPU
 * implementation can reproduce them exactly.
 */
import type { Representative } from './options.js';

/**
 * Representative `i` of the span [start, end) scored by `blocks` representatives: the span is cut
 * into s = min(blocks, end − start) equal parts and part i (i < s) is represented like a whole
 * span — its centre block (the later of the two middle blocks of an even span), or its first
 * (arXiv v1). With blocks = 1: start + ⌊(end − start) / 2⌋, or start. Returns −1
 * for i ≥ s (a span shorter than `blocks` has fewer representatives). The GPU kernels use the
 * same integer formulas.
 */
export function sampleBlock(start: number, end: number, representative: Representative, blocks: number, i: number): number {
  const len = end - start;
  const s = Math.min(blocks, len);
  if (i >= s) return -1;
  return representative === 'first' ? start + Math.floor((i * len) / s) : start + Math.floor(((2 * i + 1) * len) / (2 * s));
}

/** Score of the span [start, end): the max of `scoreBlock` over its representatives. */
export function spanScore(
  start: number,
  end: number,
  scoreBlock: (block: number) => number,
  representative: Representative,
  blocks: number,
): number {
  let best = -Infinity;
  for (let i = 0; ; i++) {
    const b = sampleBlock(start, end, representative, blocks, i);
    if (b < 0) return best;
    best = Math.max(best, scoreBlock(b));
  }
}

/** Candidate order: higher score first, then lower block index (also for ±Infinity scores). */
export function compareCandidates(scoreA: number, blockA: number, scoreB: number, blockB: number): number {
  if (scoreA > scoreB) return -1;
  if (scoreA < scoreB) return 1;
  return blockA - blockB;
}

/** Returns the selected block indices in ascending order (all blocks if numBlocks ≤ n). */
export function hierarchicalTopBlocks(
  numBlocks: number,
  n: number,
  scoreBlock: (block: number) => number,
  representative: Representative,
  representativeBlocks = 1,
): Int32Array {
  if (numBlocks <= n) {
    const all = new Int32Array(numBlocks);
    for (let j = 0; j < numBlocks; j++) all[j] = j;
    return all;
  }
  let starts = new Int32Array(n);
  let ends = new Int32Array(n);
  let scores = new Float64Array(n).fill(Number.NaN); // NaN: not scored yet
  for (let i = 0; i < n; i++) {
    starts[i] = Math.floor((i * numBlocks) / n);
    ends[i] = Math.floor(((i + 1) * numBlocks) / n);
  }
  const cStart = new Int32Array(2 * n);
  const cEnd = new Int32Array(2 * n);
  const cScore = new Float64Array(2 * n);
  const order: number[] = [];
  for (;;) {
    let m = 0;
    let split = false;
    for (let i = 0; i < n; i++) {
      const a = starts[i]!;
      const e = ends[i]!;
      if (e - a > 1) {
        const mid = a + ((e - a + 1) >> 1);
        cStart[m] = a;
        cEnd[m] = mid;
        cScore[m++] = spanScore(a, mid, scoreBlock, representative, representativeBlocks);
        cStart[m] = mid;
        cEnd[m] = e;
        cScore[m++] = spanScore(mid, e, scoreBlock, representative, representativeBlocks);
        split = true;
      } else {
        cStart[m] = a;
        cEnd[m] = e;
        const sc = scores[i]!;
        cScore[m++] = Number.isNaN(sc) ? scoreBlock(a) : sc;
      }
    }
    if (!split) break;
    order.length = m;
    for (let c = 0; c < m; c++) order[c] = c;
    order.sort((x, y) => compareCandidates(cScore[x]!, cStart[x]!, cScore[y]!, cStart[y]!));
    const nStarts = new Int32Array(n);
    const nEnds = new Int32Array(n);
    const nScores = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const c = order[i]!;
      nStarts[i] = cStart[c]!;
      nEnds[i] = cEnd[c]!;
      nScores[i] = cScore[c]!;
    }
    starts = nStarts;
    ends = nEnds;
    scores = nScores;
  }
  return starts.sort();
}

/** The exact top-n blocks by score (brute force over all blocks), ascending; same tie-breaking. */
export function exactTopBlocks(numBlocks: number, n: number, scoreBlock: (block: number) => number): Int32Array {
  if (numBlocks <= n) return hierarchicalTopBlocks(numBlocks, n, scoreBlock, 'center');
  const sc = new Float64Array(numBlocks);
  const order: number[] = new Array(numBlocks);
  for (let j = 0; j < numBlocks; j++) {
    sc[j] = scoreBlock(j);
    order[j] = j;
  }
  order.sort((x, y) => compareCandidates(sc[x]!, x, sc[y]!, y));
  return Int32Array.from(order.slice(0, n)).sort();
}

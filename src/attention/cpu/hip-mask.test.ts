import { describe, expect, it } from 'vitest';
import { maxRowRelativeError, naiveAttention, seededRng } from '../../../test/helpers.js';
import { selectedBlocks } from '../mask.js';
import { HIP_DEFAULTS } from '../options.js';
import { exactTopBlocks, hierarchicalTopBlocks, sampleBlock } from '../tree-search.js';
import { streamingKeys } from '../keys.js';
import { localityProblem, plantedKeysProblem, plantedRecall } from '../synthetic.js';
import { estimateHipMask, exactTopKMask, maskRecall } from './hip-mask.js';
import { hipAttention } from './hip.js';

describe('tree search (synthetic block scores)', () => {
  it('finds the top blocks of a smooth score landscape', () => {
    const rng = seededRng('tree smooth');
    const numBlocks = 5000;
    const n = 64;
    // a few smooth bumps of varying width over a low background
    const bumps = Array.from({ length: 6 }, () => ({ c: rng.int(numBlocks), w: 20 + rng.int(40), a: 5 + rng.nextFloat() * 5 }));
    const score = (j: number) => bumps.reduce((m, b) => Math.max(m, b.a * Math.exp(-(((j - b.c) / b.w) ** 2))), 0);
    const hip = hierarchicalTopBlocks(numBlocks, n, score, 'center');
    const exact = exactTopBlocks(numBlocks, n, score);
    const hits = [...exact].filter((j) => hip.includes(j)).length;
    console.log(`smooth landscape: HiP found ${hits}/${n} of the exact top blocks`);
    expect(hip.length).toBe(n);
    expect([...hip]).toEqual([...hip].sort((a, b) => a - b));
    expect(new Set(hip).size).toBe(n);
    expect(hits / n).toBeGreaterThanOrEqual(0.9);
  });

  it('selects everything when there are no more blocks than slots, and breaks ties towards lower blocks', () => {
    expect([...hierarchicalTopBlocks(5, 8, () => 0, 'center')]).toEqual([0, 1, 2, 3, 4]);
    expect([...exactTopBlocks(10, 3, () => 1)]).toEqual([0, 1, 2]);
    expect([...hierarchicalTopBlocks(10, 3, () => -Infinity, 'first')].length).toBe(3);
  });

  it('places several representatives per half evenly (hand-computed), one = the single representative', () => {
    // HIP.md's single representative: the centre block (the later middle one), or the first
    const representativeBlock = (a: number, e: number, r: 'center' | 'first') => (r === 'first' ? a : a + ((e - a) >> 1));
    const reps = (a: number, e: number, r: 'center' | 'first', s: number) => {
      const out: number[] = [];
      for (let i = 0, b = 0; (b = sampleBlock(a, e, r, s, i)) >= 0; i++) out.push(b);
      return out;
    };
    expect(reps(10, 18, 'center', 2)).toEqual([12, 16]); // parts [10,14) and [14,18)
    expect(reps(10, 18, 'center', 4)).toEqual([11, 13, 15, 17]);
    expect(reps(0, 3, 'center', 2)).toEqual([0, 2]); // parts of 1.5 blocks: centres 0.75 and 2.25
    expect(reps(5, 6, 'center', 4)).toEqual([5]); // a one-block half has one representative
    expect(reps(0, 8, 'first', 3)).toEqual([0, 2, 5]);
    expect(reps(4, 6, 'first', 3)).toEqual([4, 5]);
    for (let a = 0; a < 5; a++)
      for (let e = a + 1; e < 40; e++)
        for (const r of ['center', 'first'] as const) expect(reps(a, e, r, 1)).toEqual([representativeBlock(a, e, r)]);
  });

  it('a lone high-scoring block: found always once every block of a half is a representative, more often with 2 than 1', () => {
    const rng = seededRng('tree lone spike');
    const numBlocks = 3900;
    const n = 256;
    const trials = 300;
    // nodes start ⌈3900 / 256⌉ = 16 blocks long: halves of ≤ 8 blocks in the first round
    const found = { 1: 0, 2: 0, 8: 0 } as Record<number, number>;
    for (let t = 0; t < trials; t++) {
      const noise = Float64Array.from({ length: numBlocks }, () => rng.nextFloat());
      const spike = rng.int(numBlocks);
      const score = (j: number) => (j === spike ? 10 : noise[j]!);
      for (const s of [1, 2, 8]) if (hierarchicalTopBlocks(numBlocks, n, score, 'center', s).includes(spike)) found[s]!++;
    }
    console.log(`lone spike over ${trials} trials: found with 1 / 2 / 8 representatives: ${found[1]} / ${found[2]} / ${found[8]}`);
    expect(found[8]).toBe(trials);
    expect(found[1]).toBeLessThan(trials);
    expect(found[2]).toBeGreaterThan(found[1]!);
  });

  it('costs about 2n log2(numBlocks / n) block scores', () => {
    for (const numBlocks of [1000, 4000, 16000, 64000]) {
      let calls = 0;
      hierarchicalTopBlocks(numBlocks, 256, (j) => {
        calls++;
        return Math.sin(j);
      }, 'center');
      const bound = 2 * 256 * Math.ceil(Math.log2(numBlocks / 256) + 1);
      expect(calls).toBeLessThanOrEqual(bound);
    }
  });
});

describe('HiP mask estimation', () => {
  it('finds planted far keys (StreamingLLM cannot) and matches attention over the exact top-k', () => {
    const rng = seededRng('planted keys');
    const T = 6000;
    const { input, planted } = plantedKeysProblem(rng, { length: T, heads: 4, kvHeads: 2, headDim: 64 });
    const { q, k, v } = input;
    const { output, mask } = hipAttention(input);
    const recall = plantedRecall(planted, ({ head, queryBlock, position }) =>
      selectedBlocks(mask, 0, head, queryBlock).some((st) => position >= st && position < st + HIP_DEFAULTS.blockSizeK),
    );
    const found = Math.round(recall * planted.length);
    // StreamingLLM with the same key budget never reads them.
    const keys = new Int32Array(T);
    let streamingFound = 0;
    for (const { queryBlock, position } of planted) {
      const p = Math.min((queryBlock + 1) * 64, T) - 1;
      const n = streamingKeys(p, 16, 768, keys);
      if (keys.subarray(0, n).includes(position)) streamingFound++;
    }
    console.log(`planted keys: HiP found ${found}/${planted.length} (${(100 * recall).toFixed(1)} %), StreamingLLM ${streamingFound}`);
    expect(planted.length).toBeGreaterThan(100);
    expect(recall).toBeGreaterThanOrEqual(0.95);
    expect(streamingFound).toBe(0);

    // Output vs attention restricted to the exact top-k blocks (plus sink and window), in float64.
    const exact = exactTopKMask(input);
    const numQB = Math.ceil(T / 64);
    const chosen: Uint8Array[] = [];
    for (let h = 0; h < 4; h++)
      for (let qb = 0; qb < numQB; qb++) {
        const sel = new Uint8Array(T);
        for (const st of selectedBlocks(exact, 0, h, qb)) sel.fill(1, st, st + 2);
        chosen.push(sel);
      }
    // float64 reference on the rows of the query blocks that have planted keys
    const plantedBlocks = [...new Set(planted.map(({ head, queryBlock }) => head * numQB + queryBlock))];
    const mine: number[] = [];
    const theirs: number[] = [];
    for (const hb of plantedBlocks) {
      const h = Math.floor(hb / numQB);
      const qb = hb % numQB;
      const kvh = h >> 1;
      const len = Math.min(64, T - qb * 64);
      const rows = q.subarray((h * T + qb * 64) * 64, (h * T + qb * 64 + len) * 64);
      const kv = (x: Float32Array) => x.subarray(kvh * T * 64, (kvh + 1) * T * 64);
      const sel = chosen[h * numQB + qb]!;
      const blockShape = { batch: 1, heads: 1, kvHeads: 1, queryLength: len, keyLength: T, headDim: 64, queryOffset: qb * 64 };
      const ref = naiveAttention(rows, kv(k), kv(v), blockShape, (_b, _h, _i, p, t) => t < 16 || t > p - 256 || sel[t] === 1);
      theirs.push(...ref);
      mine.push(...output.subarray((h * T + qb * 64) * 64, (h * T + qb * 64 + len) * 64));
    }
    let num = 0;
    let den = 0;
    for (let j = 0; j < mine.length; j++) {
      num += (mine[j]! - theirs[j]!) ** 2;
      den += theirs[j]! ** 2;
    }
    const rel = Math.sqrt(num / den);
    const worstRow = maxRowRelativeError(mine, theirs, 64);
    const blockRecall = maskRecall(mask, exact);
    console.log(
      `relative error vs exact top-k attention on the ${plantedBlocks.length} planted query blocks: ${rel.toExponential(2)} (worst row ${worstRow.toExponential(2)}); top-k block recall over all blocks ${blockRecall.recall.toFixed(3)}`,
    );
    expect(rel).toBeLessThanOrEqual(1e-3);
    expect(worstRow).toBeLessThanOrEqual(1e-2);
  });

  it('recalls most of the exact top-k blocks on keys with locality (smooth random walk + noise)', () => {
    const rng = seededRng('recall locality');
    const T = 8192;
    const input = localityProblem(rng, { length: T, heads: 2, kvHeads: 1, headDim: 32 });
    const hip = estimateHipMask(input);
    const exact = exactTopKMask(input);
    const { recall, queryBlocks } = maskRecall(hip, exact);
    // Baseline: a random choice of n of the candidate blocks.
    const candidates = (T - 256 - 16) / 2;
    const random = 256 / candidates;
    console.log(`top-k block recall with locality: ${recall.toFixed(3)} over ${queryBlocks} query blocks (random choice: ≤ ${random.toFixed(3)})`);
    expect(recall).toBeGreaterThanOrEqual(0.85);
    expect(recall).toBeGreaterThan(5 * random);
  });

  it('costs O(T log T) q·k products', () => {
    const rng = seededRng('cost');
    const counts: Record<number, number> = {};
    const twoReps: Record<number, number> = {};
    for (const T of [4096, 8192, 16384, 32768, 65536]) {
      const d = 4;
      const input = {
        q: rng.normalArray(T * d),
        k: rng.normalArray(T * d),
        v: new Float32Array(T * d),
        shape: { batch: 1, heads: 1, kvHeads: 1, queryLength: T, keyLength: T, headDim: d },
      };
      counts[T] = estimateHipMask(input, { representativeBlocks: 1 }).qkProducts;
      // the default scores each half by two representatives: about twice the work in every
      // round but the last (one-block halves), so 1.5–2× and still O(T log T)
      if (T === 16384 || T === 65536) twoReps[T] = estimateHipMask(input).qkProducts;
    }
    // HIP.md (one representative per half): per query block ≈ 2n·log2(|R| / topK) representative scores, each a
    // (blockSizeQ/blockStrideQ) × (blockSizeK/blockStrideK) tile. Summed over query blocks
    // (|R| grows from 0 to T) that is ≈ (T/b_q)·2n·tile·(log2(T/k) − 1.44): O(T log T), and a
    // 64k/16k ratio of 4·(7 − 1.44)/(5 − 1.44) ≈ 6.2 at these sizes (→ 4 as T grows), where
    // T² would give 16.
    const model = (T: number) => (T / 64) * 2 * 256 * 32 * 2 * Math.max(0, Math.log2(T / 512) - 1.44);
    const rows = Object.entries(counts).map(
      ([T, c]) => `T=${T}: ${c} products, ${(c / model(+T)).toFixed(3)} × the T log T model (dense: ${((+T * (+T + 1)) / 2).toExponential(2)})`,
    );
    console.log(
      `mask estimation cost, one representative per half\n${rows.join('\n')}\nratio 64k/16k: ${(counts[65536]! / counts[16384]!).toFixed(2)} (T²: 16)\n` +
        `defaults (two representatives): 16k ${twoReps[16384]} = ${(twoReps[16384]! / counts[16384]!).toFixed(2)}×, 64k ${twoReps[65536]} = ${(twoReps[65536]! / counts[65536]!).toFixed(2)}× one representative; 64k/16k ${(twoReps[65536]! / twoReps[16384]!).toFixed(2)}`,
    );
    for (const T of [16384, 65536]) {
      expect(twoReps[T]! / counts[T]!).toBeGreaterThan(1.5);
      expect(twoReps[T]! / counts[T]!).toBeLessThanOrEqual(2);
    }
    // (so the default stays within 2× the T log T model; its 64k/16k ratio is a little above one
    // representative's, as the share of rounds with ≥ 2-block halves grows with T)
    for (const T of [16384, 32768, 65536]) {
      expect(counts[T]! / model(T)).toBeGreaterThan(0.8);
      expect(counts[T]! / model(T)).toBeLessThan(1.25);
    }
    expect(counts[65536]! / counts[16384]!).toBeLessThanOrEqual(6.5);
    expect(counts[65536]! / counts[32768]!).toBeLessThanOrEqual(2.5);
    // and it is far below dense's T²/2
    expect(counts[65536]!).toBeLessThan((65536 * 65536) / 2 / 8);
  });
});

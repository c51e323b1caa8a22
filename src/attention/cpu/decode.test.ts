import { describe, expect, it } from 'vitest';
import { maxAbsDiff, naiveAttention, randomBlockStarts, seededRng } from '../../../test/helpers.js';
import { resolveHipOptions } from '../options.js';
import { hipAttendedKeys, maskForDecodeStep, mergeShiftedStarts, selectedBlocks } from '../mask.js';
import { createHipDecodeState, hipDecodeAttention } from './decode.js';
import { hipAttention } from './hip.js';
import { createCpuLayerAttention } from './layers.js';

describe('decoding-step masks: the selected blocks and the same shifted by the steps since the refresh', () => {
  it('merges hand-computed cases (ascending, −1 padded, ties unshifted first)', () => {
    const merged = (starts: number[], shift: number, slots = starts.length) => {
      const src = Int32Array.from([...starts, ...Array<number>(slots - starts.length).fill(-1)]);
      const out = new Int32Array(2 * slots).fill(99);
      mergeShiftedStarts(src, 0, slots, shift, out, 0);
      return [...out];
    };
    expect(merged([0, 10, 20], 3)).toEqual([0, 3, 10, 13, 20, 23]);
    expect(merged([4, 6, 8], 2)).toEqual([4, 6, 6, 8, 8, 10]); // adjacent blocks: the shifted copy lands on the next one
    expect(merged([4, 6], 1, 4)).toEqual([4, 5, 6, 7, -1, -1, -1, -1]);
    expect(merged([], 5, 3)).toEqual([-1, -1, -1, -1, -1, -1]);
    // a row in the middle of a buffer
    const src = Int32Array.from([7, 9, -1, 2, 30, -1, 1, 1, 1]);
    const out = new Int32Array(6);
    mergeShiftedStarts(src, 3, 3, 4, out, 0);
    expect([...out]).toEqual([2, 6, 30, 34, -1, -1]);
  });

  it('reads each key once: a decode step attends exactly (sink ∪ sink + shift) ∪ (blocks ∪ blocks + shift) ∪ window, by brute force over random masks', () => {
    const rng = seededRng('decode step keys');
    for (let trial = 0; trial < 200; trial++) {
      // half of the trials without a sink: an empty sink stays empty
      const opts = resolveHipOptions({ topK: 24, blockSizeQ: 4, blockStrideQ: 1, blockSizeK: 4, sinkTokens: trial % 2 === 0 ? 3 : 0, slidingWindow: 9, refreshInterval: 6, shiftedBlocks: true });
      const refreshAt = 60 + rng.int(60);
      const n = opts.topK / opts.blockSizeK;
      const blockStarts = randomBlockStarts(rng, n, rng.int(n + 1), Math.floor((refreshAt - opts.slidingWindow) / opts.blockSizeK), opts.blockSizeK);
      const starts = [...blockStarts].filter((b) => b >= 0);
      const mask = { batch: 1, heads: 1, queryLength: 1, queryOffset: refreshAt, keyLength: refreshAt + 1, numQueryBlocks: 1, blocksPerQuery: n, blockStarts, options: opts, qkProducts: 0 };
      for (let shift = 0; shift < opts.refreshInterval; shift++) {
        const p = refreshAt + shift;
        const k = hipAttendedKeys(mask, 0, 0, 0, p);
        const got = [...k.sink, ...k.selected, ...k.window].sort((a, b) => a - b);
        const winFrom = refreshAt - opts.slidingWindow + 1;
        const expected: number[] = [];
        for (let t = 0; t <= p; t++) {
          const inBlock = (off: number) => starts.some((s) => t >= s + off && t < s + off + opts.blockSizeK);
          // the sink and the blocks, each also shifted by the steps since the refresh
          const inSink = t < opts.sinkTokens || (opts.sinkTokens > 0 && t < opts.sinkTokens + shift);
          if (inSink || t >= winFrom || inBlock(0) || (shift > 0 && inBlock(shift))) expected.push(t);
        }
        expect(got).toEqual(expected);
        expect(maskForDecodeStep(mask, p).blocksPerQuery).toBe(shift === 0 ? n : 2 * n);
      }
    }
  });
});

describe.each([true, false])('HiP decoding with a cached mask (shiftedBlocks %s)', (shiftedBlocks) => {
  it('equals HiP from scratch (the query block ending at the new token) at refresh steps and reaches new tokens through the window in between', () => {
    const rng = seededRng(`hip decode ${shiftedBlocks}`);
    const heads = 4;
    const kvHeads = 2;
    const d = 16;
    const capacity = 1400;
    const prefix = 1200;
    const steps = 30;
    const opts = { topK: 64, blockSizeQ: 8, blockSizeK: 4, sinkTokens: 4, slidingWindow: 12, refreshInterval: 5, shiftedBlocks };
    // a KV cache allocated once; the decode writes one new row per step
    const k = new Float32Array(kvHeads * capacity * d);
    const v = new Float32Array(kvHeads * capacity * d);
    for (let kvh = 0; kvh < kvHeads; kvh++)
      for (let t = 0; t < prefix; t++)
        for (let c = 0; c < d; c++) {
          k[(kvh * capacity + t) * d + c] = rng.normal();
          v[(kvh * capacity + t) * d + c] = rng.normal();
        }
    const state = createHipDecodeState();
    const queries: Float32Array[] = []; // [heads, d] per step
    let refreshPosition = -1;
    let refreshes = 0;
    for (let step = 0; step < steps; step++) {
      const pos = prefix + step;
      for (let kvh = 0; kvh < kvHeads; kvh++)
        for (let c = 0; c < d; c++) {
          k[(kvh * capacity + pos) * d + c] = rng.normal();
          v[(kvh * capacity + pos) * d + c] = rng.normal();
        }
      const q = rng.normalArray(heads * d);
      queries.push(q);
      const shape = { batch: 1, heads, kvHeads, queryLength: 1, keyLength: pos + 1, headDim: d, keyCapacity: capacity };
      const { output, refreshed } = hipDecodeAttention({ q, k, v, shape }, state, opts);
      expect(refreshed).toBe(step % opts.refreshInterval === 0);
      if (refreshed) {
        refreshes++;
        refreshPosition = pos;
        // from scratch: a fresh K/V copy of exactly pos+1 rows
        const kk = new Float32Array(kvHeads * (pos + 1) * d);
        const vv = new Float32Array(kvHeads * (pos + 1) * d);
        for (let kvh = 0; kvh < kvHeads; kvh++) {
          kk.set(k.subarray(kvh * capacity * d, (kvh * capacity + pos + 1) * d), kvh * (pos + 1) * d);
          vv.set(v.subarray(kvh * capacity * d, (kvh * capacity + pos + 1) * d), kvh * (pos + 1) * d);
        }
        // the query block ending at pos: the last min(blockSizeQ, steps so far) queries
        const m = Math.min(opts.blockSizeQ, queries.length);
        const qb = new Float32Array(heads * m * d);
        for (let h = 0; h < heads; h++)
          for (let i = 0; i < m; i++) qb.set(queries[queries.length - m + i]!.subarray(h * d, (h + 1) * d), (h * m + i) * d);
        const scratch = hipAttention({ q: qb, k: kk, v: vv, shape: { ...shape, queryLength: m, queryOffset: pos + 1 - m, keyCapacity: pos + 1 } }, opts).output;
        const lastRow = new Float32Array(heads * d);
        for (let h = 0; h < heads; h++) lastRow.set(scratch.subarray((h * m + m - 1) * d, (h * m + m) * d), h * d);
        expect(maxAbsDiff(output, lastRow)).toBeLessThanOrEqual(1e-6);
        // and that block's mask is the one cached
        expect(state.mask!.queryLength).toBe(m);
        expect(state.mask!.queryOffset).toBe(pos + 1 - m);
      } else {
        // between refreshes: sink ∪ blocks of the last refresh (and, shifted, the same blocks
        // moved right by the steps since) ∪ window at the *current* position
        const mask = state.mask!;
        const shift = shiftedBlocks ? pos - refreshPosition : 0;
        const inBlocks = (h: number, t: number) => selectedBlocks(mask, 0, h, 0).some((s) => (t >= s && t < s + 4) || (t >= s + shift && t < s + shift + 4));
        for (let h = 0; h < heads; h++) {
          const keys = hipAttendedKeys(mask, 0, h, 0, pos);
          for (let t = refreshPosition - 11; t <= pos; t++) expect(keys.window).toContain(t);
          for (const t of keys.selected) expect(inBlocks(h, t)).toBe(true);
        }
        // the window reaches back to the refresh's window: keys after refreshPosition − 12
        const ref = naiveAttention(q, k, v, shape, (_b, h, _i, _p, t) => t < 4 + shift || t > refreshPosition - 12 || inBlocks(h, t));
        expect(maxAbsDiff(output, ref)).toBeLessThanOrEqual(1e-5);
      }
    }
    expect(state.refreshes).toBe(refreshes);
    expect(refreshes).toBe(Math.ceil(steps / opts.refreshInterval));
  });
});

describe('HiP decoding (either shiftedBlocks)', () => {
  it('rejects more than one query per step', () => {
    const shape = { batch: 1, heads: 1, kvHeads: 1, queryLength: 2, keyLength: 4, headDim: 2 };
    const z = () => new Float32Array(8);
    expect(() => hipDecodeAttention({ q: new Float32Array(4), k: z(), v: z(), shape }, createHipDecodeState())).toThrow(/one query per step/);
  });

  it("after a prefill chunk, the first refresh's query block holds the chunk's last queries and the new one", () => {
    const rng = seededRng('hip decode after prefill');
    const heads = 2;
    const d = 8;
    const prompt = 300;
    const opts = { topK: 32, blockSizeQ: 16, blockSizeK: 4, sinkTokens: 4, slidingWindow: 16, refreshInterval: 4 };
    const layers = createCpuLayerAttention({ method: 'hip', hip: { ...opts, denseLayers: 0 } }, 1);
    const T = prompt + 1;
    const k = rng.normalArray(heads * T * d);
    const v = rng.normalArray(heads * T * d);
    const qAll = rng.normalArray(heads * T * d); // [heads, T, d]
    const rows = (from: number, to: number) => {
      const out = new Float32Array(heads * (to - from) * d);
      for (let h = 0; h < heads; h++) out.set(qAll.subarray((h * T + from) * d, (h * T + to) * d), h * (to - from) * d);
      return out;
    };
    const shape = { batch: 1, heads, kvHeads: heads, headDim: d, keyCapacity: T };
    layers.attend(0, { q: rows(0, prompt), k, v, shape: { ...shape, queryLength: prompt, keyLength: prompt } });
    const out = layers.attend(0, { q: rows(prompt, T), k, v, shape: { ...shape, queryLength: 1, keyLength: T } });
    const m = opts.blockSizeQ;
    const scratch = hipAttention({ q: rows(T - m, T), k, v, shape: { ...shape, queryLength: m, keyLength: T } }, opts).output;
    const lastRow = new Float32Array(heads * d);
    for (let h = 0; h < heads; h++) lastRow.set(scratch.subarray((h * m + m - 1) * d, (h * m + m) * d), h * d);
    expect(maxAbsDiff(out, lastRow)).toBeLessThanOrEqual(1e-6);
  });
});

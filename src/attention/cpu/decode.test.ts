import { describe, expect, it } from 'vitest';
import { maxAbsDiff, naiveAttention, seededRng } from '../../../test/helpers.js';
import { hipAttendedKeys, selectedBlocks } from '../mask.js';
import { createHipDecodeState, hipDecodeAttention } from './decode.js';
import { hipAttention } from './hip.js';

describe('HiP decoding with a cached mask', () => {
  it('equals HiP from scratch at refresh steps and reaches new tokens through the window in between', () => {
    const rng = seededRng('hip decode');
    const heads = 4;
    const kvHeads = 2;
    const d = 16;
    const capacity = 1400;
    const prefix = 1200;
    const steps = 30;
    const opts = { topK: 64, blockSizeQ: 8, blockSizeK: 4, sinkTokens: 4, slidingWindow: 12, refreshInterval: 5 };
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
        const scratch = hipAttention({ q, k: kk, v: vv, shape: { ...shape, keyCapacity: pos + 1 } }, opts).output;
        expect(maxAbsDiff(output, scratch)).toBeLessThanOrEqual(1e-6);
      } else {
        // between refreshes: sink ∪ blocks of the last refresh ∪ window at the *current* position
        const mask = state.mask!;
        for (let h = 0; h < heads; h++) {
          const keys = hipAttendedKeys(mask, 0, h, 0, pos);
          for (let t = refreshPosition + 1; t <= pos; t++) expect(keys.window).toContain(t);
          const blocks = selectedBlocks(mask, 0, h, 0);
          for (const t of keys.selected) expect(blocks.some((s) => t >= s && t < s + 4)).toBe(true);
        }
        const ref = naiveAttention(q, k, v, shape, (_b, h, _i, p, t) => {
          if (t < 4 || t > p - 12) return true;
          return selectedBlocks(mask, 0, h, 0).some((s) => t >= s && t < s + 4);
        });
        expect(maxAbsDiff(output, ref)).toBeLessThanOrEqual(1e-5);
      }
    }
    expect(state.refreshes).toBe(refreshes);
    expect(refreshes).toBe(Math.ceil(steps / opts.refreshInterval));
  });

  it('rejects more than one query per step', () => {
    const shape = { batch: 1, heads: 1, kvHeads: 1, queryLength: 2, keyLength: 4, headDim: 2 };
    const z = () => new Float32Array(8);
    expect(() => hipDecodeAttention({ q: new Float32Array(4), k: z(), v: z(), shape }, createHipDecodeState())).toThrow(/one query per step/);
  });
});

import { describe, expect, it } from 'vitest';
import { maxAbsDiff, naiveAttention, type NaiveShape, randomQkv, seededRng } from '../../../test/helpers.js';
import { HipAttnError, NonFiniteError, OptionError, ShapeError } from '../../errors.js';
import { hipAttendedKeys } from '../mask.js';
import type { AttentionShape } from '../shape.js';
import { denseAttention, denseAttentionF64 } from './dense.js';
import { hipAttention } from './hip.js';
import { streamingAttention } from './streaming.js';

const shapes: NaiveShape[] = [
  { batch: 1, heads: 1, kvHeads: 1, queryLength: 37, keyLength: 37, headDim: 16 },
  { batch: 2, heads: 4, kvHeads: 1, queryLength: 50, keyLength: 131, headDim: 8 }, // GQA 4, query offset 81
  { batch: 1, heads: 8, kvHeads: 2, queryLength: 1, keyLength: 300, headDim: 32 }, // decoding shape
  { batch: 1, heads: 2, kvHeads: 2, queryLength: 70, keyLength: 90, headDim: 8, queryOffset: 5, keyCapacity: 128 },
];

describe('dense attention', () => {
  it.each(shapes.map((s, i) => [i, s] as const))('matches the naive float64 reference (shape %i)', (i, s) => {
    const rng = seededRng(`dense shape ${i}`);
    const { q, k, v } = randomQkv(rng, s);
    const ref = naiveAttention(q, k, v, s);
    expect(maxAbsDiff(denseAttention({ q, k, v, shape: s }), ref)).toBeLessThan(1e-6);
    expect(maxAbsDiff(denseAttentionF64({ q, k, v, shape: s }), ref)).toBeLessThan(1e-12);
  });
});

describe('StreamingLLM attention', () => {
  it('equals naive attention restricted to sink + window', () => {
    const rng = seededRng('streaming');
    const s: NaiveShape = { batch: 2, heads: 4, kvHeads: 2, queryLength: 100, keyLength: 260, headDim: 16 };
    const { q, k, v } = randomQkv(rng, s);
    const sink = 3;
    const win = 40;
    const ref = naiveAttention(q, k, v, s, (_b, _h, _i, p, t) => t < sink || t > p - win);
    const out = streamingAttention({ q, k, v, shape: s }, { sinkTokens: sink, slidingWindow: win });
    expect(maxAbsDiff(out, ref)).toBeLessThan(1e-6);
  });
});

describe('HiP attention', () => {
  it.each(shapes.map((s, i) => [i, s] as const))('equals dense when topK covers the context (shape %i)', (i, s) => {
    const rng = seededRng(`hip=dense shape ${i}`);
    const { q, k, v } = randomQkv(rng, s);
    const input = { q, k, v, shape: s };
    const dense = denseAttention(input);
    // Ragged block sizes on purpose: topK ≥ keyLength makes every candidate key selected.
    const { output } = hipAttention(input, { topK: 512, blockSizeQ: 7, blockSizeK: 4, sinkTokens: 3, slidingWindow: 9, refreshInterval: 8 });
    const err = maxAbsDiff(output, dense);
    console.log(`shape ${i}: max |HiP − dense| = ${err.toExponential(2)}`);
    expect(err).toBeLessThanOrEqual(1e-5);
  });

  it('attends exactly sink ∪ selected ∪ window, each key once, never after the query', () => {
    const rng = seededRng('hip key sets');
    const s: NaiveShape = { batch: 1, heads: 2, kvHeads: 1, queryLength: 200, keyLength: 700, headDim: 8 };
    const { q, k, v } = randomQkv(rng, s);
    const opts = { topK: 32, blockSizeQ: 16, blockSizeK: 4, sinkTokens: 5, slidingWindow: 24, refreshInterval: 4 };
    const { output, mask } = hipAttention({ q, k, v, shape: s }, opts);
    const allowed = new Map<string, Set<number>>();
    for (let h = 0; h < 2; h++)
      for (let i = 0; i < s.queryLength; i++) {
        const keys = hipAttendedKeys(mask, 0, h, i);
        const all = [...keys.sink, ...keys.selected, ...keys.window];
        expect(new Set(all).size).toBe(all.length);
        const p = 500 + i;
        expect(keys.position).toBe(p);
        expect(Math.max(...all)).toBeLessThanOrEqual(p);
        expect(keys.sink).toEqual([0, 1, 2, 3, 4]);
        expect(keys.window).toEqual(Array.from({ length: 24 }, (_, j) => p - 23 + j));
        expect(keys.selected.length).toBeGreaterThan(0);
        expect(keys.selected.length).toBeLessThanOrEqual(32);
        allowed.set(`${h},${i}`, new Set(all));
      }
    const ref = naiveAttention(q, k, v, s, (_b, h, i, _p, t) => allowed.get(`${h},${i}`)!.has(t));
    expect(maxAbsDiff(output, ref)).toBeLessThan(1e-6);
  });

  it('is causal: changing keys/values after position p never changes outputs at positions ≤ p', () => {
    const rng = seededRng('causality');
    const s: NaiveShape = { batch: 1, heads: 4, kvHeads: 2, queryLength: 900, keyLength: 900, headDim: 16 };
    const { q, k, v } = randomQkv(rng, s);
    const p = 400 + rng.int(300);
    const k2 = k.slice();
    const v2 = v.slice();
    for (let kvh = 0; kvh < 2; kvh++)
      for (let t = p + 1; t < 900; t++)
        for (let c = 0; c < 16; c++) {
          k2[(kvh * 900 + t) * 16 + c] = rng.normal() * 3;
          v2[(kvh * 900 + t) * 16 + c] = rng.normal() * 3;
        }
    const hipOpts = { topK: 64, blockSizeQ: 16, blockSizeK: 4, sinkTokens: 4, slidingWindow: 32, refreshInterval: 8 };
    const methods = {
      dense: (kk: Float32Array, vv: Float32Array) => denseAttention({ q, k: kk, v: vv, shape: s }),
      streaming: (kk: Float32Array, vv: Float32Array) => streamingAttention({ q, k: kk, v: vv, shape: s }, { sinkTokens: 4, slidingWindow: 64 }),
      hip: (kk: Float32Array, vv: Float32Array) => hipAttention({ q, k: kk, v: vv, shape: s }, hipOpts).output,
    };
    for (const [name, run] of Object.entries(methods)) {
      const a = run(k, v);
      const b = run(k2, v2);
      let changedLater = false;
      for (let h = 0; h < 4; h++)
        for (let i = 0; i < 900; i++)
          for (let c = 0; c < 16; c++) {
            const idx = (h * 900 + i) * 16 + c;
            if (i <= p) expect(b[idx], `${name} h${h} i${i}`).toBe(a[idx]);
            else if (b[idx] !== a[idx]) changedLater = true;
          }
      expect(changedLater, `${name}: outputs after p should change (the test would be vacuous)`).toBe(true);
    }
  });
});

describe('bad input gets a typed error naming the problem', () => {
  const s: AttentionShape = { batch: 1, heads: 4, kvHeads: 2, queryLength: 8, keyLength: 8, headDim: 4 };
  const ok = () => ({ q: new Float32Array(128), k: new Float32Array(64), v: new Float32Array(64) });

  it('mismatched tensor lengths', () => {
    expect(() => denseAttention({ ...ok(), k: new Float32Array(60), shape: s })).toThrow(ShapeError);
    expect(() => denseAttention({ ...ok(), k: new Float32Array(60), shape: s })).toThrow(/k has 60 elements/);
    expect(() => hipAttention({ ...ok(), q: new Float32Array(3), shape: s })).toThrow(/q has 3 elements/);
  });
  it('queryLength beyond keyLength, bad offsets and capacities', () => {
    expect(() => denseAttention({ ...ok(), shape: { ...s, queryLength: 9 } })).toThrow(ShapeError);
    expect(() => denseAttention({ ...ok(), shape: { ...s, queryOffset: 1 } })).toThrow(/queryOffset 1 \+ queryLength 8 > keyLength 8/);
    expect(() => denseAttention({ ...ok(), shape: { ...s, keyCapacity: 4 } })).toThrow(/keyCapacity/);
    expect(() => denseAttention({ ...ok(), shape: { ...s, headDim: 0 } })).toThrow(/headDim/);
  });
  it('heads not a multiple of kvHeads', () => {
    expect(() => denseAttention({ ...ok(), shape: { ...s, kvHeads: 3 } })).toThrow(/heads \(4\) must be a multiple of kvHeads \(3\)/);
  });
  it('topK not a multiple of blockSizeK', () => {
    expect(() => hipAttention({ ...ok(), shape: s }, { topK: 100, blockSizeK: 8 })).toThrow(OptionError);
    expect(() => hipAttention({ ...ok(), shape: s }, { topK: 100, blockSizeK: 8 })).toThrow(/topK \(100\) must be a multiple of blockSizeK \(8\)/);
  });
  it('slidingWindow < refreshInterval and other impossible options', () => {
    expect(() => hipAttention({ ...ok(), shape: s }, { slidingWindow: 4, refreshInterval: 8, blockSizeQ: 4 })).toThrow(
      /slidingWindow \(4\) must be ≥ refreshInterval \(8\)/,
    );
    expect(() => hipAttention({ ...ok(), shape: s }, { topK: 0 })).toThrow(/topK must be an integer ≥ 1/);
    expect(() => hipAttention({ ...ok(), shape: s }, { blockSizeQ: 2.5 })).toThrow(/blockSizeQ/);
    expect(() => hipAttention({ ...ok(), shape: s }, { headGroupSize: 3 })).toThrow(/headGroupSize \(3\) must divide/);
    expect(() => hipAttention({ ...ok(), shape: s }, { blockSizeQ: 512 })).toThrow(/blockSizeQ \(512\) must be ≤ slidingWindow \+ 1/);
    expect(() => hipAttention({ ...ok(), shape: s }, { topk: 5 } as never)).toThrow(/unknown HiP option "topk"/);
    expect(() => streamingAttention({ ...ok(), shape: s }, { slidingWindow: -1 })).toThrow(OptionError);
  });
  it('non-finite values in Q, K or V', () => {
    for (const [name, pos] of [['q', 17], ['k', 5], ['v', 63]] as const) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const t = ok();
        t[name][pos] = bad;
        const run = () => hipAttention({ ...t, shape: s });
        expect(run).toThrow(NonFiniteError);
        expect(run).toThrow(new RegExp(`^${name} holds a non-finite value`));
      }
    }
    // rows beyond keyLength inside a larger capacity are not read, so they may hold anything
    const t = { q: new Float32Array(128), k: new Float32Array(128), v: new Float32Array(128) };
    t.k[100] = NaN;
    expect(() => denseAttention({ ...t, shape: { ...s, keyCapacity: 16 } })).not.toThrow();
  });
  it('every error is a HipAttnError with a code', () => {
    try {
      denseAttention({ ...ok(), shape: { ...s, kvHeads: 3 } });
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(HipAttnError);
      expect((e as HipAttnError).code).toBe('SHAPE_MISMATCH');
    }
  });
});

/**
 * The CPU forward pass: KV-cache decoding and chunked prefill equal recomputing the whole
 * sequence; a random tiny model with every bias, GQA and llama3 RoPE scaling equals an
 * independent float64 reference written from the math; attention is really pluggable.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { denseAttention } from '../attention/cpu/dense.js';
import type { AttentionInput } from '../attention/shape.js';
import { HipAttnError } from '../errors.js';
import type { LlamaConfig } from './config.js';
import { argmax } from './cpu-ops.js';
import { type AttentionFn, LlamaCpu } from './llama-cpu.js';
import { openModelPath } from './node-load.js';
import { Rng } from './sampling.js';
import { type LayerWeights, type LlamaWeights, loadLlamaWeightsF32 } from './weights.js';

const seed = Number(process.env.HIPATTN_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`llama-cpu.test seed ${seed} (set HIPATTN_SEED to reproduce)`);
const rng = new Rng(seed);

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const mini = openModelPath('models/hip-testbed-mini').then(async (m) => ({ m, w: await loadLlamaWeightsF32(m.config, m.store) }));
const stories = openModelPath('models/stories260K/stories260K.gguf').then(async (m) => ({ m, w: await loadLlamaWeightsF32(m.config, m.store) }));

describe('KV cache: incremental = recomputed', () => {
  const golden = JSON.parse(readFileSync('models/hip-testbed-mini/golden.json', 'utf8')) as { inputs: { input_ids: number[] }[] };
  const ids = golden.inputs[2]!.input_ids.slice(0, 200); // 200 tokens of the passkey prompt

  it('hip-testbed-mini, 200 tokens: token-by-token decoding and chunked prefill (chunks of 7 and 64) give the full pass’s logits', async () => {
    const { m, w } = await mini;
    const V = m.config.vocabSize;
    const lm = new LlamaCpu(m.config, w, { capacity: 256 });
    const kArrays = lm.cache.k.slice();
    let t0 = performance.now();
    const full = lm.forward(ids, { logits: 'all', chunkSize: ids.length });
    console.log(`mini full pass of ${ids.length} tokens: ${(performance.now() - t0).toFixed(0)} ms`);
    for (const chunk of [7, 64]) {
      lm.reset();
      const chunked = lm.forward(ids, { logits: 'all', chunkSize: chunk });
      const d = maxAbsDiff(chunked, full);
      console.log(`chunk ${chunk}: max |Δ logit| = ${d}`);
      expect(d).toBeLessThanOrEqual(1e-5);
    }
    lm.reset();
    t0 = performance.now();
    let worst = 0;
    for (let i = 0; i < ids.length; i++) {
      const logits = lm.forward([ids[i]!]);
      worst = Math.max(worst, maxAbsDiff(logits, full.subarray(i * V, (i + 1) * V)));
    }
    console.log(`token-by-token ${ids.length} steps: ${(performance.now() - t0).toFixed(0)} ms, max |Δ logit| = ${worst}`);
    expect(worst).toBeLessThanOrEqual(1e-5);
    // The cache was allocated once and never replaced.
    lm.cache.k.forEach((k, i) => expect(k).toBe(kArrays[i]));
    expect(lm.position).toBe(ids.length);
  });

  it('greedy tokens with the cache equal greedy tokens recomputing the whole sequence every step (stories260K, hip-testbed-mini)', async () => {
    for (const [{ m, w }, steps, prompt] of [
      [await stories, 40, [1]],
      [await mini, 6, ids.slice(0, 40)],
    ] as const) {
      const cached = new LlamaCpu(m.config, w, { capacity: 256 });
      const fresh = new LlamaCpu(m.config, w, { capacity: 256 });
      const seq = [...prompt];
      let logits = cached.forward(seq);
      for (let s = 0; s < steps; s++) {
        const next = argmax(logits);
        fresh.reset();
        const again = fresh.forward(seq, { chunkSize: 16 });
        expect(argmax(again)).toBe(next);
        expect(maxAbsDiff(again, logits)).toBeLessThanOrEqual(1e-5);
        seq.push(next);
        logits = cached.forward([next]);
      }
    }
  });

  it('rewind, capacity and token checks', async () => {
    const { m, w } = await stories;
    const lm = new LlamaCpu(m.config, w, { capacity: 16 });
    const a = lm.forward([1, 400, 401, 402]);
    lm.rewind(2);
    const b = lm.forward([401, 402]);
    expect(b).toEqual(a);
    expect(() => lm.forward(new Array(13).fill(5))).toThrow(/context full: 4 tokens held \+ 13 new > capacity 16/);
    expect(() => lm.forward([512])).toThrow(HipAttnError);
    expect(() => lm.forward([])).toThrow(/at least one token/);
    expect(() => lm.rewind(5)).toThrow(/cannot rewind/);
    expect(lm.position).toBe(4);
  });
});

describe('pluggable attention', () => {
  it('is called once per layer per chunk with the cache and the right shape; its output is used', async () => {
    const { m, w } = await stories;
    const calls: { layer: number; q: number; keyLength: number; queryOffset: number; keyCapacity: number; sameK: boolean }[] = [];
    let lm: LlamaCpu;
    const spy: AttentionFn = (layer, input) => {
      calls.push({
        layer,
        q: input.shape.queryLength,
        keyLength: input.shape.keyLength,
        queryOffset: input.shape.queryOffset!,
        keyCapacity: input.shape.keyCapacity!,
        sameK: input.k === lm.cache.k[layer] && input.v === lm.cache.v[layer],
      });
      return denseAttention(input);
    };
    lm = new LlamaCpu(m.config, w, { capacity: 64, attention: spy });
    const ref = new LlamaCpu(m.config, w, { capacity: 64 });
    const prompt = [1, 400, 401, 402, 403, 404, 405];
    expect(lm.forward(prompt, { chunkSize: 4 })).toEqual(ref.forward(prompt, { chunkSize: 4 }));
    lm.forward([7]);
    const L = m.config.numLayers;
    expect(calls.length).toBe(3 * L);
    expect(calls.slice(0, L).map((c) => c.layer)).toEqual([...Array(L).keys()]);
    expect(calls[0]).toMatchObject({ q: 4, keyLength: 4, queryOffset: 0, keyCapacity: 64, sameK: true });
    expect(calls[L]).toMatchObject({ q: 3, keyLength: 7, queryOffset: 4 });
    expect(calls[2 * L]).toMatchObject({ q: 1, keyLength: 8, queryOffset: 7 });
    // Attention that ignores the context changes the result: the plug is really in the path.
    const local = new LlamaCpu(m.config, w, { capacity: 64, attention: (_l, input: AttentionInput<Float32Array>) => new Float32Array(input.q.length) });
    expect(maxAbsDiff(local.forward(prompt), ref.forward(prompt, {}))).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------------
// An independent float64 reference, written from the math, with no cache and no shared helpers.

function referenceLogits(c: LlamaConfig, w: LlamaWeights, ids: number[], invFreq: number[]): Float64Array {
  const H = c.hiddenSize, d = c.headDim, T = ids.length, group = c.numHeads / c.numKvHeads;
  const lin = (x: number[], W: Float32Array, b: Float32Array | undefined, outDim: number) =>
    Array.from({ length: outDim }, (_, o) => x.reduce((s, xv, k) => s + xv * W[o * x.length + k]!, b ? b[o]! : 0));
  const norm = (x: number[], g: Float32Array) => {
    const r = 1 / Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length + c.rmsNormEps);
    return x.map((v, i) => v * r * g[i]!);
  };
  const rope = (v: number[], pos: number) => {
    const out = v.slice();
    for (let h = 0; h < v.length / d; h++) {
      for (let i = 0; i < d / 2; i++) {
        const a = pos * invFreq[i]!;
        const x1 = v[h * d + i]!, x2 = v[h * d + i + d / 2]!;
        out[h * d + i] = x1 * Math.cos(a) - x2 * Math.sin(a);
        out[h * d + i + d / 2] = x2 * Math.cos(a) + x1 * Math.sin(a);
      }
    }
    return out;
  };
  let xs = ids.map((id) => Array.from(w.embed.subarray(id * H, (id + 1) * H)));
  for (const L of w.layers as LayerWeights[]) {
    const hs = xs.map((x) => norm(x, L.attnNorm));
    const qs = hs.map((h, t) => rope(lin(h, L.wq, L.bq, c.numHeads * d), t));
    const ks = hs.map((h, t) => rope(lin(h, L.wk, L.bk, c.numKvHeads * d), t));
    const vs = hs.map((h) => lin(h, L.wv, L.bv, c.numKvHeads * d));
    const attn = qs.map((q, t) => {
      const out: number[] = [];
      for (let h = 0; h < c.numHeads; h++) {
        const kv = Math.floor(h / group);
        const scores = Array.from({ length: t + 1 }, (_, j) => {
          let s = 0;
          for (let i = 0; i < d; i++) s += q[h * d + i]! * ks[j]![kv * d + i]!;
          return s / Math.sqrt(d);
        });
        const mx = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let i = 0; i < d; i++) out.push(e.reduce((s, p, j) => s + (p / z) * vs[j]![kv * d + i]!, 0));
      }
      return out;
    });
    xs = xs.map((x, t) => {
      const o = lin(attn[t]!, L.wo, L.bo, H);
      const x1 = x.map((v, i) => v + o[i]!);
      const h = norm(x1, L.mlpNorm);
      const g = lin(h, L.wGate, L.bGate, c.intermediateSize);
      const u = lin(h, L.wUp, L.bUp, c.intermediateSize);
      const a = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]!);
      const down = lin(a, L.wDown, L.bDown, H);
      return x1.map((v, i) => v + down[i]!);
    });
  }
  const out = new Float64Array(T * c.vocabSize);
  xs.forEach((x, t) => lin(norm(x, w.finalNorm), w.lmHead, undefined, c.vocabSize).forEach((v, i) => (out[t * c.vocabSize + i] = v)));
  return out;
}

describe('a random tiny model with all biases, GQA 4:2 and llama3 RoPE equals the float64 reference', () => {
  const config: LlamaConfig = {
    modelType: 'llama', hiddenSize: 24, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, intermediateSize: 40,
    rmsNormEps: 1e-5, vocabSize: 37, tieWordEmbeddings: false, qkvBias: true, oBias: true, mlpBias: true,
    maxPositionEmbeddings: 4096, bosTokenId: 0, eosTokenIds: [1],
    rope: { theta: 500, scaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 } },
  };
  const rand = (n: number, scale: number, offset = 0) => new Float32Array(n).map(() => offset + (rng.nextFloat() * 2 - 1) * scale);
  const { hiddenSize: H, intermediateSize: I, headDim: d } = config;
  const q = config.numHeads * d, kv = config.numKvHeads * d;
  const weights: LlamaWeights = {
    embed: rand(config.vocabSize * H, 1),
    finalNorm: rand(H, 0.2, 1),
    lmHead: rand(config.vocabSize * H, 0.3),
    layers: Array.from({ length: config.numLayers }, () => ({
      attnNorm: rand(H, 0.2, 1), wq: rand(q * H, 0.4), wk: rand(kv * H, 0.4), wv: rand(kv * H, 0.4), wo: rand(H * q, 0.3),
      bq: rand(q, 0.2), bk: rand(kv, 0.2), bv: rand(kv, 0.2), bo: rand(H, 0.1),
      mlpNorm: rand(H, 0.2, 1), wGate: rand(I * H, 0.3), wUp: rand(I * H, 0.3), wDown: rand(H * I, 0.3),
      bGate: rand(I, 0.1), bUp: rand(I, 0.1), bDown: rand(H, 0.1),
    })),
  };

  it('logits at every position, prefill in chunks of 5, within 1e-4', async () => {
    const { ropeInvFreq } = await import('./rope.js');
    const ids = Array.from({ length: 23 }, () => rng.nextU32() % config.vocabSize);
    const lm = new LlamaCpu(config, weights, { capacity: 40 });
    const got = lm.forward(ids, { logits: 'all', chunkSize: 5 });
    const inv = Array.from(ropeInvFreq(config.rope, d));
    const ref = referenceLogits(config, weights, ids, inv);
    let max = 0;
    for (let i = 0; i < ref.length; i++) max = Math.max(max, Math.abs(got[i]! - ref[i]!));
    console.log(`tiny random model vs float64 reference: max |Δ logit| = ${max.toExponential(2)}`);
    expect(max).toBeLessThanOrEqual(1e-4);
    // Sanity of the reference itself: dropping the biases changes it (they are exercised).
    const noBias = { ...weights, layers: weights.layers.map((l) => ({ ...l, bq: undefined, bo: undefined, bDown: undefined })) } as LlamaWeights;
    const ref2 = referenceLogits(config, noBias, ids, inv);
    expect(Math.max(...Array.from(ref2, (v, i) => Math.abs(v - ref[i]!)))).toBeGreaterThan(1e-3);
  });
});

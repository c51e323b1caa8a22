/**
 * config.json parsing: real configs of the supported families (fixtures/configs), both RoPE
 * spellings, the llama3 / linear inverse frequencies against an independent float64 rewrite of
 * transformers' formulas, and every refusal of something that would change the math.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import { parseLlamaConfig } from './config.js';
import { ropeInvFreq } from './rope.js';

const fixture = (name: string): Record<string, unknown> =>
  JSON.parse(readFileSync(new URL(`./fixtures/configs/${name}.json`, import.meta.url), 'utf8')) as Record<string, unknown>;

function refuse(json: unknown, code: 'UNSUPPORTED' | 'MODEL_FORMAT', mention: string | RegExp): void {
  let err: unknown;
  try {
    parseLlamaConfig(json, 'test/config.json');
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(HipAttnError);
  expect((err as HipAttnError).code).toBe(code);
  expect((err as HipAttnError).message).toContain('test/config.json');
  if (typeof mention === 'string') expect((err as HipAttnError).message).toContain(mention);
  else expect((err as HipAttnError).message).toMatch(mention);
}

/** transformers' _compute_llama3_parameters, rewritten in float64 from its definition. */
function llama3Reference(theta: number, dim: number, factor: number, low: number, high: number, oldCtx: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < dim / 2; i++) {
    const f = 1 / theta ** ((2 * i) / dim);
    const wavelen = (2 * Math.PI) / f;
    const lowWavelen = oldCtx / low;
    const highWavelen = oldCtx / high;
    let v = wavelen > lowWavelen ? f / factor : f;
    const smooth = (oldCtx / wavelen - low) / (high - low);
    const isMedium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    if (isMedium) v = (1 - smooth) * (v / factor) + smooth * v;
    out.push(v);
  }
  return out;
}

describe('supported configs', () => {
  it('Llama 3.1 (rope_scaling llama3, list of EOS ids)', () => {
    const c = parseLlamaConfig(fixture('llama-3.1-8b-instruct'));
    expect(c).toMatchObject({
      modelType: 'llama', hiddenSize: 4096, numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128, intermediateSize: 14336,
      vocabSize: 128256, tieWordEmbeddings: false, qkvBias: false, oBias: false, mlpBias: false, maxPositionEmbeddings: 131072,
      bosTokenId: 128000, eosTokenIds: [128001, 128008, 128009], rmsNormEps: 1e-5,
    });
    expect(c.rope).toEqual({ theta: 500000, scaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } });
    const inv = ropeInvFreq(c.rope, c.headDim);
    const ref = llama3Reference(500000, 128, 8, 1, 4, 8192);
    inv.forEach((v, i) => expect(Math.abs(v - ref[i]!) / ref[i]!).toBeLessThan(1e-6));
    // The three regimes are all present: unchanged, divided by 8, and interpolated.
    const ratios = Array.from(inv, (v, i) => ref[i]! / (1 / 500000 ** ((2 * i) / 128)));
    expect(ratios.some((r) => Math.abs(r - 1) < 1e-9)).toBe(true);
    expect(ratios.some((r) => Math.abs(r - 1 / 8) < 1e-9)).toBe(true);
    expect(ratios.some((r) => r > 1 / 8 + 1e-3 && r < 1 - 1e-3)).toBe(true);
  });

  it('the transformers-5 spelling (rope_parameters) gives the same config as the older one', () => {
    expect(parseLlamaConfig(fixture('llama-3.1-8b-instruct.tf5'))).toEqual(parseLlamaConfig(fixture('llama-3.1-8b-instruct')));
    const tb = parseLlamaConfig(JSON.parse(readFileSync('models/hip-testbed-mini/config.json', 'utf8')));
    expect(tb.rope).toEqual({ theta: 100000, scaling: { type: 'default' } });
    expect(tb).toMatchObject({ hiddenSize: 256, numLayers: 6, numHeads: 4, numKvHeads: 1, headDim: 64, tieWordEmbeddings: true });
  });

  it('Llama 3.2 (explicit head_dim, tied), Llama 2 (no rope_theta: 10000), SmolLM2 (tied, GQA 3:1)', () => {
    expect(parseLlamaConfig(fixture('llama-3.2-1b'))).toMatchObject({ headDim: 64, tieWordEmbeddings: true, rope: { scaling: { type: 'llama3', factor: 32 } } });
    expect(parseLlamaConfig(fixture('llama-2-7b'))).toMatchObject({ numKvHeads: 32, headDim: 128, rope: { theta: 10000, scaling: { type: 'default' } } });
    expect(parseLlamaConfig(fixture('smollm2-135m'))).toMatchObject({ numHeads: 9, numKvHeads: 3, headDim: 64, tieWordEmbeddings: true, eosTokenIds: [0] });
  });

  it('Qwen2.5: q/k/v biases (no o_proj bias), sliding window configured but unused', () => {
    const c = parseLlamaConfig(fixture('qwen2.5-0.5b-instruct'));
    expect(c).toMatchObject({ modelType: 'qwen2', qkvBias: true, oBias: false, mlpBias: false, headDim: 64, numKvHeads: 2, tieWordEmbeddings: true, rmsNormEps: 1e-6 });
    expect(c.rope.theta).toBe(1e6);
  });

  it('Mistral v0.3 (sliding_window null)', () => {
    expect(parseLlamaConfig(fixture('mistral-7b-v0.3'))).toMatchObject({ modelType: 'mistral', qkvBias: false, headDim: 128, rope: { theta: 1e6 } });
  });

  it('Llama attention_bias and mlp_bias turn on every projection bias', () => {
    const c = parseLlamaConfig({ ...fixture('llama-2-7b'), attention_bias: true, mlp_bias: true });
    expect(c).toMatchObject({ qkvBias: true, oBias: true, mlpBias: true });
  });

  it("llama.cpp's rope_freqs factors (as its converter computes them for Llama 3.1) give the same frequencies as llama3 scaling", () => {
    const c = parseLlamaConfig(fixture('llama-3.1-8b-instruct'));
    const d = c.headDim;
    const factors: number[] = [];
    for (let i = 0; i < d / 2; i++) {
      const freq = 1 / 500000 ** ((2 * i) / d);
      const wavelen = (2 * Math.PI) / freq;
      if (wavelen < 8192 / 4) factors.push(1);
      else if (wavelen > 8192 / 1) factors.push(8);
      else {
        const smooth = (8192 / wavelen - 1) / (4 - 1);
        factors.push(1 / ((1 - smooth) / 8 + smooth));
      }
    }
    const a = ropeInvFreq(c.rope, d);
    const b = ropeInvFreq({ theta: 500000, scaling: { type: 'freq_factors', factors } }, d);
    a.forEach((v, i) => expect(Math.abs(v - b[i]!) / v).toBeLessThan(1e-6));
  });

  it('linear RoPE scaling divides every inverse frequency by the factor', () => {
    const c = parseLlamaConfig({ ...fixture('llama-2-7b'), rope_scaling: { type: 'linear', factor: 4 } });
    expect(c.rope.scaling).toEqual({ type: 'linear', factor: 4 });
    const base = ropeInvFreq({ theta: 10000, scaling: { type: 'default' } }, 128);
    ropeInvFreq(c.rope, 128).forEach((v, i) => expect(v).toBeCloseTo(base[i]! / 4, 12));
  });
});

describe('refusals (math we do not implement) and malformed configs', () => {
  const llama = fixture('llama-3.1-8b-instruct');
  it('RoPE types dynamic, yarn, longrope (both spellings)', () => {
    refuse({ ...llama, rope_scaling: { rope_type: 'dynamic', factor: 2 } }, 'UNSUPPORTED', '"dynamic"');
    refuse({ ...llama, rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } }, 'UNSUPPORTED', '"yarn"');
    refuse({ ...fixture('llama-3.1-8b-instruct.tf5'), rope_parameters: { rope_type: 'longrope', rope_theta: 1e4, short_factor: [1], long_factor: [2] } }, 'UNSUPPORTED', '"longrope"');
    refuse({ ...fixture('qwen2.5-0.5b-instruct'), rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } }, 'UNSUPPORTED', 'yarn');
  });
  it('partial rotary embeddings', () => {
    refuse({ ...llama, partial_rotary_factor: 0.5 }, 'UNSUPPORTED', 'partial_rotary_factor');
  });
  it('activations other than SiLU', () => {
    refuse({ ...llama, hidden_act: 'gelu_pytorch_tanh' }, 'UNSUPPORTED', 'gelu_pytorch_tanh');
  });
  it('model types outside llama / mistral / qwen2', () => {
    refuse({ ...llama, model_type: 'gemma2' }, 'UNSUPPORTED', '"gemma2"');
    refuse({ ...llama, model_type: undefined }, 'UNSUPPORTED', 'model_type');
  });
  it('sliding windows that apply: Mistral v0.1, Qwen2 with use_sliding_window', () => {
    refuse(fixture('mistral-7b-v0.1'), 'UNSUPPORTED', 'sliding_window 4096');
    refuse({ ...fixture('qwen2.5-0.5b-instruct'), use_sliding_window: true, sliding_window: 4096 }, 'UNSUPPORTED', 'use_sliding_window');
    // A window as long as the context never applies.
    expect(() => parseLlamaConfig({ ...fixture('qwen2.5-0.5b-instruct'), use_sliding_window: true })).not.toThrow();
  });
  it('malformed numbers and inconsistent head counts', () => {
    refuse({ ...llama, hidden_size: undefined }, 'MODEL_FORMAT', '"hidden_size"');
    refuse({ ...llama, num_key_value_heads: 5 }, 'MODEL_FORMAT', 'multiple');
    refuse({ ...llama, hidden_size: 4001 }, 'MODEL_FORMAT', 'not a multiple');
    refuse({ ...llama, hidden_size: 4000 }, 'MODEL_FORMAT', 'must be even');
    refuse({ ...llama, rms_norm_eps: -1 }, 'MODEL_FORMAT', 'rms_norm_eps');
    refuse({ ...llama, tie_word_embeddings: 'yes' }, 'MODEL_FORMAT', 'tie_word_embeddings');
    refuse({ ...llama, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'MODEL_FORMAT', 'low_freq_factor');
    refuse([], 'MODEL_FORMAT', 'not a JSON object');
  });
});

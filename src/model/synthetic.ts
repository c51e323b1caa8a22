/**
 * Synthetic models: deterministic pseudo-random weights for any LlamaConfig, without a file —
 * for benchmarks of real shapes (a Llama-3-8B-shaped model on the H200) and for checking the GPU
 * forward pass against the CPU one on arbitrary configs. The values are those of
 * src/kernels/random-fill (generated on the GPU by `LlamaGpu.random`, on the CPU by
 * `syntheticTensorStore`), exactly representable in f16, so both sides hold identical weights.
 */
import { HipAttnError } from '../errors.js';
import { randomWeightValues, type RandomKind } from '../kernels/random-fill/random-fill.js';
import type { LlamaConfig } from './config.js';
import { f32ToF16 } from './dtypes.js';
import { type TensorInfo, type TensorStore, numel } from './tensor-store.js';
import { LM_HEAD_NAME, type TensorSpec, expectedTensors } from './weights.js';

export interface SyntheticTensor extends TensorSpec {
  /** Index in the model's tensor list (the generator's stream id). */
  id: number;
  kind: RandomKind;
  scaleExp: number;
}

/** Every tensor of a synthetic model of this config, with how its values are generated. */
export function syntheticTensors(config: LlamaConfig): SyntheticTensor[] {
  // expectedTensors asks the store only whether lm_head exists: it does unless tied.
  const stub = { info: (n: string) => (n === LM_HEAD_NAME && !config.tieWordEmbeddings ? {} : undefined) } as unknown as TensorStore;
  return expectedTensors(config, stub).map((t, id) => {
    const isNorm = /norm\.weight$/.test(t.name);
    const isBias = t.name.endsWith('.bias');
    const isEmbed = t.shape.length === 2 && (t.name === 'model.embed_tokens.weight' || t.name === LM_HEAD_NAME);
    const K = t.shape[t.shape.length - 1]!;
    const scaleExp = isBias ? -4 : isEmbed ? -3 : -Math.round(Math.log2(K) / 2);
    return { ...t, id, kind: isNorm ? 'norm' : 'linear', scaleExp };
  });
}

/** A TensorStore whose tensors are the synthetic weights of `config` under `seed`. */
export function syntheticTensorStore(config: LlamaConfig, seed: number): TensorStore {
  const tensors = new Map(syntheticTensors(config).map((t) => [t.name, t]));
  const name = `synthetic(seed ${seed})`;
  const get = (n: string): SyntheticTensor => {
    const t = tensors.get(n);
    if (!t) throw new HipAttnError('MODEL_FORMAT', `${name}: tensor "${n}" is missing`);
    return t;
  };
  const readF32 = async (n: string) => {
    const t = get(n);
    return randomWeightValues(numel(t.shape), seed, t.id, t.kind, t.scaleExp);
  };
  return {
    name,
    names: () => [...tensors.keys()],
    info(n: string): TensorInfo | undefined {
      const t = tensors.get(n);
      if (!t) return undefined;
      return { name: n, dtype: 'F32', shape: t.shape, file: name, byteOffset: 0, byteLength: numel(t.shape) * 4 };
    },
    readF32,
    readF16Bits: async (n: string) => f32ToF16(await readF32(n)),
    readRaw: async (n: string) => new Uint8Array((await readF32(n)).buffer),
    close: async () => {},
  };
}

/** The shapes of Llama-3-8B (for benchmarks with random weights: shapes are what matter for speed). */
export const LLAMA3_8B: LlamaConfig = {
  modelType: 'llama',
  hiddenSize: 4096,
  numLayers: 32,
  numHeads: 32,
  numKvHeads: 8,
  headDim: 128,
  intermediateSize: 14336,
  rmsNormEps: 1e-5,
  vocabSize: 128256,
  tieWordEmbeddings: false,
  qkvBias: false,
  oBias: false,
  mlpBias: false,
  maxPositionEmbeddings: 131072,
  bosTokenId: 128000,
  eosTokenIds: [128001],
  rope: { theta: 500000, scaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } },
};


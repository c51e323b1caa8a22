/**
 * Llama-family weights by their Hugging Face names, checked against the config, loaded as
 * float32 for the CPU forward pass. GGUF files are read through an adapter (gguf.ts) that
 * exposes the same names, shapes and Q/K row order, so this file knows one layout only.
 */
import { HipAttnError } from '../errors.js';
import type { LlamaConfig } from './config.js';
import { type TensorStore, requireInfo } from './tensor-store.js';

export interface LayerWeights {
  /** [hidden] */
  attnNorm: Float32Array;
  /** [heads·headDim, hidden] */
  wq: Float32Array;
  /** [kvHeads·headDim, hidden] */
  wk: Float32Array;
  /** [kvHeads·headDim, hidden] */
  wv: Float32Array;
  /** [hidden, heads·headDim] */
  wo: Float32Array;
  bq?: Float32Array;
  bk?: Float32Array;
  bv?: Float32Array;
  bo?: Float32Array;
  /** [hidden] */
  mlpNorm: Float32Array;
  /** [intermediate, hidden] */
  wGate: Float32Array;
  /** [intermediate, hidden] */
  wUp: Float32Array;
  /** [hidden, intermediate] */
  wDown: Float32Array;
  bGate?: Float32Array;
  bUp?: Float32Array;
  bDown?: Float32Array;
}

export interface LlamaWeights {
  /** [vocab, hidden] */
  embed: Float32Array;
  layers: LayerWeights[];
  /** [hidden] */
  finalNorm: Float32Array;
  /** [vocab, hidden]; the same array as `embed` when the embeddings are tied. */
  lmHead: Float32Array;
}

/** A tensor the model needs: its Hugging Face name and expected shape. */
export interface TensorSpec {
  name: string;
  shape: number[];
}

/** Hugging Face tensor names of layer `i`. */
export function layerTensorNames(i: number) {
  const p = `model.layers.${i}`;
  return {
    attnNorm: `${p}.input_layernorm.weight`,
    wq: `${p}.self_attn.q_proj.weight`,
    wk: `${p}.self_attn.k_proj.weight`,
    wv: `${p}.self_attn.v_proj.weight`,
    wo: `${p}.self_attn.o_proj.weight`,
    bq: `${p}.self_attn.q_proj.bias`,
    bk: `${p}.self_attn.k_proj.bias`,
    bv: `${p}.self_attn.v_proj.bias`,
    bo: `${p}.self_attn.o_proj.bias`,
    mlpNorm: `${p}.post_attention_layernorm.weight`,
    wGate: `${p}.mlp.gate_proj.weight`,
    wUp: `${p}.mlp.up_proj.weight`,
    wDown: `${p}.mlp.down_proj.weight`,
    bGate: `${p}.mlp.gate_proj.bias`,
    bUp: `${p}.mlp.up_proj.bias`,
    bDown: `${p}.mlp.down_proj.bias`,
  } as const;
}

export const EMBED_NAME = 'model.embed_tokens.weight';
export const FINAL_NORM_NAME = 'model.norm.weight';
export const LM_HEAD_NAME = 'lm_head.weight';

/** True when the output projection is the embedding matrix (tied in the config, or no lm_head stored). */
export function usesTiedEmbeddings(config: LlamaConfig, store: TensorStore): boolean {
  return config.tieWordEmbeddings || !store.info(LM_HEAD_NAME);
}

/** Every tensor the config implies, with its expected shape, per layer and global. */
export function expectedTensors(config: LlamaConfig, store: TensorStore): TensorSpec[] {
  const { hiddenSize: H, numHeads, numKvHeads, headDim, intermediateSize: I, vocabSize: V } = config;
  const qDim = numHeads * headDim;
  const kvDim = numKvHeads * headDim;
  const specs: TensorSpec[] = [{ name: EMBED_NAME, shape: [V, H] }];
  for (let i = 0; i < config.numLayers; i++) {
    const n = layerTensorNames(i);
    specs.push(
      { name: n.attnNorm, shape: [H] },
      { name: n.wq, shape: [qDim, H] },
      { name: n.wk, shape: [kvDim, H] },
      { name: n.wv, shape: [kvDim, H] },
      { name: n.wo, shape: [H, qDim] },
      { name: n.mlpNorm, shape: [H] },
      { name: n.wGate, shape: [I, H] },
      { name: n.wUp, shape: [I, H] },
      { name: n.wDown, shape: [H, I] },
    );
    if (config.qkvBias) specs.push({ name: n.bq, shape: [qDim] }, { name: n.bk, shape: [kvDim] }, { name: n.bv, shape: [kvDim] });
    if (config.oBias) specs.push({ name: n.bo, shape: [H] });
    if (config.mlpBias) specs.push({ name: n.bGate, shape: [I] }, { name: n.bUp, shape: [I] }, { name: n.bDown, shape: [H] });
  }
  specs.push({ name: FINAL_NORM_NAME, shape: [H] });
  if (!usesTiedEmbeddings(config, store)) specs.push({ name: LM_HEAD_NAME, shape: [V, H] });
  return specs;
}

/** Number of decoder layers whose tensors a store holds: 1 + the largest N of any "model.layers.N." name (0 if none). */
export function storedLayerCount(store: TensorStore): number {
  let count = 0;
  for (const name of store.names()) {
    const m = /^model\.layers\.(\d{1,9})\./.exec(name);
    if (m) count = Math.max(count, Number(m[1]) + 1);
  }
  return count;
}

/**
 * Checks the config's layer count against the layers the weights hold, before anything is
 * allocated per layer (a corrupt count such as 1e9 would otherwise build billions of tensor
 * specs). More layers than stored: the first missing tensor is named. Fewer: refused too, since
 * running a prefix of the layers gives fluent-looking garbage. `field` names the count in errors.
 */
export function checkLayerCount(config: LlamaConfig, store: TensorStore, field = 'num_hidden_layers'): void {
  const stored = storedLayerCount(store);
  if (config.numLayers > stored) {
    throw new HipAttnError(
      'MODEL_FORMAT',
      `${store.name}: tensor "${layerTensorNames(stored).attnNorm}" is missing: ${field} is ${config.numLayers} but the weights hold ${stored} layer${stored === 1 ? '' : 's'}`,
    );
  }
  if (config.numLayers < stored) {
    throw new HipAttnError(
      'MODEL_FORMAT',
      `${store.name}: the weights hold ${stored} layers (model.layers.0 to model.layers.${stored - 1}) but ${field} is ${config.numLayers}; a config that drops layers would give garbage`,
    );
  }
}

/**
 * Checks that every tensor the config needs is present with the right shape, before anything
 * is read (the layer count first, see checkLayerCount). Throws MODEL_FORMAT naming the file and
 * the tensor.
 */
export function checkTensorShapes(config: LlamaConfig, store: TensorStore, layerField = 'num_hidden_layers'): void {
  checkLayerCount(config, store, layerField);
  if (!config.tieWordEmbeddings && !store.info(LM_HEAD_NAME) && store.info(EMBED_NAME)) {
    // transformers would leave lm_head randomly initialised; we refuse instead of guessing.
    throw new HipAttnError('MODEL_FORMAT', `${store.name}: tensor "${LM_HEAD_NAME}" is missing and the config does not tie the embeddings (tie_word_embeddings false)`);
  }
  for (const spec of expectedTensors(config, store)) {
    const info = requireInfo(store, spec.name);
    const same = info.shape.length === spec.shape.length && info.shape.every((d, i) => d === spec.shape[i]);
    if (!same) {
      throw new HipAttnError(
        'MODEL_FORMAT',
        `${info.file}: tensor "${spec.name}" has shape [${info.shape.join(', ')}] but the config implies [${spec.shape.join(', ')}]`,
      );
    }
  }
}

export interface LoadProgress {
  /** Tensors read so far / in all. */
  loaded: number;
  total: number;
  tensor: string;
}

/** Loads all weights as float32 (after checking every shape). */
export async function loadLlamaWeightsF32(
  config: LlamaConfig,
  store: TensorStore,
  onProgress?: (p: LoadProgress) => void,
): Promise<LlamaWeights> {
  checkTensorShapes(config, store);
  const total = expectedTensors(config, store).length;
  let loaded = 0;
  const read = async (name: string): Promise<Float32Array> => {
    const data = await store.readF32(name);
    loaded++;
    onProgress?.({ loaded, total, tensor: name });
    return data;
  };
  const embed = await read(EMBED_NAME);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const n = layerTensorNames(i);
    const layer: LayerWeights = {
      attnNorm: await read(n.attnNorm),
      wq: await read(n.wq),
      wk: await read(n.wk),
      wv: await read(n.wv),
      wo: await read(n.wo),
      mlpNorm: await read(n.mlpNorm),
      wGate: await read(n.wGate),
      wUp: await read(n.wUp),
      wDown: await read(n.wDown),
    };
    if (config.qkvBias) {
      layer.bq = await read(n.bq);
      layer.bk = await read(n.bk);
      layer.bv = await read(n.bv);
    }
    if (config.oBias) layer.bo = await read(n.bo);
    if (config.mlpBias) {
      layer.bGate = await read(n.bGate);
      layer.bUp = await read(n.bUp);
      layer.bDown = await read(n.bDown);
    }
    layers.push(layer);
  }
  const finalNorm = await read(FINAL_NORM_NAME);
  const lmHead = usesTiedEmbeddings(config, store) ? embed : await read(LM_HEAD_NAME);
  return { embed, layers, finalNorm, lmHead };
}

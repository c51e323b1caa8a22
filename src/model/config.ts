/**
 * config.json → LlamaConfig: the one typed description of a Llama-family model that the weight
 * loader and every forward pass (CPU now, WebGPU later) use. GGUF metadata maps to the same type
 * (gguf.ts). Whatever changes the math and is not implemented is refused here, with a clear
 * UNSUPPORTED error, rather than silently computing something else.
 */
import { HipAttnError } from '../errors.js';

export type ModelType = 'llama' | 'mistral' | 'qwen2';

/** RoPE frequency scaling (how the inverse frequencies are derived; see rope.ts). */
export type RopeScaling =
  | { type: 'default' }
  /** Position interpolation: every inverse frequency divided by `factor`. */
  | { type: 'linear'; factor: number }
  /** Llama 3.1 / 3.2: low frequencies divided by `factor`, high ones kept, a smooth ramp between. */
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  /** llama.cpp's rope_freqs tensor (GGUF): inverse frequency i divided by factors[i]. */
  | { type: 'freq_factors'; factors: number[] };

export interface RopeConfig {
  theta: number;
  scaling: RopeScaling;
}

export interface LlamaConfig {
  modelType: ModelType;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  rmsNormEps: number;
  vocabSize: number;
  /** lm_head shares the token embedding matrix. */
  tieWordEmbeddings: boolean;
  /** q_proj, k_proj and v_proj have biases (Qwen2 always; Llama when attention_bias). */
  qkvBias: boolean;
  /** o_proj has a bias (Llama when attention_bias; never Qwen2 or Mistral). */
  oBias: boolean;
  /** gate/up/down projections have biases (Llama mlp_bias). */
  mlpBias: boolean;
  maxPositionEmbeddings: number;
  bosTokenId: number | undefined;
  eosTokenIds: number[];
  rope: RopeConfig;
}

const SUPPORTED_MODEL_TYPES: readonly ModelType[] = ['llama', 'mistral', 'qwen2'];

function unsupported(where: string, msg: string): HipAttnError {
  return new HipAttnError('UNSUPPORTED', `${where}: ${msg}`);
}
function bad(where: string, msg: string): HipAttnError {
  return new HipAttnError('MODEL_FORMAT', `${where}: ${msg}`);
}

/**
 * A value as it appears in an error message. JSON.stringify alone would print Infinity and NaN
 * (1e999 in a JSON file parses to Infinity) as "null", and undefined as nothing.
 */
export function showValue(v: unknown): string {
  if (v === undefined) return 'nothing (missing)';
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  const s = JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Largest integer count accepted for any size field (layers, heads, dimensions, vocabulary,
 * context). Counts are checked against the weights present later; this bound only keeps
 * products of two counts exact in float64, so that no check is fooled by rounding.
 */
export const MAX_CONFIG_INT = 2 ** 26;

function posInt(where: string, obj: Record<string, unknown>, key: string, fallback?: number): number {
  const v = obj[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw bad(where, `"${key}" must be a positive integer, got ${showValue(obj[key])}`);
  if (v > MAX_CONFIG_INT) throw bad(where, `"${key}" is ${v}, implausibly large (at most ${MAX_CONFIG_INT})`);
  return v;
}
function posNum(where: string, obj: Record<string, unknown>, key: string, fallback?: number): number {
  const v = obj[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad(where, `"${key}" must be a positive number, got ${showValue(obj[key])}`);
  return v;
}
function optBool(where: string, obj: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw bad(where, `"${key}" must be true or false, got ${showValue(v)}`);
  return v;
}
/** A token id below `vocabSize`, or undefined when absent (null counts as absent, as in transformers). */
export function optTokenId(where: string, v: unknown, key: string, vocabSize: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(where, `"${key}" must be a token id (an integer ≥ 0), got ${showValue(v)}`);
  if (v >= vocabSize) throw bad(where, `"${key}" ${v} is outside the vocabulary of ${vocabSize} tokens`);
  return v;
}
/** One token id or a list of them (eos_token_id takes both forms). */
export function tokenIdList(where: string, v: unknown, key: string, vocabSize: number): number[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => optTokenId(where, x, key, vocabSize)!);
}

/** Parses RoPE settings from either spelling: `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling`. */
export function parseRope(where: string, cfg: Record<string, unknown>): RopeConfig {
  const params = cfg.rope_parameters;
  let theta: number;
  let scaling: Record<string, unknown> | null;
  if (params !== undefined && params !== null) {
    if (typeof params !== 'object' || Array.isArray(params)) throw bad(where, '"rope_parameters" must be an object');
    const p = params as Record<string, unknown>;
    if (!('rope_type' in p) && !('rope_theta' in p) && Object.values(p).every((x) => typeof x === 'object')) {
      throw unsupported(where, `per-layer-type "rope_parameters" (${Object.keys(p).join(', ')}) are not supported`);
    }
    theta = posNum(where, { ...cfg, ...p }, 'rope_theta', 10000);
    scaling = p;
  } else {
    theta = posNum(where, cfg, 'rope_theta', 10000);
    const rs = cfg.rope_scaling;
    if (rs !== undefined && rs !== null && (typeof rs !== 'object' || Array.isArray(rs))) throw bad(where, '"rope_scaling" must be an object or null');
    scaling = (rs as Record<string, unknown> | null | undefined) ?? null;
  }
  const partial = scaling?.partial_rotary_factor ?? cfg.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1) {
    throw unsupported(where, `partial_rotary_factor ${showValue(partial)} (RoPE on part of each head) is not supported`);
  }
  if (!scaling) return { theta, scaling: { type: 'default' } };
  const type = scaling.rope_type ?? scaling.type ?? 'default';
  const s = scaling;
  switch (type) {
    case 'default':
      return { theta, scaling: { type: 'default' } };
    case 'linear':
      return { theta, scaling: { type: 'linear', factor: posNum(where, s, 'factor') } };
    case 'llama3': {
      const lowFreqFactor = posNum(where, s, 'low_freq_factor');
      const highFreqFactor = posNum(where, s, 'high_freq_factor');
      if (highFreqFactor <= lowFreqFactor) throw bad(where, `llama3 RoPE needs high_freq_factor (${highFreqFactor}) > low_freq_factor (${lowFreqFactor})`);
      return {
        theta,
        scaling: {
          type: 'llama3',
          factor: posNum(where, s, 'factor'),
          lowFreqFactor,
          highFreqFactor,
          originalMaxPositionEmbeddings: posInt(where, s, 'original_max_position_embeddings'),
        },
      };
    }
    default:
      throw unsupported(
        where,
        `RoPE type ${showValue(type)} is not supported (supported: default, linear, llama3; dynamic, yarn and longrope change the attention math and are refused)`,
      );
  }
}

/**
 * Parses a Hugging Face config.json object. `where` names the file in errors.
 * Refuses (UNSUPPORTED) model types, activations, RoPE variants and sliding windows it does not implement.
 */
export function parseLlamaConfig(json: unknown, where = 'config.json'): LlamaConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad(where, 'not a JSON object');
  const cfg = json as Record<string, unknown>;
  const modelType = cfg.model_type;
  if (typeof modelType !== 'string' || !SUPPORTED_MODEL_TYPES.includes(modelType as ModelType)) {
    throw unsupported(where, `model_type ${showValue(modelType)} is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
  }
  const mt = modelType as ModelType;
  const act = cfg.hidden_act ?? cfg.hidden_activation ?? 'silu';
  if (act !== 'silu' && act !== 'swish') throw unsupported(where, `hidden_act ${showValue(act)} is not supported (only silu, i.e. SwiGLU MLPs)`);

  const hiddenSize = posInt(where, cfg, 'hidden_size');
  const numLayers = posInt(where, cfg, 'num_hidden_layers');
  const numHeads = posInt(where, cfg, 'num_attention_heads');
  const numKvHeads = posInt(where, cfg, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) throw bad(where, `num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKvHeads})`);
  let headDim: number;
  if (cfg.head_dim !== undefined && cfg.head_dim !== null) {
    headDim = posInt(where, cfg, 'head_dim');
  } else {
    if (hiddenSize % numHeads !== 0) throw bad(where, `hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads}) and no head_dim is given`);
    headDim = hiddenSize / numHeads;
  }
  if (headDim % 2 !== 0) throw bad(where, `head_dim ${headDim} must be even for RoPE`);

  // Sliding-window attention changes the math only where it applies.
  const maxPositionEmbeddings = posInt(where, cfg, 'max_position_embeddings', 2048);
  const sw = cfg.sliding_window;
  const windowed = (w: unknown): boolean => typeof w === 'number' && w < maxPositionEmbeddings;
  if (mt === 'mistral' && windowed(sw)) {
    throw unsupported(where, `sliding_window ${String(sw)} < max_position_embeddings ${maxPositionEmbeddings}: Mistral sliding-window attention is not supported`);
  }
  if (mt === 'qwen2') {
    const layerTypes = cfg.layer_types;
    const slidingLayers = Array.isArray(layerTypes) && layerTypes.some((t) => t === 'sliding_attention');
    if ((cfg.use_sliding_window === true || slidingLayers) && windowed(sw)) {
      throw unsupported(where, `use_sliding_window with sliding_window ${String(sw)}: Qwen2 sliding-window attention is not supported`);
    }
  }

  const vocabSize = posInt(where, cfg, 'vocab_size');
  const attentionBias = optBool(where, cfg, 'attention_bias', false);
  const qkvBias = mt === 'qwen2' ? true : mt === 'llama' ? attentionBias : false;
  const oBias = mt === 'llama' ? attentionBias : false;
  const mlpBias = mt === 'llama' ? optBool(where, cfg, 'mlp_bias', false) : false;

  return validateLlamaConfig({
    modelType: mt,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: posInt(where, cfg, 'intermediate_size'),
    rmsNormEps: posNum(where, cfg, 'rms_norm_eps', 1e-6),
    vocabSize,
    tieWordEmbeddings: optBool(where, cfg, 'tie_word_embeddings', false),
    qkvBias,
    oBias,
    mlpBias,
    maxPositionEmbeddings,
    bosTokenId: optTokenId(where, cfg.bos_token_id, 'bos_token_id', vocabSize),
    eosTokenIds: tokenIdList(where, cfg.eos_token_id, 'eos_token_id', vocabSize),
    rope: parseRope(where, cfg),
  }, where);
}

/** Checks the internal consistency of a config built by hand or from GGUF metadata. */
export function validateLlamaConfig(c: LlamaConfig, where: string): LlamaConfig {
  const ints: (keyof LlamaConfig)[] = ['hiddenSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'intermediateSize', 'vocabSize', 'maxPositionEmbeddings'];
  for (const k of ints) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw bad(where, `${k} must be a positive integer, got ${String(v)}`);
    if (v > MAX_CONFIG_INT) throw bad(where, `${k} ${v} is implausibly large (at most ${MAX_CONFIG_INT})`);
  }
  if (c.numHeads % c.numKvHeads !== 0) throw bad(where, `head count ${c.numHeads} is not a multiple of the KV head count ${c.numKvHeads}`);
  if (c.headDim % 2 !== 0) throw bad(where, `head dimension ${c.headDim} must be even for RoPE`);
  if (!(c.rmsNormEps > 0)) throw bad(where, `RMSNorm epsilon must be positive, got ${c.rmsNormEps}`);
  if (!(c.rope.theta > 0)) throw bad(where, `RoPE theta must be positive, got ${c.rope.theta}`);
  if (c.rope.scaling.type === 'freq_factors' && c.rope.scaling.factors.length !== c.headDim / 2) {
    throw bad(where, `RoPE frequency factors have ${c.rope.scaling.factors.length} entries, head dimension ${c.headDim} needs ${c.headDim / 2}`);
  }
  return c;
}

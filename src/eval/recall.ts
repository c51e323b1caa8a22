/**
 * Diagnostics of HiP on a real model: run a prompt through the CPU forward pass with a hook on
 * every layer's attention and measure, on the model's own queries and keys, per layer and head:
 *
 * - mask recall: the fraction of the exact top-k key blocks (brute force, same block score as
 *   the tree search: exactTopKMask) that HiP's tree search (estimateHipMask) also selects;
 * - attention-mass coverage: for sampled queries (the last query of every query block), the
 *   fraction of the true (dense) softmax attention mass on the keys HiP reads (sink ∪ selected ∪
 *   window), on the keys the exact top-k mask would read, and on the keys StreamingLLM reads;
 * - with a needle (e.g. a passkey prompt): for the last query, the dense attention mass on the
 *   needle's tokens, and the fraction of needle tokens each method reads.
 *
 * Activations are dense by default (every layer attends densely while being measured), so all
 * layers see the same inputs as with dense attention; `propagate: 'hip'` runs HiP in the layers
 * where the runtime would (after `denseLayers`), to see how errors compound.
 */
import { denseAttention } from '../attention/cpu/dense.js';
import { candidateRange, estimateHipMask, exactTopKMask } from '../attention/cpu/hip-mask.js';
import { hipSparseAttention } from '../attention/cpu/hip.js';
import { hipKeys, KeyKind, streamingKeys } from '../attention/keys.js';
import { type HipMask, maskSlot, selectedBlocks } from '../attention/mask.js';
import { type HipOptions, resolveHipOptions, resolveStreamingOptions, type StreamingOptions } from '../attention/options.js';
import type { AttentionInput } from '../attention/shape.js';
import { HipAttnError } from '../errors.js';
import { LlamaCpu } from '../model/llama-cpu.js';
import type { OpenedModel } from '../model/load.js';
import { loadLlamaWeightsF32 } from '../model/weights.js';

export interface RecallRow {
  layer: number;
  head: number;
  /** Method the runtime uses in this layer with HiP ('dense' for the first denseLayers). */
  runtime: 'dense' | 'hip';
  /** Query blocks with more candidate key blocks than HiP selects (where the tree search matters). */
  queryBlocks: number;
  /** Mean recall of HiP's blocks against the exact top-k blocks over those query blocks. */
  recall: number;
  /** Mean fraction of dense attention mass on the keys read by HiP / exact top-k / StreamingLLM. */
  massHip: number;
  massTopK: number;
  massStreaming: number;
  /** The prompt's last query (the one that predicts the answer): fraction of its dense attention mass on the keys read by HiP / exact top-k / StreamingLLM. */
  lastMassHip: number;
  lastMassTopK: number;
  lastMassStreaming: number;
  /** Last query only, when a needle is given: dense attention mass on the needle tokens. */
  needleMass?: number;
  /** Fraction of the needle's tokens read by the last query under HiP / exact top-k / StreamingLLM. */
  needleHip?: number;
  needleTopK?: number;
  needleStreaming?: number;
}

export interface RecallOptions {
  hip?: Partial<HipOptions>;
  streaming?: Partial<StreamingOptions>;
  /** Token range [start, end) of a needle in the prompt. */
  needle?: [number, number];
  /** 'dense' (default): dense activations everywhere; 'hip': HiP after denseLayers, as the runtime. */
  propagate?: 'dense' | 'hip';
  onProgress?: (fraction: number, label: string) => void;
}

/** Softmax probabilities (dense attention) of query `i` of head `h` over keys 0 … p (float64). */
export function attentionRow(input: AttentionInput<Float32Array>, h: number, i: number): Float64Array {
  const { q, k, shape } = input;
  const d = shape.headDim;
  const T = shape.queryLength;
  const cap = shape.keyCapacity ?? shape.keyLength;
  const p = (shape.queryOffset ?? shape.keyLength - T) + i;
  const kvh = Math.floor(h / (shape.heads / shape.kvHeads));
  const qo = (h * T + i) * d;
  const scale = 1 / Math.sqrt(d);
  const s = new Float64Array(p + 1);
  let max = -Infinity;
  for (let t = 0; t <= p; t++) {
    const ko = (kvh * cap + t) * d;
    let dot = 0;
    for (let c = 0; c < d; c++) dot += q[qo + c]! * k[ko + c]!;
    s[t] = dot * scale;
    if (s[t]! > max) max = s[t]!;
  }
  let sum = 0;
  for (let t = 0; t <= p; t++) {
    s[t] = Math.exp(s[t]! - max);
    sum += s[t]!;
  }
  for (let t = 0; t <= p; t++) s[t] = s[t]! / sum;
  return s;
}

function massOf(probs: Float64Array, keys: Int32Array, n: number): number {
  let m = 0;
  for (let j = 0; j < n; j++) m += probs[keys[j]!]!;
  return m;
}

function fractionIn(keys: Int32Array, n: number, range: [number, number]): number {
  let hit = 0;
  for (let j = 0; j < n; j++) if (keys[j]! >= range[0] && keys[j]! < range[1]) hit++;
  return hit / Math.max(1, range[1] - range[0]);
}

/** HiP's mask and the exact top-k mask (same block score, brute force) of one layer's attention input. */
export interface LayerMasks {
  hip: HipMask;
  exact: HipMask;
}

/** Estimates both masks of `input` (HiP's tree search and the exact top-k), as layerRecall compares them. */
export function layerMasks(input: AttentionInput<Float32Array>, hip: HipOptions): LayerMasks {
  return { hip: estimateHipMask(input, hip, { checkFinite: false }), exact: exactTopKMask(input, hip, { checkFinite: false }) };
}

/**
 * Per-head recall and coverage of one layer's attention input (a whole prefill: queryOffset 0).
 * `masks` (from layerMasks with the same options) saves estimating them again.
 */
export function layerRecall(
  input: AttentionInput<Float32Array>,
  hip: HipOptions,
  streaming: StreamingOptions,
  needle?: [number, number],
  masks: LayerMasks = layerMasks(input, hip),
): Omit<RecallRow, 'layer' | 'runtime'>[] {
  const T = input.shape.queryLength;
  const { hip: mask, exact } = masks;
  const n = mask.blocksPerQuery;
  const keys = new Int32Array(input.shape.keyLength);
  const offset = input.shape.queryOffset ?? input.shape.keyLength - T;
  const rows: Omit<RecallRow, 'layer' | 'runtime'>[] = [];
  const read = (m: HipMask, h: number, qb: number, p: number) => hipKeys(p, hip.sinkTokens, hip.slidingWindow, hip.blockSizeK, m.blockStarts, maskSlot(m, 0, h, qb), n, keys);
  for (let h = 0; h < input.shape.heads; h++) {
    let recallSum = 0;
    let blocks = 0;
    let mh = 0;
    let mt = 0;
    let ms = 0;
    for (let qb = 0; qb < mask.numQueryBlocks; qb++) {
      const slot = maskSlot(mask, 0, h, qb);
      const ref = new Set<number>();
      for (let j = 0; j < n && exact.blockStarts[slot + j]! >= 0; j++) ref.add(exact.blockStarts[slot + j]!);
      const lastQuery = Math.min(T, (qb + 1) * hip.blockSizeQ) - 1;
      const p = offset + lastQuery;
      // Only blocks where the tree search has to choose (more candidate blocks than slots).
      const candidates = Math.ceil(Math.max(0, p + 1 - hip.slidingWindow - hip.sinkTokens) / hip.blockSizeK);
      if (candidates <= n || ref.size === 0) continue;
      let hit = 0;
      for (let j = 0; j < n && mask.blockStarts[slot + j]! >= 0; j++) if (ref.has(mask.blockStarts[slot + j]!)) hit++;
      recallSum += hit / ref.size;
      blocks++;
      const probs = attentionRow(input, h, lastQuery);
      mh += massOf(probs, keys, read(mask, h, qb, p));
      mt += massOf(probs, keys, read(exact, h, qb, p));
      ms += massOf(probs, keys, streamingKeys(p, streaming.sinkTokens, streaming.slidingWindow, keys));
    }
    const i = T - 1;
    const p = offset + i;
    const qb = Math.floor(i / hip.blockSizeQ);
    const probs = attentionRow(input, h, i);
    const row: Omit<RecallRow, 'layer' | 'runtime'> = {
      head: h,
      queryBlocks: blocks,
      recall: blocks > 0 ? recallSum / blocks : 1,
      massHip: blocks > 0 ? mh / blocks : 1,
      massTopK: blocks > 0 ? mt / blocks : 1,
      massStreaming: blocks > 0 ? ms / blocks : 1,
      lastMassHip: massOf(probs, keys, read(mask, h, qb, p)),
      lastMassTopK: massOf(probs, keys, read(exact, h, qb, p)),
      lastMassStreaming: massOf(probs, keys, streamingKeys(p, streaming.sinkTokens, streaming.slidingWindow, keys)),
    };
    if (needle) {
      let nm = 0;
      for (let t = needle[0]; t < Math.min(needle[1], p + 1); t++) nm += probs[t]!;
      row.needleMass = nm;
      row.needleHip = fractionIn(keys, read(mask, h, qb, p), needle);
      row.needleTopK = fractionIn(keys, read(exact, h, qb, p), needle);
      row.needleStreaming = fractionIn(keys, streamingKeys(p, streaming.sinkTokens, streaming.slidingWindow, keys), needle);
    }
    rows.push(row);
  }
  return rows;
}

/**
 * Runs `ids` (one prefill) through the model on the CPU (float32 weights) and calls `onLayer`
 * with every layer's attention input: the model's real queries `q` [1, heads, T, headDim] (a
 * fresh array per layer) and keys/values (the layer's KV cache, [kvHeads, T, headDim], complete
 * when the call comes: the prompt is one chunk). Activations are dense, or HiP after denseLayers
 * with `propagate: 'hip'`. `opened`'s store is not closed here.
 */
export async function runWithLayerHook(
  opened: OpenedModel,
  ids: readonly number[],
  onLayer: (layer: number, input: AttentionInput<Float32Array>) => void,
  options: Pick<RecallOptions, 'hip' | 'propagate' | 'onProgress'> = {},
): Promise<void> {
  const hip = resolveHipOptions(options.hip);
  if (ids.length < 2) throw new HipAttnError('INVALID_OPTION', 'the prompt needs at least 2 tokens');
  const weights = await loadLlamaWeightsF32(opened.config, opened.store);
  const L = opened.config.numLayers;
  const propagateHip = options.propagate === 'hip';
  const lm = new LlamaCpu(opened.config, weights, {
    capacity: ids.length,
    attention: (layer, input) => {
      options.onProgress?.(layer / L, `layer ${layer + 1}/${L}`);
      onLayer(layer, input);
      if (propagateHip && layer >= hip.denseLayers) return hipSparseAttention(input, estimateHipMask(input, hip, { checkFinite: false }), { checkFinite: false });
      return denseAttention(input, { checkFinite: false });
    },
  });
  lm.forward(ids, { chunkSize: ids.length, logits: 'none' });
  options.onProgress?.(1, 'done');
}

/**
 * Runs `ids` (one prefill) through the model on the CPU and measures every layer and head.
 * `opened` is an opened model (src/model/load.ts); its store is not closed here.
 */
export async function maskRecallProfile(opened: OpenedModel, ids: readonly number[], options: RecallOptions = {}): Promise<RecallRow[]> {
  const hip = resolveHipOptions(options.hip);
  const streaming = resolveStreamingOptions(options.streaming);
  const rows: RecallRow[] = [];
  await runWithLayerHook(
    opened,
    ids,
    (layer, input) => {
      const runtime = layer < hip.denseLayers ? 'dense' : 'hip';
      for (const r of layerRecall(input, hip, streaming, options.needle)) rows.push({ layer, runtime, ...r });
    },
    { hip, ...(options.propagate ? { propagate: options.propagate } : {}), ...(options.onProgress ? { onProgress: options.onProgress } : {}) },
  );
  return rows;
}

/** Which keys one query reads under HiP, under the exact top-k mask and under StreamingLLM, and what that costs and covers. */
export interface QueryCoverage {
  /** Key position of the query, and its HiP query block. */
  position: number;
  queryBlock: number;
  /** Dense softmax attention of the query over keys 0 … position. */
  probs: Float64Array;
  /** Per key 0 … position: KeyKind (1 sink, 2 selected, 3 window) or 0 when not read. */
  hipKinds: Uint8Array;
  exactKinds: Uint8Array;
  streamingKinds: Uint8Array;
  /** Selected key-block starts of the query's block, HiP and exact top-k. */
  hipBlocks: number[];
  exactBlocks: number[];
  /** Candidate key blocks of the block (HiP chooses only when there are more than blocksPerQuery). */
  candidateBlocks: number;
  blocksPerQuery: number;
  /** Fraction of the exact top-k blocks that HiP selected (1 when there is nothing to choose). */
  recall: number;
  /** Fraction of the dense attention mass on the keys each method reads (dense: 1). */
  massHip: number;
  massExact: number;
  massStreaming: number;
  /** Keys each method reads. */
  keysHip: number;
  keysExact: number;
  keysStreaming: number;
}

/**
 * One query under the microscope (query `i` of head `h` of a prefill's attention input, with
 * its layer's masks from layerMasks): the keys HiP, the exact top-k mask and StreamingLLM read,
 * the recall of HiP's blocks, and the dense attention mass each method covers — the per-query
 * view of layerRecall's averages.
 */
export function queryCoverage(input: AttentionInput<Float32Array>, masks: LayerMasks, hip: HipOptions, streaming: StreamingOptions, h: number, i: number): QueryCoverage {
  const T = input.shape.queryLength;
  if (!Number.isInteger(h) || h < 0 || h >= input.shape.heads) throw new HipAttnError('INVALID_OPTION', `head ${h} is outside [0, ${input.shape.heads})`);
  if (!Number.isInteger(i) || i < 0 || i >= T) throw new HipAttnError('INVALID_OPTION', `query ${i} is outside [0, ${T})`);
  const offset = input.shape.queryOffset ?? input.shape.keyLength - T;
  const p = offset + i;
  const qb = Math.floor(i / hip.blockSizeQ);
  const n = masks.hip.blocksPerQuery;
  const probs = attentionRow(input, h, i);
  const keys = new Int32Array(p + 1);
  const kinds = new Uint8Array(p + 1);
  const mark = (count: number, withKinds: boolean): { kinds: Uint8Array; mass: number; count: number } => {
    const out = new Uint8Array(p + 1);
    let mass = 0;
    for (let j = 0; j < count; j++) {
      out[keys[j]!] = withKinds ? kinds[j]! : 0;
      mass += probs[keys[j]!]!;
    }
    return { kinds: out, mass, count };
  };
  const readMask = (m: HipMask) => mark(hipKeys(p, hip.sinkTokens, hip.slidingWindow, hip.blockSizeK, m.blockStarts, maskSlot(m, 0, h, qb), n, keys, kinds), true);
  const hipRead = readMask(masks.hip);
  const exactRead = readMask(masks.exact);
  const sn = streamingKeys(p, streaming.sinkTokens, streaming.slidingWindow, keys);
  const sinkEnd = Math.min(streaming.sinkTokens, p + 1);
  for (let j = 0; j < sn; j++) kinds[j] = keys[j]! < sinkEnd ? KeyKind.Sink : KeyKind.Window;
  const streamingRead = mark(sn, true);
  const hipBlocks = selectedBlocks(masks.hip, 0, h, qb);
  const exactBlocks = selectedBlocks(masks.exact, 0, h, qb);
  const mine = new Set(hipBlocks);
  const hit = exactBlocks.filter((b) => mine.has(b)).length;
  const lastQuery = Math.min(T, (qb + 1) * hip.blockSizeQ) - 1;
  const range = candidateRange(offset + lastQuery, hip);
  return {
    position: p,
    queryBlock: qb,
    probs,
    hipKinds: hipRead.kinds,
    exactKinds: exactRead.kinds,
    streamingKinds: streamingRead.kinds,
    hipBlocks,
    exactBlocks,
    candidateBlocks: Math.ceil((range.end - range.start) / hip.blockSizeK),
    blocksPerQuery: n,
    recall: exactBlocks.length > 0 ? hit / exactBlocks.length : 1,
    massHip: hipRead.mass,
    massExact: exactRead.mass,
    massStreaming: streamingRead.mass,
    keysHip: hipRead.count,
    keysExact: exactRead.count,
    keysStreaming: streamingRead.count,
  };
}

/**
 * Options of the attention methods, with the defaults of HIP.md (the ICLR / v1.1 defaults).
 * Every field is optional for callers; `resolveHipOptions` fills in the defaults and validates.
 */
import { OptionError } from '../errors.js';

/** How a node (span of key blocks) is represented when it is scored. */
export type Representative = 'center' | 'first';

export interface HipOptions {
  /** k: keys selected per query block, in tokens (k / blockSizeK key blocks). Default 512. */
  topK: number;
  /** b_q: consecutive queries that share one mask. Default 64. */
  blockSizeQ: number;
  /** b_sq: only every b_sq-th query of a block is used when scoring, counted back from its last query (always scored). Default 2. */
  blockStrideQ: number;
  /** b_k: keys per selected key block. Default 2. */
  blockSizeK: number;
  /** b_sk: stride between the keys of a block that are used when scoring. Default 1. */
  blockStrideK: number;
  /** First tokens that every query always attends. Default 16. */
  sinkTokens: number;
  /** Most recent tokens (per query, causal, itself included) always attended. Default 256. */
  slidingWindow: number;
  /** r_m: while decoding, re-estimate the mask every this many generated tokens. Default 8. */
  refreshInterval: number;
  /** l_d: the first l_d layers of a model keep dense attention (model runtime). Default 3. */
  denseLayers: number;
  /** Which key block represents a node when it is scored: its centre (default) or its first block (arXiv v1). */
  representative: Representative;
  /**
   * Key blocks that represent a node when it is scored: the node is cut into this many equal
   * parts (fewer when it has fewer blocks), each represented as set by `representative`, and
   * the node's score is their max. 1 is HIP.md's single representative. Default 2: one
   * representative loses a lone high-scoring key (a passkey needle) in roughly half of the
   * rounds where it is not sampled; two halve that, for about twice the mask-estimation work
   * (BENCHMARKS.md, "Representatives per half": 8k passkey on the testbed models).
   */
  representativeBlocks: number;
  /**
   * Decoding, between refreshes: also read every selected key block, and the sink, shifted
   * right by the steps since the refresh (so at most 2·topK selected keys and, with a sink,
   * refreshInterval − 1 more sink keys). A head that copies text (the passkey's digits, a quoted name) reads the
   * token after the one it read a step before; the refresh found where the copy started, and
   * the shifted blocks follow it. false is HIP.md's reuse of the refresh's mask as is. Default
   * true (BENCHMARKS.md, "Decoding between refreshes").
   */
  shiftedBlocks: boolean;
  /**
   * Number of consecutive query heads that share one top-k selection (their block scores are
   * max-reduced across the group). 1 (default) gives every head its own mask. Must divide the
   * number of query heads.
   */
  headGroupSize: number;
}

export const HIP_DEFAULTS: Readonly<HipOptions> = Object.freeze({
  topK: 512,
  blockSizeQ: 64,
  blockStrideQ: 2,
  blockSizeK: 2,
  blockStrideK: 1,
  sinkTokens: 16,
  slidingWindow: 256,
  refreshInterval: 8,
  denseLayers: 3,
  representative: 'center',
  representativeBlocks: 2,
  shiftedBlocks: true,
  headGroupSize: 1,
});

export interface StreamingOptions {
  /** First tokens always attended. Default 16 (as HiP). */
  sinkTokens: number;
  /**
   * Most recent tokens (itself included) attended. Default 768 = HiP's topK + slidingWindow, so
   * both methods read the same number of keys per query by default.
   */
  slidingWindow: number;
}

export const STREAMING_DEFAULTS: Readonly<StreamingOptions> = Object.freeze({
  sinkTokens: 16,
  slidingWindow: 768,
});

function checkInt(name: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new OptionError(`${name} must be an integer ≥ ${min}, got ${String(value)}`);
  }
  return value;
}

/** Fills in HIP.md defaults and validates every option; throws OptionError naming the problem. */
export function resolveHipOptions(options: Partial<HipOptions> = {}): HipOptions {
  for (const key of Object.keys(options)) {
    if (!(key in HIP_DEFAULTS)) throw new OptionError(`unknown HiP option "${key}"`);
  }
  const o: HipOptions = { ...HIP_DEFAULTS };
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined) (o as unknown as Record<string, unknown>)[key] = value;
  }
  checkInt('topK', o.topK, 1);
  checkInt('blockSizeQ', o.blockSizeQ, 1);
  checkInt('blockStrideQ', o.blockStrideQ, 1);
  checkInt('blockSizeK', o.blockSizeK, 1);
  checkInt('blockStrideK', o.blockStrideK, 1);
  checkInt('sinkTokens', o.sinkTokens, 0);
  checkInt('slidingWindow', o.slidingWindow, 1);
  checkInt('refreshInterval', o.refreshInterval, 1);
  checkInt('denseLayers', o.denseLayers, 0);
  checkInt('headGroupSize', o.headGroupSize, 1);
  checkInt('representativeBlocks', o.representativeBlocks, 1);
  if (o.representativeBlocks > 16) {
    throw new OptionError(`representativeBlocks must be ≤ 16, got ${o.representativeBlocks}`);
  }
  if (o.topK % o.blockSizeK !== 0) {
    throw new OptionError(`topK (${o.topK}) must be a multiple of blockSizeK (${o.blockSizeK})`);
  }
  if (o.blockStrideQ > o.blockSizeQ) {
    throw new OptionError(`blockStrideQ (${o.blockStrideQ}) must not exceed blockSizeQ (${o.blockSizeQ})`);
  }
  if (o.blockStrideK > o.blockSizeK) {
    throw new OptionError(`blockStrideK (${o.blockStrideK}) must not exceed blockSizeK (${o.blockSizeK})`);
  }
  if (o.slidingWindow < o.refreshInterval) {
    throw new OptionError(
      `slidingWindow (${o.slidingWindow}) must be ≥ refreshInterval (${o.refreshInterval}): tokens generated between mask refreshes are only reached through the window`,
    );
  }
  if (o.blockSizeQ > o.slidingWindow + 1) {
    throw new OptionError(
      `blockSizeQ (${o.blockSizeQ}) must be ≤ slidingWindow + 1 (${o.slidingWindow + 1}): otherwise a query block's mask would depend on keys after its first query (not causal)`,
    );
  }
  if (typeof o.shiftedBlocks !== 'boolean') {
    throw new OptionError(`shiftedBlocks must be true or false, got ${String(o.shiftedBlocks)}`);
  }
  if (o.representative !== 'center' && o.representative !== 'first') {
    throw new OptionError(`representative must be "center" or "first", got ${String(o.representative)}`);
  }
  return o;
}

/** Fills in StreamingLLM defaults and validates. */
export function resolveStreamingOptions(options: Partial<StreamingOptions> = {}): StreamingOptions {
  for (const key of Object.keys(options)) {
    if (!(key in STREAMING_DEFAULTS)) throw new OptionError(`unknown StreamingLLM option "${key}"`);
  }
  const o: StreamingOptions = { ...STREAMING_DEFAULTS };
  if (options.sinkTokens !== undefined) o.sinkTokens = options.sinkTokens;
  if (options.slidingWindow !== undefined) o.slidingWindow = options.slidingWindow;
  checkInt('sinkTokens', o.sinkTokens, 0);
  checkInt('slidingWindow', o.slidingWindow, 1);
  return o;
}

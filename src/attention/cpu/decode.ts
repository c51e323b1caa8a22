/**
 * HiP decoding (HIP.md, "Decoding"): one new query per step against the KV cache. The mask is
 * estimated at a refresh step and reused for the next refreshInterval − 1 steps; tokens
 * generated in between are reached through the sliding window (slidingWindow ≥ refreshInterval).
 */
import { ShapeError } from '../../errors.js';
import type { HipMask } from '../mask.js';
import { type HipOptions, resolveHipOptions } from '../options.js';
import { type AttentionInput, validateInput, type RunOptions } from '../shape.js';
import { estimateHipMask } from './hip-mask.js';
import { hipSparseAttention } from './hip.js';

/** Per-layer decoding state: the cached mask and the steps since it was estimated. */
export interface HipDecodeState {
  mask: HipMask | null;
  stepsSinceRefresh: number;
  refreshes: number;
}

export function createHipDecodeState(): HipDecodeState {
  return { mask: null, stepsSinceRefresh: 0, refreshes: 0 };
}

/** Whether the next decode step re-estimates the mask. */
export function needsRefresh(state: HipDecodeState, refreshInterval: number): boolean {
  return state.mask === null || state.stepsSinceRefresh >= refreshInterval;
}

/**
 * Attention of one new token (queryLength 1, the last of keyLength keys). Refreshes the mask
 * in `state` when due; otherwise reuses it. Returns the output [batch, heads, 1, headDim].
 */
export function hipDecodeAttention(
  input: AttentionInput,
  state: HipDecodeState,
  options: Partial<HipOptions> = {},
  opts?: RunOptions,
): { output: Float32Array; refreshed: boolean } {
  const o = resolveHipOptions(options);
  const s = validateInput(input, opts);
  if (s.queryLength !== 1) throw new ShapeError(`decoding takes one query per step, got queryLength ${s.queryLength}`);
  const refreshed = needsRefresh(state, o.refreshInterval);
  if (refreshed) {
    state.mask = estimateHipMask(input, o, { checkFinite: false });
    state.stepsSinceRefresh = 0;
    state.refreshes++;
  }
  const output = hipSparseAttention(input, state.mask!, { checkFinite: false });
  state.stepsSinceRefresh++;
  return { output, refreshed };
}

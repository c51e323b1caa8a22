/**
 * HiP decoding (HIP.md, "Decoding"): one new query per step against the KV cache. The mask is
 * estimated at a refresh step and reused for the next refreshInterval − 1 steps; tokens
 * generated in between are reached through the sliding window (slidingWindow ≥ refreshInterval),
 * which then reaches back to where the refresh's window started, so that keys sliding out of
 * the window since the refresh are not lost; and (shiftedBlocks, default) the selected blocks
 * and the sink are also read shifted right by the steps since the refresh, where a head that
 * copies text looks next (maskForDecodeStep in ../mask.ts).
 *
 * A refresh estimates the mask of the *query block ending at the new token*: the last
 * blockSizeQ queries (the new one and those before it, prompt queries included, kept in the
 * state), scored as prefill scores a block — not of the new query alone. A block's strided
 * queries score a key block by their maximum, so queries that ask for the same content (a
 * question's words) steer the tree search together; one query alone picks its key blocks far
 * less reliably (measured on passkey retrieval: BENCHMARKS.md, "Decoding masks").
 */
import { ShapeError } from '../../errors.js';
import { type HipMask, maskForDecodeStep } from '../mask.js';
import { type HipOptions, resolveHipOptions } from '../options.js';
import { type AttentionInput, resolveShape, validateInput, type RunOptions } from '../shape.js';
import { estimateHipMask } from './hip-mask.js';
import { hipSparseAttention } from './hip.js';

/** The most recent queries of a sequence, [batch, heads, count, headDim], oldest first. */
export interface RecentQueries {
  q: Float32Array;
  batch: number;
  heads: number;
  headDim: number;
  count: number;
  /** Key position of the newest query. */
  position: number;
}

/** Per-layer decoding state: the cached mask, the steps since it was estimated, and the recent queries. */
export interface HipDecodeState {
  mask: HipMask | null;
  stepsSinceRefresh: number;
  refreshes: number;
  recent: RecentQueries | null;
}

export function createHipDecodeState(): HipDecodeState {
  return { mask: null, stepsSinceRefresh: 0, refreshes: 0, recent: null };
}

/**
 * Appends the queries of `input` (positions queryOffset …) to the state's recent queries,
 * keeping the last `keep`. A gap or rewind in positions, or another batch/head shape, starts over.
 */
export function rememberQueries(state: HipDecodeState, input: AttentionInput, keep: number): void {
  const s = resolveShape(input.shape);
  const d = s.headDim;
  const prev = state.recent;
  const continues = prev !== null && prev.batch === s.batch && prev.heads === s.heads && prev.headDim === d && prev.position + 1 === s.queryOffset;
  const oldCount = continues ? Math.min(prev.count, Math.max(0, keep - s.queryLength)) : 0;
  const newCount = Math.min(keep, s.queryLength);
  const count = oldCount + newCount;
  const q = new Float32Array(s.batch * s.heads * count * d);
  for (let b = 0; b < s.batch; b++)
    for (let h = 0; h < s.heads; h++) {
      const dst = (b * s.heads + h) * count * d;
      if (oldCount > 0) {
        const src = ((b * s.heads + h) * prev!.count + prev!.count - oldCount) * d;
        q.set(prev!.q.subarray(src, src + oldCount * d), dst);
      }
      const src = ((b * s.heads + h) * s.queryLength + s.queryLength - newCount) * d;
      q.set(input.q.subarray(src, src + newCount * d), dst + oldCount * d);
    }
  state.recent = { q, batch: s.batch, heads: s.heads, headDim: d, count, position: s.queryOffset + s.queryLength - 1 };
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
  rememberQueries(state, input, o.blockSizeQ);
  const refreshed = needsRefresh(state, o.refreshInterval);
  if (refreshed) {
    // the mask of the query block ending at the new token (see the file comment)
    const r = state.recent!;
    const block = { ...input, q: r.q, shape: { ...input.shape, queryLength: r.count, queryOffset: r.position - r.count + 1 } };
    state.mask = estimateHipMask(block, o, { checkFinite: false });
    state.stepsSinceRefresh = 0;
    state.refreshes++;
  }
  // between refreshes: the window reaches back to the refresh's, shifted sink and blocks added (maskForDecodeStep)
  const output = hipSparseAttention(input, maskForDecodeStep(state.mask!, s.queryOffset), { checkFinite: false });
  state.stepsSinceRefresh++;
  return { output, refreshed };
}

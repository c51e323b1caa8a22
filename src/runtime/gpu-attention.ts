/**
 * Attention for a whole model on the GPU — the twin of src/attention/cpu/layers.ts: one encode
 * function the forward pass calls per layer, dispatching to the dense / StreamingLLM / HiP
 * kernels by the layer's method, and keeping each HiP layer's decoding state.
 *
 * HiP prefill chunk: estimate the chunk's masks (src/kernels/hip-mask) into a shared buffer,
 * then sparse attention over sink ∪ selected blocks ∪ window (src/kernels/attention); commands
 * run in order, so the next layer may overwrite the shared buffer. HiP decoding: every layer
 * owns a one-block mask buffer, refreshed every refreshInterval tokens and reused in between
 * (with the selected blocks and the sink also read shifted by the steps since: decode-shift.ts);
 * a refresh estimates the mask of the query block ending at the new token (its last blockSizeQ
 * queries, as src/attention/cpu/decode.ts explains), so every layer also keeps its recent
 * queries in a ring of 2·blockSizeQ rows where each query is written twice (rows j and j + b_q):
 * the last b_q queries are then always contiguous, oldest first, for the estimator to read.
 */
import { createStorageBuffer, type GpuContext } from '../gpu/index.js';
import { type AttentionConfig, type AttentionMethod, layerMethod, resolveAttentionConfig } from '../attention/method.js';
import { resolveShape, type ResolvedShape } from '../attention/shape.js';
import { HipAttnError } from '../errors.js';
import { createAttentionKernels } from '../kernels/attention/index.js';
import { createDecodeShift, createHipMaskEstimator, type HipMaskEstimator } from '../kernels/hip-mask/index.js';
import type { GpuAttentionProblem, GpuHipMask, StorageType } from '../kernels/types.js';
import type { GpuAttentionModule } from '../model/llama-gpu.js';
import { bytesOf } from '../kernels/common.js';

export interface GpuLayerAttention extends GpuAttentionModule {
  readonly methods: readonly AttentionMethod[];
  /** Forgets the decoding states (sequence reset or rewound). */
  reset(): void;
  destroy(): void;
}

interface DecodeState {
  mask: GpuHipMask | null;
  steps: number;
  /** Ring of recent queries [2·blockSizeQ rows, heads·headDim] (null until the first HiP call). */
  recent: GPUBuffer | null;
  /** Row (< blockSizeQ) of the newest query, queries held (≤ blockSizeQ), key position of the newest. */
  newest: number;
  count: number;
  position: number;
}

export async function createGpuLayerAttention(
  gpu: GpuContext,
  config: AttentionConfig | AttentionMethod,
  numLayers: number,
  kernelShape: { dtype: StorageType; headDim: number },
): Promise<GpuLayerAttention> {
  const c = resolveAttentionConfig(config);
  const methods = Array.from({ length: numLayers }, (_, l) => layerMethod(c, l));
  const kernels = await createAttentionKernels(gpu, kernelShape);
  const estimator: HipMaskEstimator | null = methods.includes('hip') ? await createHipMaskEstimator(gpu, { ...kernelShape, options: c.hip }) : null;
  const shifter = methods.includes('hip') ? await createDecodeShift(gpu) : null;
  const n = c.hip.topK / c.hip.blockSizeK;
  const states: DecodeState[] = Array.from({ length: numLayers }, () => ({ mask: null, steps: 0, recent: null, newest: -1, count: 0, position: -1 }));
  const owned: GPUBuffer[] = [];
  const streaming = { kind: 'streaming' as const, sinkTokens: c.streaming.sinkTokens, slidingWindow: c.streaming.slidingWindow };
  const bq = c.hip.blockSizeQ;
  const eb = bytesOf(kernelShape.dtype);

  /** Copies the problem's last min(queryLength, b_q) queries into the layer's ring (batch 1, heads contiguous per token). */
  const remember = (state: DecodeState, encoder: GPUCommandEncoder, problem: GpuAttentionProblem, s: ResolvedShape): void => {
    const rowElems = s.heads * s.headDim;
    if (!state.recent) {
      state.recent = createStorageBuffer(gpu, 2 * bq * rowElems * eb, { label: 'hip recent queries' });
      owned.push(state.recent);
    }
    if (state.position + 1 !== s.queryOffset) state.count = 0; // a new or rewound sequence
    const m = Math.min(bq, s.queryLength);
    for (let t = s.queryLength - m; t < s.queryLength; t++) {
      state.newest = (state.newest + 1) % bq;
      const src = ((problem.q.offset ?? 0) + t * problem.q.strideToken) * eb;
      for (const row of [state.newest, state.newest + bq]) encoder.copyBufferToBuffer(problem.q.buffer, src, state.recent, row * rowElems * eb, rowElems * eb);
    }
    state.count = Math.min(bq, state.count + m);
    state.position = s.queryOffset + s.queryLength - 1;
  };

  return {
    methods,
    reset() {
      for (const s of states) {
        s.steps = Number.POSITIVE_INFINITY; // the next decode step refreshes
        s.count = 0;
        s.position = -1;
      }
    },
    async encode(layer, encoder, problem) {
      const method = methods[layer];
      if (method === 'dense') return kernels.encode(encoder, problem, { kind: 'dense' });
      if (method === 'streaming') return kernels.encode(encoder, problem, streaming);
      const s = resolveShape(problem.shape);
      const state = states[layer]!;
      const est = estimator!;
      if (s.batch !== 1 || problem.q.strideHead !== s.headDim) {
        throw new HipAttnError('UNSUPPORTED', `HiP layers on the GPU take batch 1 with each token's query heads contiguous (got batch ${s.batch}, head stride ${problem.q.strideHead})`);
      }
      remember(state, encoder, problem, s);
      if (s.queryLength === 1) {
        if (!state.mask || state.mask.batch !== s.batch || state.mask.heads !== s.heads) {
          const buffer = createStorageBuffer(gpu, s.batch * s.heads * n * 4, { label: `hip decode mask, layer ${layer}` });
          owned.push(buffer);
          state.mask = { buffer, batch: s.batch, heads: s.heads, queryLength: 1, queryOffset: 0, keyLength: 0, numQueryBlocks: 1, blocksPerQuery: n, options: c.hip };
          state.steps = Number.POSITIVE_INFINITY;
        }
        if (state.steps >= c.hip.refreshInterval) {
          // the query block ending at the new token: the ring's last `count` rows, oldest first
          const rowElems = s.heads * s.headDim;
          const first = state.newest + bq - state.count + 1;
          const q = { buffer: state.recent!, offset: first * rowElems, strideBatch: 2 * bq * rowElems, strideHead: s.headDim, strideToken: rowElems };
          const block = resolveShape({ ...s, queryLength: state.count, queryOffset: s.queryOffset + 1 - state.count });
          state.mask = est.encode(encoder, { q, k: problem.k, shape: block }, state.mask);
          state.steps = 0;
        }
        state.steps++;
        // between refreshes: the window reaches back to the refresh's, shifted sink and blocks added
        // (decode-shift.ts, maskForDecodeStep on the CPU)
        return kernels.encode(encoder, problem, { kind: 'hip', mask: shifter!.encode(encoder, state.mask, s.queryOffset) });
      }
      // prefill chunk: fresh masks; the next decoded token refreshes its layer's mask (its
      // query block starts with this chunk's last queries, remembered above)
      state.steps = Number.POSITIVE_INFINITY;
      const mask = est.encode(encoder, { q: problem.q, k: problem.k, shape: s });
      return kernels.encode(encoder, problem, { kind: 'hip', mask });
    },
    destroy() {
      for (const b of owned) b.destroy();
      owned.length = 0;
      estimator?.destroy();
      shifter?.destroy();
      kernels.destroy();
    },
  };
}

/**
 * Attention for a whole model on the GPU — the twin of src/attention/cpu/layers.ts: one encode
 * function the forward pass calls per layer, dispatching to the dense / StreamingLLM / HiP
 * kernels by the layer's method, and keeping each HiP layer's decoding state.
 *
 * HiP prefill chunk: estimate the chunk's masks (src/kernels/hip-mask) into a shared buffer,
 * then sparse attention over sink ∪ selected blocks ∪ window (src/kernels/attention); commands
 * run in order, so the next layer may overwrite the shared buffer. HiP decoding: every layer
 * owns a one-query mask buffer, refreshed every refreshInterval tokens and reused in between.
 */
import { createStorageBuffer, type GpuContext } from '../gpu/index.js';
import { type AttentionConfig, type AttentionMethod, layerMethod, resolveAttentionConfig } from '../attention/method.js';
import { resolveShape } from '../attention/shape.js';
import { createAttentionKernels } from '../kernels/attention/index.js';
import { createHipMaskEstimator, type HipMaskEstimator } from '../kernels/hip-mask/index.js';
import type { GpuHipMask, StorageType } from '../kernels/types.js';
import type { GpuAttentionModule } from '../model/llama-gpu.js';

export interface GpuLayerAttention extends GpuAttentionModule {
  readonly methods: readonly AttentionMethod[];
  /** Forgets the decoding states (sequence reset or rewound). */
  reset(): void;
  destroy(): void;
}

interface DecodeState {
  mask: GpuHipMask | null;
  steps: number;
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
  const n = c.hip.topK / c.hip.blockSizeK;
  const states: DecodeState[] = Array.from({ length: numLayers }, () => ({ mask: null, steps: 0 }));
  const owned: GPUBuffer[] = [];
  const streaming = { kind: 'streaming' as const, sinkTokens: c.streaming.sinkTokens, slidingWindow: c.streaming.slidingWindow };

  return {
    methods,
    reset() {
      for (const s of states) s.steps = Number.POSITIVE_INFINITY; // the next decode step refreshes
    },
    async encode(layer, encoder, problem) {
      const method = methods[layer];
      if (method === 'dense') return kernels.encode(encoder, problem, { kind: 'dense' });
      if (method === 'streaming') return kernels.encode(encoder, problem, streaming);
      const s = resolveShape(problem.shape);
      const state = states[layer]!;
      const est = estimator!;
      if (s.queryLength === 1) {
        if (!state.mask || state.mask.batch !== s.batch || state.mask.heads !== s.heads) {
          const buffer = createStorageBuffer(gpu, s.batch * s.heads * n * 4, { label: `hip decode mask, layer ${layer}` });
          owned.push(buffer);
          state.mask = { buffer, batch: s.batch, heads: s.heads, queryLength: 1, queryOffset: 0, keyLength: 0, numQueryBlocks: 1, blocksPerQuery: n, options: c.hip };
          state.steps = Number.POSITIVE_INFINITY;
        }
        if (state.steps >= c.hip.refreshInterval) {
          state.mask = est.encode(encoder, { q: problem.q, k: problem.k, shape: s }, state.mask);
          state.steps = 0;
        }
        state.steps++;
        return kernels.encode(encoder, problem, { kind: 'hip', mask: state.mask });
      }
      // prefill chunk: fresh masks; the next decoded token refreshes its layer's mask
      state.steps = Number.POSITIVE_INFINITY;
      const mask = est.encode(encoder, { q: problem.q, k: problem.k, shape: s });
      return kernels.encode(encoder, problem, { kind: 'hip', mask });
    },
    destroy() {
      for (const b of owned) b.destroy();
      owned.length = 0;
      estimator?.destroy();
      kernels.destroy();
    },
  };
}

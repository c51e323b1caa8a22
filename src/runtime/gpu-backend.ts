/** The WebGPU backend: LlamaGpu with per-layer dense / HiP / StreamingLLM attention kernels. */
import type { ResolvedAttentionConfig } from '../attention/method.js';
import { type GpuContext, summaryLine } from '../gpu/index.js';
import type { LlamaConfig } from '../model/config.js';
import { LlamaGpu, type LlamaGpuOptions } from '../model/llama-gpu.js';
import type { TensorStore } from '../model/tensor-store.js';
import type { LoadProgress } from '../model/weights.js';
import type { StorageType } from '../kernels/types.js';
import { assembleBackend, type ModelBackend } from './backend.js';
import { createGpuLayerAttention } from './gpu-attention.js';

export interface GpuBackendOptions {
  /** Storage of weights and activations (default f16 where the device has shader-f16, else f32). */
  dtype?: StorageType;
  /** Largest prefill chunk (activation buffers are sized for it). Default 256. */
  maxChunk?: number;
  onProgress?: (p: LoadProgress) => void;
  /** Destroy the GPU context with the model (true when loadModel acquired it). */
  ownsGpu?: boolean;
}

/**
 * Weights from a checkpoint (`store`), or deterministic random weights generated on the GPU
 * (`randomSeed`: for benchmarks of real model shapes, e.g. LLAMA3_8B of src/model/synthetic.ts).
 */
export type GpuWeightsSource = { store: TensorStore } | { randomSeed: number };

export async function createGpuBackend(
  gpu: GpuContext,
  config: LlamaConfig,
  weights: GpuWeightsSource,
  attention: ResolvedAttentionConfig,
  capacity: number,
  options: GpuBackendOptions = {},
): Promise<ModelBackend> {
  const dtype: StorageType = options.dtype ?? (gpu.features.shaderF16 ? 'f16' : 'f32');
  const layers = await createGpuLayerAttention(gpu, attention, config.numLayers, { dtype, headDim: config.headDim });
  const lmOptions: LlamaGpuOptions = {
    capacity,
    attention: layers,
    weightType: dtype,
    activationType: dtype,
    ...(options.maxChunk !== undefined ? { maxChunk: options.maxChunk } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  };
  let lm: LlamaGpu;
  try {
    lm = 'store' in weights ? await LlamaGpu.load(gpu, config, weights.store, lmOptions) : await LlamaGpu.random(gpu, config, weights.randomSeed, lmOptions);
  } catch (e) {
    layers.destroy();
    throw e;
  }
  return assembleBackend({
    device: 'webgpu',
    description: `WebGPU ${summaryLine(gpu.adapterInfo)}, ${dtype}`,
    adapter: gpu.adapterInfo,
    capacity,
    model: lm,
    attention: layers,
    memoryBytes: () => lm.bytes.weights + lm.bytes.kvCache + lm.bytes.activations,
    async dispose() {
      lm.destroy();
      layers.destroy();
      if (options.ownsGpu) gpu.destroy();
    },
  });
}

/** The WebGPU backend: LlamaGpu with per-layer dense / HiP / StreamingLLM attention kernels. */
import type { ResolvedAttentionConfig } from '../attention/method.js';
import { type GpuContext, summaryLine } from '../gpu/index.js';
import type { LlamaConfig } from '../model/config.js';
import { LlamaGpu } from '../model/llama-gpu.js';
import type { TensorStore } from '../model/tensor-store.js';
import type { LoadProgress } from '../model/weights.js';
import type { StorageType } from '../kernels/types.js';
import type { ModelBackend } from './backend.js';
import { createGpuLayerAttention, type GpuLayerAttention } from './gpu-attention.js';

export interface GpuBackendOptions {
  /** Storage of weights and activations (default f16 where the device has shader-f16, else f32). */
  dtype?: StorageType;
  /** Largest prefill chunk (activation buffers are sized for it). Default 256. */
  maxChunk?: number;
  /** Destroy the GPU context with the model (true when loadModel acquired it). */
  ownsGpu?: boolean;
}

export async function createGpuBackend(
  gpu: GpuContext,
  config: LlamaConfig,
  store: TensorStore,
  attention: ResolvedAttentionConfig,
  capacity: number,
  onProgress?: (p: LoadProgress) => void,
  options: GpuBackendOptions = {},
): Promise<ModelBackend> {
  const dtype: StorageType = options.dtype ?? (gpu.features.shaderF16 ? 'f16' : 'f32');
  return wrap(gpu, attention, config, dtype, options, (layers) =>
    LlamaGpu.load(gpu, config, store, {
      capacity,
      attention: layers,
      weightType: dtype,
      activationType: dtype,
      ...(options.maxChunk !== undefined ? { maxChunk: options.maxChunk } : {}),
      ...(onProgress ? { onProgress } : {}),
    }),
  );
}

/**
 * A backend for a config with deterministic random weights generated on the GPU (no file):
 * for benchmarks of real model shapes, e.g. LLAMA3_8B from src/model/synthetic.ts.
 */
export async function createRandomGpuBackend(
  gpu: GpuContext,
  config: LlamaConfig,
  attention: ResolvedAttentionConfig,
  capacity: number,
  seed: number,
  options: GpuBackendOptions = {},
): Promise<ModelBackend> {
  const dtype: StorageType = options.dtype ?? (gpu.features.shaderF16 ? 'f16' : 'f32');
  return wrap(gpu, attention, config, dtype, options, (layers) =>
    LlamaGpu.random(gpu, config, seed, {
      capacity,
      attention: layers,
      weightType: dtype,
      activationType: dtype,
      ...(options.maxChunk !== undefined ? { maxChunk: options.maxChunk } : {}),
    }),
  );
}

async function wrap(
  gpu: GpuContext,
  attention: ResolvedAttentionConfig,
  config: LlamaConfig,
  dtype: StorageType,
  options: GpuBackendOptions,
  build: (layers: GpuLayerAttention) => Promise<LlamaGpu>,
): Promise<ModelBackend> {
  const layers = await createGpuLayerAttention(gpu, attention, config.numLayers, { dtype, headDim: config.headDim });
  let lm: LlamaGpu;
  try {
    lm = await build(layers);
  } catch (e) {
    layers.destroy();
    throw e;
  }
  return {
    device: 'webgpu',
    description: `WebGPU ${summaryLine(gpu.adapterInfo)}, ${dtype}`,
    capacity: lm.capacity,
    get position() {
      return lm.position;
    },
    layerMethods: layers.methods,
    forward: (tokens, opts) => lm.forward(tokens, opts),
    reset() {
      lm.reset();
      layers.reset();
    },
    rewind(position: number) {
      lm.rewind(position);
      layers.reset();
    },
    memoryBytes: () => lm.bytes.weights + lm.bytes.kvCache + lm.bytes.activations,
    async dispose() {
      lm.destroy();
      layers.destroy();
      if (options.ownsGpu) gpu.destroy();
    },
  };
}

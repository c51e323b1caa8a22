/** The CPU backend: the float32 reference forward pass with per-layer attention methods. */
import { createCpuLayerAttention } from '../attention/cpu/layers.js';
import type { ResolvedAttentionConfig } from '../attention/method.js';
import type { LlamaConfig } from '../model/config.js';
import { LlamaCpu, type ForwardOptions } from '../model/llama-cpu.js';
import type { TensorStore } from '../model/tensor-store.js';
import { type LoadProgress, loadLlamaWeightsF32 } from '../model/weights.js';
import type { ModelBackend } from './backend.js';

export async function createCpuBackend(
  config: LlamaConfig,
  store: TensorStore,
  attention: ResolvedAttentionConfig,
  capacity: number,
  onProgress?: (p: LoadProgress) => void,
): Promise<ModelBackend> {
  const weights = await loadLlamaWeightsF32(config, store, onProgress);
  const layers = createCpuLayerAttention(attention, config.numLayers);
  const lm = new LlamaCpu(config, weights, { capacity, attention: (l, input) => layers.attend(l, input) });
  let weightBytes = 0;
  for (const v of Object.values(weights)) if (v instanceof Float32Array) weightBytes += v.byteLength;
  for (const layer of weights.layers) for (const v of Object.values(layer)) if (v instanceof Float32Array) weightBytes += v.byteLength;
  if (weights.lmHead === weights.embed) weightBytes -= weights.embed.byteLength;
  return {
    device: 'cpu',
    description: 'CPU (float32, JavaScript)',
    capacity,
    get position() {
      return lm.position;
    },
    layerMethods: layers.methods,
    async forward(tokens: ArrayLike<number>, options?: ForwardOptions) {
      return lm.forward(tokens, options);
    },
    reset() {
      lm.reset();
      layers.reset();
    },
    rewind(position: number) {
      lm.rewind(position);
      layers.reset();
    },
    memoryBytes: () => weightBytes + lm.cache.bytes,
    async dispose() {},
  };
}

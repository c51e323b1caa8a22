/** The CPU backend: the float32 reference forward pass with per-layer attention methods. */
import { createCpuLayerAttention } from '../attention/cpu/layers.js';
import type { ResolvedAttentionConfig } from '../attention/method.js';
import type { LlamaConfig } from '../model/config.js';
import { LlamaCpu, type ForwardOptions } from '../model/llama-cpu.js';
import type { TensorStore } from '../model/tensor-store.js';
import { type LoadProgress, loadLlamaWeightsF32 } from '../model/weights.js';
import { assembleBackend, type ModelBackend } from './backend.js';

/**
 * Resolves after the event loop has run other tasks (I/O in Node; rendering and input in a
 * page). Browsers have no setImmediate; their setTimeout(0) is the nearest equivalent.
 */
function nextMacrotask(): Promise<void> {
  return new Promise((resolve) => (typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0)));
}

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

  // One chunk at a time, yielding to the event loop in between, so that a long prefill does
  // not block a server or a UI for its whole duration.
  const forward = async (tokens: ArrayLike<number>, options: ForwardOptions = {}): Promise<Float32Array> => {
    const chunk = options.chunkSize ?? 128;
    if (tokens.length <= chunk) return lm.forward(tokens, options);
    const want = options.logits ?? 'last';
    const vocab = config.vocabSize;
    const all = want === 'all' ? new Float32Array(tokens.length * vocab) : undefined;
    let last: Float32Array = new Float32Array(0);
    for (let s = 0; s < tokens.length; s += chunk) {
      const part = Array.from({ length: Math.min(chunk, tokens.length - s) }, (_, i) => tokens[s + i]!);
      const isLast = s + part.length === tokens.length;
      const logits = lm.forward(part, { chunkSize: chunk, logits: want === 'all' ? 'all' : isLast ? want : 'none' });
      if (all) all.set(logits, s * vocab);
      else if (isLast) last = logits;
      options.onProgress?.(s + part.length, tokens.length);
      await nextMacrotask();
    }
    return all ?? last;
  };

  return assembleBackend({
    device: 'cpu',
    description: 'CPU (float32, JavaScript)',
    capacity,
    model: {
      get position() {
        return lm.position;
      },
      forward,
      reset: () => lm.reset(),
      rewind: (p) => lm.rewind(p),
    },
    attention: layers,
    memoryBytes: () => weightBytes + lm.cache.bytes,
    async dispose() {},
  });
}

/**
 * Attention for a whole model on the CPU: one function the forward pass calls per layer, which
 * dispatches to dense / StreamingLLM / HiP by the layer's method, and keeps each HiP layer's
 * decoding state (cached mask, steps since refresh). A prefill chunk (more than one query)
 * runs full HiP, drops the cached mask (the first decoded token refreshes it) and keeps the
 * chunk's last queries for that refresh's query block.
 * Chunk sizes that are multiples of blockSizeQ give the same masks as one whole prefill.
 */
import { type AttentionConfig, type AttentionMethod, layerMethod, resolveAttentionConfig } from '../method.js';
import type { AttentionInput } from '../shape.js';
import { createHipDecodeState, type HipDecodeState, hipDecodeAttention, rememberQueries } from './decode.js';
import { denseAttention } from './dense.js';
import { hipAttention } from './hip.js';
import { streamingAttention } from './streaming.js';

export interface LayerAttention {
  /** Attention output [batch, heads, queryLength, headDim] of layer `layer`. */
  attend(layer: number, input: AttentionInput<Float32Array>): Float32Array;
  /** Forgets the decoding states (call when the sequence is reset or rewound). */
  reset(): void;
  /** Method used by each layer. */
  readonly methods: readonly AttentionMethod[];
}

export function createCpuLayerAttention(config: AttentionConfig | AttentionMethod, numLayers: number): LayerAttention {
  const c = resolveAttentionConfig(config);
  const methods = Array.from({ length: numLayers }, (_, l) => layerMethod(c, l));
  const states: HipDecodeState[] = Array.from({ length: numLayers }, createHipDecodeState);
  const run = { checkFinite: false }; // the model's own activations
  return {
    methods,
    reset() {
      for (let l = 0; l < numLayers; l++) states[l] = createHipDecodeState();
    },
    attend(layer, input) {
      switch (methods[layer]) {
        case 'dense':
          return denseAttention(input, run);
        case 'streaming':
          return streamingAttention(input, c.streaming, run);
        default:
          if (input.shape.queryLength === 1) return hipDecodeAttention(input, states[layer]!, c.hip, run).output;
          // a prefill chunk: the next decoded token refreshes the mask, over a query block
          // that starts with this chunk's last queries
          if (!states[layer]!.recent) states[layer] = createHipDecodeState();
          states[layer]!.mask = null;
          rememberQueries(states[layer]!, input, c.hip.blockSizeQ);
          return hipAttention(input, c.hip, run).output;
      }
    },
  };
}

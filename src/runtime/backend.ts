/**
 * A model backend: the forward pass of one device (CPU now, WebGPU beside it) behind one
 * interface, so generation, evaluation and serving never branch on the device.
 */
import type { AttentionMethod } from '../attention/method.js';
import type { GpuAdapterSummary } from '../gpu/device.js';
import type { ForwardOptions } from '../model/llama-cpu.js';

export type DeviceKind = 'cpu' | 'webgpu';

export interface ModelBackend {
  readonly device: DeviceKind;
  /** A one-line description (e.g. the GPU adapter). */
  readonly description: string;
  /** The GPU adapter (WebGPU backends). */
  readonly adapter?: GpuAdapterSummary;
  /** KV-cache capacity in tokens. */
  readonly capacity: number;
  /** Tokens held in the KV cache (position of the next token). */
  readonly position: number;
  /** Attention method of every layer. */
  readonly layerMethods: readonly AttentionMethod[];
  /** Appends tokens and returns the requested logits (see ForwardOptions). */
  forward(tokens: ArrayLike<number>, options?: ForwardOptions): Promise<Float32Array>;
  /** Empties the KV cache and every attention state. */
  reset(): void;
  /** Forgets every token from `position` on. */
  rewind(position: number): void;
  /** Bytes of device memory held (weights + KV cache + scratch). */
  memoryBytes(): number;
  dispose(): Promise<void>;
}

/** What a backend is assembled from: a forward pass with a KV cache, and its attention dispatch. */
export interface BackendParts {
  device: DeviceKind;
  description: string;
  adapter?: GpuAdapterSummary;
  capacity: number;
  model: {
    readonly position: number;
    forward(tokens: ArrayLike<number>, options?: ForwardOptions): Promise<Float32Array> | Float32Array;
    reset(): void;
    rewind(position: number): void;
  };
  attention: { readonly methods: readonly AttentionMethod[]; reset(): void };
  memoryBytes(): number;
  dispose(): Promise<void>;
}

/** A ModelBackend whose reset / rewind also clear the attention states (cached HiP masks). */
export function assembleBackend(p: BackendParts): ModelBackend {
  return {
    device: p.device,
    description: p.description,
    ...(p.adapter ? { adapter: p.adapter } : {}),
    capacity: p.capacity,
    get position() {
      return p.model.position;
    },
    layerMethods: p.attention.methods,
    forward: async (tokens, options) => p.model.forward(tokens, options),
    reset() {
      p.model.reset();
      p.attention.reset();
    },
    rewind(position) {
      p.model.rewind(position);
      p.attention.reset();
    },
    memoryBytes: p.memoryBytes,
    dispose: p.dispose,
  };
}

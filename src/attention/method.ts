/**
 * Choosing the attention method of each layer of a model: one config for every backend.
 * `hip` keeps the first `denseLayers` layers dense (HIP.md); `streaming` and `dense` apply to
 * every layer.
 */
import { OptionError } from '../errors.js';
import { type HipOptions, resolveHipOptions, resolveStreamingOptions, type StreamingOptions } from './options.js';

export type AttentionMethod = 'dense' | 'hip' | 'streaming';
export const ATTENTION_METHODS: readonly AttentionMethod[] = ['dense', 'hip', 'streaming'];

export interface AttentionConfig {
  /** Default 'hip'. */
  method?: AttentionMethod;
  /** HiP options (HIP.md defaults for the rest). */
  hip?: Partial<HipOptions>;
  /** StreamingLLM options. */
  streaming?: Partial<StreamingOptions>;
}

export interface ResolvedAttentionConfig {
  method: AttentionMethod;
  hip: HipOptions;
  streaming: StreamingOptions;
}

export function resolveAttentionConfig(config: AttentionConfig | AttentionMethod = {}): ResolvedAttentionConfig {
  const c = typeof config === 'string' ? { method: config } : config;
  const method = c.method ?? 'hip';
  if (!ATTENTION_METHODS.includes(method)) {
    throw new OptionError(`attention method must be one of ${ATTENTION_METHODS.join(', ')}, got ${String(method)}`);
  }
  return { method, hip: resolveHipOptions(c.hip), streaming: resolveStreamingOptions(c.streaming) };
}

/** The method layer `layer` uses. */
export function layerMethod(config: ResolvedAttentionConfig, layer: number): AttentionMethod {
  if (config.method === 'hip' && layer < config.hip.denseLayers) return 'dense';
  return config.method;
}

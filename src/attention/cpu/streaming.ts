/** StreamingLLM attention: sink tokens plus a sliding window; everything else is dropped. */
import { type AttentionInput, validateInput, type RunOptions } from '../shape.js';
import { resolveStreamingOptions, type StreamingOptions } from '../options.js';
import { streamingKeys } from '../keys.js';
import { attendKeySets } from './attend.js';

export function streamingAttention(
  input: AttentionInput,
  options: Partial<StreamingOptions> = {},
  opts?: RunOptions,
): Float32Array {
  const o = resolveStreamingOptions(options);
  const s = validateInput(input, opts);
  return attendKeySets(input, s, (_b, _h, _i, p, out) => streamingKeys(p, o.sinkTokens, o.slidingWindow, out), 'f32', opts?.onProgress);
}

/** Dense causal attention (exact), the baseline every other method is measured against. */
import { type AttentionInput, validateInput, type RunOptions } from '../shape.js';
import { denseKeys } from '../keys.js';
import { attendKeySets } from './attend.js';

/** Dense causal softmax attention; output [batch, heads, queryLength, headDim] as float32. */
export function denseAttention(input: AttentionInput, opts?: RunOptions): Float32Array {
  const s = validateInput(input, opts);
  return attendKeySets(input, s, (_b, _h, _i, p, out) => denseKeys(p, out), 'f32', opts?.onProgress);
}

/** Dense causal attention with float64 everywhere: the reference for accuracy tests. */
export function denseAttentionF64(input: AttentionInput, opts?: RunOptions): Float64Array {
  const s = validateInput(input, opts);
  return attendKeySets(input, s, (_b, _h, _i, p, out) => denseKeys(p, out), 'f64', opts?.onProgress);
}

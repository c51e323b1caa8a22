/**
 * Types shared by the attention kernels (src/kernels/<family>/) and their callers (the model
 * runtime, benchmarks, tests). Layouts follow src/attention/shape.ts, but GPU tensors are
 * addressed through element strides so the model can hand its buffers over without copies
 * (e.g. q straight out of the projection as [tokens, heads, headDim], the KV cache as
 * [kvHeads, capacity, headDim]). The innermost dimension (headDim) is always contiguous.
 */
import type { ResolvedShape } from '../attention/shape.js';

/** Element type of a tensor in GPU memory. Arithmetic is always accumulated in f32. */
export type StorageType = 'f16' | 'f32';

/** A [batch, heads, tokens, headDim] view of a GPU buffer. All offsets and strides in elements. */
export interface GpuTensor4 {
  buffer: GPUBuffer;
  /** Element offset of [0, 0, 0, 0]. Default 0. */
  offset?: number;
  strideBatch: number;
  strideHead: number;
  strideToken: number;
}

/** One attention problem on the GPU: q/k/v in, out written. */
export interface GpuAttentionProblem {
  /** [batch, heads, queryLength, headDim] */
  q: GpuTensor4;
  /** [batch, kvHeads, ≥ keyLength, headDim] (rows beyond keyLength are never read) */
  k: GpuTensor4;
  v: GpuTensor4;
  /** [batch, heads, queryLength, headDim] */
  out: GpuTensor4;
  shape: ResolvedShape;
  /** Storage type of q, k, v and out. */
  dtype: StorageType;
}

/** Dense contiguous strides for a [batch, heads, tokens, headDim] tensor. */
export function contiguousStrides(heads: number, tokens: number, headDim: number): Omit<GpuTensor4, 'buffer' | 'offset'> {
  return { strideBatch: heads * tokens * headDim, strideHead: tokens * headDim, strideToken: headDim };
}

/**
 * A HiP mask in GPU memory: the GPU twin of `HipMask` (src/attention/mask.ts), same layout:
 * `buffer` holds i32 [batch, heads, numQueryBlocks, blocksPerQuery] key-block start positions,
 * ascending per query block, unused slots −1 at the end.
 */
export type GpuHipMask = Omit<import('../attention/mask.js').HipMask, 'blockStarts' | 'qkProducts'> & { buffer: GPUBuffer };

/** Which keys each query reads (the GPU counterpart of src/attention/keys.ts). */
export type GpuKeySet =
  | { kind: 'dense' }
  | { kind: 'streaming'; sinkTokens: number; slidingWindow: number }
  | { kind: 'hip'; mask: GpuHipMask };

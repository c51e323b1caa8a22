/** y = x·Wᵀ (+ bias) (+ y): GEMV for decode, tiled GEMM, tensor-core GEMM (subgroup matrices). */
export * from './wgsl.js';
export * from './matmul.js';

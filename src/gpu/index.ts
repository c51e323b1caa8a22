/**
 * WebGPU plumbing: device acquisition and feature detection, pipeline cache, buffers (f16,
 * uniforms, size checks and binding chunking) and GPU timing. No attention code lives here.
 */

export {
  acquireGpu,
  withErrorScope,
  summarizeAdapterInfo,
  summaryLine,
  isSoftwareAdapter,
  DEFAULT_DAWN_TOGGLES,
  REQUESTED_MAX_LIMITS,
  FEATURE_SHADER_F16,
  FEATURE_SUBGROUPS,
  FEATURE_SUBGROUP_MATRIX,
  FEATURE_TIMESTAMP_QUERY,
} from './device.js';
export type {
  AcquireGpuOptions,
  GpuContext,
  GpuFeatures,
  GpuLimits,
  GpuAdapterSummary,
  GpuRuntime,
  SubgroupMatrixConfig,
} from './device.js';

export { PipelineCache, compileShader, formatCompilationErrors, bindBuffers } from './pipelines.js';
export type { BindingKind, ComputePipelineSpec, CompiledPipeline, CompilationMessageLike } from './pipelines.js';

export {
  BufferUsage,
  MapMode,
  alignTo,
  formatBytes,
  checkTensorFits,
  planBindingChunks,
  createStorageBuffer,
  createStorageBufferF16,
  writeBuffer,
  readBuffer,
  readFloat32,
  readUint32,
  readInt32,
  readFloat16,
  UniformLayout,
  defineUniforms,
  createUniformBuffer,
  writeUniforms,
} from './buffers.js';
export type {
  GpuLike,
  BufferLimits,
  BindingChunk,
  CheckTensorOptions,
  PlanBindingChunksOptions,
  StorageBufferOptions,
  ReadOptions,
  UniformScalar,
} from './buffers.js';

export {
  float32ToFloat16Bits,
  float16BitsToFloat32,
  toFloat16Bits,
  fromFloat16Bits,
  roundToFloat16,
  f32BitsToF16Bits,
  f16BitsToF32Bits,
} from './f16.js';

export { GpuTimer, timeGpu } from './timing.js';
export type { GpuTiming, GpuTimerOptions, PassTiming, TimedEncoder, TimingSource } from './timing.js';

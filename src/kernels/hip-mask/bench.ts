/**
 * Benchmark of GPU HiP mask estimation: random q/k generated on the GPU (no multi-GB uploads),
 * warm-up, then GPU timestamps (GpuTimer) around the estimation pass.
 *
 *     const r = await benchHipMask(gpu, { seqLen: 131072 });   // H=32, H_kv=8, d=128, f16
 *     console.log(r.ms, r.flops / r.ms / 1e9, 'TFLOP/s');
 */
import type { HipOptions } from '../../attention/options.js';
import type { AttentionShape } from '../../attention/shape.js';
import { HipAttnError } from '../../errors.js';
import {
  bindBuffers,
  createStorageBuffer,
  createUniformBuffer,
  defineUniforms,
  GpuTimer,
  planBindingChunks,
  withErrorScope,
  type GpuContext,
} from '../../gpu/index.js';
import type { GpuTensor4, StorageType } from '../types.js';
import { hipMaskCost } from './cost.js';
import { createHipMaskEstimator, type HipMaskEstimatorOptions } from './index.js';
import type { HipMaskVariant } from './wgsl.js';
import { bytesOf } from '../common.js';

export interface HipMaskBenchOptions {
  /** Context length T (keys). */
  seqLen: number;
  /** Queries: T for prefill (default), 1 for a decode refresh. */
  queryLength?: number;
  batch?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  dtype?: StorageType;
  options?: Partial<HipOptions>;
  /** Estimator options (path, subgroupSort, matrixSubgroups, …). */
  estimator?: Omit<HipMaskEstimatorOptions, 'dtype' | 'headDim' | 'options'>;
  warmup?: number;
  iterations?: number;
  seed?: number;
}

export interface HipMaskBenchResult {
  shape: AttentionShape;
  dtype: StorageType;
  variant: HipMaskVariant;
  dispatches: number;
  /** Median GPU time (ms) over the iterations, and every iteration's. */
  ms: number;
  msAll: number[];
  timing: 'timestamp' | 'wall-clock';
  /** Work of the estimation (hipMaskCost, with the variant's parent-score reuse): FLOPs and bytes it must move. */
  flops: number;
  bytes: number;
  /** flops / ms and bytes / ms. */
  tflops: number;
  gbps: number;
}

const FillParams = defineUniforms('FillParams', { words: 'u32', seed: 'u32', half: 'u32', rowWords: 'u32' });

const FILL_WGSL = /* wgsl */ `
${FillParams.wgsl()}
@group(0) @binding(0) var<uniform> p: FillParams;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}
// ≈ N(0, 1): sum of four uniforms, centred and scaled (Irwin–Hall).
fn gauss(i: u32) -> f32 {
  var h = pcg(i ^ p.seed);
  var s = 0.0f;
  for (var j = 0u; j < 4u; j++) { s += f32(h & 0xffffu) / 65536.0f; h = pcg(h); }
  return (s - 2.0f) * 1.7320508f;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * p.rowWords + gid.x;
  if (i >= p.words) { return; }
  if (p.half != 0u) {
    out[i] = pack2x16float(vec2<f32>(gauss(2u * i), gauss(2u * i + 1u)));
  } else {
    out[i] = bitcast<u32>(gauss(i));
  }
}`;

/** A GPU buffer of `elements` pseudo-normal values (f16 or f32), filled on the GPU in binding-sized chunks. */
export async function randomGpuBuffer(gpu: GpuContext, elements: number, dtype: StorageType, seed: number, label: string): Promise<GPUBuffer> {
  const bytes = elements * bytesOf(dtype);
  const buffer = await withErrorScope(gpu.device, `allocating ${label}`, () => createStorageBuffer(gpu, bytes, { label, splitBindings: true }));
  const fill = await gpu.pipelines.computePipeline({ name: 'hip-mask/bench-fill', code: FILL_WGSL, bindings: [['uniform', 'storage']] });
  const words = Math.ceil(bytes / 4);
  const chunks = planBindingChunks(words, 4, gpu);
  const enc = gpu.device.createCommandEncoder({ label: `fill ${label}` });
  const uniforms: GPUBuffer[] = [];
  const pass = enc.beginComputePass();
  pass.setPipeline(fill.pipeline);
  const maxDim = gpu.limits.maxComputeWorkgroupsPerDimension;
  for (const c of chunks) {
    const groups = Math.ceil(c.elementCount / 256);
    const gx = Math.min(groups, maxDim);
    const u = createUniformBuffer(gpu, FillParams, { words: c.elementCount, seed: (seed * 2654435761 + c.firstElement) >>> 0, half: dtype === 'f16' ? 1 : 0, rowWords: gx * 256 });
    uniforms.push(u);
    pass.setBindGroup(0, bindBuffers(gpu.device, fill, [u, { buffer, offset: c.offset, size: c.size }]));
    pass.dispatchWorkgroups(gx, Math.ceil(groups / gx));
  }
  pass.end();
  gpu.device.queue.submit([enc.finish()]);
  await gpu.device.queue.onSubmittedWorkDone();
  for (const u of uniforms) u.destroy();
  return buffer;
}

/**
 * Times one HiP mask estimation of a random problem: q as the model writes it
 * ([batch, tokens, heads, d]), k as a KV cache ([batch, kvHeads, T, d]).
 * @throws HipAttnError('OUT_OF_MEMORY') when the tensors do not fit the device.
 */
export async function benchHipMask(gpu: GpuContext, o: HipMaskBenchOptions): Promise<HipMaskBenchResult> {
  const T = o.seqLen;
  const Lq = o.queryLength ?? T;
  const batch = o.batch ?? 1;
  const heads = o.heads ?? 32;
  const kvHeads = o.kvHeads ?? 8;
  const d = o.headDim ?? 128;
  const dtype = o.dtype ?? 'f16';
  const options = o.options ?? {};
  const seed = o.seed ?? 1;
  const shape: AttentionShape = { batch, heads, kvHeads, queryLength: Lq, keyLength: T, headDim: d };
  const est = await createHipMaskEstimator(gpu, { dtype, headDim: d, options, kinds: [Math.ceil(Math.min(options.blockSizeQ ?? 64, Lq) / (options.blockStrideQ ?? 2)) === 1 ? 'decode' : 'prefill'], ...o.estimator });
  let qb: GPUBuffer | null = null;
  let kb: GPUBuffer | null = null;
  const timer = new GpuTimer(gpu);
  try {
    qb = await randomGpuBuffer(gpu, batch * Lq * heads * d, dtype, seed, 'bench q');
    kb = await randomGpuBuffer(gpu, batch * kvHeads * T * d, dtype, seed + 1, 'bench k');
    const q: GpuTensor4 = { buffer: qb, strideBatch: Lq * heads * d, strideHead: d, strideToken: heads * d };
    const k: GpuTensor4 = { buffer: kb, strideBatch: kvHeads * T * d, strideHead: T * d, strideToken: d };
    const problem = { q, k, shape };
    const plan = est.describe(problem);
    const times: number[] = [];
    let source: 'timestamp' | 'wall-clock' = timer.source;
    for (let i = 0; i < (o.warmup ?? 2) + (o.iterations ?? 5); i++) {
      const t = await withErrorScope(gpu.device, 'hip-mask benchmark', () => timer.time((enc) => void est.encode(enc, problem)));
      source = t.source;
      if (i >= (o.warmup ?? 2)) times.push(t.ms);
    }
    const sorted = [...times].sort((a, b) => a - b);
    const ms = sorted[Math.floor(sorted.length / 2)]!;
    const cost = hipMaskCost(shape, options, dtype, { reuse: plan.variant.reuse ?? true });
    return {
      shape,
      dtype,
      variant: plan.variant,
      dispatches: plan.dispatches.length,
      ms,
      msAll: times,
      timing: source,
      flops: cost.flops,
      bytes: cost.bytes,
      tflops: cost.flops / ms / 1e9,
      gbps: cost.bytes / ms / 1e6,
    };
  } catch (e) {
    if (e instanceof HipAttnError) throw e;
    throw new HipAttnError('GPU', `hip-mask benchmark at T=${T}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  } finally {
    timer.destroy();
    qb?.destroy();
    kb?.destroy();
    est.destroy();
  }
}

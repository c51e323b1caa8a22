/**
 * Benchmark helper for the attention kernels: allocates random inputs on the GPU (filled by a
 * small hash-PRNG kernel, so multi-GB problems need no host data), warms up, times with GPU
 * timestamps (GpuTimer; wall-clock where the device has none) and returns the median time with
 * the problem's useful FLOPs and minimal bytes (cost.ts).
 *
 * HiP needs a GpuHipMask: pass one (e.g. from the GPU mask estimation), or let the benchmark
 * build a SYNTHETIC one (`syntheticHipMask`: random, sorted, distinct key blocks inside each
 * query block's candidate range — valid and of the right size, so the sparse attention does
 * the same work as with a real mask, but the selection itself is meaningless).
 */
import { candidateRange } from '../../attention/index.js';
import { resolveHipOptions, resolveStreamingOptions, type HipOptions, type StreamingOptions } from '../../attention/options.js';
import { resolveShape, type ResolvedShape } from '../../attention/shape.js';
import { HipAttnError } from '../../errors.js';
import { BufferUsage, createStorageBuffer, defineUniforms, GpuTimer, type GpuContext } from '../../gpu/index.js';
import { Rng } from '../../util/rng.js';
import type { GpuAttentionProblem, GpuHipMask, GpuKeySet, StorageType } from '../types.js';
import { contiguousStrides } from '../types.js';
import { createAttentionKernels, type AttentionKernelOptions, type AttentionKernels, type DecodeOptions } from './index.js';
import { bytesOf } from '../common.js';

export interface AttentionBenchOptions {
  seqLen: number;
  method: 'dense' | 'streaming' | 'hip';
  mode: 'prefill' | 'decode';
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  batch?: number;
  dtype?: StorageType;
  hip?: Partial<HipOptions>;
  streaming?: Partial<StreamingOptions>;
  /** A real HiP mask for this problem; without one a synthetic mask is built (labelled so). */
  mask?: GpuHipMask;
  /** Kernels to reuse (must match dtype and headDim); else created with `kernelOptions`. */
  kernels?: AttentionKernels;
  kernelOptions?: Partial<AttentionKernelOptions>;
  warmup?: number;
  iterations?: number;
  /**
   * Kernel repetitions per timed sample (time / reps is reported): GPU timestamps may be
   * coarse (65.5 µs on the H200 through Dawn/Vulkan), so short kernels are repeated. Default:
   * 200 for runs under 0.1 ms, else enough for ≥ 2 ms per sample, at most 100.
   */
  reps?: number;
  seed?: number;
}

export interface AttentionBenchResult {
  ms: number;
  /** Every timed iteration, ms. */
  samples: number[];
  flops: number;
  bytes: number;
  tflops: number;
  gbps: number;
  timing: 'timestamp' | 'wall-clock';
  /** Kernel repetitions per sample. */
  reps: number;
  prefillPath: string;
  /** The pipelines that ran. */
  kernel: string;
  /** 'given' | 'synthetic' for HiP; undefined otherwise. */
  mask?: 'given' | 'synthetic';
  shape: ResolvedShape;
}

const FillParams = defineUniforms('FillParams', { n4: 'u32', seed: 'u32', scale: 'f32', rowStride: 'u32' });

function fillWgsl(dtype: StorageType): string {
  return /* wgsl */ `${dtype === 'f16' ? 'enable f16;' : ''}
${FillParams.wgsl()}
@group(0) @binding(0) var<uniform> F: FillParams;
@group(0) @binding(1) var<storage, read_write> X: array<vec4<${dtype}>>;
fn hash(x: u32) -> u32 {
  var h = x * 747796405u + 2891336453u;
  h = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u;
  return (h >> 22u) ^ h;
}
fn unit(x: u32) -> f32 { return f32(hash(x) >> 8u) * (1.0 / 16777216.0) * 2.0 - 1.0; }
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * F.rowStride + gid.x;
  if (i >= F.n4) { return; }
  let s = F.seed ^ (i * 4u);
  X[i] = vec4<${dtype}>(vec4<f32>(unit(s), unit(s + 1u), unit(s + 2u), unit(s + 3u)) * F.scale);
}`;
}

/** Fills `elements` (a multiple of 4) of a buffer with uniform values in [−scale, scale). */
export async function fillRandom(gpu: GpuContext, buffer: GPUBuffer, elements: number, dtype: StorageType, seed: number, scale = 1): Promise<void> {
  const p = await gpu.pipelines.computePipeline({ name: `attention/bench-fill-${dtype}`, code: fillWgsl(dtype), bindings: [['uniform', 'storage']] });
  const eb = bytesOf(dtype);
  const maxBind = Math.floor(gpu.limits.maxStorageBufferBindingSize / 256) * 256;
  const chunkElems = Math.floor(maxBind / eb / 4) * 4;
  const enc = gpu.device.createCommandEncoder();
  const uniforms: GPUBuffer[] = [];
  for (let first = 0; first < elements; first += chunkElems) {
    const n = Math.min(chunkElems, elements - first);
    const groups = Math.ceil(n / 4 / 256);
    const gx = Math.min(groups, 65535);
    const gy = Math.ceil(groups / gx);
    const u = gpu.device.createBuffer({ size: FillParams.byteLength, usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST });
    gpu.device.queue.writeBuffer(u, 0, FillParams.pack({ n4: n / 4, seed: (seed + first * 2654435761) >>> 0, scale, rowStride: gx * 256 }));
    uniforms.push(u);
    const pass = enc.beginComputePass({ label: 'bench fill' });
    pass.setPipeline(p.pipeline);
    pass.setBindGroup(0, gpu.device.createBindGroup({ layout: p.bindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: u } }, { binding: 1, resource: { buffer, offset: first * eb, size: Math.ceil((n * eb) / 4) * 4 } }] }));
    pass.dispatchWorkgroups(gx, gy);
    pass.end();
  }
  gpu.device.queue.submit([enc.finish()]);
  await gpu.device.queue.onSubmittedWorkDone();
  for (const u of uniforms) u.destroy();
}

/**
 * SYNTHETIC HiP mask (for timing only): for every (batch, head, query block), blocksPerQuery
 * distinct key blocks chosen uniformly at random inside the block's candidate range
 * [sinkTokens, lastPosition + 1 − slidingWindow), aligned like the tree search's, ascending,
 * −1 padded when the range has fewer blocks. Valid input for the sparse attention kernels.
 */
export function syntheticHipMask(gpu: GpuContext, shape: ResolvedShape, options: Partial<HipOptions> = {}, seed = 1): GpuHipMask {
  const o = resolveHipOptions(options);
  const nQB = Math.ceil(shape.queryLength / o.blockSizeQ);
  const bpq = o.topK / o.blockSizeK;
  const total = shape.batch * shape.heads * nQB * bpq;
  if (total * 4 > gpu.limits.maxBufferSize) {
    throw new HipAttnError('OUT_OF_MEMORY', `synthetic HiP mask needs ${total * 4} bytes, over maxBufferSize ${gpu.limits.maxBufferSize}`);
  }
  const starts = new Int32Array(total).fill(-1);
  const rng = new Rng(seed);
  const picked = new Set<number>();
  const list: number[] = [];
  for (let b = 0; b < shape.batch; b++)
    for (let h = 0; h < shape.heads; h++)
      for (let qb = 0; qb < nQB; qb++) {
        const last = shape.queryOffset + Math.min((qb + 1) * o.blockSizeQ, shape.queryLength) - 1;
        const r = candidateRange(last, o);
        const nBlocks = Math.ceil((r.end - r.start) / o.blockSizeK);
        const base = ((b * shape.heads + h) * nQB + qb) * bpq;
        list.length = 0;
        if (nBlocks <= bpq) {
          for (let j = 0; j < nBlocks; j++) list.push(j);
        } else {
          // Floyd's sampling of bpq distinct indices in [0, nBlocks).
          picked.clear();
          for (let j = nBlocks - bpq; j < nBlocks; j++) {
            const t = Math.floor(rng.nextFloat() * (j + 1));
            picked.add(picked.has(t) ? j : t);
          }
          for (const j of picked) list.push(j);
          list.sort((x, y) => x - y);
        }
        for (let j = 0; j < list.length; j++) starts[base + j] = r.start + list[j]! * o.blockSizeK;
      }
  return {
    buffer: createStorageBuffer(gpu, starts, { label: 'synthetic hip mask', splitBindings: true }),
    batch: shape.batch,
    heads: shape.heads,
    queryLength: shape.queryLength,
    queryOffset: shape.queryOffset,
    keyLength: shape.keyLength,
    numQueryBlocks: nQB,
    blocksPerQuery: bpq,
    options: o,
  };
}

/** A benchmark problem on the GPU (random inputs, key set), reusable across kernel variants. */
export interface AttentionBenchProblem {
  problem: GpuAttentionProblem;
  keySet: GpuKeySet;
  mode: 'prefill' | 'decode';
  mask?: 'given' | 'synthetic';
  shape: ResolvedShape;
  destroy(): void;
}

/** Allocates and fills a benchmark problem (see module comment; HiP: synthetic mask unless given). */
export async function createAttentionBenchProblem(
  gpu: GpuContext,
  opts: Pick<AttentionBenchOptions, 'seqLen' | 'method' | 'mode' | 'heads' | 'kvHeads' | 'headDim' | 'batch' | 'dtype' | 'hip' | 'streaming' | 'mask' | 'seed'>,
): Promise<AttentionBenchProblem> {
  const H = opts.heads ?? 32;
  const Hkv = opts.kvHeads ?? 8;
  const d = opts.headDim ?? 128;
  const B = opts.batch ?? 1;
  const dtype = opts.dtype ?? 'f16';
  const T = opts.seqLen;
  const Lq = opts.mode === 'decode' ? 1 : T;
  const shape = resolveShape({ batch: B, heads: H, kvHeads: Hkv, queryLength: Lq, keyLength: T, headDim: d });
  const eb = bytesOf(dtype);
  const buffers: GPUBuffer[] = [];
  const alloc = (elements: number, label: string) => {
    const b = createStorageBuffer(gpu, elements * eb, { label, splitBindings: true });
    buffers.push(b);
    return b;
  };
  try {
    const seed = opts.seed ?? 1234;
    const qN = B * H * Lq * d;
    const kvN = B * Hkv * T * d;
    const q = alloc(qN, 'bench q');
    const k = alloc(kvN, 'bench k');
    const v = alloc(kvN, 'bench v');
    const out = alloc(qN, 'bench out');
    await fillRandom(gpu, q, qN, dtype, seed, 2);
    await fillRandom(gpu, k, kvN, dtype, seed + 1, 2);
    await fillRandom(gpu, v, kvN, dtype, seed + 2, 1);
    // The model's layout: q/out as [tokens, heads, d]; K/V as a cache [kvHeads, T, d].
    const tokenMajor = { strideBatch: Lq * H * d, strideHead: d, strideToken: H * d };
    const problem: GpuAttentionProblem = {
      q: { buffer: q, ...tokenMajor },
      out: { buffer: out, ...tokenMajor },
      k: { buffer: k, ...contiguousStrides(Hkv, T, d) },
      v: { buffer: v, ...contiguousStrides(Hkv, T, d) },
      shape,
      dtype,
    };
    let keySet: GpuKeySet;
    let maskKind: 'given' | 'synthetic' | undefined;
    if (opts.method === 'dense') keySet = { kind: 'dense' };
    else if (opts.method === 'streaming') {
      const so = resolveStreamingOptions(opts.streaming);
      keySet = { kind: 'streaming', sinkTokens: so.sinkTokens, slidingWindow: so.slidingWindow };
    } else {
      let mask = opts.mask;
      maskKind = 'given';
      if (!mask) {
        mask = syntheticHipMask(gpu, shape, opts.hip ?? {}, seed);
        buffers.push(mask.buffer);
        maskKind = 'synthetic';
      }
      keySet = { kind: 'hip', mask };
    }
    return {
      problem,
      keySet,
      mode: opts.mode,
      ...(maskKind ? { mask: maskKind } : {}),
      shape,
      destroy() {
        for (const b of buffers) b.destroy();
        buffers.length = 0;
      },
    };
  } catch (e) {
    for (const b of buffers) b.destroy();
    throw e;
  }
}

/** Times kernels on a prepared benchmark problem (median of `iterations` samples). */
export async function timeAttention(
  gpu: GpuContext,
  kernels: AttentionKernels,
  bp: AttentionBenchProblem,
  opts: Pick<AttentionBenchOptions, 'warmup' | 'iterations' | 'reps'> & { decode?: DecodeOptions } = {},
): Promise<AttentionBenchResult> {
  const timer = new GpuTimer(gpu, { maxPasses: 256 });
  try {
    const { problem, keySet, mode } = bp;
    await kernels.prepare(problem, keySet, mode);
    // One sample: `reps` back-to-back runs in one command buffer, from the first pass's start
    // to the last pass's end (timestamps) or submit to completion (wall-clock), divided by reps.
    const run = async (reps: number) => {
      const t = await timer.time((enc) => {
        for (let r = 0; r < reps; r++) kernels.encodeSync(enc, problem, keySet, mode, opts.decode);
      });
      return { ms: t.ms / reps, source: t.source };
    };
    const first = await run(1);
    // A single run under ~0.1 ms reads as 0 or one 65.5 µs tick on the H200: repeat 200 times
    // (≤ 0.3 µs of quantisation per run at 10 µs kernels), else enough for ≥ 2 ms per sample.
    const reps = opts.reps ?? (first.ms < 0.1 ? 200 : Math.max(1, Math.min(100, Math.ceil(2 / first.ms))));
    for (let i = 0; i < (opts.warmup ?? 2); i++) await run(reps);
    const samples: number[] = [];
    let source: 'timestamp' | 'wall-clock' = first.source;
    for (let i = 0; i < (opts.iterations ?? 5); i++) {
      const t = await run(reps);
      source = t.source;
      samples.push(t.ms);
    }
    const sorted = [...samples].sort((a, b) => a - b);
    const ms = sorted[Math.floor(sorted.length / 2)]!;
    const cost = kernels.cost(problem, keySet);
    return {
      ms,
      samples,
      flops: cost.flops,
      bytes: cost.bytes,
      tflops: cost.flops / (ms * 1e-3) / 1e12,
      gbps: cost.bytes / (ms * 1e-3) / 1e9,
      timing: source,
      reps,
      prefillPath: kernels.prefillPath,
      kernel: kernels.describe(problem, keySet, mode),
      ...(bp.mask ? { mask: bp.mask } : {}),
      shape: bp.shape,
    };
  } finally {
    timer.destroy();
  }
}

/** Times one attention problem (see module comment). */
export async function benchAttention(gpu: GpuContext, opts: AttentionBenchOptions): Promise<AttentionBenchResult> {
  const ownKernels = !opts.kernels;
  const kernels = opts.kernels ?? (await createAttentionKernels(gpu, { dtype: opts.dtype ?? 'f16', headDim: opts.headDim ?? 128, ...(opts.kernelOptions ?? {}) }));
  const bp = await createAttentionBenchProblem(gpu, opts);
  try {
    return await timeAttention(gpu, kernels, bp, opts);
  } finally {
    bp.destroy();
    if (ownKernels) kernels.destroy();
  }
}

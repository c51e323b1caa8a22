/**
 * HiP mask estimation on the GPU: every refinement round of every (batch, head group, query
 * block) and the top-k selections run in one compute dispatch (no CPU round trip), producing a
 * `GpuHipMask` whose block starts equal the CPU reference's (`estimateHipMask`).
 *
 *     const est = await createHipMaskEstimator(gpu, { dtype: 'f16', headDim: 128, options: { topK: 512 } });
 *     const mask = est.encode(encoder, { q, k, shape });   // GpuTensor4 views, ResolvedShape
 *     device.queue.submit([encoder.finish()]);
 *     const cpuView = await readGpuHipMask(gpu, mask);     // HipMask, for inspection and tests
 *
 * See wgsl.ts for the kernel and plan.ts for variant selection and binding splits.
 */
import type { HipMask } from '../../attention/mask.js';
import { type HipOptions, resolveHipOptions } from '../../attention/options.js';
import { type AttentionShape, resolveShape, type ResolvedShape } from '../../attention/shape.js';
import { HipAttnError, OptionError, ShapeError } from '../../errors.js';
import {
  bindBuffers,
  BufferUsage,
  createStorageBuffer,
  createUniformBuffer,
  defineUniforms,
  readInt32,
  type CompiledPipeline,
  type GpuContext,
  type UniformScalar,
} from '../../gpu/index.js';
import type { GpuHipMask, GpuTensor4, StorageType } from '../types.js';
import { chooseVariant, planDispatches, type HipMaskPathOption, type PlannedDispatch, type VariantRequest } from './plan.js';
import { hipMaskWgsl, PARAM_FIELDS, type HipMaskVariant, type ParamField, workgroupBytes } from './wgsl.js';
import { bytesOf } from '../common.js';

export { hipMaskWgsl, workgroupBytes, leanLayout, type HipMaskVariant, type HipMaskPath, type MatrixTiling } from './wgsl.js';
export { chooseVariant, planDispatches, pickMatrixConfig, type HipMaskPathOption } from './plan.js';
export { hipMaskCost, type HipMaskCost } from './cost.js';
export { createDecodeShift, decodeShiftWgsl, type DecodeShift } from './decode-shift.js';

const Params = defineUniforms(
  'Params',
  Object.fromEntries(PARAM_FIELDS.map((f) => [f, 'u32'])) as Record<ParamField, UniformScalar>,
);

/**
 * Estimator options: the kernel-tuning fields of VariantRequest (plan.ts: accurate,
 * workgroupSize, matrix* and reuse, all optional, each documented there), plus the following.
 */
export interface HipMaskEstimatorOptions extends Omit<VariantRequest, 'options' | 'path' | 'kind'> {
  /** HiP options (HIP.md defaults for the rest). */
  options?: Partial<HipOptions>;
  /**
   * Kernel: 'auto' (default) picks 'matrix' (tensor cores via chromium-experimental-subgroup-matrix)
   * for prefill where the adapter has an f16/f32→f32 config, else 'scalar'. 'matrix-emulated'
   * runs the matrix path's data flow with scalar arithmetic (tests on adapters without it).
   */
  path?: HipMaskPathOption;
  /**
   * Which kernels to compile up front: 'prefill' (query blocks of several strided queries) and
   * 'decode' (one query per block, e.g. queryLength 1). Default both; encoding a problem whose
   * kind was not compiled throws.
   */
  kinds?: readonly ('prefill' | 'decode')[];
  /** Cap on one storage binding below the device limit (tests of the binding split). */
  maxBindingBytes?: number;
}

/** q and k of one estimation; shape as for the CPU reference (queryOffset, keyCapacity…). */
export interface HipMaskProblem {
  /** [batch, heads, queryLength, headDim] view. */
  q: GpuTensor4;
  /** [batch, kvHeads, ≥ keyLength, headDim] view. */
  k: GpuTensor4;
  shape: AttentionShape | ResolvedShape;
}

/** Something to begin a compute pass on: a command encoder, or GpuTimer's TimedEncoder. */
export type PassSource = GPUCommandEncoder | { beginComputePass(label?: string): GPUComputePassEncoder; encoder: GPUCommandEncoder };

export interface HipMaskEstimator {
  readonly options: HipOptions;
  readonly dtype: StorageType;
  readonly headDim: number;
  /** Variants in use: for query blocks of several strided rows (prefill) and of one (decode). */
  readonly variants: { prefill: HipMaskVariant; decode: HipMaskVariant };
  /**
   * Records the estimation in its own compute pass. Without `out`, the mask buffer is allocated
   * on the first call for a mask shape and reused by later calls of the same shape (so a mask
   * is overwritten by the next `encode` of the same shape; pass `out` to keep several).
   */
  encode(encoder: PassSource, problem: HipMaskProblem, out?: GpuHipMask): GpuHipMask;
  /** Records into an existing compute pass. */
  encodeInPass(pass: GPUComputePassEncoder, problem: HipMaskProblem, out?: GpuHipMask): GpuHipMask;
  /** The variant and dispatches `encode` would use (for benchmarks and tests). */
  describe(problem: HipMaskProblem): { variant: HipMaskVariant; dispatches: PlannedDispatch[] };
  /** Frees the cached mask buffers (masks returned earlier become invalid). */
  destroy(): void;
}

interface CachedPlan {
  dispatches: PlannedDispatch[];
  uniforms: GPUBuffer[];
}

/** Creates an estimator; compiles its pipelines (prefill and decode variants) once. */
export async function createHipMaskEstimator(gpu: GpuContext, opts: HipMaskEstimatorOptions): Promise<HipMaskEstimator> {
  const options = resolveHipOptions(opts.options ?? {});
  const { dtype, headDim } = opts;
  if (dtype !== 'f32' && dtype !== 'f16') throw new OptionError(`hip-mask: dtype must be 'f32' or 'f16', got ${String(dtype)}`);
  if (!Number.isInteger(headDim) || headDim < 1) throw new OptionError(`hip-mask: headDim must be a positive integer, got ${headDim}`);
  const path = opts.path ?? 'auto';
  const common = {
    dtype,
    headDim,
    options,
    path,
    accurate: opts.accurate,
    workgroupSize: opts.workgroupSize,
    matrixSubgroups: opts.matrixSubgroups,
    subgroupSort: opts.subgroupSort,
    matrixQRegisters: opts.matrixQRegisters,
    matrixKernel: opts.matrixKernel,
    matrixRowSplit: opts.matrixRowSplit,
    matrixPrefetch: opts.matrixPrefetch,
    matrixRotate: opts.matrixRotate,
    matrixN: opts.matrixN,
    reuse: opts.reuse,
  };
  const prefill = chooseVariant(gpu, { ...common, kind: 'prefill' });
  // Decode (one strided query per head): the scalar kernel with a large workgroup, unless a
  // matrix path was forced.
  const decode = chooseVariant(gpu, { ...common, kind: 'decode', path: path === 'auto' ? 'scalar' : path });
  const bindings = [['uniform', 'read-only-storage', 'read-only-storage', 'storage']] as const;
  const compile = (v: HipMaskVariant) =>
    gpu.pipelines.computePipeline({ name: `hip-mask/${variantName(v)}`, code: hipMaskWgsl(v), bindings: bindings.map((g) => [...g]) });
  const kinds = opts.kinds ?? ['prefill', 'decode'];
  const [pPrefill, pDecode] = await Promise.all([
    kinds.includes('prefill') ? compile(prefill) : null,
    kinds.includes('decode') ? compile(decode) : null,
  ]);
  const limitGpu: GpuContext =
    opts.maxBindingBytes === undefined
      ? gpu
      : { ...gpu, limits: { ...gpu.limits, maxStorageBufferBindingSize: Math.min(gpu.limits.maxStorageBufferBindingSize, opts.maxBindingBytes) } };

  const n = options.topK / options.blockSizeK;
  const masks = new Map<string, GPUBuffer>();
  const plans = new Map<string, CachedPlan>();
  const eb = bytesOf(dtype);

  const prepare = (problem: HipMaskProblem, out?: GpuHipMask) => {
    const s = resolveShape(problem.shape);
    if (s.headDim !== headDim) throw new ShapeError(`hip-mask: estimator built for headDim ${headDim}, problem has ${s.headDim}`);
    if (s.heads % options.headGroupSize !== 0) {
      throw new OptionError(`headGroupSize (${options.headGroupSize}) must divide the number of query heads (${s.heads})`);
    }
    const numQueryBlocks = Math.ceil(s.queryLength / options.blockSizeQ);
    const rowsPerHead = Math.ceil(Math.min(options.blockSizeQ, s.queryLength) / options.blockStrideQ);
    const useDecode = rowsPerHead === 1;
    const variant = useDecode ? decode : prefill;
    const compiled = useDecode ? pDecode : pPrefill;
    if (!compiled) {
      throw new OptionError(`hip-mask: this estimator was created with kinds [${kinds.join(', ')}]; this problem needs '${useDecode ? 'decode' : 'prefill'}'`);
    }
    checkTensor('q', problem.q, s.batch, s.heads, s.queryLength, s.headDim, eb, variant);
    checkTensor('k', problem.k, s.batch, s.kvHeads, s.keyLength, s.headDim, eb, variant);
    // (i·numBlocks) must fit in u32 in the node initialisation.
    const maxBlocks = Math.ceil(Math.max(0, s.queryOffset + s.queryLength - options.sinkTokens) / options.blockSizeK);
    if ((n + 1) * maxBlocks >= 2 ** 32 || s.keyLength + options.blockSizeK >= 2 ** 31) {
      throw new HipAttnError('UNSUPPORTED', `hip-mask: ${maxBlocks} key blocks × ${n} nodes overflow the kernel's 32-bit index arithmetic`);
    }
    const maskLen = s.batch * s.heads * numQueryBlocks * n;
    let buffer: GPUBuffer;
    if (out) {
      if (out.blocksPerQuery !== n || out.batch !== s.batch || out.heads !== s.heads || out.numQueryBlocks !== numQueryBlocks) {
        throw new ShapeError(
          `hip-mask: out mask is [${out.batch}, ${out.heads}, ${out.numQueryBlocks}, ${out.blocksPerQuery}], problem needs [${s.batch}, ${s.heads}, ${numQueryBlocks}, ${n}]`,
        );
      }
      if (out.buffer.size < maskLen * 4) throw new ShapeError(`hip-mask: out buffer of ${out.buffer.size} bytes < ${maskLen * 4}`);
      buffer = out.buffer;
    } else {
      const key = `${s.batch},${s.heads},${numQueryBlocks}`;
      let b = masks.get(key);
      if (!b) {
        b = createStorageBuffer(gpu, maskLen * 4, { label: `hip mask [${s.batch},${s.heads},${numQueryBlocks},${n}]`, splitBindings: true });
        masks.set(key, b);
      }
      buffer = b;
    }
    const mask: GpuHipMask = {
      buffer,
      batch: s.batch,
      heads: s.heads,
      queryLength: s.queryLength,
      queryOffset: s.queryOffset,
      keyLength: s.keyLength,
      numQueryBlocks,
      blocksPerQuery: n,
      options,
    };
    const planKey = JSON.stringify([s, tensorKey(problem.q), tensorKey(problem.k), buffer.size, useDecode]);
    let plan = plans.get(planKey);
    if (!plan) {
      const dispatches = planDispatches(limitGpu, { shape: s, options, q: problem.q, k: problem.k, dtype, outBuffer: buffer, numQueryBlocks, n });
      const uniforms = dispatches.map((dp) =>
        createUniformBuffer(gpu, Params, paramsFor(s, options, problem, dp, numQueryBlocks), 'hip-mask params'),
      );
      plan = { dispatches, uniforms };
      if (plans.size >= 64) plans.delete(plans.keys().next().value!); // buffers are collected with their last use
      plans.set(planKey, plan);
    }
    return { s, mask, plan, compiled, variant };
  };

  const record = (pass: GPUComputePassEncoder, problem: HipMaskProblem, out?: GpuHipMask): GpuHipMask => {
    const { mask, plan, compiled } = prepare(problem, out);
    pass.setPipeline(compiled.pipeline);
    plan.dispatches.forEach((dp, i) => {
      pass.setBindGroup(
        0,
        bindBuffers(gpu.device, compiled as CompiledPipeline, [
          plan.uniforms[i]!,
          { buffer: problem.q.buffer, offset: dp.q.offset, size: dp.q.size },
          { buffer: problem.k.buffer, offset: dp.k.offset, size: dp.k.size },
          { buffer: mask.buffer, offset: dp.out.offset, size: dp.out.size },
        ]),
      );
      pass.dispatchWorkgroups(dp.gx, dp.gy);
    });
    return mask;
  };

  return {
    options,
    dtype,
    headDim,
    variants: { prefill, decode },
    encode(encoder, problem, out) {
      const pass = 'encoder' in encoder ? encoder.beginComputePass('hip-mask') : encoder.beginComputePass({ label: 'hip-mask' });
      try {
        return record(pass, problem, out);
      } finally {
        pass.end();
      }
    },
    encodeInPass: record,
    describe(problem) {
      const { variant, plan } = prepare(problem);
      return { variant, dispatches: plan.dispatches };
    },
    destroy() {
      for (const b of masks.values()) b.destroy();
      masks.clear();
      plans.clear();
    },
  };
}

function tensorKey(t: GpuTensor4): string {
  return `${t.buffer.label}:${t.buffer.size}:${t.offset ?? 0}:${t.strideBatch}:${t.strideHead}:${t.strideToken}`;
}

function checkTensor(
  name: string,
  t: GpuTensor4,
  batch: number,
  heads: number,
  tokens: number,
  d: number,
  eb: number,
  v: HipMaskVariant,
): void {
  const off = t.offset ?? 0;
  for (const [k, x] of [['offset', off], ['strideBatch', t.strideBatch], ['strideHead', t.strideHead], ['strideToken', t.strideToken]] as const) {
    if (!Number.isInteger(x) || x < 0) throw new ShapeError(`hip-mask: ${name}.${k} must be a non-negative integer, got ${x}`);
  }
  if (t.strideToken < d && tokens > 1) throw new ShapeError(`hip-mask: ${name}.strideToken (${t.strideToken}) < headDim (${d})`);
  const granule = v.path === 'scalar' ? (v.vec4 ? 4 : 1) : v.dtype === 'f16' ? 8 : 4;
  if (granule > 1 && [off, t.strideBatch, t.strideHead, t.strideToken].some((x) => x % granule !== 0)) {
    throw new ShapeError(
      `hip-mask: the ${v.path} kernel reads ${granule} elements at a time: ${name}'s offset and strides must be multiples of ${granule} ` +
        `(offset ${off}, strides ${t.strideBatch}/${t.strideHead}/${t.strideToken})`,
    );
  }
  const last = off + (batch - 1) * t.strideBatch + (heads - 1) * t.strideHead + (tokens - 1) * t.strideToken + d;
  if (last * eb > t.buffer.size) {
    throw new ShapeError(`hip-mask: ${name} view ends at byte ${last * eb}, past the end of its ${t.buffer.size}-byte buffer "${t.buffer.label}"`);
  }
}

function paramsFor(
  s: ResolvedShape,
  o: HipOptions,
  problem: HipMaskProblem,
  dp: PlannedDispatch,
  numQueryBlocks: number,
): Record<ParamField, number> {
  const q = problem.q;
  const k = problem.k;
  return {
    batch: s.batch,
    heads: s.heads,
    kvHeads: s.kvHeads,
    groupSize: o.headGroupSize,
    queryLength: s.queryLength,
    queryOffset: s.queryOffset,
    numQueryBlocks,
    bq: o.blockSizeQ,
    bsq: o.blockStrideQ,
    bk: o.blockSizeK,
    bsk: o.blockStrideK,
    sink: o.sinkTokens,
    window: o.slidingWindow,
    repFirst: o.representative === 'first' ? 1 : 0,
    keysPerBlock: Math.ceil(o.blockSizeK / o.blockStrideK),
    headDim: s.headDim,
    qOff: ((q.offset ?? 0) - dp.q.firstElement) >>> 0,
    qsB: s.batch === 1 ? 0 : q.strideBatch, // unused for one batch (and may exceed u32 at 1M tokens)
    qsH: q.strideHead,
    qsT: q.strideToken,
    kOff: ((k.offset ?? 0) - dp.k.firstElement) >>> 0,
    ksB: s.batch === 1 ? 0 : k.strideBatch,
    ksH: k.strideHead,
    ksT: k.strideToken,
    outOff: -dp.out.firstElement >>> 0,
    b0: dp.b0,
    nB: dp.nB,
    g0: dp.g0,
    nG: dp.nG,
    qb0: dp.qb0,
    nQB: dp.nQB,
    gx: dp.gx,
    total: dp.total,
  };
}

/** Reads a GPU mask back into the CPU type (qkProducts is not counted on the GPU: NaN). */
export async function readGpuHipMask(gpu: GpuContext, mask: GpuHipMask): Promise<HipMask> {
  const len = mask.batch * mask.heads * mask.numQueryBlocks * mask.blocksPerQuery;
  const blockStarts = await readInt32(gpu, mask.buffer, len);
  return {
    batch: mask.batch,
    heads: mask.heads,
    queryLength: mask.queryLength,
    queryOffset: mask.queryOffset,
    keyLength: mask.keyLength,
    numQueryBlocks: mask.numQueryBlocks,
    blocksPerQuery: mask.blocksPerQuery,
    blockStarts,
    options: mask.options,
    qkProducts: Number.NaN,
  };
}

/** Uploads a CPU mask (e.g. from estimateHipMask) into a new GPU buffer. */
export function uploadHipMask(gpu: GpuContext, mask: HipMask, label = 'hip mask (uploaded)'): GpuHipMask {
  const expected = mask.batch * mask.heads * mask.numQueryBlocks * mask.blocksPerQuery;
  if (mask.blockStarts.length !== expected) {
    throw new ShapeError(`uploadHipMask: blockStarts has ${mask.blockStarts.length} entries, shape needs ${expected}`);
  }
  const buffer = createStorageBuffer(gpu, mask.blockStarts, {
    label,
    splitBindings: true,
    usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST,
  });
  return {
    buffer,
    batch: mask.batch,
    heads: mask.heads,
    queryLength: mask.queryLength,
    queryOffset: mask.queryOffset,
    keyLength: mask.keyLength,
    numQueryBlocks: mask.numQueryBlocks,
    blocksPerQuery: mask.blocksPerQuery,
    options: mask.options,
  };
}

/** Short name of a kernel variant (pipeline labels, benchmark tables). */
export function variantName(v: HipMaskVariant): string {
  const m = v.matrix;
  const tiling = m
    ? m.kernel === 'lean'
      ? ` lean ${m.subgroups}sg r${m.rowSplit ?? 1} p${m.prefetch ?? 1}${m.N !== 16 ? ` n${m.N}` : ''}${m.rotate === false ? ' norot' : ''}`
      : ` classic ${m.subgroups}sg${m.qRegisters === false ? ' noqreg' : ''}`
    : ` wg${v.workgroupSize}`;
  return `${v.path}-${v.dtype}${tiling}${v.subgroupSort ? '' : ' wgsort'}${v.reuse === false ? ' noreuse' : ''}`;
}

/**
 * Correctness harness for the attention kernels, shared by the vitest suites (Node/lavapipe and
 * headless Chromium) and the plain-node H200 check script: builds a random problem, lays it
 * out on the GPU in a chosen layout (contiguous, or the model's strided [tokens, heads, d]
 * with a KV cache of larger capacity), runs the kernels, and compares against the CPU
 * reference (src/attention/cpu) on the same (f16-rounded) inputs.
 */
import { denseAttention, estimateHipMask, hipSparseAttention, resolveShape, streamingAttention } from '../../attention/index.js';
import type { AttentionInput, AttentionShape, ResolvedShape } from '../../attention/shape.js';
import type { HipOptions } from '../../attention/options.js';
import type { HipMask } from '../../attention/mask.js';
import { BufferUsage, createStorageBuffer, readFloat16, readFloat32, roundToFloat16, toFloat16Bits, type GpuContext } from '../../gpu/index.js';
import { Rng } from '../../util/rng.js';
import type { GpuAttentionProblem, GpuHipMask, GpuKeySet, GpuTensor4, StorageType } from '../types.js';
import type { AttentionKernels } from './index.js';
import { bytesOf } from '../common.js';

export type CheckLayout = 'contiguous' | 'model';

export interface CheckCase {
  shape: AttentionShape;
  method: 'dense' | 'streaming' | 'hip';
  /** HiP options (mask estimated on the CPU) / StreamingLLM sink and window. */
  hip?: Partial<HipOptions>;
  streaming?: { sinkTokens: number; slidingWindow: number };
  layout?: CheckLayout;
  mode?: 'prefill' | 'decode' | 'auto';
  seed: number;
  /** Element offset of every tensor in its buffer (multiple of 4). Default 0. */
  offset?: number;
  decodeSplits?: number;
  /** Reuse this CPU mask (decode with a cached mask) instead of estimating one. */
  mask?: HipMask;
  /**
   * Memoise the CPU mask and reference output of this exact case (shape, method, options,
   * seed, dtype) for later calls — for checking many kernel variants on the same problem.
   */
  cacheReference?: boolean;
}

const REF_CACHE = new Map<string, { mask?: HipMask; reference: Float32Array }>();

export interface CheckResult {
  /** max over rows of ‖gpu − ref‖ / ‖ref‖. */
  maxRowRelError: number;
  /** max |gpu − ref| / max |ref|. */
  maxAbsErrorRel: number;
  rows: number;
  ms: number;
}

/** A strided view layout for [batch, heads, tokens, d] and the element count it spans. */
function layoutOf(layout: CheckLayout, batch: number, heads: number, tokens: number, d: number, offset: number): Omit<GpuTensor4, 'buffer'> & { elements: number } {
  if (layout === 'contiguous') {
    return { offset, strideBatch: heads * tokens * d, strideHead: tokens * d, strideToken: d, elements: offset + batch * heads * tokens * d };
  }
  // The model's activations: [batch, tokens, heads, d].
  return { offset, strideBatch: tokens * heads * d, strideHead: d, strideToken: heads * d, elements: offset + batch * tokens * heads * d };
}

function upload(gpu: GpuContext, data: Float32Array, dtype: StorageType, view: ReturnType<typeof layoutOf>, batch: number, heads: number, tokens: number, d: number, label: string): GpuTensor4 {
  const host = new Float32Array(view.elements + 8);
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < heads; h++)
      for (let t = 0; t < tokens; t++) {
        const src = ((b * heads + h) * tokens + t) * d;
        const dst = (view.offset ?? 0) + b * view.strideBatch + h * view.strideHead + t * view.strideToken;
        host.set(data.subarray(src, src + d), dst);
      }
  const bytes = dtype === 'f16' ? toFloat16Bits(host) : host;
  const buffer = createStorageBuffer(gpu, bytes, { label, splitBindings: true });
  return { buffer, offset: view.offset ?? 0, strideBatch: view.strideBatch, strideHead: view.strideHead, strideToken: view.strideToken };
}

function gather(flat: Float32Array, view: GpuTensor4, batch: number, heads: number, tokens: number, d: number): Float32Array {
  const out = new Float32Array(batch * heads * tokens * d);
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < heads; h++)
      for (let t = 0; t < tokens; t++) {
        const src = (view.offset ?? 0) + b * view.strideBatch + h * view.strideHead + t * view.strideToken;
        out.set(flat.subarray(src, src + d), ((b * heads + h) * tokens + t) * d);
      }
  return out;
}

/** Random q/k/v (normal; f16-rounded for f16 storage) for a shape. */
export function randomInput(shape: AttentionShape, seed: number, dtype: StorageType): AttentionInput<Float32Array> {
  const s = resolveShape(shape);
  const rng = new Rng(seed);
  const round = (x: Float32Array) => (dtype === 'f16' ? roundToFloat16(x) : x);
  const q = round(rng.normalArray(s.batch * s.heads * s.queryLength * s.headDim));
  const k = round(rng.normalArray(s.batch * s.kvHeads * s.keyCapacity * s.headDim));
  const v = round(rng.normalArray(s.batch * s.kvHeads * s.keyCapacity * s.headDim));
  return { q, k, v, shape };
}

/** Uploads a CPU HiP mask as a GpuHipMask. */
export function uploadHipMask(gpu: GpuContext, mask: HipMask): GpuHipMask {
  return {
    buffer: createStorageBuffer(gpu, mask.blockStarts, { label: 'hip mask', splitBindings: true }),
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

export function compareOutputs(got: Float32Array, ref: Float32Array, d: number): Omit<CheckResult, 'ms' | 'rows'> {
  let worstRow = 0;
  let maxAbs = 0;
  let maxRef = 0;
  for (let r = 0; r < ref.length / d; r++) {
    let num = 0;
    let den = 0;
    for (let c = 0; c < d; c++) {
      const x = got[r * d + c]!;
      const y = ref[r * d + c]!;
      num += (x - y) ** 2;
      den += y * y;
      const a = Math.abs(x - y);
      if (!(a <= maxAbs)) maxAbs = a; // NaN propagates
      maxRef = Math.max(maxRef, Math.abs(y));
    }
    const e = Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
    if (!(e <= worstRow)) worstRow = e;
  }
  return { maxRowRelError: worstRow, maxAbsErrorRel: maxAbs / Math.max(maxRef, 1e-30) };
}

/** CPU reference output for a case (float32, [batch, heads, queryLength, d]). */
export function referenceOutput(c: CheckCase, input: AttentionInput, mask: HipMask | undefined): Float32Array {
  if (c.method === 'dense') return denseAttention(input);
  if (c.method === 'streaming') return streamingAttention(input, c.streaming);
  return hipSparseAttention(input, mask!);
}

/**
 * Runs one case: random inputs, GPU kernels, CPU reference, error figures. The caller owns
 * `kernels` (created for the case's dtype and headDim).
 */
export async function runAttentionCase(gpu: GpuContext, kernels: AttentionKernels, c: CheckCase): Promise<CheckResult & { reference: Float32Array; output: Float32Array }> {
  const dtype = kernels.dtype;
  const s: ResolvedShape = resolveShape(c.shape);
  const d = s.headDim;
  const input = randomInput(c.shape, c.seed, dtype);
  const layout = c.layout ?? 'contiguous';
  const off = c.offset ?? 0;
  const qv = layoutOf(layout, s.batch, s.heads, s.queryLength, d, off);
  const kv = layoutOf('contiguous', s.batch, s.kvHeads, s.keyCapacity, d, off); // KV cache [b, kvh, cap, d]
  const ov = layoutOf(layout, s.batch, s.heads, s.queryLength, d, off);
  const q = upload(gpu, input.q, dtype, qv, s.batch, s.heads, s.queryLength, d, 'q');
  const k = upload(gpu, input.k, dtype, kv, s.batch, s.kvHeads, s.keyCapacity, d, 'k');
  const v = upload(gpu, input.v, dtype, kv, s.batch, s.kvHeads, s.keyCapacity, d, 'v');
  const outBytes = (ov.elements + 8) * bytesOf(dtype);
  const outBuf = gpu.device.createBuffer({ label: 'out', size: Math.ceil(outBytes / 4) * 4, usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST });
  const out: GpuTensor4 = { buffer: outBuf, offset: off, strideBatch: ov.strideBatch, strideHead: ov.strideHead, strideToken: ov.strideToken };
  let mask: HipMask | undefined;
  let gpuMask: GpuHipMask | undefined;
  let keySet: GpuKeySet;
  const cacheKey =
    c.cacheReference && !c.mask ? JSON.stringify([c.shape, c.method, c.hip ?? null, c.streaming ?? null, c.seed, dtype, c.mode ?? 'auto']) : null;
  const cached = cacheKey ? REF_CACHE.get(cacheKey) : undefined;
  if (c.method === 'hip') {
    mask = c.mask ?? cached?.mask ?? estimateHipMask(input, c.hip ?? {});
    gpuMask = uploadHipMask(gpu, mask);
    keySet = { kind: 'hip', mask: gpuMask };
  } else if (c.method === 'streaming') {
    keySet = { kind: 'streaming', sinkTokens: c.streaming!.sinkTokens, slidingWindow: c.streaming!.slidingWindow };
  } else keySet = { kind: 'dense' };
  const problem: GpuAttentionProblem = { q, k, v, out, shape: s, dtype };
  try {
    const t0 = performance.now();
    const enc = gpu.device.createCommandEncoder();
    const mode = c.mode ?? 'auto';
    if (mode === 'prefill') await kernels.encodePrefill(enc, problem, keySet);
    else if (mode === 'decode') await kernels.encodeDecode(enc, problem, keySet, c.decodeSplits ? { splits: c.decodeSplits } : {});
    else await kernels.encode(enc, problem, keySet);
    gpu.device.queue.submit([enc.finish()]);
    const flat = dtype === 'f16' ? await readFloat16(gpu, outBuf) : await readFloat32(gpu, outBuf);
    const ms = performance.now() - t0;
    const output = gather(flat, out, s.batch, s.heads, s.queryLength, d);
    const reference = cached?.reference ?? referenceOutput(c, input, mask);
    if (cacheKey && !cached) {
      if (REF_CACHE.size >= 16) REF_CACHE.delete(REF_CACHE.keys().next().value!);
      REF_CACHE.set(cacheKey, { reference, ...(mask ? { mask } : {}) });
    }
    return { ...compareOutputs(output, reference, d), rows: s.batch * s.heads * s.queryLength, ms, reference, output };
  } finally {
    for (const b of [q.buffer, k.buffer, v.buffer, outBuf, gpuMask?.buffer]) b?.destroy();
  }
}

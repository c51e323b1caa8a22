/**
 * Test and benchmark support (browser-safe): random problems in GPU-style strided layouts,
 * their CPU-layout twins for estimateHipMask, and mask comparison figures.
 */
import { estimateHipMask, maskRecall } from '../../attention/cpu/hip-mask.js';
import type { HipMask } from '../../attention/mask.js';
import type { HipOptions } from '../../attention/options.js';
import { type AttentionShape, resolveShape } from '../../attention/shape.js';
import { createStorageBuffer, roundToFloat16, toFloat16Bits, type GpuContext } from '../../gpu/index.js';
import { Rng } from '../../util/rng.js';
import type { GpuTensor4, StorageType } from '../types.js';

export interface MaskProblemSpec extends AttentionShape {
  /** q layout: 'bhtd' contiguous [batch, heads, tokens, d] or 'bthd' as the model writes it [batch, tokens, heads, d]. */
  qLayout?: 'bhtd' | 'bthd';
  /** Element offset of q / k in their buffers (tests of sub-range binding). */
  qOffset?: number;
  kOffset?: number;
  /** 'normal' (default) or 'integer' (small integers: many exactly tied scores). */
  values?: 'normal' | 'integer';
}

export interface CpuProblem {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  shape: AttentionShape;
}

/** Random q, k in the CPU layout; f16-rounded when dtype is f16 (so the CPU sees what the GPU sees). */
export function randomCpuProblem(seed: number, spec: MaskProblemSpec, dtype: StorageType): CpuProblem {
  const rng = new Rng(seed);
  const cap = spec.keyCapacity ?? spec.keyLength;
  const shape: AttentionShape = {
    batch: spec.batch,
    heads: spec.heads,
    kvHeads: spec.kvHeads,
    queryLength: spec.queryLength,
    keyLength: spec.keyLength,
    headDim: spec.headDim,
    keyCapacity: cap,
    ...(spec.queryOffset !== undefined ? { queryOffset: spec.queryOffset } : {}),
  };
  const gen = (len: number) => {
    if (spec.values === 'integer') {
      const a = new Float32Array(len);
      for (let i = 0; i < len; i++) a[i] = rng.int(5) - 2;
      return a;
    }
    return rng.normalArray(len);
  };
  let q = gen(spec.batch * spec.heads * spec.queryLength * spec.headDim);
  let k = gen(spec.batch * spec.kvHeads * cap * spec.headDim);
  if (dtype === 'f16') {
    q = roundToFloat16(q);
    k = roundToFloat16(k);
  }
  return { q, k, v: new Float32Array(k.length), shape };
}

export interface GpuProblem {
  q: GpuTensor4;
  k: GpuTensor4;
  shape: AttentionShape;
  destroy(): void;
}

/** Uploads a CPU problem in the spec's GPU layouts (q possibly [tokens, heads, d]; offsets). */
export function uploadProblem(gpu: GpuContext, p: CpuProblem, spec: MaskProblemSpec, dtype: StorageType): GpuProblem {
  const s = resolveShape(p.shape);
  const d = s.headDim;
  const qOff = spec.qOffset ?? 0;
  const kOff = spec.kOffset ?? 0;
  const qLayout = spec.qLayout ?? 'bhtd';
  const qStrides =
    qLayout === 'bhtd'
      ? { strideBatch: s.heads * s.queryLength * d, strideHead: s.queryLength * d, strideToken: d }
      : { strideBatch: s.queryLength * s.heads * d, strideHead: d, strideToken: s.heads * d };
  const qData = new Float32Array(qOff + p.q.length);
  for (let b = 0; b < s.batch; b++)
    for (let h = 0; h < s.heads; h++)
      for (let i = 0; i < s.queryLength; i++) {
        const src = ((b * s.heads + h) * s.queryLength + i) * d;
        const dst = qOff + b * qStrides.strideBatch + h * qStrides.strideHead + i * qStrides.strideToken;
        qData.set(p.q.subarray(src, src + d), dst);
      }
  const kData = new Float32Array(kOff + p.k.length);
  kData.set(p.k, kOff);
  const upload = (data: Float32Array, label: string) =>
    dtype === 'f16' ? createStorageBuffer(gpu, toFloat16Bits(data), { label }) : createStorageBuffer(gpu, data, { label });
  const qb = upload(qData, 'test q');
  const kb = upload(kData, 'test k');
  return {
    q: { buffer: qb, offset: qOff, ...qStrides },
    k: { buffer: kb, offset: kOff, strideBatch: s.kvHeads * s.keyCapacity * d, strideHead: s.keyCapacity * d, strideToken: d },
    shape: p.shape,
    destroy() {
      qb.destroy();
      kb.destroy();
    },
  };
}

export interface MaskComparison {
  /** (batch, head, query block) slots compared. */
  slots: number;
  /** Slots whose block lists are identical. */
  equalSlots: number;
  fractionEqual: number;
  /** maskRecall(gpu, cpu). */
  recall: number;
  /** First differing slot, for messages. */
  firstDiff?: { slot: number; gpu: number[]; cpu: number[] };
}

export function compareMasks(gpuMask: HipMask, cpuMask: HipMask): MaskComparison {
  const n = cpuMask.blocksPerQuery;
  const slots = cpuMask.blockStarts.length / n;
  let equal = 0;
  let firstDiff: MaskComparison['firstDiff'];
  for (let sl = 0; sl < slots; sl++) {
    let same = true;
    for (let j = 0; j < n; j++) {
      if (gpuMask.blockStarts[sl * n + j] !== cpuMask.blockStarts[sl * n + j]) {
        same = false;
        break;
      }
    }
    if (same) equal++;
    else if (!firstDiff) {
      firstDiff = {
        slot: sl,
        gpu: Array.from(gpuMask.blockStarts.subarray(sl * n, sl * n + n)),
        cpu: Array.from(cpuMask.blockStarts.subarray(sl * n, sl * n + n)),
      };
    }
  }
  const r = maskRecall(gpuMask, cpuMask);
  return { slots, equalSlots: equal, fractionEqual: slots ? equal / slots : 1, recall: r.recall, ...(firstDiff ? { firstDiff } : {}) };
}

/** The CPU reference mask of a problem. */
export function cpuMask(p: CpuProblem, options: Partial<HipOptions>): HipMask {
  return estimateHipMask({ q: p.q, k: p.k, v: p.v, shape: p.shape }, options, { checkFinite: false });
}

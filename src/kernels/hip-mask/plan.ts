/**
 * Host-side planning for HiP mask estimation: which kernel variant fits the device (workgroup
 * memory, subgroup-matrix configs), and how a problem is cut into dispatches whose q, k and
 * mask bindings each fit in maxStorageBufferBindingSize.
 */
import type { HipOptions } from '../../attention/options.js';
import type { ResolvedShape } from '../../attention/shape.js';
import { HipAttnError } from '../../errors.js';
import { formatBytes, type GpuContext } from '../../gpu/index.js';
import type { GpuTensor4, StorageType } from '../types.js';
import { type HipMaskPath, type HipMaskVariant, leanLayout, workgroupBytes } from './wgsl.js';

export type HipMaskPathOption = 'auto' | HipMaskPath;

export interface VariantRequest {
  dtype: StorageType;
  headDim: number;
  options: HipOptions;
  path: HipMaskPathOption;
  /**
   * Compensated dot products on the scalar path (error-free transformations, so f32 scores are
   * the correctly rounded exact dots and masks equal the float64 reference's). Default: dtype === 'f32'.
   */
  accurate?: boolean;
  /** Override the workgroup size (scalar path). */
  workgroupSize?: number;
  /** 'prefill': rows = ceil(blockSizeQ / blockStrideQ) per head; 'decode': one row per head. */
  kind: 'prefill' | 'decode';
  /** Matrix paths: subgroups per workgroup (default: the most that fit, ≤ 4). */
  matrixSubgroups?: number;
  /**
   * Bitonic sort with entries in registers and subgroupShuffleXor for partners in the same
   * subgroup (only the widest stages use workgroup memory and barriers). Default: where the
   * adapter has subgroups of a fixed size; false forces the workgroup-memory sort.
   */
  subgroupSort?: boolean;
  /** Matrix path, classic kernel: keep the query tile's fragments in registers for a round (default true). */
  matrixQRegisters?: boolean;
  /** Matrix paths: 'lean' (default) or 'classic' (see MatrixTiling in wgsl.ts). */
  matrixKernel?: 'classic' | 'lean';
  /** Lean kernel: subgroups sharing one 16-key tile, 1 or 2 (default: 2 where the row tiles split). */
  matrixRowSplit?: number;
  /** Lean kernel: steps of gathered keys in flight per subgroup, 1 or 2 (default 2 with rowSplit 2, else 1). */
  matrixPrefetch?: number;
  /**
   * Lean kernel: keys per tile, i.e. the subgroup-matrix config's N (16 default; 8 uses a 16×8×16
   * config where the adapter has one: half the staging per subgroup, so twice the subgroups).
   */
  matrixN?: number;
  /** Lean kernel: rotated chunk stores into the key staging (default true; see MatrixTiling.rotate). */
  matrixRotate?: boolean;
  /** Parent-score reuse (default true; see HipMaskVariant.reuse). */
  reuse?: boolean;
}

/** The subgroup size the register sort can rely on for a workgroup size, or 0. */
function sortSubgroup(gpu: GpuContext, want: boolean | undefined, wg: number, P: number): number {
  const sg = gpu.adapterInfo.subgroupMaxSize;
  const fixed = gpu.features.subgroups && sg > 0 && gpu.adapterInfo.subgroupMinSize === sg;
  if (want === false) return 0;
  const ok = fixed && wg % sg === 0 && P / wg <= 8;
  if (want === true && !ok) {
    throw new HipAttnError(
      'UNSUPPORTED',
      `hip-mask: the subgroup sort needs the subgroups feature with a fixed subgroup size dividing the workgroup size ${wg} ` +
        `(adapter: ${gpu.features.subgroups ? `${gpu.adapterInfo.subgroupMinSize}…${sg}` : 'no subgroups'})`,
    );
  }
  return ok ? sg : 0;
}

function nextPow2(x: number): number {
  let p = 1;
  while (p < x) p *= 2;
  return p;
}

/**
 * Tile shape for the matrix path: the adapter's f16/f32 → f32 config (prefers 16×16×16, or
 * 16×N×16 for a requested N, e.g. 8: NVIDIA's 16×8×16).
 */
export function pickMatrixConfig(gpu: GpuContext, dtype: StorageType, n?: number): { M: number; N: number; K: number } | null {
  if (!gpu.features.subgroupMatrix) return null;
  const ok = gpu.adapterInfo.subgroupMatrixConfigs.filter((c) => c.componentType === dtype && c.resultComponentType === 'f32');
  if (ok.length === 0) return null;
  const want = n !== undefined ? ok.find((c) => c.M === 16 && c.N === n && c.K === 16) : undefined;
  const square = ok.find((c) => c.M === 16 && c.N === 16 && c.K === 16);
  const c = want ?? square ?? ok[0]!;
  return { M: c.M, N: c.N, K: c.K };
}

/** Chooses and sizes a kernel variant for this device; throws UNSUPPORTED when none fits. */
export function chooseVariant(gpu: GpuContext, req: VariantRequest): HipMaskVariant {
  const o = req.options;
  const d = req.headDim;
  const n = o.topK / o.blockSizeK;
  const P = nextPow2(2 * n);
  const rowsMax = req.kind === 'decode' ? 1 : Math.ceil(o.blockSizeQ / o.blockStrideQ);
  const limit = gpu.limits.maxComputeWorkgroupStorageSize;
  const maxInv = Math.min(gpu.limits.maxComputeInvocationsPerWorkgroup, gpu.limits.maxComputeWorkgroupSizeX);

  let path: HipMaskPath;
  const cfg = pickMatrixConfig(gpu, req.dtype);
  const matrixShapeOk = d % 16 === 0;
  if (req.path === 'auto') {
    const sgSize = gpu.adapterInfo.subgroupMaxSize;
    path =
      cfg && matrixShapeOk && req.kind === 'prefill' && rowsMax >= cfg.M / 2 && (req.dtype === 'f32' || gpu.features.shaderF16) &&
      gpu.adapterInfo.subgroupMinSize === sgSize && sgSize >= cfg.N && sgSize % cfg.N === 0
        ? 'matrix'
        : 'scalar';
  } else {
    path = req.path;
  }
  if (path === 'matrix') {
    if (!cfg) {
      throw new HipAttnError(
        'UNSUPPORTED',
        `hip-mask: the 'matrix' path needs chromium-experimental-subgroup-matrix with a ${req.dtype}→f32 config; this adapter has ${
          gpu.features.subgroupMatrix ? JSON.stringify(gpu.adapterInfo.subgroupMatrixConfigs) : 'no subgroup matrices'
        }`,
      );
    }
    const sg = gpu.adapterInfo.subgroupMaxSize;
    if (gpu.adapterInfo.subgroupMinSize !== sg || sg < cfg.N || sg % cfg.N !== 0) {
      throw new HipAttnError('UNSUPPORTED', `hip-mask: the 'matrix' path needs a fixed subgroup size that is a multiple of ${cfg.N} (adapter: ${gpu.adapterInfo.subgroupMinSize}…${sg})`);
    }
  }
  if (path !== 'scalar') {
    if (req.dtype === 'f16' && !gpu.features.shaderF16) {
      throw new HipAttnError('UNSUPPORTED', `hip-mask: the '${path}' path with f16 storage needs shader-f16`);
    }
    if (!matrixShapeOk) throw new HipAttnError('UNSUPPORTED', `hip-mask: the '${path}' path needs headDim to be a multiple of 16 (got ${d})`);
  }

  const base = {
    dtype: req.dtype,
    path,
    headDim: d,
    nodes: n,
    sortSize: P,
    subgroupSort: 0,
    keysPerBlock: Math.ceil(o.blockSizeK / o.blockStrideK),
    reuse: req.reuse ?? true,
    representativeBlocks: o.representativeBlocks,
  };

  if (path === 'scalar') {
    const wg = req.workgroupSize ?? Math.min(req.kind === 'decode' ? 1024 : 256, maxInv);
    // Rows per pass over a key: more rows = fewer key reloads; software rasterizers (lavapipe,
    // SwiftShader) compile the unrolled accumulators slowly and gain nothing, so use 4 there.
    const rowBlock = Math.min(gpu.adapterInfo.isFallbackAdapter ? 4 : 8, rowsMax);
    let rowsCap = Math.ceil(rowsMax / rowBlock) * rowBlock;
    const make = (rows: number, rb: number): HipMaskVariant => ({
      ...base,
      subgroupSort: sortSubgroup(gpu, req.subgroupSort, wg, P),
      accurate: req.accurate ?? req.dtype === 'f32',
      vec4: d % 4 === 0,
      rowsCap: rows,
      rowBlock: rb,
      workgroupSize: wg,
    });
    let v = make(rowsCap, rowBlock);
    while (workgroupBytes(v) > limit && rowsCap > 1) {
      rowsCap = Math.max(1, Math.floor(rowsCap / 2));
      v = make(rowsCap, Math.min(rowBlock, rowsCap));
      if (v.rowsCap % v.rowBlock !== 0) v = make(rowsCap, 1);
    }
    checkFits(v, limit);
    return v;
  }

  const lean = (req.matrixKernel ?? 'lean') === 'lean';
  // 16×8×16 tiles (16 subgroups in the same workgroup memory) measured fastest on the H200
  // (bench/results/h200/hip-mask-lean.txt: 160 ms vs 202 ms for 16×16×16 at T=128k)
  const matrixN = req.matrixN ?? (path === 'matrix' && lean && pickMatrixConfig(gpu, req.dtype, 8) ? 8 : undefined);
  const tile =
    path === 'matrix'
      ? lean && matrixN
        ? pickMatrixConfig(gpu, req.dtype, matrixN)!
        : cfg!
      : { M: 16, N: lean && matrixN === 8 ? 8 : 16, K: 16 };
  const sgSize = path === 'matrix' ? gpu.adapterInfo.subgroupMaxSize : 32;
  const rowsCap = Math.ceil(rowsMax / tile.M) * tile.M;
  const maxSub = Math.max(1, Math.floor(maxInv / sgSize));
  let last: HipMaskVariant | null = null;
  if (lean) {
    // Expected best first: subgroups in pairs sharing each key tile (with 16-key tiles: 8
    // subgroups, 4 tiles per step, the workgroup memory of the classic 4-subgroup kernel with
    // twice the subgroups; with 8-key tiles: 16 subgroups), 2 steps of gathers in flight; then
    // smaller workgroups. A requested layout is a preference: where it does not split the row
    // tiles or fit (e.g. the one-row blocks of decode), the next one that does is taken.
    const wide = (16 / tile.N) * 8;
    const defaults: [number, number][] = [[wide, 2], [wide / 2, 2], [wide / 2, 1], [wide / 4, 1], [2, 1], [1, 1]];
    const layouts: [number, number][] = req.matrixSubgroups
      ? [[req.matrixSubgroups, req.matrixRowSplit ?? 2], [req.matrixSubgroups, 1], ...defaults]
      : req.matrixRowSplit
        ? [...[16, 8, 4, 2, 1].map((sg) => [sg, req.matrixRowSplit!] as [number, number]), ...defaults]
        : defaults;
    for (const [s, rs] of layouts) {
      if (s > maxSub || s % rs !== 0) continue;
      for (let rows = rowsCap; rows >= tile.M; rows -= tile.M) {
        if ((rows / tile.M) % rs !== 0) continue;
        const v: HipMaskVariant = {
          ...base,
          subgroupSort: sortSubgroup(gpu, req.subgroupSort, s * sgSize, P),
          accurate: false,
          vec4: true,
          rowsCap: rows,
          rowBlock: 1,
          workgroupSize: s * sgSize,
          matrix: {
            ...tile,
            subgroupSize: sgSize,
            subgroups: s,
            kernel: 'lean',
            rowSplit: rs,
            prefetch: req.matrixPrefetch ?? (rs === 2 ? 2 : 1),
            rotate: req.matrixRotate ?? true,
          },
        };
        if (leanLayout(v).problems.length) continue;
        last = v;
        if (workgroupBytes(v) <= limit) return v;
      }
    }
    if (!last) {
      throw new HipAttnError(
        'UNSUPPORTED',
        `hip-mask: no lean ${path} layout for ${req.matrixSubgroups ?? 'any number of'} subgroups, row split ${req.matrixRowSplit ?? 'any'}, ` +
          `${rowsCap} rows and subgroups of ${sgSize}`,
      );
    }
    checkFits(last, limit);
    return last;
  }
  const tries = req.matrixSubgroups ? [req.matrixSubgroups] : [4, 2, 1];
  for (const s of tries) {
    if (s > maxSub) continue;
    for (let rows = rowsCap; rows >= tile.M; rows -= tile.M) {
      const v: HipMaskVariant = {
        ...base,
        subgroupSort: sortSubgroup(gpu, req.subgroupSort, s * sgSize, P),
        accurate: false,
        vec4: true,
        rowsCap: rows,
        rowBlock: 1,
        workgroupSize: s * sgSize,
        matrix: { ...tile, subgroupSize: sgSize, subgroups: s, kernel: 'classic', qRegisters: req.matrixQRegisters ?? true },
      };
      last = v;
      if (workgroupBytes(v) <= limit) return v;
    }
  }
  checkFits(last!, limit);
  return last!;
}

function checkFits(v: HipMaskVariant, limit: number): void {
  const bytes = workgroupBytes(v);
  if (bytes > limit) {
    throw new HipAttnError(
      'UNSUPPORTED',
      `hip-mask: the ${v.path} kernel for topK/blockSizeK = ${v.nodes} nodes and headDim ${v.headDim} needs ${formatBytes(bytes)} of workgroup memory, ` +
        `over this device's maxComputeWorkgroupStorageSize of ${formatBytes(limit)}; use a smaller topK / blockSizeK ratio`,
    );
  }
}

/** One dispatch: a box of (batch, head group, query block) and its bindings. */
export interface DispatchBox {
  b0: number;
  nB: number;
  g0: number;
  nG: number;
  qb0: number;
  nQB: number;
}

export interface BindingRange {
  /** Byte offset and size of the binding. */
  offset: number;
  size: number;
  /** Element index (in the tensor's buffer) of the binding's first element. */
  firstElement: number;
}

export interface PlannedDispatch extends DispatchBox {
  q: BindingRange;
  k: BindingRange;
  out: BindingRange;
  gx: number;
  gy: number;
  total: number;
}

export interface PlanInput {
  shape: ResolvedShape;
  options: HipOptions;
  q: GpuTensor4;
  k: GpuTensor4;
  dtype: StorageType;
  outBuffer: GPUBuffer;
  numQueryBlocks: number;
  n: number;
}

/**
 * Splits the problem into dispatches whose bindings fit maxStorageBufferBindingSize (one
 * dispatch whenever everything fits). @throws HipAttnError('OUT_OF_MEMORY') when a single
 * (batch, head group, query block) needs more than one binding can hold.
 */
export function planDispatches(gpu: GpuContext, inp: PlanInput): PlannedDispatch[] {
  const { shape: s, options: o, q, k, n } = inp;
  const eb = inp.dtype === 'f16' ? 2 : 4;
  const G = o.headGroupSize;
  const ratio = s.heads / s.kvHeads;
  const limit = gpu.limits.maxStorageBufferBindingSize;
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const maxDim = gpu.limits.maxComputeWorkgroupsPerDimension;
  const d = s.headDim;

  const range = (first: number, endElem: number, bytesPer: number, buffer: GPUBuffer): BindingRange => {
    const startByte = Math.floor((first * bytesPer) / align) * align;
    const endByte = Math.min(buffer.size, Math.ceil((endElem * bytesPer) / 4) * 4);
    return { offset: startByte, size: endByte - startByte, firstElement: startByte / bytesPer };
  };
  const rangesOf = (x: DispatchBox) => {
    const h0 = x.g0 * G;
    const hLast = (x.g0 + x.nG) * G - 1;
    const bLast = x.b0 + x.nB - 1;
    const qbLast = x.qb0 + x.nQB - 1;
    const qOff = q.offset ?? 0;
    const kOff = k.offset ?? 0;
    const qFirst = qOff + x.b0 * q.strideBatch + h0 * q.strideHead + x.qb0 * o.blockSizeQ * q.strideToken;
    const qEnd = qOff + bLast * q.strideBatch + hLast * q.strideHead + (Math.min((qbLast + 1) * o.blockSizeQ, s.queryLength) - 1) * q.strideToken + d;
    const kFirst = kOff + x.b0 * k.strideBatch + Math.floor(h0 / ratio) * k.strideHead;
    const kEnd = kOff + bLast * k.strideBatch + Math.floor(hLast / ratio) * k.strideHead + (s.keyLength - 1) * k.strideToken + d;
    const oFirst = ((x.b0 * s.heads + h0) * inp.numQueryBlocks + x.qb0) * n;
    const oEnd = ((bLast * s.heads + hLast) * inp.numQueryBlocks + qbLast) * n + n;
    return {
      q: range(qFirst, qEnd, eb, q.buffer),
      k: range(kFirst, kEnd, eb, k.buffer),
      out: range(oFirst, oEnd, 4, inp.outBuffer),
    };
  };

  const out: PlannedDispatch[] = [];
  const visit = (x: DispatchBox): void => {
    const r = rangesOf(x);
    const total = x.nB * x.nG * x.nQB;
    const over = (b: BindingRange) => b.size > limit;
    const splitQb = () => {
      const h = Math.ceil(x.nQB / 2);
      visit({ ...x, nQB: h });
      visit({ ...x, qb0: x.qb0 + h, nQB: x.nQB - h });
    };
    const splitG = () => {
      const h = Math.ceil(x.nG / 2);
      visit({ ...x, nG: h });
      visit({ ...x, g0: x.g0 + h, nG: x.nG - h });
    };
    const splitB = () => {
      const h = Math.ceil(x.nB / 2);
      visit({ ...x, nB: h });
      visit({ ...x, b0: x.b0 + h, nB: x.nB - h });
    };
    if (over(r.k)) {
      if (x.nG > 1) return splitG();
      if (x.nB > 1) return splitB();
      throw new HipAttnError(
        'OUT_OF_MEMORY',
        `hip-mask: the keys of one (batch, KV head) need a ${formatBytes(r.k.size)} storage binding, over this device's ` +
          `maxStorageBufferBindingSize of ${formatBytes(limit)} (keyLength ${s.keyLength}, headDim ${d}, ${inp.dtype}, token stride ${k.strideToken})`,
      );
    }
    if (over(r.q) || over(r.out) || total > maxDim * maxDim) {
      if (x.nQB > 1) return splitQb();
      if (x.nG > 1) return splitG();
      if (x.nB > 1) return splitB();
      const which = over(r.q) ? ['queries', r.q.size] : ['mask', r.out.size];
      throw new HipAttnError(
        'OUT_OF_MEMORY',
        `hip-mask: the ${which[0]} of one query block need a ${formatBytes(which[1] as number)} storage binding, over this device's ` +
          `maxStorageBufferBindingSize of ${formatBytes(limit)}`,
      );
    }
    const gx = Math.min(total, maxDim);
    out.push({ ...x, ...r, gx, gy: Math.ceil(total / gx), total });
  };
  visit({ b0: 0, nB: s.batch, g0: 0, nG: s.heads / G, qb0: 0, nQB: inp.numQueryBlocks });
  return out;
}

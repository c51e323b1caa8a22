/**
 * Host side of the matmul family: a `GpuLinear` is one linear layer bound to its buffers
 * (weight, optional bias, input x, output y), with bind groups and uniforms made once, so that
 * encoding it per forward step costs one `setPipeline` / `setBindGroup` / `dispatch` per
 * weight chunk. The kernel is picked per call by the number of tokens M (see `chooseKind`), or
 * forced with `kind`.
 *
 * Weights larger than one storage binding (e.g. a 128k × 4096 lm_head on a device with
 * 128 MiB bindings) are split into row chunks, each bound separately and writing its own
 * columns of y.
 */
import { HipAttnError } from '../../errors.js';
import {
  BufferUsage,
  type CompiledPipeline,
  type GpuContext,
  planBindingChunks,
  type SubgroupMatrixConfig,
} from '../../gpu/index.js';
import { bytesOf, checkU32, grid2d } from '../common.js';
import type { StorageType } from '../types.js';
import {
  FLAG_ACCUMULATE,
  FLAG_BIAS,
  type GemvVariant,
  MATMUL_PARAMS,
  type MatmulKind,
  type MatmulVariant,
  type SubgroupMatrixShape,
  type SubgroupMatrixVariant,
  matmulWgsl,
  subgroupMatrixTile,
  tiledTile,
  variantName,
} from './wgsl.js';

export const MATMUL_BINDINGS: ('uniform' | 'read-only-storage' | 'storage')[] = ['uniform', 'read-only-storage', 'read-only-storage', 'read-only-storage', 'storage'];

export interface GemvTuning {
  workgroupSize: number;
  rows: number;
  tokens: number;
}

export interface SubgroupMatrixTuning {
  perSubgroup: [number, number];
  subgroups: [number, number];
  kTile: number;
  /** Double-buffered staging with register prefetch (see SubgroupMatrixVariant.doubleBuffer). */
  doubleBuffer: boolean;
}

/** Defaults: chosen for NVIDIA (32-wide subgroups) and sane elsewhere; the H200 bench sweeps them. */
export const DEFAULT_GEMV: GemvTuning = { workgroupSize: 256, rows: 4, tokens: 1 };
export const DEFAULT_TILED = { TM: 4, TN: 4 };
export const DEFAULT_DIRECT = { TM: 4, TN: 8, workgroupSize: 32 };
/** On CPU rasterisers (lavapipe) fewer, fatter threads are faster. */
export const FALLBACK_TILED = { TM: 8, TN: 8 };
/**
 * 128×128 output tiles, 8 subgroups of 32×64, K tiles of 32 double-buffered: 85 TFLOP/s on the
 * 14336×4096 and 4096×14336 shapes on an H100 (2026-12-07; BENCHMARKS.md, "GEMM"), 3.9x the old
 * 64×128 single-buffered default. Needs 48 KiB of workgroup memory; `fittingTiling` falls back
 * on devices with less.
 */
export const DEFAULT_SUBGROUP_MATRIX: SubgroupMatrixTuning = { perSubgroup: [2, 4], subgroups: [4, 2], kTile: 32, doubleBuffer: true };
/** Tried in order when the default tiling does not fit the device's workgroup limits. */
const FALLBACK_SUBGROUP_MATRIX: SubgroupMatrixTuning[] = [
  { perSubgroup: [2, 4], subgroups: [4, 2], kTile: 32, doubleBuffer: false },
  { perSubgroup: [2, 4], subgroups: [2, 2], kTile: 32, doubleBuffer: false },
  { perSubgroup: [1, 2], subgroups: [2, 2], kTile: 16, doubleBuffer: false },
];

/**
 * For tests on adapters without subgroup matrices: run the subgroup-matrix kernel with
 * plain-WGSL stand-ins for the builtins, with this matrix shape and virtual subgroup width.
 */
export interface SubgroupMatrixEmulation {
  shape: SubgroupMatrixShape;
  subgroupSize: number;
}

export type MatmulChoice = 'auto' | MatmulKind | { single: MatmulKind; multi: MatmulKind };

export interface LinearOptions {
  label?: string;
  /** [N, K] row-major. */
  weight: GPUBuffer;
  weightType: StorageType;
  N: number;
  K: number;
  /** f32 [N]. */
  bias?: GPUBuffer;
  x: GPUBuffer;
  input: StorageType;
  /** Row stride of x in elements (default K). */
  ldx?: number;
  /** Initial element offset of x's row 0 (default 0; changeable per call with `set`). */
  xOffset?: number;
  y: GPUBuffer;
  output: StorageType;
  /** Row stride of y in elements (default N). */
  ldy?: number;
  yOffset?: number;
  /** y += x·Wᵀ (+ bias). */
  accumulate?: boolean;
  /**
   * Kernel choice: 'auto' (default) picks by M and the device (`chooseKind`); a kind forces it
   * for every M; `{ single, multi }` forces one kind for M = 1 and another for M > 1.
   */
  kind?: MatmulChoice;
  gemv?: Partial<GemvTuning>;
  tiled?: Partial<{ TM: number; TN: number }>;
  direct?: Partial<{ TM: number; TN: number; workgroupSize: number }>;
  subgroupMatrix?: Partial<SubgroupMatrixTuning>;
  /** Testing: emulate the subgroup-matrix kernel (works on any adapter). */
  emulateSubgroupMatrix?: SubgroupMatrixEmulation;
  /** Testing: cap on a weight binding's bytes, to exercise row chunking. */
  maxBindingBytes?: number;
  /** Rolled loops for fast compilation (default: on fallback adapters such as lavapipe). */
  compact?: boolean;
  /**
   * Another layer of the same shape (N, K, strides, chunking) whose uniform buffers this one
   * reuses: one `set` on either serves both (e.g. the same projection in every model layer).
   */
  shareParamsWith?: GpuLinear;
}

/** The f16 × f16 → f32 subgroup-matrix config the tensor-core kernel uses, or null. */
export function pickSubgroupMatrixConfig(gpu: GpuContext): SubgroupMatrixConfig | null {
  if (!gpu.features.subgroupMatrix || !gpu.features.shaderF16) return null;
  const ok = gpu.adapterInfo.subgroupMatrixConfigs.filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32');
  // Prefer the largest square-ish K (16x16x16 on NVIDIA, 8x8x8 on Apple).
  ok.sort((a, b) => b.M * b.N * b.K - a.M * a.N * a.K);
  return ok[0] ?? null;
}

/**
 * Which kernel 'auto' uses for M tokens: on GPUs GEMV for one token, else tensor cores where
 * available, else tiled; on CPU rasterisers (fallback adapters: lavapipe, SwiftShader) the
 * barrier-free direct kernel for every M.
 */
export function chooseKind(gpu: GpuContext, M: number, weightType: StorageType): MatmulKind {
  if (gpu.adapterInfo.isFallbackAdapter) return 'direct';
  if (M === 1) return 'gemv';
  if (weightType === 'f16' && pickSubgroupMatrixConfig(gpu)) return 'subgroup-matrix';
  return 'tiled';
}

let dummyBias = new WeakMap<GPUDevice, GPUBuffer>();
function emptyBias(device: GPUDevice): GPUBuffer {
  let b = dummyBias.get(device);
  if (!b) {
    b = device.createBuffer({ label: 'matmul: no bias', size: 16, usage: BufferUsage.STORAGE });
    dummyBias.set(device, b);
  }
  return b;
}
/** Testing hook: forget cached per-device buffers. */
export function _resetMatmulCaches(): void {
  dummyBias = new WeakMap();
}

interface Chunk {
  rows: number;
  rowStart: number;
  params: GPUBuffer;
  bindGroup: GPUBindGroup;
  gemvGridX: number;
  gemvGridY: number;
}

interface Values {
  M: number;
  xOffset: number;
  yOffset: number;
}

export class GpuLinear {
  readonly label: string;
  readonly N: number;
  readonly K: number;
  private readonly chunks: Chunk[];
  /** By `pipeKey`. */
  private readonly pipelines = new Map<string, { compiled: CompiledPipeline; variant: MatmulVariant }>();
  /** Shared by every GpuLinear that shares this one's uniform buffers. */
  private state: { values: Values; owner: GpuLinear };

  private constructor(
    readonly gpu: GpuContext,
    readonly options: LinearOptions,
    chunks: Chunk[],
  ) {
    this.label = options.label ?? 'linear';
    this.N = options.N;
    this.K = options.K;
    this.chunks = chunks;
    this.state = { values: { M: 1, xOffset: options.xOffset ?? 0, yOffset: options.yOffset ?? 0 }, owner: this };
  }

  /** Binds the buffers and compiles the kernels this layer may use. */
  static async create(gpu: GpuContext, o: LinearOptions): Promise<GpuLinear> {
    const label = o.label ?? 'linear';
    checkU32(`${label}: N`, o.N);
    checkU32(`${label}: K`, o.K);
    if (o.N < 1 || o.K < 1) throw new HipAttnError('INVALID_OPTION', `${label}: N and K must be ≥ 1 (got ${o.N}, ${o.K})`);
    const device = gpu.device;
    const wBytes = bytesOf(o.weightType);
    const limits = o.maxBindingBytes
      ? { ...gpu.limits, maxStorageBufferBindingSize: Math.min(gpu.limits.maxStorageBufferBindingSize, o.maxBindingBytes) }
      : gpu.limits;
    // Row chunks: whole rows, 16-byte aligned rows for the vector loads when K allows.
    const plan = planBindingChunks(o.N * o.K, wBytes, limits as unknown as GpuContext['limits'], { granuleElements: o.K });
    if (o.N * o.K * wBytes > o.weight.size) {
      throw new HipAttnError('SHAPE_MISMATCH', `${label}: weight buffer "${o.weight.label}" holds ${o.weight.size} bytes, [${o.N}, ${o.K}] ${o.weightType} needs ${o.N * o.K * wBytes}`);
    }
    const layer = new GpuLinear(gpu, o, []);
    await layer.compile();
    const anyPipeline = [...layer.pipelines.values()][0]!.compiled;
    const R = layer.gemvTuning().rows;
    for (const c of plan) {
      const rows = c.elementCount / o.K;
      const rowStart = c.firstElement / o.K;
      const shared = o.shareParamsWith?.chunks[layer.chunks.length];
      if (o.shareParamsWith && (!shared || shared.rows !== rows || shared.rowStart !== rowStart)) {
        throw new HipAttnError('INVALID_OPTION', `${label}: shareParamsWith "${o.shareParamsWith.label}" has a different shape or chunking`);
      }
      const params = shared ? shared.params : device.createBuffer({ label: `${label} params`, size: MATMUL_PARAMS.byteLength, usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST });
      const [gx, gy] = grid2d(Math.ceil(rows / R), gpu.limits.maxComputeWorkgroupsPerDimension);
      const bindGroup = device.createBindGroup({
        label: `${label} chunk ${layer.chunks.length}`,
        layout: anyPipeline.bindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: params } },
          { binding: 1, resource: { buffer: o.x } },
          { binding: 2, resource: { buffer: o.weight, offset: c.offset, size: c.size } },
          { binding: 3, resource: { buffer: o.bias ?? emptyBias(device) } },
          { binding: 4, resource: { buffer: o.y } },
        ],
      });
      layer.chunks.push({ rows, rowStart, params, bindGroup, gemvGridX: gx, gemvGridY: gy });
    }
    if (o.shareParamsWith) layer.state = o.shareParamsWith.state;
    else layer.set({});
    return layer;
  }

  private gemvTuning(): GemvTuning {
    return { ...DEFAULT_GEMV, ...(this.options.gemv ?? {}) };
  }

  /** The direct kernel has a one-token variant (TM = 1): decoding on CPU rasterisers. */
  private pipeKey(kind: MatmulKind, M: number): string {
    return kind === 'direct' && M === 1 && !this.options.direct?.TM ? 'direct-1' : kind;
  }

  /** The variant descriptor of a kind for this layer's operands (for M tokens). */
  variant(kind: MatmulKind, M = 2): MatmulVariant {
    const o = this.options;
    const base = { weight: o.weightType, input: o.input, output: o.output, compact: o.compact ?? this.gpu.adapterInfo.isFallbackAdapter };
    const ldx = o.ldx ?? o.K;
    // Vector loads need every row start of x and W on an 8-element boundary. xOffset may change
    // per call, so it is required to stay a multiple of 8 (checked in set()).
    const vector = o.K % 8 === 0 && ldx % 8 === 0 && (o.xOffset ?? 0) % 8 === 0;
    switch (kind) {
      case 'gemv': {
        const t = this.gemvTuning();
        const v: GemvVariant = { kind, ...base, ...t, vector, subgroups: this.gpu.features.subgroups };
        return v;
      }
      case 'tiled':
        return { kind, ...base, ...(base.compact ? FALLBACK_TILED : DEFAULT_TILED), ...(o.tiled ?? {}) };
      case 'direct': {
        const vec4 = o.K % 4 === 0 && ldx % 4 === 0 && (o.xOffset ?? 0) % 4 === 0;
        const one = this.pipeKey(kind, M) === 'direct-1' ? { TM: 1, TN: 4 } : {};
        return { kind, ...base, ...DEFAULT_DIRECT, ...one, ...(o.direct ?? {}), vector: vec4 };
      }
      case 'subgroup-matrix': {
        const t = { ...DEFAULT_SUBGROUP_MATRIX, ...(o.subgroupMatrix ?? {}) };
        const emu = o.emulateSubgroupMatrix;
        let shape: SubgroupMatrixShape;
        let subgroupSize: number;
        if (emu) {
          shape = emu.shape;
          subgroupSize = emu.subgroupSize;
        } else {
          const cfg = pickSubgroupMatrixConfig(this.gpu);
          if (!cfg) {
            throw new HipAttnError(
              'UNSUPPORTED',
              `${this.label}: the subgroup-matrix (tensor-core) matmul needs 'chromium-experimental-subgroup-matrix' with an f16→f32 config and shader-f16; this adapter has ${
                this.gpu.features.subgroupMatrix ? `configs ${JSON.stringify(this.gpu.adapterInfo.subgroupMatrixConfigs)}` : 'no subgroup matrices'
              }`,
            );
          }
          shape = { M: cfg.M, N: cfg.N, K: cfg.K };
          subgroupSize = this.gpu.adapterInfo.subgroupMaxSize || 32;
        }
        const make = (t: SubgroupMatrixTuning): SubgroupMatrixVariant => ({
          kind,
          ...base,
          shape,
          subgroupSize,
          perSubgroup: t.perSubgroup,
          subgroups: t.subgroups,
          kTile: Math.max(t.kTile, shape.K, 8),
          vector,
          doubleBuffer: t.doubleBuffer,
          emulate: !!emu,
        });
        // An explicit tiling is used as given (compile() refuses it if it does not fit); the
        // default degrades to the first fallback that fits the device.
        if (o.subgroupMatrix) return make(t);
        return [t, ...FALLBACK_SUBGROUP_MATRIX].map(make).find((v) => this.fits(v)) ?? make(t);
      }
    }
  }

  private fits(v: SubgroupMatrixVariant): boolean {
    const { sharedBytes, threads } = subgroupMatrixTile(v);
    return sharedBytes <= this.gpu.limits.maxComputeWorkgroupStorageSize && threads <= this.gpu.limits.maxComputeInvocationsPerWorkgroup;
  }

  private async compile(): Promise<void> {
    const wanted = new Map<string, MatmulVariant>();
    for (const M of [1, 2]) {
      const kind = this.kindFor(M);
      wanted.set(this.pipeKey(kind, M), this.variant(kind, M));
    }
    for (const [key, variant] of wanted) {
      if (variant.kind === 'subgroup-matrix') {
        const { sharedBytes, threads } = subgroupMatrixTile(variant);
        if (!this.fits(variant)) {
          throw new HipAttnError('UNSUPPORTED', `${this.label}: ${variantName(variant)} needs ${sharedBytes} bytes of workgroup memory and ${threads} threads; the device allows ${this.gpu.limits.maxComputeWorkgroupStorageSize} and ${this.gpu.limits.maxComputeInvocationsPerWorkgroup}`);
        }
      }
      const compiled = await this.gpu.pipelines.computePipeline({
        name: `matmul/${variantName(variant)}`,
        code: matmulWgsl(variant),
        bindings: [MATMUL_BINDINGS],
      });
      this.pipelines.set(key, { compiled, variant });
    }
  }

  /** The kernel used for M tokens. */
  kindFor(M: number): MatmulKind {
    const k = this.options.kind ?? 'auto';
    if (k === 'auto') return chooseKind(this.gpu, M, this.options.weightType);
    if (typeof k === 'object') return M === 1 ? k.single : k.multi;
    return k;
  }

  /** The variant descriptor used for M tokens (for logs and benchmarks). */
  variantFor(M: number): MatmulVariant {
    return this.pipelines.get(this.pipeKey(this.kindFor(M), M))!.variant;
  }

  /**
   * Sets the token count and (optionally) new x / y offsets; writes the uniforms (queued, so
   * they apply to work submitted after this call). Encode once per submission per values.
   */
  set(values: Partial<Values>): void {
    const v = { ...this.state.values, ...values };
    checkU32(`${this.label}: M`, v.M);
    if (v.M < 1) throw new HipAttnError('INVALID_OPTION', `${this.label}: M must be ≥ 1`);
    const startOffset = this.options.xOffset ?? 0;
    if (startOffset % 8 === 0 && v.xOffset % 8 !== 0 && this.K % 8 === 0) {
      throw new HipAttnError('INVALID_OPTION', `${this.label}: xOffset ${v.xOffset} must stay a multiple of 8 (vectorised loads)`);
    }
    this.state.values = v;
    const ldx = this.options.ldx ?? this.K;
    const ldy = this.options.ldy ?? this.N;
    for (const c of this.chunks) {
      const data = MATMUL_PARAMS.pack({
        M: v.M,
        N: c.rows,
        K: this.K,
        ldx,
        ldy,
        xOffset: v.xOffset,
        yOffset: v.yOffset,
        nOffset: c.rowStart,
        gridX: c.gemvGridX,
        flags: (this.options.bias ? FLAG_BIAS : 0) | (this.options.accumulate ? FLAG_ACCUMULATE : 0),
        lim: 0xffffffff,
      });
      this.gpu.device.queue.writeBuffer(c.params, 0, data);
    }
  }

  /** Current M. */
  get M(): number {
    return this.state.values.M;
  }

  /** Records the dispatches for the M set last. */
  encode(pass: GPUComputePassEncoder): void {
    const M = this.state.values.M;
    const kind = this.kindFor(M);
    const p = this.pipelines.get(this.pipeKey(kind, M));
    if (!p) throw new HipAttnError('INVALID_OPTION', `${this.label}: kernel ${kind} was not compiled (kind option ${JSON.stringify(this.options.kind)})`);
    pass.setPipeline(p.compiled.pipeline);
    const maxDim = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    for (const c of this.chunks) {
      pass.setBindGroup(0, c.bindGroup);
      const v = p.variant;
      if (v.kind === 'gemv') {
        const z = Math.ceil(M / v.tokens);
        if (z > maxDim) throw new HipAttnError('INVALID_OPTION', `${this.label}: gemv with ${M} tokens exceeds the dispatch limit`);
        pass.dispatchWorkgroups(c.gemvGridX, c.gemvGridY, z);
      } else if (v.kind === 'direct') {
        const gx = Math.ceil(c.rows / (v.TN * v.workgroupSize));
        const gy = Math.ceil(M / v.TM);
        if (gx > maxDim || gy > maxDim) throw new HipAttnError('INVALID_OPTION', `${this.label}: ${gx}×${gy} workgroups exceed the dispatch limit ${maxDim}`);
        pass.dispatchWorkgroups(gx, gy);
      } else {
        const { BM, BN } = v.kind === 'tiled' ? tiledTile(v) : subgroupMatrixTile(v);
        const gx = Math.ceil(c.rows / BN);
        const gy = Math.ceil(M / BM);
        if (gx > maxDim || gy > maxDim) throw new HipAttnError('INVALID_OPTION', `${this.label}: ${gx}×${gy} workgroups exceed the dispatch limit ${maxDim}`);
        pass.dispatchWorkgroups(gx, gy);
      }
    }
  }

  /** FLOPs of one call with M tokens (2·M·N·K). */
  flops(M = this.state.values.M): number {
    return 2 * M * this.N * this.K;
  }

  destroy(): void {
    if (this.state.owner === this) for (const c of this.chunks) c.params.destroy();
    this.chunks.length = 0;
  }
}

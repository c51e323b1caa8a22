/**
 * Attention kernels on WebGPU: exact softmax attention of queries over their key sets (dense,
 * StreamingLLM, HiP with a GpuHipMask), prefill ("flash attention") and decode ("flash
 * decoding": split-K plus a reduce kernel).
 *
 *     const attn = await createAttentionKernels(gpu, { dtype: 'f16', headDim: 128 });
 *     const enc = gpu.device.createCommandEncoder();
 *     await attn.encode(enc, problem, { kind: 'hip', mask });   // prefill or decode by queryLength
 *     gpu.device.queue.submit([enc.finish()]);
 *
 * Pipelines are compiled once per variant (gpu.pipelines); uniforms live in a ring of slots
 * written with queue.writeBuffer at encode time, so at most `uniformSlots` dispatches may be
 * encoded between two submits (default 1024; an encode() takes 1–2 slots per binding chunk).
 * Split-K scratch is allocated once and grown when needed. No readbacks.
 *
 * Tensors larger than maxStorageBufferBindingSize are bound in sub-ranges: one dispatch per
 * (batch, KV head group) and, if needed, per range of query tiles; a K/V slice of one
 * (batch, KV head) that still does not fit throws HipAttnError('OUT_OF_MEMORY').
 */
import { HipAttnError, ShapeError } from '../../errors.js';
import { BufferUsage, formatBytes, type CompiledPipeline, type GpuContext, isSoftwareAdapter, type TimedEncoder } from '../../gpu/index.js';
import type { GpuAttentionProblem, GpuKeySet, GpuTensor4, StorageType } from '../types.js';
import { AttnParams, type AttnParamValues } from './keyset-wgsl.js';
import { plainVariantName, plainWgsl, plainWorkgroupBytes, type PlainVariant } from './flash-plain.wgsl.js';
import { reduceVariantName, reduceWgsl } from './reduce.wgsl.js';
import { decodeUnsupported, decodeVariantName, decodeWgsl, decodeWorkgroupBytes, reduce2VariantName, reduce2Wgsl, type DecodeVariant, type Reduce2Variant } from './decode.wgsl.js';
import { mmaVariantName, mmaWgsl, mmaWorkgroupBytes, pickMmaConfig, type MmaVariant } from './flash-mma.wgsl.js';
import { MMA2_DEFAULTS, mma2VariantName, mma2Wgsl, mma2WorkgroupBytes, pickMma2Config, type Mma2Config, type Mma2Variant } from './flash-mma2.wgsl.js';
import { attentionCost, type AttentionCost, type CostKeySet } from './cost.js';
import { bytesOf } from '../common.js';

export { attentionCost, type AttentionCost, type CostKeySet } from './cost.js';
export { plainWgsl, type PlainVariant } from './flash-plain.wgsl.js';
export { mmaWgsl, pickMmaConfig, type MmaVariant } from './flash-mma.wgsl.js';
export { MMA2_DEFAULTS, mma2Wgsl, pickMma2Config, type Mma2Variant } from './flash-mma2.wgsl.js';

/**
 * Defaults of the subgroup decode kernel (set from the H200 sweep): lanes per key (capped by
 * the subgroup size and the row's 16-byte chunks), keys per step (G ≤ 4 / G > 4), invocations,
 * and the workgroups a decode dispatch aims for.
 */
export const DECODE_DEFAULTS = { lanes: 16, keys: 4, keysLargeGroup: 2, wg: 128, targetWorkgroups: 1024 };
export { reduceWgsl } from './reduce.wgsl.js';
export { decodeWgsl, reduce2Wgsl, type DecodeVariant } from './decode.wgsl.js';

/**
 * Which decode (split-K) kernel to use: 'subgroup' (lanes share a key, 16-byte loads, subgroup
 * reductions, parallel reduce; needs the 'subgroups' feature and G ≤ 8), 'plain', or auto
 * ('subgroup' where available).
 */
export type DecodePath = 'auto' | 'plain' | 'subgroup';

/**
 * Which prefill kernel to use: tensor cores (subgroup matrices: 'mma2' the pipelined kernel,
 * 'mma' the first one), the plain kernel, or auto; '-emulated' runs a tensor-core kernel's code
 * with the subgroup-matrix operations emulated in plain WGSL (tests).
 */
export type PrefillPath = 'auto' | 'plain' | 'mma' | 'mma-emulated' | 'mma2' | 'mma2-emulated';

export interface AttentionKernelOptions {
  dtype: StorageType;
  headDim: number;
  /**
   * Prefill kernel. 'auto' (default): 'mma' where the device has subgroup matrices with an
   * f16 → f32 square config and dtype is f16, else 'plain'. 'mma-emulated' runs the tensor-core
   * kernel's exact code structure with subgroup-matrix operations emulated in plain WGSL (slow;
   * for testing the kernel logic on devices without the feature).
   */
  prefill?: PrefillPath;
  /** Tile configuration of the mma prefill kernel (default: the largest that fits). */
  mma?: { warps?: number; bk?: number; rescaleThreshold?: number };
  /**
   * Configuration of the pipelined tensor-core kernel ('mma2', flash-mma2.wgsl.ts): warps,
   * key tile, 16-row fragments per warp, 'workgroup' or 'subgroup' sync (the latter: real
   * tensor cores only), Q fragments from workgroup memory, 16-byte loads (default: where
   * offsets allow), HiP block list in workgroup memory (default: yes when ≤ 1024 blocks),
   * `direct`: K/V matrices of tiles valid for every row loaded straight from the buffers.
   * Default: 4 warps, key tiles of 16, 1 fragment, 'workgroup' sync.
   */
  mma2?: { warps?: number; bk?: number; rows?: number; sync?: 'workgroup' | 'subgroup'; qSmem?: boolean; ld16?: boolean; blockList?: boolean; direct?: boolean; rescaleThreshold?: number };
  /** Decode kernel (default 'auto': 'subgroup' where the device has subgroups and G ≤ 8). */
  decode?: DecodePath;
  /**
   * Subgroup decode kernel tiling: lanes per key (default: 16-byte chunks of a row, at most
   * the subgroup size and 16), keys per lane group and step (default 4; 2 when G > 4),
   * invocations per workgroup (default 128), and 16-byte loads (default: where the K/V
   * offsets and strides allow).
   */
  decodeKernel?: { lanes?: number; keys?: number; wg?: number; ld16?: boolean; merge?: number };
  /** encode() uses the decode (split-K) path for queryLength ≤ this. Default 1. */
  decodeMaxQueries?: number;
  /** Split-K: aim for about this many workgroups per decode dispatch. Default 1024. */
  decodeTargetWorkgroups?: number;
  /** Cap on the bytes of one storage binding below the device limit (tests). */
  maxBindingBytes?: number;
  /** Uniform ring slots (dispatches encodable between submits). Default 1024. */
  uniformSlots?: number;
  /**
   * Let the shader compiler unroll the kernels' inner loops. Default: yes on GPUs, no on
   * software adapters (lavapipe, SwiftShader), whose LLVM spends tens of seconds per variant
   * unrolling them.
   */
  unrollLoops?: boolean;
}


/** Something to begin compute passes on: a command encoder, or a GpuTimer's TimedEncoder. */
export type PassTarget = GPUCommandEncoder | TimedEncoder;

export interface DecodeOptions {
  /** Force the number of key splits (default: chosen from decodeTargetWorkgroups). */
  splits?: number;
}

/** A decode kernel choice: the split kernel and its reduce. */
type DecodeChoice =
  | { kind: 'plain'; split: PlainVariant; reduce: { dtype: StorageType; headDim: number; rowsQ: number; rowsH: number } }
  | { kind: 'subgroup'; split: DecodeVariant; reduce: Reduce2Variant };

export interface AttentionKernels {
  readonly dtype: StorageType;
  readonly headDim: number;
  /** The prefill kernel in use ('plain', 'mma' or 'mma-emulated'). */
  readonly prefillPath: Exclude<PrefillPath, 'auto'>;
  /** The decode kernel in use where the problem allows it ('subgroup' or 'plain'). */
  readonly decodePath: Exclude<DecodePath, 'auto'>;
  /** Pipeline names a problem would use (for benchmark labels). */
  describe(problem: GpuAttentionProblem, keySet: GpuKeySet, mode?: 'prefill' | 'decode'): string;
  /** Prefill when queryLength > decodeMaxQueries, else decode. */
  encode(target: PassTarget, problem: GpuAttentionProblem, keySet: GpuKeySet): Promise<void>;
  /** Flash attention over tiles of queries (any queryLength). */
  encodePrefill(target: PassTarget, problem: GpuAttentionProblem, keySet: GpuKeySet): Promise<void>;
  /** Split-K flash decoding (any queryLength, meant for a few queries): split kernel + reduce. */
  encodeDecode(target: PassTarget, problem: GpuAttentionProblem, keySet: GpuKeySet, options?: DecodeOptions): Promise<void>;
  /**
   * Synchronous encode for callers that cannot await between commands (e.g. inside a
   * GpuTimer callback): the pipelines must have been compiled by `prepare` (or an earlier
   * encode) — otherwise throws HipAttnError('GPU').
   */
  encodeSync(target: PassTarget, problem: GpuAttentionProblem, keySet: GpuKeySet, mode?: 'prefill' | 'decode', options?: DecodeOptions): void;
  /** Compiles the pipelines a problem needs (encode does it on first use). */
  prepare(problem: GpuAttentionProblem, keySet: GpuKeySet, mode?: 'prefill' | 'decode'): Promise<void>;
  /** Useful FLOPs and minimal bytes of a problem (see cost.ts). */
  cost(problem: GpuAttentionProblem, keySet: GpuKeySet): AttentionCost;
  /** Frees the uniform ring and scratch buffers. */
  destroy(): void;
}

const BIG_WINDOW = 1 << 30;
const PLAIN_PREFILL = { rowsQ: 16, bk: 16, wg: 128 };
const DECODE_BK = 32;
const BINDINGS = [['uniform', 'read-only-storage', 'read-only-storage', 'read-only-storage', 'storage', 'read-only-storage', 'storage']] as const;
/** Plus f16 views of K (7) and V (8): the mma2 kernel's direct matrix loads. */
const BINDINGS_KV = [[...BINDINGS[0], 'read-only-storage', 'read-only-storage']] as const;

interface ResolvedKeySet {
  hip: boolean;
  sink: number;
  window: number;
  /** HiP only. */
  bsq: number;
  bsk: number;
  bpq: number;
  mask?: GPUBuffer;
  nQB?: number;
  cost: CostKeySet;
}

interface Range {
  start: number; // first element
  end: number; // one past the last element
}

function log2(x: number): number {
  return Math.log(x) / Math.LN2;
}

/** Creates the attention kernels for one storage type and head dimension. */
export async function createAttentionKernels(gpu: GpuContext, options: AttentionKernelOptions): Promise<AttentionKernels> {
  const { dtype, headDim: D } = options;
  if (dtype !== 'f16' && dtype !== 'f32') throw new HipAttnError('INVALID_OPTION', `dtype must be 'f16' or 'f32', got ${String(dtype)}`);
  if (!Number.isInteger(D) || D < 4 || D % 4 !== 0 || D > 512) {
    throw new HipAttnError('UNSUPPORTED', `attention kernels need headDim a multiple of 4 in [4, 512], got ${D}`);
  }
  if (dtype === 'f16' && !gpu.features.shaderF16) {
    throw new HipAttnError('UNSUPPORTED', `f16 attention needs the 'shader-f16' feature, which this device lacks: use dtype 'f32'`);
  }
  const eb = bytesOf(dtype);
  const device = gpu.device;
  const limits = gpu.limits;
  const maxBinding = Math.min(limits.maxStorageBufferBindingSize, options.maxBindingBytes ?? Infinity);
  const wgMem = limits.maxComputeWorkgroupStorageSize;
  const unroll = options.unrollLoops ?? !isSoftwareAdapter(gpu.adapterInfo);

  // ---- prefill path selection
  let prefillPath: Exclude<PrefillPath, 'auto'> = 'plain';
  let mmaCfg: { m: number; sg: number; warps: number; bk: number } | null = null;
  let mma2Cfg: Mma2Config | null = null;
  const want = options.prefill ?? 'auto';
  if (want === 'mma2' || want === 'mma2-emulated' || want === 'auto') {
    const cfg = pickMma2Config(gpu, { dtype, headDim: D, emulate: want === 'mma2-emulated', ...(options.mma2 ?? {}) });
    if (cfg.ok) {
      prefillPath = want === 'mma2-emulated' ? 'mma2-emulated' : 'mma2';
      mma2Cfg = cfg.config;
    } else if (want !== 'auto') {
      throw new HipAttnError('UNSUPPORTED', `prefill path '${want}' is not available: ${cfg.why}`);
    }
  }
  if (!mma2Cfg && (want === 'mma' || want === 'mma-emulated' || want === 'auto')) {
    const cfg = pickMmaConfig(gpu, { dtype, headDim: D, emulate: want === 'mma-emulated', ...(options.mma ?? {}) });
    if (cfg.ok) {
      prefillPath = want === 'mma-emulated' ? 'mma-emulated' : 'mma';
      mmaCfg = cfg.config;
    } else if (want !== 'auto') {
      throw new HipAttnError('UNSUPPORTED', `prefill path '${want}' is not available: ${cfg.why}`);
    }
  }

  // ---- decode path selection
  const sgMin = gpu.adapterInfo.subgroupMinSize > 0 ? gpu.adapterInfo.subgroupMinSize : 4;
  const wantDecode = options.decode ?? 'auto';
  if (wantDecode === 'subgroup' && !gpu.features.subgroups) {
    throw new HipAttnError('UNSUPPORTED', `decode path 'subgroup' needs the 'subgroups' feature, which this device lacks`);
  }
  const decodePath: Exclude<DecodePath, 'auto'> = wantDecode === 'plain' || !gpu.features.subgroups ? 'plain' : 'subgroup';

  // ---- uniform ring
  const slotBytes = Math.max(256, limits.minUniformBufferOffsetAlignment ?? 256);
  const slots = options.uniformSlots ?? 1024;
  const ring = device.createBuffer({ label: 'attention uniforms', size: slots * slotBytes, usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST });
  let slotNext = 0;
  const dummyRO = device.createBuffer({ label: 'attention dummy ro', size: 256, usage: BufferUsage.STORAGE });
  const dummyRW = device.createBuffer({ label: 'attention dummy rw', size: 256, usage: BufferUsage.STORAGE });
  let scratch: GPUBuffer | null = null;
  const retired: GPUBuffer[] = [];

  function takeSlot(values: AttnParamValues): { buffer: GPUBuffer; offset: number; size: number } {
    const offset = slotNext * slotBytes;
    slotNext = (slotNext + 1) % slots;
    device.queue.writeBuffer(ring, offset, AttnParams.pack(values));
    return { buffer: ring, offset, size: AttnParams.byteLength };
  }

  function scratchBuffer(bytes: number): GPUBuffer {
    if (!scratch || scratch.size < bytes) {
      if (scratch) retired.push(scratch); // an encoded but unsubmitted pass may still use it
      const size = Math.max(bytes, scratch ? scratch.size * 2 : 0, 1 << 16);
      scratch = device.createBuffer({ label: 'attention split-K partials', size: Math.ceil(size / 16) * 16, usage: BufferUsage.STORAGE });
    }
    return scratch;
  }

  // ---- validation
  function resolveKeySet(problem: GpuAttentionProblem, keySet: GpuKeySet): ResolvedKeySet {
    const s = problem.shape;
    if (keySet.kind === 'dense') return { hip: false, sink: 0, window: BIG_WINDOW, bsq: 1, bsk: 1, bpq: 0, cost: { kind: 'dense' } };
    if (keySet.kind === 'streaming') {
      const { sinkTokens, slidingWindow } = keySet;
      if (!Number.isInteger(sinkTokens) || sinkTokens < 0 || !Number.isInteger(slidingWindow) || slidingWindow < 1) {
        throw new HipAttnError('INVALID_OPTION', `streaming key set needs integer sinkTokens ≥ 0 and slidingWindow ≥ 1, got ${sinkTokens}, ${slidingWindow}`);
      }
      return {
        hip: false,
        sink: sinkTokens,
        window: Math.min(slidingWindow, BIG_WINDOW),
        bsq: 1,
        bsk: 1,
        bpq: 0,
        cost: { kind: 'streaming', sinkTokens, slidingWindow },
      };
    }
    if (keySet.kind !== 'hip') throw new HipAttnError('INVALID_OPTION', `unknown key set kind ${String((keySet as { kind: unknown }).kind)}`);
    const m = keySet.mask;
    const o = m.options;
    const nQB = Math.ceil(s.queryLength / o.blockSizeQ);
    if (m.batch !== s.batch || m.heads !== s.heads) {
      throw new ShapeError(`HiP mask is for batch ${m.batch}, heads ${m.heads}; the problem has batch ${s.batch}, heads ${s.heads}`);
    }
    if (m.numQueryBlocks !== nQB && !(s.queryLength === 1 && m.numQueryBlocks >= 1)) {
      throw new ShapeError(
        `HiP mask has ${m.numQueryBlocks} query blocks but the problem's ${s.queryLength} queries make ${nQB} (blockSizeQ ${o.blockSizeQ}); ` +
          `only a single decode query may reuse a mask of another length (it reads the mask's last query block)`,
      );
    }
    const needBytes = m.batch * m.heads * m.numQueryBlocks * m.blocksPerQuery * 4;
    if (m.buffer.size < needBytes) throw new ShapeError(`HiP mask buffer holds ${m.buffer.size} bytes, its shape needs ${needBytes}`);
    return {
      hip: true,
      sink: o.sinkTokens,
      window: Math.min(o.slidingWindow, BIG_WINDOW),
      bsq: o.blockSizeQ,
      bsk: o.blockSizeK,
      bpq: m.blocksPerQuery,
      mask: m.buffer,
      nQB: m.numQueryBlocks,
      cost: { kind: 'hip', sinkTokens: o.sinkTokens, slidingWindow: o.slidingWindow, topK: m.blocksPerQuery * o.blockSizeK, blockSizeQ: o.blockSizeQ },
    };
  }

  function checkProblem(problem: GpuAttentionProblem): void {
    const s = problem.shape;
    if (problem.dtype !== dtype) throw new ShapeError(`problem dtype ${problem.dtype} but these kernels were created for ${dtype}`);
    if (s.headDim !== D) throw new ShapeError(`problem headDim ${s.headDim} but these kernels were created for headDim ${D}`);
    if (s.queryOffset + s.queryLength > s.keyLength) throw new ShapeError(`queries end after the last key (queryOffset ${s.queryOffset} + queryLength ${s.queryLength} > keyLength ${s.keyLength})`);
    const views: [string, GpuTensor4, number, number][] = [
      ['q', problem.q, s.heads, s.queryLength],
      ['k', problem.k, s.kvHeads, s.keyLength],
      ['v', problem.v, s.kvHeads, s.keyLength],
      ['out', problem.out, s.heads, s.queryLength],
    ];
    for (const [name, t, heads, tokens] of views) {
      const off = t.offset ?? 0;
      for (const [what, x] of [['offset', off], ['strideBatch', t.strideBatch], ['strideHead', t.strideHead], ['strideToken', t.strideToken]] as const) {
        if (!Number.isInteger(x) || x < 0 || x % 4 !== 0) {
          throw new HipAttnError('UNSUPPORTED', `${name}.${what} is ${x}: the attention kernels read 4 elements at a time and need offsets and strides that are non-negative multiples of 4`);
        }
      }
      const end = (off + (s.batch - 1) * t.strideBatch + (heads - 1) * t.strideHead + (tokens - 1) * t.strideToken + D) * eb;
      if (end > t.buffer.size) throw new ShapeError(`tensor ${name} reaches byte ${end} but its buffer "${t.buffer.label}" holds ${t.buffer.size} bytes`);
    }
    if (problem.q.buffer === problem.out.buffer) throw new HipAttnError('UNSUPPORTED', 'out must not share a buffer with q (in-place attention is not supported)');
  }

  function viewRange(t: GpuTensor4, b: [number, number], h: [number, number], q: [number, number]): Range {
    const off = t.offset ?? 0;
    return {
      start: off + b[0] * t.strideBatch + h[0] * t.strideHead + q[0] * t.strideToken,
      end: off + (b[1] - 1) * t.strideBatch + (h[1] - 1) * t.strideHead + (q[1] - 1) * t.strideToken + D,
    };
  }

  function bindingFor(buffer: GPUBuffer, r: Range, bytesPer: number): { offset: number; size: number; baseElements: number } {
    const align = limits.minStorageBufferOffsetAlignment;
    const startByte = r.start * bytesPer;
    const offset = Math.floor(startByte / align) * align;
    const size = Math.min(Math.ceil((r.end * bytesPer - offset) / 4) * 4, buffer.size - offset);
    return { offset, size, baseElements: (startByte - offset) / bytesPer };
  }

  function fits(buffer: GPUBuffer, r: Range, bytesPer: number): boolean {
    return bindingFor(buffer, r, bytesPer).size <= maxBinding;
  }

  // ---- pipelines
  const plainCache = new Map<string, PlainVariant>();
  function plainVariant(rowsH: number, rowsQ: number, bk: number, wg: number, hip: boolean, split: boolean): PlainVariant {
    const v: PlainVariant = { dtype, headDim: D, rowsQ, rowsH, bk, wg, hip, split, unroll };
    const bytes = plainWorkgroupBytes(v);
    if (bytes > wgMem) {
      throw new HipAttnError('UNSUPPORTED', `attention kernel ${plainVariantName(v)} needs ${bytes} bytes of workgroup memory, the device allows ${wgMem}`);
    }
    plainCache.set(plainVariantName(v), v);
    return v;
  }
  const ready = new Map<string, CompiledPipeline>();
  async function pipeline(name: string, code: string, kvViews = false): Promise<CompiledPipeline> {
    const p = await gpu.pipelines.computePipeline({ name, code, bindings: (kvViews ? BINDINGS_KV : BINDINGS).map((g) => [...g]) });
    ready.set(name, p);
    return p;
  }
  function readyPipeline(name: string): CompiledPipeline {
    const p = ready.get(name);
    if (!p) throw new HipAttnError('GPU', `attention: pipeline ${name} is not compiled yet: await prepare(problem, keySet) before the synchronous encode`);
    return p;
  }

  interface Grid {
    rowsH: number;
    rowsQ: number;
    bsq: number;
    tilesPerQB: number;
    /** Query tiles (grid x before splits); grid y is heads (rowsH 1) or KV heads, z batch. */
    nTiles: number;
  }

  function gridOf(problem: GpuAttentionProblem, ks: ResolvedKeySet, rowsH: number, rowsQ: number): Grid {
    const s = problem.shape;
    const bsq = ks.hip ? ks.bsq : rowsQ;
    const tilesPerQB = Math.ceil(bsq / rowsQ);
    const nQB = Math.ceil(s.queryLength / bsq);
    return { rowsH, rowsQ, bsq, tilesPerQB, nTiles: nQB * tilesPerQB };
  }

  interface Dispatch {
    b0: number;
    nb: number;
    h0: number; // in grid-y units (heads for rowsH 1, KV heads otherwise)
    ny: number;
    t0: number;
    nt: number;
  }

  /** Queries [qa, qe) covered by tiles [t0, t1). */
  function tileQueries(g: Grid, qLen: number, t0: number, t1: number): [number, number] {
    const qa = Math.floor(t0 / g.tilesPerQB) * g.bsq + (t0 % g.tilesPerQB) * g.rowsQ;
    const last = t1 - 1;
    const qbl = Math.floor(last / g.tilesPerQB);
    const qe = Math.min(qbl * g.bsq + (last % g.tilesPerQB) * g.rowsQ + g.rowsQ, (qbl + 1) * g.bsq, qLen);
    return [Math.min(qa, qLen), Math.max(Math.min(qa, qLen) + 1, qe)];
  }

  function headRange(g: Grid, problem: GpuAttentionProblem, d: Dispatch): [number, number] {
    const G = problem.shape.heads / problem.shape.kvHeads;
    return g.rowsH === 1 ? [d.h0, d.h0 + d.ny] : [d.h0 * G, (d.h0 + d.ny) * G];
  }

  interface Bound {
    params: AttnParamValues;
    entries: GPUBindGroupEntry[];
  }

  /** Uniform values and bind-group entries for one dispatch. */
  function bind(problem: GpuAttentionProblem, ks: ResolvedKeySet, g: Grid, d: Dispatch, split: { splits: number; tilesPerSplit: number; part?: GPUBuffer }): Bound {
    const s = problem.shape;
    const G = s.heads / s.kvHeads;
    const hr = headRange(g, problem, d);
    const kvr: [number, number] = [Math.floor(hr[0] / G), Math.floor((hr[1] - 1) / G) + 1];
    const br: [number, number] = [d.b0, d.b0 + d.nb];
    const qr = tileQueries(g, s.queryLength, d.t0, d.t0 + d.nt);
    const q = bindingFor(problem.q.buffer, viewRange(problem.q, br, hr, qr), eb);
    const o = bindingFor(problem.out.buffer, viewRange(problem.out, br, hr, qr), eb);
    const k = bindingFor(problem.k.buffer, viewRange(problem.k, br, kvr, [0, s.keyLength]), eb);
    const v = bindingFor(problem.v.buffer, viewRange(problem.v, br, kvr, [0, s.keyLength]), eb);
    for (const [name, bnd, buf] of [['q', q, problem.q.buffer], ['out', o, problem.out.buffer], ['k', k, problem.k.buffer], ['v', v, problem.v.buffer]] as const) {
      if (bnd.size > maxBinding) {
        throw new HipAttnError(
          'OUT_OF_MEMORY',
          `attention: tensor ${name} ("${buf.label}") needs a binding of ${formatBytes(bnd.size)} for one (batch, KV head) slice, ` +
            `over this device's maxStorageBufferBindingSize of ${formatBytes(maxBinding)}; use a shorter context or a device with larger bindings`,
        );
      }
    }
    let mEntry: GPUBindGroupEntry = { binding: 5, resource: { buffer: dummyRO } };
    let mBase = 0;
    let mSB = 0;
    let mSH = 0;
    let mQB = 0;
    if (ks.hip) {
      const nQB = ks.nQB!;
      mSH = nQB * ks.bpq;
      mSB = s.heads * mSH;
      const qb0 = Math.floor(qr[0] / ks.bsq);
      const qb1 = Math.floor((qr[1] - 1) / ks.bsq) + 1;
      mQB = s.queryLength === 1 && nQB !== 1 ? nQB - 1 : 0;
      const r: Range = {
        start: br[0] * mSB + hr[0] * mSH + (qb0 + mQB) * ks.bpq,
        end: (br[1] - 1) * mSB + (hr[1] - 1) * mSH + (qb1 - 1 + mQB) * ks.bpq + ks.bpq,
      };
      const m = bindingFor(ks.mask!, r, 4);
      if (m.size > maxBinding) {
        throw new HipAttnError('OUT_OF_MEMORY', `attention: the HiP mask slice needs a binding of ${formatBytes(m.size)}, over the limit of ${formatBytes(maxBinding)}`);
      }
      // The kernel reads mask[b, h, qb + shift] at mBase + (b − b0)·mSB + (h − hD)·mSH + (qb + mQB)·bpq,
      // with the binding starting at [b0, hD, qb0 + shift]: mQB = shift − qb0 (an i32).
      mBase = m.baseElements;
      mQB = mQB - qb0;
      mEntry = { binding: 5, resource: { buffer: ks.mask!, offset: m.offset, size: m.size } };
    }
    const params: AttnParamValues = {
      qLen: s.queryLength,
      kLen: s.keyLength,
      qOff: s.queryOffset,
      heads: s.heads,
      group: G,
      b0: d.b0,
      h0: d.h0,
      t0: d.t0,
      qD: qr[0],
      qBase: q.baseElements / 4,
      qSB: problem.q.strideBatch / 4,
      qSH: problem.q.strideHead / 4,
      qST: problem.q.strideToken / 4,
      kBase: k.baseElements / 4,
      kSB: problem.k.strideBatch / 4,
      kSH: problem.k.strideHead / 4,
      kST: problem.k.strideToken / 4,
      vBase: v.baseElements / 4,
      vSB: problem.v.strideBatch / 4,
      vSH: problem.v.strideHead / 4,
      vST: problem.v.strideToken / 4,
      oBase: o.baseElements / 4,
      oSB: problem.out.strideBatch / 4,
      oSH: problem.out.strideHead / 4,
      oST: problem.out.strideToken / 4,
      mBase,
      mSB,
      mSH,
      mQB,
      bpq: ks.bpq,
      bsq: g.bsq,
      bsk: ks.bsk,
      tilesPerQB: g.tilesPerQB,
      sink: ks.sink,
      window: ks.window,
      scaleLog2: 1 / Math.sqrt(D) / Math.LN2,
      splits: split.splits,
      tilesPerSplit: split.tilesPerSplit,
      partRows: s.batch * s.heads * s.queryLength,
      zero: 0,
    };
    const entries: GPUBindGroupEntry[] = [
      { binding: 1, resource: { buffer: problem.q.buffer, offset: q.offset, size: q.size } },
      { binding: 2, resource: { buffer: problem.k.buffer, offset: k.offset, size: k.size } },
      { binding: 3, resource: { buffer: problem.v.buffer, offset: v.offset, size: v.size } },
      { binding: 4, resource: { buffer: problem.out.buffer, offset: o.offset, size: o.size } },
      mEntry,
      { binding: 6, resource: { buffer: split.part ?? dummyRW } },
    ];
    return { params, entries };
  }

  /** Splits the problem into dispatches whose bindings fit and whose x extent (tiles × xPerTile) is within the device's limit. */
  function plan(problem: GpuAttentionProblem, ks: ResolvedKeySet, g: Grid, xPerTile = 1): Dispatch[] {
    const maxTiles = Math.max(1, Math.floor(limits.maxComputeWorkgroupsPerDimension / xPerTile));
    const out: Dispatch[] = [];
    for (const d of planBindings(problem, ks, g)) {
      for (let t = 0; t < d.nt; t += maxTiles) out.push({ ...d, t0: d.t0 + t, nt: Math.min(maxTiles, d.nt - t) });
    }
    return out;
  }

  function planBindings(problem: GpuAttentionProblem, ks: ResolvedKeySet, g: Grid): Dispatch[] {
    const s = problem.shape;
    const G = s.heads / s.kvHeads;
    const yAll = g.rowsH === 1 ? s.heads : s.kvHeads;
    const all: Dispatch = { b0: 0, nb: s.batch, h0: 0, ny: yAll, t0: 0, nt: g.nTiles };
    if (dispatchFits(problem, ks, g, all)) return [all];
    const out: Dispatch[] = [];
    const yPer = g.rowsH === 1 ? G : 1;
    for (let b = 0; b < s.batch; b++) {
      for (let kv = 0; kv < s.kvHeads; kv++) {
        const base: Dispatch = { b0: b, nb: 1, h0: kv * yPer, ny: yPer, t0: 0, nt: g.nTiles };
        if (dispatchFits(problem, ks, g, base)) {
          out.push(base);
          continue;
        }
        // Query-tile chunks: halve until the q/out/mask bindings fit.
        let per = g.nTiles;
        while (per > 1 && !dispatchFits(problem, ks, g, { ...base, nt: per })) per = Math.ceil(per / 2);
        for (let t = 0; t < g.nTiles; t += per) out.push({ ...base, t0: t, nt: Math.min(per, g.nTiles - t) });
      }
    }
    return out;
  }

  function dispatchFits(problem: GpuAttentionProblem, ks: ResolvedKeySet, g: Grid, d: Dispatch): boolean {
    const s = problem.shape;
    const G = s.heads / s.kvHeads;
    const hr = headRange(g, problem, d);
    const kvr: [number, number] = [Math.floor(hr[0] / G), Math.floor((hr[1] - 1) / G) + 1];
    const br: [number, number] = [d.b0, d.b0 + d.nb];
    const qr = tileQueries(g, s.queryLength, d.t0, d.t0 + d.nt);
    if (!fits(problem.q.buffer, viewRange(problem.q, br, hr, qr), eb)) return false;
    if (!fits(problem.out.buffer, viewRange(problem.out, br, hr, qr), eb)) return false;
    if (d.nt === g.nTiles || d.nb > 1 || d.ny > 1) {
      // K/V only shrink with fewer batches / heads.
      if (!fits(problem.k.buffer, viewRange(problem.k, br, kvr, [0, s.keyLength]), eb)) return false;
      if (!fits(problem.v.buffer, viewRange(problem.v, br, kvr, [0, s.keyLength]), eb)) return false;
    }
    if (ks.hip) {
      const mSH = ks.nQB! * ks.bpq;
      const bytes = ((d.nb - 1) * s.heads * mSH + (hr[1] - hr[0] - 1) * mSH + (Math.ceil(qr[1] / ks.bsq) - Math.floor(qr[0] / ks.bsq)) * ks.bpq) * 4;
      if (bytes + limits.minStorageBufferOffsetAlignment > maxBinding) return false;
    }
    return true;
  }

  function beginPass(target: PassTarget, label: string): GPUComputePassEncoder {
    if ('encoder' in target) return target.beginComputePass(label); // a GpuTimer's TimedEncoder
    return target.beginComputePass({ label });
  }

  function bindGroup(p: { bindGroupLayout(g?: number): GPUBindGroupLayout }, slot: { buffer: GPUBuffer; offset: number; size: number }, entries: GPUBindGroupEntry[], overrides: Record<number, GPUBindGroupEntry> = {}): GPUBindGroup {
    const all = [{ binding: 0, resource: slot }, ...entries].map((e) => overrides[e.binding] ?? e);
    return device.createBindGroup({ layout: p.bindGroupLayout(0), entries: all });
  }

  function mmaVariant(hip: boolean): MmaVariant {
    return {
      dtype: 'f16',
      headDim: D,
      hip,
      emulate: prefillPath === 'mma-emulated',
      unroll,
      ...mmaCfg!,
      ...(options.mma?.rescaleThreshold !== undefined ? { threshold: options.mma.rescaleThreshold } : {}),
    };
  }

  function prefillRowsQ(): number {
    if (mma2Cfg) return mma2Cfg.warps * mma2Cfg.m * mma2Cfg.rows;
    return prefillPath === 'plain' ? PLAIN_PREFILL.rowsQ : mmaCfg!.warps * mmaCfg!.m;
  }

  function mma2Variant(problem: GpuAttentionProblem, ks: ResolvedKeySet): Mma2Variant {
    const o = options.mma2 ?? {};
    let blkCap = 0;
    if (ks.hip && (o.blockList ?? true)) {
      blkCap = 16;
      while (blkCap < ks.bpq) blkCap *= 2;
      if (blkCap > 1024) blkCap = 0;
    }
    const v: Mma2Variant = {
      dtype: 'f16',
      headDim: D,
      hip: ks.hip,
      emulate: prefillPath === 'mma2-emulated',
      unroll,
      ...mma2Cfg!,
      ld16: (o.ld16 ?? true) && kvAligned16(problem),
      blkCap,
      direct: (o.direct ?? MMA2_DEFAULTS.direct) && kvAligned16(problem),
      ...(o.rescaleThreshold !== undefined ? { threshold: o.rescaleThreshold } : {}),
    };
    if (blkCap > 0 && mma2WorkgroupBytes(v) > wgMem) v.blkCap = 0;
    return v;
  }

  function prefillSpec(problem: GpuAttentionProblem, ks: ResolvedKeySet): { name: string; code: () => string; kvViews?: boolean } {
    const hip = ks.hip;
    if (mma2Cfg) {
      const v = mma2Variant(problem, ks);
      const bytes = mma2WorkgroupBytes(v);
      if (bytes > wgMem) throw new HipAttnError('UNSUPPORTED', `${mma2VariantName(v)} needs ${bytes} bytes of workgroup memory, the device allows ${wgMem}`);
      return { name: mma2VariantName(v), code: () => mma2Wgsl(v), kvViews: !!v.direct };
    }
    if (prefillPath === 'plain') {
      const v = plainVariant(1, PLAIN_PREFILL.rowsQ, PLAIN_PREFILL.bk, PLAIN_PREFILL.wg, hip, false);
      return { name: plainVariantName(v), code: () => plainWgsl(v) };
    }
    const v = mmaVariant(hip);
    const bytes = mmaWorkgroupBytes(v);
    if (bytes > wgMem) throw new HipAttnError('UNSUPPORTED', `${mmaVariantName(v)} needs ${bytes} bytes of workgroup memory, the device allows ${wgMem}`);
    return { name: mmaVariantName(v), code: () => mmaWgsl(v) };
  }

  /** Whether every K/V offset and stride is a multiple of 8 elements (16-byte f16 loads). */
  function kvAligned16(problem: GpuAttentionProblem): boolean {
    if (dtype !== 'f16') return true;
    return [problem.k, problem.v].every((t) => [t.offset ?? 0, t.strideBatch, t.strideHead, t.strideToken].every((x) => x % 8 === 0));
  }

  function decodeVariants(problem: GpuAttentionProblem, hip: boolean): DecodeChoice {
    const G = problem.shape.heads / problem.shape.kvHeads;
    if (decodePath === 'subgroup' && G <= 8) {
      const o = options.decodeKernel ?? {};
      const ld16 = dtype === 'f16' && (o.ld16 ?? true) && kvAligned16(problem);
      const ch = dtype === 'f16' && ld16 ? 8 : 4;
      let lanes = o.lanes ?? 1;
      if (o.lanes === undefined) {
        while (lanes * 2 <= Math.min(sgMin, DECODE_DEFAULTS.lanes) && D % (lanes * 2 * ch) === 0) lanes *= 2;
      }
      let wg = o.wg ?? DECODE_DEFAULTS.wg;
      const mergeOf = (w: number) => Math.max(lanes, Math.min(o.merge ?? Math.min(sgMin, 32), w));
      const v: DecodeVariant = { dtype, headDim: D, rowsH: G, lanes, keys: o.keys ?? (G > 4 ? DECODE_DEFAULTS.keysLargeGroup : DECODE_DEFAULTS.keys), wg, hip, ld16, merge: mergeOf(wg), unroll };
      while (decodeWorkgroupBytes({ ...v, wg, merge: mergeOf(wg) }) > wgMem && wg > lanes && wg > 32) wg /= 2;
      v.wg = wg;
      v.merge = mergeOf(wg);
      const why = decodeUnsupported(v) ?? (v.merge > sgMin ? `${v.merge} lanes per merge block (lanes ${lanes}) exceed the subgroup size ${sgMin}` : null);
      if (!why && decodeWorkgroupBytes(v) <= wgMem) {
        const D4 = D / 4;
        const rwg = Math.max(D4, Math.ceil(128 / D4) * D4);
        return { kind: 'subgroup', split: v, reduce: { dtype, headDim: D, rowsQ: 1, rowsH: G, wg: Math.min(rwg, Math.max(D4, limits.maxComputeInvocationsPerWorkgroup)), unrollSplits: 4 } };
      }
      if (options.decode === 'subgroup') throw new HipAttnError('UNSUPPORTED', `subgroup decode kernel ${decodeVariantName(v)}: ${why ?? 'workgroup memory'}`);
    }
    const wg = G >= 8 ? 128 : 64;
    // The largest key tile whose f32 K/V tiles fit the device's workgroup memory.
    let bk = DECODE_BK;
    while (bk > 4 && plainWorkgroupBytes({ dtype, headDim: D, rowsQ: 1, rowsH: G, bk, wg, hip, split: true, unroll }) > wgMem) bk /= 2;
    const v = plainVariant(G, 1, bk, wg, hip, true);
    return { kind: 'plain', split: v, reduce: { dtype, headDim: D, rowsQ: 1, rowsH: G } };
  }

  function decodeSpecs(c: DecodeChoice): { name: string; code: () => string }[] {
    if (c.kind === 'plain') {
      return [
        { name: plainVariantName(c.split), code: () => plainWgsl(c.split) },
        { name: reduceVariantName(c.reduce), code: () => reduceWgsl(c.reduce) },
      ];
    }
    return [
      { name: decodeVariantName(c.split), code: () => decodeWgsl(c.split) },
      { name: reduce2VariantName(c.reduce), code: () => reduce2Wgsl(c.reduce) },
    ];
  }

  function encodePrefillSync(target: PassTarget, problem: GpuAttentionProblem, keySet: GpuKeySet): void {
    checkProblem(problem);
    const ks = resolveKeySet(problem, keySet);
    const spec = prefillSpec(problem, ks);
    const p = readyPipeline(spec.name);
    const g = gridOf(problem, ks, 1, prefillRowsQ());
    const dispatches = plan(problem, ks, g);
    const pass = beginPass(target, `attention prefill ${keySet.kind}`);
    pass.setPipeline(p.pipeline);
    for (const d of dispatches) {
      const b = bind(problem, ks, g, d, { splits: 1, tilesPerSplit: 0x7fffffff });
      if (spec.kvViews) {
        const kv = b.entries.filter((e) => e.binding === 2 || e.binding === 3);
        b.entries.push(...kv.map((e) => ({ binding: e.binding + 5, resource: e.resource })));
      }
      pass.setBindGroup(0, bindGroup(p, takeSlot(b.params), b.entries));
      pass.dispatchWorkgroups(d.nt, d.ny, d.nb);
    }
    pass.end();
  }

  /** Upper bound of the key tiles of a decode query tile. */
  function decodeTiles(problem: GpuAttentionProblem, ks: ResolvedKeySet, G: number, BK: number): number {
    const s = problem.shape;
    const p = s.queryOffset + s.queryLength - 1;
    const p0 = s.queryOffset;
    const sinkEnd = Math.min(ks.sink, p + 1);
    const ws0 = Math.max(Math.min(ks.sink, p0 + 1), p0 - ks.window + 1);
    const tS = Math.ceil(sinkEnd / BK);
    const tW = Math.ceil(Math.max(0, p - ws0 + 1) / BK);
    const tB = ks.hip ? G * Math.ceil((ks.bpq * ks.bsk) / BK) : 0;
    return tS + tW + tB;
  }

  /** Upper bound of the key-list slots of a decode query (subgroup kernel). */
  function decodeSlots(problem: GpuAttentionProblem, ks: ResolvedKeySet, G: number): number {
    const s = problem.shape;
    const p = s.queryOffset + s.queryLength - 1;
    const sinkEnd = Math.min(ks.sink, p + 1);
    const nW = Math.min(p + 1, ks.window);
    return sinkEnd + nW + (ks.hip ? G * ks.bpq * ks.bsk : 0);
  }

  function encodeDecodeSync(target: PassTarget, problem: GpuAttentionProblem, keySet: GpuKeySet, opts: DecodeOptions = {}): void {
    checkProblem(problem);
    const s = problem.shape;
    const ks = resolveKeySet(problem, keySet);
    const G = s.heads / s.kvHeads;
    const choice = decodeVariants(problem, ks.hip);
    const [specSplit, specReduce] = decodeSpecs(choice);
    const ps = readyPipeline(specSplit!.name);
    const pr = readyPipeline(specReduce!.name);
    const g = gridOf(problem, ks, G, 1);
    const rows = s.batch * s.heads * s.queryLength;
    const perWg = Math.max(1, s.batch * s.kvHeads * g.nTiles);
    let splits: number;
    let unitsPerSplit: number; // key tiles (plain) or key slots (subgroup) per split
    let units: number;
    let quantum: number;
    if (choice.kind === 'plain') {
      units = decodeTiles(problem, ks, G, choice.split.bk);
      quantum = 1;
    } else {
      units = decodeSlots(problem, ks, G);
      quantum = (choice.split.wg / choice.split.lanes) * choice.split.keys; // slots of one workgroup step
    }
    splits = opts.splits ?? Math.ceil((options.decodeTargetWorkgroups ?? (choice.kind === 'plain' ? 1024 : DECODE_DEFAULTS.targetWorkgroups)) / perWg);
    if (choice.kind === 'subgroup' && opts.splits === undefined) {
      // At least two steps per workgroup — except for HiP's short key lists, where 16 splits
      // measured 3.4x faster than that rule on the H200 (bench/results/h200/attention-sweep-run2.txt)
      splits = Math.min(splits, Math.max(ks.hip ? 16 : 1, Math.floor(units / (2 * quantum))));
    }
    splits = Math.max(1, Math.min(splits, Math.ceil(units / quantum), 4096));
    const partBytes = (n: number) => rows * n * (1 + D / 4) * 16;
    while (splits > 1 && partBytes(splits) > maxBinding) splits = Math.ceil(splits / 2);
    if (partBytes(splits) > maxBinding) {
      throw new HipAttnError('OUT_OF_MEMORY', `attention decode: split-K partials need ${formatBytes(partBytes(splits))} in one binding, over the limit of ${formatBytes(maxBinding)}; use the prefill path for this many queries`);
    }
    const reduceX = choice.kind === 'plain' ? 1 : G;
    splits = Math.min(splits, Math.max(1, Math.floor(limits.maxComputeWorkgroupsPerDimension / Math.min(g.nTiles, 64))));
    unitsPerSplit = Math.ceil(units / splits / quantum) * quantum;
    splits = Math.ceil(units / unitsPerSplit);
    const part = scratchBuffer(partBytes(splits));
    const dispatches = plan(problem, ks, g, Math.max(splits, reduceX));
    const bounds = dispatches.map((d) => ({ d, b: bind(problem, ks, g, d, { splits, tilesPerSplit: unitsPerSplit, part }) }));
    const slotsUsed = bounds.map(({ b }) => takeSlot(b.params));
    // Split kernel and reduce in one pass (dispatches in a pass see each other's writes), so a
    // decode step costs one pass.
    const pass = beginPass(target, `attention decode ${keySet.kind}`);
    pass.setPipeline(ps.pipeline);
    bounds.forEach(({ d, b }, i) => {
      pass.setBindGroup(0, bindGroup(ps, slotsUsed[i]!, b.entries, { 4: { binding: 4, resource: { buffer: dummyRW } } }));
      pass.dispatchWorkgroups(d.nt * splits, d.ny, d.nb);
    });
    pass.setPipeline(pr.pipeline);
    const ro = { buffer: dummyRO };
    bounds.forEach(({ d, b }, i) => {
      pass.setBindGroup(
        0,
        bindGroup(pr, slotsUsed[i]!, b.entries, {
          1: { binding: 1, resource: ro },
          2: { binding: 2, resource: ro },
          3: { binding: 3, resource: ro },
          5: { binding: 5, resource: ro },
        }),
      );
      pass.dispatchWorkgroups(d.nt * reduceX, d.ny, d.nb);
    });
    pass.end();
  }

  const decodeMax = options.decodeMaxQueries ?? 1;
  const modeOf = (problem: GpuAttentionProblem) => (problem.shape.queryLength <= decodeMax ? 'decode' : 'prefill');

  async function prepare(problem: GpuAttentionProblem, keySet: GpuKeySet, mode?: 'prefill' | 'decode'): Promise<void> {
    const ks = resolveKeySet(problem, keySet);
    if ((mode ?? modeOf(problem)) === 'prefill') {
      const spec = prefillSpec(problem, ks);
      if (!ready.has(spec.name)) await pipeline(spec.name, spec.code(), spec.kvViews);
    } else {
      await Promise.all(decodeSpecs(decodeVariants(problem, ks.hip)).map((sp) => (ready.has(sp.name) ? null : pipeline(sp.name, sp.code()))));
    }
  }

  return {
    dtype,
    headDim: D,
    prefillPath,
    decodePath,
    describe(problem, keySet, mode) {
      const ks = resolveKeySet(problem, keySet);
      if ((mode ?? modeOf(problem)) === 'prefill') return prefillSpec(problem, ks).name;
      return decodeSpecs(decodeVariants(problem, ks.hip)).map((x) => x.name).join(' + ');
    },
    async encode(target, problem, keySet) {
      await prepare(problem, keySet);
      if (modeOf(problem) === 'decode') encodeDecodeSync(target, problem, keySet);
      else encodePrefillSync(target, problem, keySet);
    },
    async encodePrefill(target, problem, keySet) {
      await prepare(problem, keySet, 'prefill');
      encodePrefillSync(target, problem, keySet);
    },
    async encodeDecode(target, problem, keySet, opts) {
      await prepare(problem, keySet, 'decode');
      encodeDecodeSync(target, problem, keySet, opts);
    },
    encodeSync(target, problem, keySet, mode, opts) {
      if ((mode ?? modeOf(problem)) === 'decode') encodeDecodeSync(target, problem, keySet, opts);
      else encodePrefillSync(target, problem, keySet);
    },
    prepare,
    cost(problem, keySet) {
      return attentionCost(problem.shape, resolveKeySet(problem, keySet).cost, dtype);
    },
    destroy() {
      ring.destroy();
      dummyRO.destroy();
      dummyRW.destroy();
      scratch?.destroy();
      for (const b of retired) b.destroy();
      retired.length = 0;
      scratch = null;
    },
  };
}

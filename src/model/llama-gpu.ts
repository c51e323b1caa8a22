/**
 * The Llama-family forward pass on WebGPU, mirroring LlamaCpu (llama-cpu.ts): same math, same
 * API (forward / reset / rewind / position), but forward() is async.
 *
 *   x = embed[tokens]                                   (f32 residual stream)
 *   for each layer:
 *     h = RMSNorm(x)                                    (activation type: f16 or f32)
 *     qkv = h·[Wq;Wk;Wv]ᵀ (+b)                           one fused projection
 *     RoPE(q, k) in place ; k, v → the layer's KV cache
 *     attn = attention(q, cache)                        pluggable per layer (GpuAttentionFn)
 *     x += attn·Woᵀ (+bo)                                residual add in the matmul epilogue
 *     h = RMSNorm(x) ; gu = h·[Wgate;Wup]ᵀ ; a = silu(gate)·up ; x += a·Wdownᵀ
 *   logits = RMSNorm(x)·lm_headᵀ                        (lm_head = embed when tied)
 *
 * Weights are uploaded once (f16 where the device has shader-f16, else f32), the KV cache is
 * allocated once for the whole context ([kvHeads, capacity, headDim] per layer), activations
 * once for the largest chunk. Each prefill chunk (or decoded token) is one command encoder and
 * one submit, with no readback until the logits of the forward() call: one map per call.
 *
 * Storage types: weights `weightType`; the matmul inputs/outputs, q/k/v, the KV cache and the
 * attention output `activationType` (the attention problem's dtype); the residual stream,
 * norms' weights, biases and logits are always f32.
 */
import { HipAttnError } from '../errors.js';
import {
  BufferUsage,
  checkTensorFits,
  formatBytes,
  type GpuContext,
  MapMode,
  writeBuffer,
} from '../gpu/index.js';
import { createAttentionKernels } from '../kernels/attention/index.js';
import { bytesOf } from '../kernels/common.js';
import { GpuSwiglu } from '../kernels/elementwise/swiglu.js';
import { GpuEmbedding } from '../kernels/embedding/embedding.js';
import { GpuKvWrite } from '../kernels/kv-cache/kv-cache.js';
import { GpuLinear, type LinearOptions, type MatmulChoice, type SubgroupMatrixTuning } from '../kernels/matmul/matmul.js';
import { GpuRandomFill } from '../kernels/random-fill/random-fill.js';
import { GpuRmsNorm } from '../kernels/rmsnorm/rmsnorm.js';
import { GpuRope, packRopeTable } from '../kernels/rope/rope.js';
import type { GpuAttentionProblem, StorageType } from '../kernels/types.js';
import type { LlamaConfig } from './config.js';
import type { ForwardOptions } from './llama-cpu.js';
import { ropeInvFreq, ropeTables } from './rope.js';
import { syntheticTensors } from './synthetic.js';
import type { TensorStore } from './tensor-store.js';
import { EMBED_NAME, FINAL_NORM_NAME, LM_HEAD_NAME, type LoadProgress, checkTensorShapes, layerTensorNames, usesTiedEmbeddings } from './weights.js';

/**
 * One layer's attention on the GPU: read problem.q ([1, heads, T, d], a strided view of the
 * fused qkv activation), the layer's cache problem.k / problem.v ([1, kvHeads, capacity, d],
 * keyLength rows valid), write problem.out ([1, heads, T, d], strided into the [T, heads·d]
 * input of o_proj). Record commands on `encoder` only (no submits, no readbacks). May be async
 * (e.g. to compile a pipeline on first use); the model awaits it before encoding on.
 */
export type GpuAttentionFn = (layer: number, encoder: GPUCommandEncoder, problem: GpuAttentionProblem) => void | Promise<void>;

export interface GpuAttentionModule {
  encode: GpuAttentionFn;
  destroy?(): void;
}

export interface LlamaGpuOptions {
  /** Context capacity in tokens (the KV cache size). Default: the config's maxPositionEmbeddings. */
  capacity?: number;
  /** Attention per layer. Default: dense causal attention (src/kernels/attention). */
  attention?: GpuAttentionFn | GpuAttentionModule;
  /** Storage of the weight matrices. Default f16 where the device has shader-f16, else f32. */
  weightType?: StorageType;
  /** Storage of activations, q/k/v and the KV cache. Default: weightType. */
  activationType?: StorageType;
  /** Largest prefill chunk the activation buffers are sized for (default 256); larger chunkSize values are clamped to it. */
  maxChunk?: number;
  /**
   * Matmul kernels of every projection: 'auto' (default: GEMV for 1 token, tensor cores or tiled
   * for more; the direct kernel on CPU rasterisers), a kind for every token count, or
   * `{ single, multi }` for decoding and prefill.
   */
  matmul?: MatmulChoice;
  /** Tiling of the tensor-core GEMM (default: `DEFAULT_SUBGROUP_MATRIX`); for benchmarks and tuning. */
  subgroupMatrix?: Partial<SubgroupMatrixTuning>;
  /** Progress of the weight upload, per tensor. */
  onProgress?: (p: LoadProgress) => void;
}

interface LayerWeightsGpu {
  attnNorm: GPUBuffer;
  mlpNorm: GPUBuffer;
  wqkv: GPUBuffer;
  wo: GPUBuffer;
  wgu: GPUBuffer;
  wdown: GPUBuffer;
  bqkv?: GPUBuffer;
  bo?: GPUBuffer;
  bgu?: GPUBuffer;
  bdown?: GPUBuffer;
}

interface LayerOps {
  attnNorm: GpuRmsNorm;
  qkv: GpuLinear;
  kvWrite: GpuKvWrite;
  o: GpuLinear;
  mlpNorm: GpuRmsNorm;
  gateUp: GpuLinear;
  down: GpuLinear;
}

/** Where a tensor of the checkpoint goes: buffer, element offset, and (for f32-only tensors) whether it stays f32. */
interface Placement {
  buffer: GPUBuffer;
  /** Element offset in the buffer. */
  offset: number;
  type: StorageType;
}

/** Bytes of weights and KV cache a config needs on the GPU (what `LlamaGpu` allocates, activations aside). */
export function llamaGpuBytes(config: LlamaConfig, capacity: number, weightType: StorageType, activationType: StorageType = weightType): { weights: number; kvCache: number } {
  const c = config;
  const wb = bytesOf(weightType);
  const qkv = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  const perLayer = (qkv * c.hiddenSize + c.hiddenSize * c.numHeads * c.headDim + 3 * c.intermediateSize * c.hiddenSize) * wb + 2 * c.hiddenSize * 4;
  const embed = c.vocabSize * c.hiddenSize * wb * (c.tieWordEmbeddings ? 1 : 2);
  return {
    weights: perLayer * c.numLayers + embed + c.hiddenSize * 4,
    kvCache: 2 * c.numLayers * c.numKvHeads * capacity * c.headDim * bytesOf(activationType),
  };
}

export class LlamaGpu {
  readonly config: LlamaConfig;
  readonly gpu: GpuContext;
  readonly capacity: number;
  readonly weightType: StorageType;
  readonly activationType: StorageType;
  readonly maxChunk: number;
  /** Per layer: K and V caches, [kvHeads, capacity, headDim] of activationType. */
  readonly kCache: GPUBuffer[] = [];
  readonly vCache: GPUBuffer[] = [];
  /** Bytes of weights and KV cache allocated. */
  readonly bytes: { weights: number; kvCache: number; activations: number } = { weights: 0, kvCache: 0, activations: 0 };

  private length = 0;
  private readonly invFreq: Float32Array;
  private readonly owned: GPUBuffer[] = [];
  private readonly layers: LayerWeightsGpu[] = [];
  private embed!: GPUBuffer;
  private lmHead!: GPUBuffer;
  private finalNormW!: GPUBuffer;
  // activations
  private ids!: GPUBuffer;
  private ropeTab!: GPUBuffer;
  private x!: GPUBuffer;
  private h!: GPUBuffer;
  private qkv!: GPUBuffer;
  private attnOut!: GPUBuffer;
  private gu!: GPUBuffer;
  private act!: GPUBuffer;
  private logitsLast!: GPUBuffer;
  private logitsAll: GPUBuffer | null = null;
  private stagingLast!: GPUBuffer;
  // ops
  private ops: LayerOps[] = [];
  private embedding!: GpuEmbedding;
  private rope!: GpuRope;
  private swiglu!: GpuSwiglu;
  private finalNormLast!: GpuRmsNorm;
  private finalNormAll: GpuRmsNorm | null = null;
  private lmLast!: GpuLinear;
  private lmAll: GpuLinear | null = null;
  private attention!: GpuAttentionFn;
  private attentionModule: GpuAttentionModule | null = null;
  private ownsAttention = false;
  private busy = false;
  private readonly options: LlamaGpuOptions;

  private constructor(gpu: GpuContext, config: LlamaConfig, options: LlamaGpuOptions) {
    this.gpu = gpu;
    this.config = config;
    this.options = options;
    this.capacity = options.capacity ?? config.maxPositionEmbeddings;
    if (!Number.isSafeInteger(this.capacity) || this.capacity < 1) throw new HipAttnError('INVALID_OPTION', `capacity must be a positive integer, got ${this.capacity}`);
    this.weightType = options.weightType ?? (gpu.features.shaderF16 ? 'f16' : 'f32');
    this.activationType = options.activationType ?? this.weightType;
    for (const t of [this.weightType, this.activationType]) {
      if (t !== 'f16' && t !== 'f32') throw new HipAttnError('INVALID_OPTION', `storage types are 'f16' or 'f32', got ${String(t)}`);
      if (t === 'f16' && !gpu.features.shaderF16) throw new HipAttnError('UNSUPPORTED', `f16 storage needs the 'shader-f16' feature, which this device lacks: use weightType/activationType 'f32'`);
    }
    this.maxChunk = Math.max(1, Math.min(options.maxChunk ?? 256, this.capacity));
    this.invFreq = ropeInvFreq(config.rope, config.headDim);
  }

  /** Uploads a checkpoint's weights (checked against the config first) and builds the model. */
  static async load(gpu: GpuContext, config: LlamaConfig, store: TensorStore, options: LlamaGpuOptions = {}): Promise<LlamaGpu> {
    checkTensorShapes(config, store);
    const m = new LlamaGpu(gpu, config, options);
    try {
      await m.allocate(usesTiedEmbeddings(config, store));
      await m.upload(store);
      await m.build();
    } catch (e) {
      m.destroy();
      throw e;
    }
    return m;
  }

  /**
   * A model of this config with deterministic pseudo-random weights generated on the GPU
   * (no file, no upload): for benchmarks of real shapes. `syntheticTensorStore(config, seed)`
   * holds the same values for the CPU reference.
   */
  static async random(gpu: GpuContext, config: LlamaConfig, seed: number, options: LlamaGpuOptions = {}): Promise<LlamaGpu> {
    const m = new LlamaGpu(gpu, config, options);
    try {
      await m.allocate(config.tieWordEmbeddings);
      await m.fillRandom(seed);
      await m.build();
    } catch (e) {
      m.destroy();
      throw e;
    }
    return m;
  }

  /** Position of the next token (tokens held in the KV cache). */
  get position(): number {
    return this.length;
  }

  /** Empties the KV cache (keeps its memory). */
  reset(): void {
    this.length = 0;
  }

  /** Forgets every token from `position` on. */
  rewind(position: number): void {
    if (!Number.isSafeInteger(position) || position < 0 || position > this.length) {
      throw new HipAttnError('INVALID_OPTION', `cannot rewind to position ${position}: the cache holds ${this.length} tokens`);
    }
    this.length = position;
  }

  // ---------------------------------------------------------------------------------------------
  // Allocation

  private buffer(label: string, bytes: number, kind: 'weights' | 'kvCache' | 'activations', usage = BufferUsage.STORAGE | BufferUsage.COPY_DST | BufferUsage.COPY_SRC): GPUBuffer {
    checkTensorFits(this.gpu, bytes, label);
    const b = this.gpu.device.createBuffer({ label, size: Math.max(16, Math.ceil(bytes / 16) * 16), usage });
    this.owned.push(b);
    this.bytes[kind] += b.size;
    return b;
  }

  private async allocate(tied: boolean): Promise<void> {
    const c = this.config;
    const device = this.gpu.device;
    const wb = bytesOf(this.weightType);
    const ab = bytesOf(this.activationType);
    const H = c.hiddenSize;
    const d = c.headDim;
    const qDim = c.numHeads * d;
    const kvDim = c.numKvHeads * d;
    const qkvDim = qDim + 2 * kvDim;
    const I = c.intermediateSize;
    const T = this.maxChunk;
    const need = llamaGpuBytes(c, this.capacity, this.weightType, this.activationType);
    const kvPerBuffer = c.numKvHeads * this.capacity * d * ab;
    // A cache buffer that cannot exist fails here with the sizes, before anything is allocated.
    try {
      checkTensorFits(this.gpu, kvPerBuffer, `KV cache of one layer (K or V): ${c.numKvHeads} KV heads × ${this.capacity} tokens × ${d} × ${ab} bytes`);
    } catch (e) {
      throw new HipAttnError(
        'OUT_OF_MEMORY',
        `KV cache for ${this.capacity} tokens needs ${formatBytes(need.kvCache)} in all (capacity ${this.capacity} × ${c.numLayers} layers × ${c.numKvHeads} KV heads × ${d} × 2 (K, V) × ${ab} bytes), ` +
          `${formatBytes(kvPerBuffer)} per layer for K and for V: ${(e as Error).message}`,
        { cause: e },
      );
    }
    device.pushErrorScope('out-of-memory');
    this.embed = this.buffer('embed_tokens', c.vocabSize * H * wb, 'weights');
    this.lmHead = tied ? this.embed : this.buffer('lm_head', c.vocabSize * H * wb, 'weights');
    this.finalNormW = this.buffer('norm', H * 4, 'weights');
    for (let l = 0; l < c.numLayers; l++) {
      const L: LayerWeightsGpu = {
        attnNorm: this.buffer(`layer ${l} input_layernorm`, H * 4, 'weights'),
        mlpNorm: this.buffer(`layer ${l} post_attention_layernorm`, H * 4, 'weights'),
        wqkv: this.buffer(`layer ${l} qkv_proj`, qkvDim * H * wb, 'weights'),
        wo: this.buffer(`layer ${l} o_proj`, H * qDim * wb, 'weights'),
        wgu: this.buffer(`layer ${l} gate_up_proj`, 2 * I * H * wb, 'weights'),
        wdown: this.buffer(`layer ${l} down_proj`, H * I * wb, 'weights'),
      };
      if (c.qkvBias) L.bqkv = this.buffer(`layer ${l} qkv bias`, qkvDim * 4, 'weights');
      if (c.oBias) L.bo = this.buffer(`layer ${l} o bias`, H * 4, 'weights');
      if (c.mlpBias) {
        L.bgu = this.buffer(`layer ${l} gate_up bias`, 2 * I * 4, 'weights');
        L.bdown = this.buffer(`layer ${l} down bias`, H * 4, 'weights');
      }
      this.layers.push(L);
    }
    for (let l = 0; l < c.numLayers; l++) {
      this.kCache.push(this.buffer(`layer ${l} K cache`, kvPerBuffer, 'kvCache'));
      this.vCache.push(this.buffer(`layer ${l} V cache`, kvPerBuffer, 'kvCache'));
    }
    this.ids = this.buffer('token ids', T * 4, 'activations');
    this.ropeTab = this.buffer('rope cos/sin', T * d * 4, 'activations');
    this.x = this.buffer('residual', T * H * 4, 'activations');
    this.h = this.buffer('normed', T * H * ab, 'activations');
    this.qkv = this.buffer('qkv', T * qkvDim * ab, 'activations');
    this.attnOut = this.buffer('attention out', T * qDim * ab, 'activations');
    this.gu = this.buffer('gate_up', T * 2 * I * ab, 'activations');
    this.act = this.buffer('swiglu', T * I * ab, 'activations');
    this.logitsLast = this.buffer('logits', c.vocabSize * 4, 'activations');
    this.stagingLast = this.buffer('logits readback', c.vocabSize * 4, 'activations', BufferUsage.MAP_READ | BufferUsage.COPY_DST);
    const err = await device.popErrorScope();
    if (err) {
      throw new HipAttnError(
        'OUT_OF_MEMORY',
        `out of GPU memory allocating the model: weights ${formatBytes(need.weights)} (${this.weightType}) + KV cache ${formatBytes(need.kvCache)} ` +
          `(capacity ${this.capacity} × ${c.numLayers} layers × ${c.numKvHeads} KV heads × ${d} × 2 × ${ab} bytes) + activations; ` +
          `use a smaller capacity or f16 storage (${err.message})`,
      );
    }
  }

  /** Where each checkpoint tensor goes. */
  private placements(): Map<string, Placement> {
    const c = this.config;
    const wt = this.weightType;
    const d = c.headDim;
    const H = c.hiddenSize;
    const qDim = c.numHeads * d;
    const kvDim = c.numKvHeads * d;
    const I = c.intermediateSize;
    const p = new Map<string, Placement>();
    p.set(EMBED_NAME, { buffer: this.embed, offset: 0, type: wt });
    if (this.lmHead !== this.embed) p.set(LM_HEAD_NAME, { buffer: this.lmHead, offset: 0, type: wt });
    p.set(FINAL_NORM_NAME, { buffer: this.finalNormW, offset: 0, type: 'f32' });
    this.layers.forEach((L, l) => {
      const n = layerTensorNames(l);
      p.set(n.attnNorm, { buffer: L.attnNorm, offset: 0, type: 'f32' });
      p.set(n.mlpNorm, { buffer: L.mlpNorm, offset: 0, type: 'f32' });
      p.set(n.wq, { buffer: L.wqkv, offset: 0, type: wt });
      p.set(n.wk, { buffer: L.wqkv, offset: qDim * H, type: wt });
      p.set(n.wv, { buffer: L.wqkv, offset: (qDim + kvDim) * H, type: wt });
      p.set(n.wo, { buffer: L.wo, offset: 0, type: wt });
      p.set(n.wGate, { buffer: L.wgu, offset: 0, type: wt });
      p.set(n.wUp, { buffer: L.wgu, offset: I * H, type: wt });
      p.set(n.wDown, { buffer: L.wdown, offset: 0, type: wt });
      if (L.bqkv) {
        p.set(n.bq, { buffer: L.bqkv, offset: 0, type: 'f32' });
        p.set(n.bk, { buffer: L.bqkv, offset: qDim, type: 'f32' });
        p.set(n.bv, { buffer: L.bqkv, offset: qDim + kvDim, type: 'f32' });
      }
      if (L.bo) p.set(n.bo, { buffer: L.bo, offset: 0, type: 'f32' });
      if (L.bgu) {
        p.set(n.bGate, { buffer: L.bgu, offset: 0, type: 'f32' });
        p.set(n.bUp, { buffer: L.bgu, offset: I, type: 'f32' });
      }
      if (L.bdown) p.set(n.bDown, { buffer: L.bdown, offset: 0, type: 'f32' });
    });
    return p;
  }

  private async upload(store: TensorStore): Promise<void> {
    const places = this.placements();
    const total = places.size;
    let loaded = 0;
    for (const [name, at] of places) {
      // Tensors are written in placement order, so the ≤ 2 padding bytes an odd-length f16 write
      // adds land in the next tensor's region before that tensor is written.
      const data = at.type === 'f16' ? await store.readF16Bits(name) : await store.readF32(name);
      writeBuffer(this.gpu, at.buffer, data, at.offset * bytesOf(at.type));
      loaded++;
      this.options.onProgress?.({ loaded, total, tensor: name });
      // Let the queue drain now and then so staging memory does not pile up for big models.
      if (loaded % 32 === 0) await this.gpu.device.queue.onSubmittedWorkDone();
    }
    await this.gpu.device.queue.onSubmittedWorkDone();
  }

  private async fillRandom(seed: number): Promise<void> {
    const places = this.placements();
    const fills = new Map<StorageType, GpuRandomFill>();
    const fillFor = async (t: StorageType) => {
      let f = fills.get(t);
      if (!f) fills.set(t, (f = await GpuRandomFill.create(this.gpu, t)));
      return f;
    };
    const tensors = syntheticTensors(this.config);
    let loaded = 0;
    for (const t of tensors) {
      const at = places.get(t.name);
      if (!at) throw new HipAttnError('MODEL_FORMAT', `synthetic tensor ${t.name} has no place in the GPU model`);
      const fill = await fillFor(at.type);
      const enc = this.gpu.device.createCommandEncoder({ label: `random ${t.name}` });
      const pass = enc.beginComputePass();
      const count = t.shape.reduce((a, b) => a * b, 1);
      const done = fill.encode(pass, at.buffer, { count, seed, tensorId: t.id, kind: t.kind, scaleExp: t.scaleExp, dstOffset: at.offset });
      pass.end();
      this.gpu.device.queue.submit([enc.finish()]);
      done();
      loaded++;
      this.options.onProgress?.({ loaded, total: tensors.length, tensor: t.name });
    }
    await this.gpu.device.queue.onSubmittedWorkDone();
  }

  // ---------------------------------------------------------------------------------------------
  // Kernels

  private linear(o: Omit<LinearOptions, 'kind'>): Promise<GpuLinear> {
    return GpuLinear.create(this.gpu, { ...o, kind: this.options.matmul ?? 'auto', ...(this.options.subgroupMatrix ? { subgroupMatrix: this.options.subgroupMatrix } : {}) });
  }

  private async build(): Promise<void> {
    const c = this.config;
    const gpu = this.gpu;
    const wt = this.weightType;
    const at = this.activationType;
    const d = c.headDim;
    const H = c.hiddenSize;
    const qDim = c.numHeads * d;
    const kvDim = c.numKvHeads * d;
    const qkvDim = qDim + 2 * kvDim;
    const I = c.intermediateSize;
    const eps = c.rmsNormEps;

    this.embedding = await GpuEmbedding.create(gpu, { ids: this.ids, table: this.embed, tableType: wt, vocab: c.vocabSize, hidden: H, x: this.x });
    this.rope = await GpuRope.create(gpu, { x: this.qkv, dtype: at, table: this.ropeTab, headDim: d, qHeads: c.numHeads, kHeads: c.numKvHeads, ld: qkvDim, qOffset: 0, kOffset: qDim });
    this.swiglu = await GpuSwiglu.create(gpu, { gateUp: this.gu, input: at, out: this.act, output: at, intermediate: I });
    let first: LayerOps | null = null;
    for (let l = 0; l < c.numLayers; l++) {
      const L = this.layers[l]!;
      const f: LayerOps | null = first;
      // Every norm of every layer has the same uniforms (rows, dim, eps): one buffer for all.
      const attnNorm = await GpuRmsNorm.create(gpu, { x: this.x, weight: L.attnNorm, y: this.h, output: at, dim: H, eps, label: `layer ${l} attn norm` }, f?.attnNorm);
      const ops: LayerOps = {
        attnNorm,
        qkv: await this.linear({ label: `layer ${l} qkv`, weight: L.wqkv, weightType: wt, N: qkvDim, K: H, ...(L.bqkv ? { bias: L.bqkv } : {}), x: this.h, input: at, y: this.qkv, output: at, ...(f ? { shareParamsWith: f.qkv } : {}) }),
        kvWrite: await GpuKvWrite.create(gpu, { src: this.qkv, kCache: this.kCache[l]!, vCache: this.vCache[l]!, dtype: at, kvHeads: c.numKvHeads, headDim: d, capacity: this.capacity, ld: qkvDim, kOffset: qDim, vOffset: qDim + kvDim }, f?.kvWrite),
        o: await this.linear({ label: `layer ${l} o`, weight: L.wo, weightType: wt, N: H, K: qDim, ...(L.bo ? { bias: L.bo } : {}), x: this.attnOut, input: at, y: this.x, output: 'f32', accumulate: true, ...(f ? { shareParamsWith: f.o } : {}) }),
        mlpNorm: await GpuRmsNorm.create(gpu, { x: this.x, weight: L.mlpNorm, y: this.h, output: at, dim: H, eps, label: `layer ${l} mlp norm` }, f?.attnNorm ?? attnNorm),
        gateUp: await this.linear({ label: `layer ${l} gate_up`, weight: L.wgu, weightType: wt, N: 2 * I, K: H, ...(L.bgu ? { bias: L.bgu } : {}), x: this.h, input: at, y: this.gu, output: at, ...(f ? { shareParamsWith: f.gateUp } : {}) }),
        down: await this.linear({ label: `layer ${l} down`, weight: L.wdown, weightType: wt, N: H, K: I, ...(L.bdown ? { bias: L.bdown } : {}), x: this.act, input: at, y: this.x, output: 'f32', accumulate: true, ...(f ? { shareParamsWith: f.down } : {}) }),
      };
      this.ops.push(ops);
      first ??= ops;
    }
    this.finalNormLast = await GpuRmsNorm.create(gpu, { x: this.x, weight: this.finalNormW, y: this.h, output: at, dim: H, eps, label: 'final norm (last)' });
    this.lmLast = await this.linear({ label: 'lm_head (last)', weight: this.lmHead, weightType: wt, N: c.vocabSize, K: H, x: this.h, input: at, y: this.logitsLast, output: 'f32' });

    const attn = this.options.attention;
    if (typeof attn === 'function') this.attention = attn;
    else if (attn) {
      this.attentionModule = attn;
      this.attention = attn.encode;
    } else {
      const kernels = await createAttentionKernels(gpu, { dtype: at, headDim: d });
      this.attentionModule = { encode: (_l, enc, problem) => kernels.encode(enc, problem, { kind: 'dense' }), destroy: () => kernels.destroy() };
      this.attention = this.attentionModule.encode;
      this.ownsAttention = true;
    }
  }

  /** Buffers and kernels for logits of every position (perplexity), made on first use. */
  private async ensureAllLogits(): Promise<void> {
    if (this.lmAll) return;
    const c = this.config;
    this.logitsAll = this.buffer('logits (all)', this.maxChunk * c.vocabSize * 4, 'activations');
    this.finalNormAll = await GpuRmsNorm.create(this.gpu, { x: this.x, weight: this.finalNormW, y: this.h, output: this.activationType, dim: c.hiddenSize, eps: c.rmsNormEps, label: 'final norm (all)' });
    this.lmAll = await this.linear({ label: 'lm_head (all)', weight: this.lmHead, weightType: this.weightType, N: c.vocabSize, K: c.hiddenSize, x: this.h, input: this.activationType, y: this.logitsAll, output: 'f32' });
  }

  /** The attention problem of layer `l` for a chunk of T tokens starting at `start`. */
  attentionProblem(l: number, T: number, start: number): GpuAttentionProblem {
    const c = this.config;
    const d = c.headDim;
    const qDim = c.numHeads * d;
    const qkvDim = qDim + 2 * c.numKvHeads * d;
    const cacheView = (buffer: GPUBuffer) => ({ buffer, offset: 0, strideBatch: c.numKvHeads * this.capacity * d, strideHead: this.capacity * d, strideToken: d });
    return {
      q: { buffer: this.qkv, offset: 0, strideBatch: T * qkvDim, strideHead: d, strideToken: qkvDim },
      k: cacheView(this.kCache[l]!),
      v: cacheView(this.vCache[l]!),
      out: { buffer: this.attnOut, offset: 0, strideBatch: T * qDim, strideHead: d, strideToken: qDim },
      shape: { batch: 1, heads: c.numHeads, kvHeads: c.numKvHeads, queryLength: T, keyLength: start + T, headDim: d, queryOffset: start, keyCapacity: this.capacity },
      dtype: this.activationType,
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Forward

  /**
   * Appends `tokens` to the sequence (prefill in chunks of min(chunkSize, maxChunk), or one token
   * when decoding) and resolves to the requested logits: [vocab] of the last token ('last',
   * default), [tokens, vocab] ('all') or empty ('none'). One readback per call.
   */
  async forward(tokens: ArrayLike<number>, options: ForwardOptions = {}): Promise<Float32Array> {
    if (this.busy) throw new HipAttnError('INVALID_OPTION', 'LlamaGpu.forward() called again before the previous call resolved');
    this.busy = true;
    try {
      return await this.forwardInner(tokens, options);
    } finally {
      this.busy = false;
    }
  }

  private async forwardInner(tokens: ArrayLike<number>, options: ForwardOptions): Promise<Float32Array> {
    const V = this.config.vocabSize;
    const n = tokens.length;
    const want = options.logits ?? 'last';
    const requested = options.chunkSize ?? 128;
    if (!Number.isSafeInteger(requested) || requested < 1) throw new HipAttnError('INVALID_OPTION', `chunkSize must be a positive integer, got ${requested}`);
    const chunk = Math.min(requested, this.maxChunk);
    if (n === 0) throw new HipAttnError('INVALID_OPTION', 'forward() needs at least one token');
    for (let i = 0; i < n; i++) {
      const id = tokens[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new HipAttnError('INVALID_OPTION', `token id ${id} at index ${i} is outside the vocabulary [0, ${V})`);
    }
    if (this.length + n > this.capacity) {
      throw new HipAttnError('INVALID_OPTION', `context full: ${this.length} tokens held + ${n} new > capacity ${this.capacity} (allocate a larger capacity)`);
    }
    let staging: GPUBuffer | null = null;
    if (want === 'all') {
      await this.ensureAllLogits();
      const bytes = n * V * 4;
      if (bytes > this.gpu.limits.maxBufferSize) {
        throw new HipAttnError('OUT_OF_MEMORY', `logits of ${n} tokens × ${V} need ${formatBytes(bytes)} in one readback buffer, over maxBufferSize ${formatBytes(this.gpu.limits.maxBufferSize)}: call forward() on fewer tokens at a time`);
      }
      staging = this.gpu.device.createBuffer({ label: 'logits readback (all)', size: bytes, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    }
    try {
      for (let s = 0; s < n; s += chunk) {
        const count = Math.min(chunk, n - s);
        const ids = new Uint32Array(count);
        for (let i = 0; i < count; i++) ids[i] = tokens[s + i]!;
        const last = s + count === n;
        const mode = want === 'all' ? 'all' : want === 'last' && last ? 'last' : 'none';
        await this.encodeChunk(ids, mode, mode === 'all' ? { buffer: staging!, offset: s * V * 4 } : { buffer: this.stagingLast, offset: 0 });
        if (options.onProgress) {
          // Report the chunk when the GPU has run it, not when it was queued (queuing is instant).
          await this.gpu.device.queue.onSubmittedWorkDone();
          options.onProgress(s + count, n);
        }
      }
      if (want === 'none') return new Float32Array(0);
      const buf = staging ?? this.stagingLast;
      const bytes = want === 'all' ? n * V * 4 : V * 4;
      await buf.mapAsync(MapMode.READ, 0, bytes);
      const out = new Float32Array(buf.getMappedRange(0, bytes).slice(0));
      buf.unmap();
      return out;
    } finally {
      staging?.destroy();
    }
  }

  /** One chunk at positions length … length + T − 1: one encoder, one submit. */
  private async encodeChunk(ids: Uint32Array, mode: 'last' | 'all' | 'none', readback: { buffer: GPUBuffer; offset: number }): Promise<void> {
    const c = this.config;
    const device = this.gpu.device;
    const T = ids.length;
    const start = this.length;
    const H = c.hiddenSize;
    const half = c.headDim / 2;

    // Per-chunk inputs and uniforms (queued before this chunk's submit).
    writeBuffer(this.gpu, this.ids, ids);
    const { cos, sin } = ropeTables(this.invFreq, start, T);
    writeBuffer(this.gpu, this.ropeTab, packRopeTable(cos, sin));
    const first = this.ops[0]!;
    this.embedding.set(T);
    first.attnNorm.set({ rows: T });
    first.qkv.set({ M: T });
    this.rope.set(T, T * half);
    first.kvWrite.set(T, start);
    first.o.set({ M: T });
    first.gateUp.set({ M: T });
    this.swiglu.set(T);
    first.down.set({ M: T });
    if (mode === 'last') {
      this.finalNormLast.set({ rows: 1, xOffset: (T - 1) * H });
      this.lmLast.set({ M: 1 });
    } else if (mode === 'all') {
      this.finalNormAll!.set({ rows: T });
      this.lmAll!.set({ M: T });
    }

    const encoder = device.createCommandEncoder({ label: `forward ${start}+${T}` });
    let pass = encoder.beginComputePass({ label: 'embed + layer 0 qkv' });
    this.embedding.encode(pass);
    for (let l = 0; l < c.numLayers; l++) {
      const ops = this.ops[l]!;
      ops.attnNorm.encode(pass);
      ops.qkv.encode(pass);
      this.rope.encode(pass);
      ops.kvWrite.encode(pass);
      pass.end();
      await this.attention(l, encoder, this.attentionProblem(l, T, start));
      pass = encoder.beginComputePass({ label: `layer ${l} o + mlp` });
      ops.o.encode(pass);
      ops.mlpNorm.encode(pass);
      ops.gateUp.encode(pass);
      this.swiglu.encode(pass);
      ops.down.encode(pass);
    }
    if (mode === 'last') {
      this.finalNormLast.encode(pass);
      this.lmLast.encode(pass);
    } else if (mode === 'all') {
      this.finalNormAll!.encode(pass);
      this.lmAll!.encode(pass);
    }
    pass.end();
    if (mode === 'last') encoder.copyBufferToBuffer(this.logitsLast, 0, readback.buffer, readback.offset, c.vocabSize * 4);
    else if (mode === 'all') encoder.copyBufferToBuffer(this.logitsAll!, 0, readback.buffer, readback.offset, T * c.vocabSize * 4);
    device.queue.submit([encoder.finish()]);
    this.length = start + T;
  }

  /** Frees every buffer (and the default attention kernels). */
  destroy(): void {
    for (const ops of this.ops) for (const op of Object.values(ops)) op.destroy();
    this.ops = [];
    for (const op of [this.embedding, this.rope, this.swiglu, this.finalNormLast, this.finalNormAll, this.lmLast, this.lmAll]) op?.destroy();
    if (this.ownsAttention) this.attentionModule?.destroy?.();
    for (const b of this.owned) b.destroy();
    this.owned.length = 0;
  }
}

/**
 * The Llama-family forward pass on the CPU, float32, batch 1 — the reference every faster
 * backend is checked against. Read it top to bottom:
 *
 *   x = embed[tokens]
 *   for each layer:
 *     h = RMSNorm(x) ;  q, k, v = h·Wqᵀ (+bq), h·Wkᵀ (+bk), h·Wvᵀ (+bv)
 *     RoPE(q), RoPE(k) at the tokens' positions ; append k, v to the layer's KV cache
 *     a = attention(q, cache) ;  x += a·Woᵀ (+bo)
 *     h = RMSNorm(x) ;  x += (silu(h·Wgateᵀ) ⊙ h·Wupᵀ)·Wdownᵀ
 *   logits = RMSNorm(x)·lm_headᵀ   (lm_head = embed when the embeddings are tied)
 *
 * Attention is pluggable: `attention(layer, input)` gets the chunk's queries and the whole
 * cache (see src/attention/shape.ts), so dense, HiP and StreamingLLM share this code.
 */
import { HipAttnError } from '../errors.js';
import { denseAttention } from '../attention/cpu/dense.js';
import type { AttentionInput } from '../attention/shape.js';
import type { LlamaConfig } from './config.js';
import { addInPlace, matmul, rmsNorm, siluMul } from './cpu-ops.js';
import { applyRope, ropeInvFreq, ropeTables } from './rope.js';
import type { LlamaWeights } from './weights.js';

/** Computes one layer's attention output [1, heads, queryLength, headDim] from the chunk's queries and the cache. */
export type AttentionFn = (layer: number, input: AttentionInput<Float32Array>) => Float32Array;

/** Dense causal attention (the default). The model's own activations are not re-scanned for NaN. */
export const denseAttentionFn: AttentionFn = (_layer, input) => denseAttention(input, { checkFinite: false });

/**
 * The KV cache: per layer, K and V as Float32Array [kvHeads, capacity, headDim], allocated once
 * for the whole context and never reallocated; `length` tokens are valid.
 */
export class KvCache {
  readonly k: Float32Array[];
  readonly v: Float32Array[];
  /** Tokens currently held (the position of the next token). */
  length = 0;

  constructor(
    readonly numLayers: number,
    readonly kvHeads: number,
    readonly capacity: number,
    readonly headDim: number,
  ) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new HipAttnError('INVALID_OPTION', `KV cache capacity must be a positive integer, got ${capacity}`);
    const size = kvHeads * capacity * headDim;
    this.k = Array.from({ length: numLayers }, () => new Float32Array(size));
    this.v = Array.from({ length: numLayers }, () => new Float32Array(size));
  }

  /** Bytes held by the cache. */
  get bytes(): number {
    return 2 * this.numLayers * this.kvHeads * this.capacity * this.headDim * 4;
  }

  /** Writes rows [T, kvHeads·headDim] of projected keys/values for positions start … start+T−1. */
  write(layer: number, start: number, tokens: number, k: Float32Array, v: Float32Array): void {
    const { kvHeads, capacity, headDim } = this;
    const kc = this.k[layer]!;
    const vc = this.v[layer]!;
    const row = kvHeads * headDim;
    for (let t = 0; t < tokens; t++) {
      for (let h = 0; h < kvHeads; h++) {
        const src = t * row + h * headDim;
        const dst = (h * capacity + start + t) * headDim;
        kc.set(k.subarray(src, src + headDim), dst);
        vc.set(v.subarray(src, src + headDim), dst);
      }
    }
  }
}

export interface LlamaCpuOptions {
  /** Context capacity in tokens (the KV cache size). Default: the config's maxPositionEmbeddings. */
  capacity?: number;
  /** Attention implementation per layer. Default: dense causal attention. */
  attention?: AttentionFn;
}

export interface ForwardOptions {
  /** Prefill in chunks of this many tokens (default 128). Results do not depend on it. */
  chunkSize?: number;
  /** Which logits to return: of the last token ([vocab], default), of every token ([tokens, vocab]) or none. */
  logits?: 'last' | 'all' | 'none';
  /**
   * Called after each prefill chunk with the tokens of this call done so far and their total
   * (e.g. a progress bar for a long prompt). WebGPU: called once the chunk's GPU work has
   * finished, which costs a wait per chunk; leave it out where nothing shows it.
   */
  onProgress?: (done: number, total: number) => void;
}

/** [T, heads·d] → [heads, T, d] */
function toHeadMajor(x: Float32Array, tokens: number, heads: number, d: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) out.set(x.subarray((t * heads + h) * d, (t * heads + h + 1) * d), (h * tokens + t) * d);
  }
  return out;
}

/** [heads, T, d] → [T, heads·d] */
function toTokenMajor(x: Float32Array, tokens: number, heads: number, d: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let h = 0; h < heads; h++) {
    for (let t = 0; t < tokens; t++) out.set(x.subarray((h * tokens + t) * d, (h * tokens + t + 1) * d), (t * heads + h) * d);
  }
  return out;
}

export class LlamaCpu {
  readonly cache: KvCache;
  readonly attention: AttentionFn;
  private readonly invFreq: Float32Array;

  constructor(
    readonly config: LlamaConfig,
    readonly weights: LlamaWeights,
    options: LlamaCpuOptions = {},
  ) {
    const capacity = options.capacity ?? config.maxPositionEmbeddings;
    this.cache = new KvCache(config.numLayers, config.numKvHeads, capacity, config.headDim);
    this.attention = options.attention ?? denseAttentionFn;
    this.invFreq = ropeInvFreq(config.rope, config.headDim);
  }

  /** Position of the next token (tokens held in the cache). */
  get position(): number {
    return this.cache.length;
  }

  /** Empties the KV cache (keeps its memory). */
  reset(): void {
    this.cache.length = 0;
  }

  /** Forgets every token from `position` on (e.g. to reuse a shared prompt prefix). */
  rewind(position: number): void {
    if (!Number.isSafeInteger(position) || position < 0 || position > this.cache.length) {
      throw new HipAttnError('INVALID_OPTION', `cannot rewind to position ${position}: the cache holds ${this.cache.length} tokens`);
    }
    this.cache.length = position;
  }

  /**
   * Appends `tokens` to the sequence (prefill in chunks, or one token when decoding) and returns
   * the requested logits.
   */
  forward(tokens: ArrayLike<number>, options: ForwardOptions = {}): Float32Array {
    const { vocabSize } = this.config;
    const n = tokens.length;
    const want = options.logits ?? 'last';
    const chunk = options.chunkSize ?? 128;
    if (!Number.isSafeInteger(chunk) || chunk < 1) throw new HipAttnError('INVALID_OPTION', `chunkSize must be a positive integer, got ${chunk}`);
    if (n === 0) throw new HipAttnError('INVALID_OPTION', 'forward() needs at least one token');
    for (let i = 0; i < n; i++) {
      const id = tokens[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new HipAttnError('INVALID_OPTION', `token id ${id} at index ${i} is outside the vocabulary [0, ${vocabSize})`);
    }
    if (this.cache.length + n > this.cache.capacity) {
      throw new HipAttnError(
        'INVALID_OPTION',
        `context full: ${this.cache.length} tokens held + ${n} new > capacity ${this.cache.capacity} (allocate a larger capacity)`,
      );
    }
    const all = want === 'all' ? new Float32Array(n * vocabSize) : undefined;
    let last: Float32Array = new Float32Array(0);
    for (let s = 0; s < n; s += chunk) {
      const count = Math.min(chunk, n - s);
      const ids = Array.from({ length: count }, (_, i) => tokens[s + i]!);
      const isLastChunk = s + count === n;
      const mode = want === 'all' ? 'all' : want === 'last' && isLastChunk ? 'last' : 'none';
      const logits = this.forwardChunk(ids, mode);
      if (all) all.set(logits, s * vocabSize);
      else if (mode === 'last') last = logits;
      options.onProgress?.(s + count, n);
    }
    return all ?? last;
  }

  /** One chunk of tokens at positions cache.length … cache.length + T − 1. */
  private forwardChunk(ids: number[], logitsMode: 'last' | 'all' | 'none'): Float32Array {
    const c = this.config;
    const w = this.weights;
    const T = ids.length;
    const H = c.hiddenSize;
    const d = c.headDim;
    const qDim = c.numHeads * d;
    const kvDim = c.numKvHeads * d;
    const start = this.cache.length;
    const { cos, sin } = ropeTables(this.invFreq, start, T);

    // Token embeddings.
    const x = new Float32Array(T * H);
    for (let t = 0; t < T; t++) x.set(w.embed.subarray(ids[t]! * H, (ids[t]! + 1) * H), t * H);

    const h = new Float32Array(T * H);
    for (let l = 0; l < c.numLayers; l++) {
      const L = w.layers[l]!;
      // Attention block.
      rmsNorm(x, L.attnNorm, T, H, c.rmsNormEps, h);
      const q = matmul(h, L.wq, T, H, qDim, L.bq);
      const k = matmul(h, L.wk, T, H, kvDim, L.bk);
      const v = matmul(h, L.wv, T, H, kvDim, L.bv);
      for (let t = 0; t < T; t++) {
        applyRope(q, t * qDim, c.numHeads, d, cos, sin, t);
        applyRope(k, t * kvDim, c.numKvHeads, d, cos, sin, t);
      }
      this.cache.write(l, start, T, k, v);
      const attn = this.attention(l, {
        q: toHeadMajor(q, T, c.numHeads, d),
        k: this.cache.k[l]!,
        v: this.cache.v[l]!,
        shape: {
          batch: 1,
          heads: c.numHeads,
          kvHeads: c.numKvHeads,
          queryLength: T,
          keyLength: start + T,
          headDim: d,
          queryOffset: start,
          keyCapacity: this.cache.capacity,
        },
      });
      addInPlace(x, matmul(toTokenMajor(attn, T, c.numHeads, d), L.wo, T, qDim, H, L.bo));

      // MLP block (SwiGLU).
      rmsNorm(x, L.mlpNorm, T, H, c.rmsNormEps, h);
      const gate = matmul(h, L.wGate, T, H, c.intermediateSize, L.bGate);
      const up = matmul(h, L.wUp, T, H, c.intermediateSize, L.bUp);
      addInPlace(x, matmul(siluMul(gate, up), L.wDown, T, c.intermediateSize, H, L.bDown));
    }
    this.cache.length = start + T;

    if (logitsMode === 'none') return new Float32Array(0);
    const rows = logitsMode === 'all' ? T : 1;
    const from = (T - rows) * H;
    const normed = rmsNorm(x.subarray(from), w.finalNorm, rows, H, c.rmsNormEps);
    return matmul(normed, w.lmHead, rows, H, c.vocabSize);
  }
}

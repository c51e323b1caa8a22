/**
 * The attention benchmark behind `hipattn bench attention`: dense vs HiP vs StreamingLLM on the
 * GPU, prefill (all T queries) and decode (one query, context T, one layer), with GPU
 * timestamps. HiP prefill = mask estimation (tree search) + sparse attention over the mask
 * estimated from the same inputs; HiP decode = sparse attention with a cached mask + the
 * mask refresh (of the blockSizeQ-query block ending at the new token) amortised over
 * refreshInterval tokens, and between refreshes the shifted blocks (decode-shift kernel and the
 * larger mask, `withShiftedSteps`). Components are timed separately (median
 * of several runs each) and summed.
 */
import { type HipOptions, resolveHipOptions, resolveStreamingOptions, type StreamingOptions } from '../attention/options.js';
import { resolveShape } from '../attention/shape.js';
import type { AttentionMethod } from '../attention/method.js';
import { createStorageBuffer, type GpuContext, timeGpu } from '../gpu/index.js';
import { benchAttention, fillRandom } from '../kernels/attention/bench.js';
import { benchHipMask } from '../kernels/hip-mask/bench.js';
import { createDecodeShift, createHipMaskEstimator } from '../kernels/hip-mask/index.js';
import type { GpuHipMask, StorageType } from '../kernels/types.js';
import { bytesOf } from '../kernels/common.js';

export type BenchMode = 'prefill' | 'decode';

export interface AttentionBenchSpec {
  seqLens: number[];
  methods: AttentionMethod[];
  modes: BenchMode[];
  /** HiP is also run at these lengths (dense and StreamingLLM are not). */
  hipOnlySeqLens?: number[];
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  dtype?: StorageType;
  hip?: Partial<HipOptions>;
  streaming?: Partial<StreamingOptions>;
  seed?: number;
  /** Untimed dense prefill benchmarks (at min(16k, the longest length)) run first to bring the GPU's clocks up (default 3). */
  warmupRuns?: number;
}

export interface AttentionBenchRow {
  T: number;
  method: AttentionMethod;
  mode: BenchMode;
  /** Total GPU time per layer (ms); for HiP the sum of the parts below. */
  ms: number;
  /** HiP: mask estimation (prefill) or refresh / refreshInterval (decode), and sparse attention. */
  maskMs?: number;
  attentionMs?: number;
  /** Useful FLOPs and minimal bytes of the whole step, and the rates they imply. */
  flops: number;
  bytes: number;
  tflops: number;
  gbps: number;
  path: string;
  timing: string;
  error?: string;
}

const tokenMajor = (T: number, H: number, d: number) => ({ strideBatch: T * H * d, strideHead: d, strideToken: H * d });

/** Estimates the HiP mask of the exact inputs `benchAttention` builds from `seed` (same fill, same layout). */
async function realMask(gpu: GpuContext, T: number, Lq: number, H: number, Hkv: number, d: number, dtype: StorageType, hip: HipOptions, seed: number): Promise<GpuHipMask> {
  const eb = bytesOf(dtype);
  const q = createStorageBuffer(gpu, Lq * H * d * eb, { label: 'bench q (mask)', splitBindings: true });
  const k = createStorageBuffer(gpu, Hkv * T * d * eb, { label: 'bench k (mask)', splitBindings: true });
  try {
    await fillRandom(gpu, q, Lq * H * d, dtype, seed, 2);
    await fillRandom(gpu, k, Hkv * T * d, dtype, seed + 1, 2);
    const est = await createHipMaskEstimator(gpu, { dtype, headDim: d, options: hip, kinds: [Lq === 1 ? 'decode' : 'prefill'] });
    const shape = resolveShape({ batch: 1, heads: H, kvHeads: Hkv, queryLength: Lq, keyLength: T, headDim: d });
    const n = hip.topK / hip.blockSizeK;
    const nQB = Math.ceil(Lq / hip.blockSizeQ);
    const out: GpuHipMask = {
      buffer: createStorageBuffer(gpu, H * nQB * n * 4, { label: 'bench hip mask', splitBindings: true }),
      batch: 1, heads: H, queryLength: Lq, queryOffset: T - Lq, keyLength: T, numQueryBlocks: nQB, blocksPerQuery: n, options: hip,
    };
    const enc = gpu.device.createCommandEncoder();
    est.encode(enc, { q: { buffer: q, ...tokenMajor(Lq, H, d) }, k: { buffer: k, strideBatch: Hkv * T * d, strideHead: T * d, strideToken: d }, shape }, out);
    gpu.device.queue.submit([enc.finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
    est.destroy();
    return out;
  } finally {
    q.destroy();
    k.destroy();
  }
}

type AttentionTiming = Awaited<ReturnType<typeof benchAttention>>;

/**
 * HiP decode between refreshes (shiftedBlocks): of every refreshInterval steps one reads the
 * refresh's mask (`atRefresh`) and the others the decode-shift kernel's output, up to twice the
 * selected blocks. Times that step at the middle shift (refreshInterval / 2) — the shift kernel
 * (median of 5 timings of 100 dispatches) plus the attention over its mask — and returns the average over the interval.
 */
async function withShiftedSteps(
  gpu: GpuContext,
  hip: HipOptions,
  mask: GpuHipMask,
  atRefresh: AttentionTiming,
  attend: (mask: GpuHipMask) => Promise<AttentionTiming>,
): Promise<AttentionTiming> {
  if (!hip.shiftedBlocks || hip.refreshInterval === 1) return atRefresh;
  const shift = Math.floor(hip.refreshInterval / 2);
  const shifter = await createDecodeShift(gpu);
  try {
    const refreshed = { ...mask, queryOffset: mask.queryOffset - shift }; // refreshed `shift` steps before this query
    let stepped: GpuHipMask = mask;
    // one dispatch is below the timestamp resolution of some GPUs (65.5 µs ticks on the H200): 100 per timing
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = await timeGpu(gpu, (enc) => {
        for (let r = 0; r < 100; r++) stepped = shifter.encode(enc, refreshed, mask.queryOffset);
      }, { maxPasses: 128 });
      times.push(t.ms / 100);
    }
    const shiftMs = times.sort((a, b) => a - b)[2]!;
    const between = await attend(stepped);
    const w = (hip.refreshInterval - 1) / hip.refreshInterval;
    const ms = (1 - w) * atRefresh.ms + w * (between.ms + shiftMs);
    const flops = (1 - w) * atRefresh.flops + w * between.flops;
    const bytes = (1 - w) * atRefresh.bytes + w * between.bytes;
    return { ...between, ms, flops, bytes, tflops: flops / ms / 1e9, gbps: bytes / ms / 1e6 };
  } finally {
    shifter.destroy();
  }
}

export async function runAttentionBenchmark(gpu: GpuContext, spec: AttentionBenchSpec, onRow?: (row: AttentionBenchRow) => void): Promise<AttentionBenchRow[]> {
  const H = spec.heads ?? 32;
  const Hkv = spec.kvHeads ?? 8;
  const d = spec.headDim ?? 128;
  const dtype = spec.dtype ?? 'f16';
  const hip = resolveHipOptions(spec.hip);
  const streaming = resolveStreamingOptions(spec.streaming);
  const seed = spec.seed ?? 1234;
  const rows: AttentionBenchRow[] = [];
  const lengths = [...spec.seqLens, ...(spec.hipOnlySeqLens ?? []).filter((t) => !spec.seqLens.includes(t))];
  // Warm-up: a few seconds' worth of dense prefill first, so the first rows are not timed while
  // the GPU's clocks ramp up (seen on the H200: 4k rows slower than 16k ones without it).
  const warm = { seqLen: Math.min(16384, Math.max(...spec.seqLens)), mode: 'prefill', method: 'dense', heads: H, kvHeads: Hkv, headDim: d, dtype, hip, streaming, seed } as const;
  for (let i = 0; i < (spec.warmupRuns ?? 3); i++) await benchAttention(gpu, warm);
  for (const T of lengths) {
    for (const mode of spec.modes) {
      for (const method of spec.methods) {
        if (!spec.seqLens.includes(T) && method !== 'hip') continue;
        const common = { seqLen: T, mode, method, heads: H, kvHeads: Hkv, headDim: d, dtype, hip, streaming, seed } as const;
        let row: AttentionBenchRow;
        try {
          if (method !== 'hip') {
            const r = await benchAttention(gpu, common);
            row = { T, method, mode, ms: r.ms, flops: r.flops, bytes: r.bytes, tflops: r.tflops, gbps: r.gbps, path: r.prefillPath, timing: r.timing };
          } else {
            const Lq = mode === 'prefill' ? T : 1;
            const mask = await realMask(gpu, T, Lq, H, Hkv, d, dtype, hip, seed);
            let att;
            try {
              att = await benchAttention(gpu, { ...common, mask });
              if (mode === 'decode') att = await withShiftedSteps(gpu, hip, mask, att, (m) => benchAttention(gpu, { ...common, mask: m }));
            } finally {
              mask.buffer.destroy();
            }
            // a decode refresh estimates the mask of the query block ending at the new token (b_q queries)
            const m = await benchHipMask(gpu, { seqLen: T, queryLength: mode === 'prefill' ? T : hip.blockSizeQ, heads: H, kvHeads: Hkv, headDim: d, dtype, options: hip, seed });
            const maskMs = mode === 'prefill' ? m.ms : m.ms / hip.refreshInterval;
            const maskFlops = mode === 'prefill' ? m.flops : m.flops / hip.refreshInterval;
            const maskBytes = mode === 'prefill' ? m.bytes : m.bytes / hip.refreshInterval;
            const ms = maskMs + att.ms;
            row = {
              T, method, mode, ms, maskMs, attentionMs: att.ms,
              flops: att.flops + maskFlops, bytes: att.bytes + maskBytes,
              tflops: (att.flops + maskFlops) / ms / 1e9, gbps: (att.bytes + maskBytes) / ms / 1e6,
              path: `${m.variant.path}+${att.prefillPath}`, timing: att.timing,
            };
          }
        } catch (e) {
          row = { T, method, mode, ms: Number.NaN, flops: 0, bytes: 0, tflops: 0, gbps: 0, path: '', timing: '', error: e instanceof Error ? e.message.split('\n')[0]!.slice(0, 200) : String(e) };
        }
        rows.push(row);
        onRow?.(row);
      }
    }
  }
  return rows;
}

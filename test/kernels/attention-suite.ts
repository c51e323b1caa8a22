/**
 * The attention-kernel test suite (WebGPU, Node/Dawn; CI: lavapipe) against the CPU reference
 * on fresh random inputs (seeds logged; replay with HIPATTN_SEED), for one storage type. Each
 * storage type runs in its own test file (one device per process: lavapipe slows down badly
 * with two devices busy in one process). Shapes are small: lavapipe is a CPU rasteriser.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { getTestGpu, loudNotice, testSeed } from '../gpu-helpers.js';
import { createHipDecodeState, estimateHipMask, hipDecodeAttention, resolveShape } from '../../src/attention/index.js';
import type { AttentionShape } from '../../src/attention/shape.js';
import { HipAttnError } from '../../src/errors.js';
import type { StorageType } from '../../src/kernels/types.js';
import { runAttentionCase, randomInput, type CheckCase } from '../../src/kernels/attention/check.js';
import { attentionCost, createAttentionKernels, type AttentionKernels } from '../../src/kernels/attention/index.js';

export async function defineAttentionSuite(only: StorageType): Promise<void> {
const gpu = only === 'f16' ? await getTestGpu() : null;
const gpu32 = only === 'f32' ? await getTestGpu({ disable: { shaderF16: true, subgroups: true, subgroupMatrix: true } }) : null;
const any = gpu ?? gpu32;
afterAll(() => {
  gpu?.destroy();
  gpu32?.destroy();
});

const TOL: Record<StorageType, number> = { f16: 2e-3, f32: 1e-5 };
const HIP_SMALL = { topK: 32, blockSizeQ: 32, blockSizeK: 2, sinkTokens: 8, slidingWindow: 48, refreshInterval: 4 };
const STREAM_SMALL = { sinkTokens: 8, slidingWindow: 40 };

const kernelCache = new Map<string, Promise<AttentionKernels>>();
function kernelsFor(dtype: StorageType, headDim: number, extra: Record<string, unknown> = {}): Promise<AttentionKernels> {
  const g = dtype === 'f16' ? gpu! : gpu32!;
  const key = `${dtype}/${headDim}/${JSON.stringify(extra)}`;
  let k = kernelCache.get(key);
  if (!k) {
    k = createAttentionKernels(g, { dtype, headDim, ...extra });
    kernelCache.set(key, k);
  }
  return k;
}
afterAll(async () => {
  for (const k of kernelCache.values()) (await k).destroy();
});

async function check(dtype: StorageType, name: string, c: Omit<CheckCase, 'seed'>, extra: Record<string, unknown> = {}): Promise<number> {
  const seed = testSeed(`attention ${dtype} ${name}`);
  const k = await kernelsFor(dtype, c.shape.headDim, extra);
  const r = await runAttentionCase(dtype === 'f16' ? gpu! : gpu32!, k, { streaming: STREAM_SMALL, hip: HIP_SMALL, ...c, seed });
  console.log(`[attention ${k.prefillPath}] ${dtype} ${name}: max row rel err ${r.maxRowRelError.toExponential(2)}, max abs err / max |ref| ${r.maxAbsErrorRel.toExponential(2)} (${r.rows} rows, ${r.ms.toFixed(0)} ms)`);
  expect(r.maxRowRelError).toBeLessThanOrEqual(TOL[dtype]);
  return r.maxRowRelError;
}

const shape = (s: Partial<AttentionShape> & Pick<AttentionShape, 'queryLength' | 'keyLength'>): AttentionShape => ({ batch: 1, heads: 4, kvHeads: 1, headDim: 64, ...s });

describe.skipIf(!any)(`attention kernels ${only}: prefill (plain kernel)`, () => {
  for (const dtype of [only]) {
    it(`${dtype}: dense, GQA 4, batch 2, model layout [tokens, heads, d], ragged length`, async () => {
      await check(dtype, 'dense prefill', { method: 'dense', mode: 'prefill', layout: 'model', offset: 4, shape: shape({ batch: 2, heads: 4, kvHeads: 1, queryLength: 203, keyLength: 203 }) }, { prefill: 'plain' });
    });
    it(`${dtype}: dense chunked prefill (query offset, KV capacity > length), GQA 8, d 128`, async () => {
      await check(dtype, 'dense chunk', { method: 'dense', mode: 'prefill', layout: 'model', shape: shape({ heads: 8, kvHeads: 1, headDim: 128, queryLength: 77, keyLength: 301, keyCapacity: 320 }) }, { prefill: 'plain' });
    });
    it(`${dtype}: StreamingLLM, GQA 1, explicit query offset`, async () => {
      await check(dtype, 'streaming prefill', { method: 'streaming', mode: 'prefill', shape: shape({ heads: 2, kvHeads: 2, queryLength: 150, keyLength: 260, queryOffset: 100 }) }, { prefill: 'plain' });
    });
    it(`${dtype}: HiP (CPU-estimated mask), GQA 4, batch 2, model layout`, async () => {
      await check(dtype, 'hip prefill', { method: 'hip', mode: 'prefill', layout: 'model', shape: shape({ batch: 2, heads: 4, kvHeads: 1, queryLength: 290, keyLength: 290 }) }, { prefill: 'plain' });
    });
  }
  it.skipIf(only !== 'f16')('f16: HiP with d 128, GQA 8, chunked prefill (mask for the chunk), blockSizeQ 48 (not a tile multiple)', async () => {
    await check('f16', 'hip chunk d128', {
      method: 'hip',
      mode: 'prefill',
      layout: 'model',
      hip: { ...HIP_SMALL, blockSizeQ: 48, topK: 40 },
      shape: shape({ heads: 8, kvHeads: 1, headDim: 128, queryLength: 131, keyLength: 400 }),
    }, { prefill: 'plain' });
  });
});

describe.skipIf(!any)(`attention kernels ${only}: decode (split-K + reduce)`, () => {
  for (const dtype of [only]) {
    it(`${dtype}: dense, GQA 4, batch 2, KV cache capacity > length, auto splits`, async () => {
      await check(dtype, 'dense decode', { method: 'dense', mode: 'decode', layout: 'model', shape: shape({ batch: 2, heads: 8, kvHeads: 2, queryLength: 1, keyLength: 700, keyCapacity: 768 }) });
    });
    it(`${dtype}: StreamingLLM and HiP, GQA 8, d 128, forced 3 splits`, async () => {
      const s = shape({ heads: 8, kvHeads: 1, headDim: 128, queryLength: 1, keyLength: 333 });
      await check(dtype, 'streaming decode', { method: 'streaming', mode: 'decode', decodeSplits: 3, shape: s });
      await check(dtype, 'hip decode', { method: 'hip', mode: 'decode', decodeSplits: 3, shape: s });
    });
  }
  it.skipIf(only !== 'f16')('f16: GQA 1 and a few queries through the decode path (queryLength 3)', async () => {
    await check('f16', 'dense decode 3q', { method: 'dense', mode: 'decode', shape: shape({ heads: 2, kvHeads: 2, queryLength: 3, keyLength: 90 }) });
  });
  it.skipIf(only !== 'f16')('f16: HiP decode reusing a mask estimated refreshInterval−1 steps earlier (as the CPU decode loop does)', async () => {
    const seed = testSeed('hip decode cached mask');
    const s = shape({ heads: 4, kvHeads: 1, queryLength: 1, keyLength: 260, keyCapacity: 264 });
    // The CPU decode state estimates at the first step; steps 2–4 reuse that mask.
    const first = randomInput({ ...s, keyLength: 257 }, seed, 'f16');
    const state = createHipDecodeState();
    hipDecodeAttention(first, state, HIP_SMALL);
    expect(state.mask).not.toBeNull();
    const k = await kernelsFor('f16', 64);
    const r = await runAttentionCase(gpu!, k, { method: 'hip', mode: 'decode', shape: s, seed, mask: state.mask!, hip: HIP_SMALL });
    console.log(`[attention] f16 hip decode with cached mask: max row rel err ${r.maxRowRelError.toExponential(2)}`);
    expect(r.maxRowRelError).toBeLessThanOrEqual(TOL.f16);
  });
  it.skipIf(only !== 'f16')('f16: the plain decode kernel (split-K + serial reduce) still matches: dense and HiP, forced 3 splits', async () => {
    const s = shape({ heads: 8, kvHeads: 2, headDim: 64, queryLength: 1, keyLength: 300 });
    await check('f16', 'plain decode dense', { method: 'dense', mode: 'decode', decodeSplits: 3, shape: s }, { decode: 'plain' });
    await check('f16', 'plain decode hip', { method: 'hip', mode: 'decode', decodeSplits: 3, shape: s }, { decode: 'plain' });
  });
  it.skipIf(only !== 'f16' || !gpu?.features.subgroups)(
    'f16: subgroup decode kernel: GQA 1 / 4 / 8, d 64 / 128, HiP with splits, 8-byte loads (offset 4), shuffle merges, f32 storage',
    async () => {
      const sg = { decode: 'subgroup' };
      await check('f16', 'sg decode dense d64 GQA 4 batch 2', { method: 'dense', mode: 'decode', layout: 'model', shape: shape({ batch: 2, heads: 8, kvHeads: 2, queryLength: 1, keyLength: 700, keyCapacity: 768 }) }, sg);
      await check('f16', 'sg decode hip d128 GQA 8, 5 splits', { method: 'hip', mode: 'decode', decodeSplits: 5, shape: shape({ heads: 8, kvHeads: 1, headDim: 128, queryLength: 1, keyLength: 333 }) }, sg);
      await check('f16', 'sg decode streaming GQA 1, 2 queries, offset 4 (8-byte loads)', { method: 'streaming', mode: 'decode', offset: 4, shape: shape({ heads: 2, kvHeads: 2, queryLength: 2, keyLength: 150 }) }, sg);
      // 2 lanes per key, 3 keys per step, key groups merged with shuffles in blocks of 8 lanes.
      await check('f16', 'sg decode hip lanes 2 keys 3 merge 8', { method: 'hip', mode: 'decode', decodeSplits: 2, shape: shape({ heads: 4, kvHeads: 1, queryLength: 1, keyLength: 300 }) }, { decode: 'subgroup', decodeKernel: { lanes: 2, keys: 3, wg: 32, merge: 8 } });
      // f32 storage (4 floats per 16-byte load) on the same device.
      const k32 = await createAttentionKernels(gpu!, { dtype: 'f32', headDim: 64, decode: 'subgroup' });
      try {
        expect(k32.decodePath).toBe('subgroup');
        for (const method of ['dense', 'hip'] as const) {
          const r = await runAttentionCase(gpu!, k32, { method, mode: 'decode', hip: HIP_SMALL, seed: testSeed(`sg decode f32 ${method}`), shape: shape({ heads: 4, kvHeads: 1, queryLength: 1, keyLength: 260 }) });
          console.log(`[attention] f32 storage, subgroup decode ${method}: max row rel err ${r.maxRowRelError.toExponential(2)}`);
          expect(r.maxRowRelError).toBeLessThanOrEqual(TOL.f32);
        }
      } finally {
        k32.destroy();
      }
    },
  );
  it.skipIf(only !== 'f16')('f16: encode() picks decode for queryLength 1 and prefill otherwise', async () => {
    await check('f16', 'auto hip 1 query', { method: 'hip', mode: 'auto', shape: shape({ heads: 4, kvHeads: 1, queryLength: 1, keyLength: 150 }) });
  });
});

describe.skipIf(!gpu)('attention kernels f16: bindings larger than the device limit', () => {
  it('splits bindings per (batch, KV head) and per query range when a tensor exceeds the binding limit', async () => {
    // K per (b, kvh): 230 keys × 64 × 2 B ≈ 29 KiB; q per (b, KV group of 2 heads) in the model
    // layout spans ≈ 230 × 4 × 64 × 2 B ≈ 115 KiB > 40 KiB, so query chunks are needed too.
    const extra = { maxBindingBytes: 40 * 1024, prefill: 'plain' };
    const s = shape({ batch: 2, heads: 4, kvHeads: 2, queryLength: 230, keyLength: 230 });
    await check('f16', 'chunked dense prefill', { method: 'dense', mode: 'prefill', layout: 'model', shape: s }, extra);
    await check('f16', 'chunked hip prefill', { method: 'hip', mode: 'prefill', layout: 'model', shape: s }, extra);
    await check('f16', 'chunked dense decode', { method: 'dense', mode: 'decode', layout: 'model', shape: { ...s, queryLength: 1 } }, extra);
  });
  it('throws OUT_OF_MEMORY naming the bytes needed and the limit when one K/V slice cannot be bound', async () => {
    const k = await createAttentionKernels(gpu!, { dtype: 'f16', headDim: 64, maxBindingBytes: 4096, prefill: 'plain' });
    try {
      const err = await runAttentionCase(gpu!, k, { method: 'dense', mode: 'prefill', seed: 1, shape: shape({ queryLength: 64, keyLength: 64 }) }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HipAttnError);
      expect((err as HipAttnError).code).toBe('OUT_OF_MEMORY');
      expect((err as Error).message).toMatch(/needs a binding of .*KiB.*over .*4\.00 KiB/);
    } finally {
      k.destroy();
    }
  });
});

describe.skipIf(!gpu)('attention kernels f16: tensor-core prefill kernel, emulated subgroup matrices (same code, plain WGSL ops)', () => {
  it('f16: dense (GQA 4, model layout, ragged), streaming, HiP — d 64', async () => {
    const extra = { prefill: 'mma-emulated' };
    await check('f16', 'mma-emu dense', { method: 'dense', mode: 'prefill', layout: 'model', shape: shape({ heads: 4, kvHeads: 1, queryLength: 97, keyLength: 140 }) }, extra);
    await check('f16', 'mma-emu streaming', { method: 'streaming', mode: 'prefill', shape: shape({ heads: 2, kvHeads: 2, queryLength: 100, keyLength: 100 }) }, extra);
    await check('f16', 'mma-emu hip', { method: 'hip', mode: 'prefill', layout: 'model', shape: shape({ batch: 2, heads: 2, kvHeads: 1, queryLength: 160, keyLength: 160 }) }, extra);
  });
  it('f16: unrolled tile loops (the exact code structure of the GPU kernel), d 16, 2 warps, key tiles of 16, HiP', async () => {
    // Small so that lavapipe's LLVM compiles the unrolled code quickly.
    await check('f16', 'mma-emu unrolled hip d16', { method: 'hip', mode: 'prefill', shape: shape({ heads: 2, kvHeads: 1, headDim: 16, queryLength: 130, keyLength: 130 }) }, { prefill: 'mma-emulated', unrollLoops: true, mma: { warps: 2, bk: 16 } });
  });
  it('f16: O rescaled on every growth of a row max (threshold 0: exercises the rarely taken rescale path)', async () => {
    await check('f16', 'mma-emu rescale', { method: 'dense', mode: 'prefill', shape: shape({ heads: 2, kvHeads: 1, queryLength: 100, keyLength: 100 }) }, { prefill: 'mma-emulated', mma: { rescaleThreshold: 0 } });
  });
});

describe.skipIf(!gpu?.features.subgroups)('attention kernels f16: pipelined tensor-core prefill kernel (mma2), emulated subgroup matrices', () => {
  it('f16: dense (GQA 4, model layout, ragged, offset 4: 8-byte loads), streaming (query offset), HiP (batch 2) — d 32, 2 warps, key tiles of 16', async () => {
    const extra = { prefill: 'mma2-emulated', mma2: { warps: 2, bk: 16 } };
    await check('f16', 'mma2-emu dense', { method: 'dense', mode: 'prefill', layout: 'model', offset: 4, shape: shape({ heads: 4, kvHeads: 1, headDim: 32, queryLength: 97, keyLength: 140 }) }, extra);
    await check('f16', 'mma2-emu streaming', { method: 'streaming', mode: 'prefill', shape: shape({ heads: 2, kvHeads: 2, headDim: 32, queryLength: 100, keyLength: 130, queryOffset: 30 }) }, extra);
    await check('f16', 'mma2-emu hip', { method: 'hip', mode: 'prefill', layout: 'model', shape: shape({ batch: 2, heads: 2, kvHeads: 1, headDim: 32, queryLength: 160, keyLength: 160 }) }, extra);
  });
  it('f16: direct K/V matrix loads for tiles valid for every row: dense (GQA 4, query offset), streaming — d 32, 2 warps, key tiles of 16', async () => {
    const extra = { prefill: 'mma2-emulated', mma2: { warps: 2, bk: 16, direct: true } };
    await check('f16', 'mma2-emu direct dense', { method: 'dense', mode: 'prefill', layout: 'model', shape: shape({ heads: 4, kvHeads: 1, headDim: 32, queryLength: 90, keyLength: 170, keyCapacity: 176 }) }, extra);
    await check('f16', 'mma2-emu direct streaming', { method: 'streaming', mode: 'prefill', shape: shape({ heads: 2, kvHeads: 2, headDim: 32, queryLength: 150, keyLength: 150 }) }, extra);
  });
  it('f16: unrolled code (the GPU kernel\'s structure), d 16, HiP with the block list in workgroup memory, 16-byte loads', async () => {
    await check('f16', 'mma2-emu unrolled hip d16', { method: 'hip', mode: 'prefill', shape: shape({ heads: 2, kvHeads: 1, headDim: 16, queryLength: 130, keyLength: 130 }) }, { prefill: 'mma2-emulated', unrollLoops: true, mma2: { warps: 2, bk: 16 } });
  });
  it('f16: 2 fragments per warp, key tiles of 32, O rescaled on every growth of a row max (threshold 0), HiP without the staged block list', async () => {
    const extra = { prefill: 'mma2-emulated', mma2: { warps: 1, bk: 32, rows: 2, rescaleThreshold: 0, blockList: false } };
    await check('f16', 'mma2-emu r2 rescale dense', { method: 'dense', mode: 'prefill', layout: 'model', shape: shape({ heads: 4, kvHeads: 1, headDim: 32, queryLength: 100, keyLength: 120 }) }, extra);
    await check('f16', 'mma2-emu r2 rescale hip', { method: 'hip', mode: 'prefill', shape: shape({ heads: 2, kvHeads: 1, headDim: 32, queryLength: 150, keyLength: 150 }) }, extra);
  });
});

const hasMma = !!gpu?.features.subgroupMatrix;
if (gpu && !hasMma) {
  loudNotice([
    'SUBGROUP-MATRIX (TENSOR-CORE) ATTENTION KERNEL NOT RUN: this adapter lacks',
    "'chromium-experimental-subgroup-matrix'. Its logic is tested through the emulated",
    'variant above; run the real one on a GPU (bench/gpu-attention-check.ts).',
  ]);
}
describe.skipIf(!hasMma)('attention kernels: tensor-core prefill kernel (subgroup matrices)', () => {
  for (const headDim of [64, 128]) {
    it(`f16 d ${headDim}: dense, streaming, HiP`, async () => {
      for (const prefill of ['mma', 'mma2']) {
        const extra = { prefill };
        await check('f16', `${prefill} dense d${headDim}`, { method: 'dense', mode: 'prefill', layout: 'model', shape: shape({ batch: 2, heads: 8, kvHeads: 2, headDim, queryLength: 333, keyLength: 400 }) }, extra);
        await check('f16', `${prefill} streaming d${headDim}`, { method: 'streaming', mode: 'prefill', shape: shape({ heads: 4, kvHeads: 4, headDim, queryLength: 300, keyLength: 300 }) }, extra);
        await check('f16', `${prefill} hip d${headDim}`, { method: 'hip', mode: 'prefill', layout: 'model', shape: shape({ heads: 8, kvHeads: 1, headDim, queryLength: 500, keyLength: 500 }) }, extra);
      }
    });
  }
});

describe.skipIf(only !== 'f16')('attention cost', () => {
  it('counts dense causal pairs and HiP / StreamingLLM key sets', () => {
    const s = resolveShape({ batch: 1, heads: 32, kvHeads: 8, queryLength: 4096, keyLength: 4096, headDim: 128 });
    const dense = attentionCost(s, { kind: 'dense' }, 'f16');
    expect(dense.pairs).toBe(32 * (4096 * 4097) / 2);
    expect(dense.flops).toBe(4 * 128 * dense.pairs);
    const st = attentionCost(s, { kind: 'streaming', sinkTokens: 16, slidingWindow: 768 }, 'f16');
    expect(st.pairs).toBeLessThan(dense.pairs);
    const dec = attentionCost(resolveShape({ batch: 1, heads: 32, kvHeads: 8, queryLength: 1, keyLength: 4096, headDim: 128 }), { kind: 'hip', sinkTokens: 16, slidingWindow: 256, topK: 512, blockSizeQ: 64 }, 'f16');
    expect(dec.pairs).toBe(32 * (16 + 512 + 256));
    void estimateHipMask;
  });
});
}

import { afterAll, describe, expect, it } from 'vitest';
import { estimateHipMask } from '../../attention/cpu/hip-mask.js';
import type { HipOptions } from '../../attention/options.js';
import { HipAttnError } from '../../errors.js';
import type { StorageType } from '../types.js';
import { getTestGpu, testSeed } from '../../../test/gpu-helpers.js';
import { acquireGpu, compileShader } from '../../gpu/index.js';
import { createHipMaskEstimator, hipMaskCost, hipMaskWgsl, readGpuHipMask, uploadHipMask, workgroupBytes, type HipMaskEstimatorOptions, type HipMaskVariant } from './index.js';
import { compareMasks, cpuMask, randomCpuProblem, uploadProblem, type MaskProblemSpec } from './testing.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

/** Small options: many rounds at small T (n = 16 nodes of 4-key blocks, 8 strided queries). */
const SMALL: Partial<HipOptions> = { topK: 64, blockSizeK: 4, blockSizeQ: 16, blockStrideQ: 2, sinkTokens: 8, slidingWindow: 32 };

interface RunResult {
  equal: number;
  recall: number;
  slots: number;
  firstDiff?: unknown;
}

async function run(
  name: string,
  spec: MaskProblemSpec,
  options: Partial<HipOptions>,
  dtype: StorageType,
  est: Omit<HipMaskEstimatorOptions, 'dtype' | 'headDim' | 'options'> = {},
): Promise<RunResult> {
  const seed = testSeed(name);
  const cpu = randomCpuProblem(seed, spec, dtype);
  const ref = cpuMask(cpu, options);
  const kind = Math.ceil(Math.min(options.blockSizeQ ?? 64, spec.queryLength) / (options.blockStrideQ ?? 2)) === 1 ? 'decode' : 'prefill';
  const e = await createHipMaskEstimator(gpu!, { dtype, headDim: spec.headDim, options, kinds: [kind], ...est });
  const p = uploadProblem(gpu!, cpu, spec, dtype);
  try {
    const enc = gpu!.device.createCommandEncoder();
    const m = e.encode(enc, p);
    gpu!.device.queue.submit([enc.finish()]);
    const got = await readGpuHipMask(gpu!, m);
    const c = compareMasks(got, ref);
    const v = e.variants[kind];
    console.log(
      `${name}: ${v.path}/${v.dtype}${v.accurate ? '/compensated' : ''} rows ${v.rowsCap} wg ${v.workgroupSize} ` +
        `sort ${v.subgroupSort ? `registers+subgroup(${v.subgroupSort})` : 'workgroup memory'}: ` +
        `${c.equalSlots}/${c.slots} query-block masks equal (${(100 * c.fractionEqual).toFixed(2)} %), recall ${c.recall.toFixed(5)}`,
    );
    return { equal: c.fractionEqual, recall: c.recall, slots: c.slots, firstDiff: c.firstDiff };
  } finally {
    p.destroy();
    e.destroy();
  }
}

/** Runs and expects the GPU's masks to equal the CPU reference's in every query block. */
async function expectEqualMasks(...args: Parameters<typeof run>): Promise<void> {
  const r = await run(...args);
  expect(r.firstDiff).toBeUndefined();
  expect(r.equal).toBe(1);
}

describe.skipIf(!gpu)('HiP mask estimation on the GPU vs estimateHipMask', () => {
  it('f32: equal masks with GQA 4, ragged length, many rounds (small options)', async () => {
    await expectEqualMasks('hip-mask gqa4 ragged', { batch: 1, heads: 4, kvHeads: 1, queryLength: 1500, keyLength: 1500, headDim: 64 }, SMALL, 'f32');
  });

  it("f32: head groups spanning KV heads, representative 'first', strided keys, batch 2, q as [tokens, heads, d], offsets", async () => {
    await expectEqualMasks(
      'hip-mask groups first',
      { batch: 2, heads: 4, kvHeads: 4, queryLength: 611, keyLength: 611, headDim: 64, qLayout: 'bthd', qOffset: 64, kOffset: 128, keyCapacity: 700 },
      { ...SMALL, headGroupSize: 2, representative: 'first', blockStrideK: 2 },
      'f32',
    );
  });

  it('f32: chunked prefill (query offset) with GQA 8', async () => {
    await expectEqualMasks(
      'hip-mask chunked gqa8',
      { batch: 1, heads: 8, kvHeads: 1, queryLength: 333, keyLength: 1733, queryOffset: 1400, keyCapacity: 1800, headDim: 64 },
      SMALL,
      'f32',
    );
  });

  for (const subgroupSort of [true, false]) {
    it(`f32: exact ties (small integer inputs) are broken towards the lower block, as on the CPU (${subgroupSort ? 'register/subgroup' : 'workgroup-memory'} sort)`, async () => {
      if (subgroupSort && !(gpu!.features.subgroups && gpu!.adapterInfo.subgroupMinSize === gpu!.adapterInfo.subgroupMaxSize)) return;
      await expectEqualMasks(
        `hip-mask ties ${subgroupSort ? 'sg' : 'wg'} sort`,
        { batch: 1, heads: 2, kvHeads: 1, queryLength: 900, keyLength: 900, headDim: 64, values: 'integer' },
        { ...SMALL, representative: 'first' },
        'f32',
        { subgroupSort },
      );
    });
  }

  it('f32: HIP.md defaults at 2.5k tokens, head dim 128', async () => {
    await expectEqualMasks('hip-mask defaults', { batch: 1, heads: 2, kvHeads: 1, queryLength: 2500, keyLength: 2500, headDim: 128 }, {}, 'f32');
  });

  it('f32: decode refresh (queryLength 1), batch 2, GQA 4, defaults', async () => {
    await expectEqualMasks(
      'hip-mask decode',
      { batch: 2, heads: 8, kvHeads: 2, queryLength: 1, keyLength: 5000, keyCapacity: 5120, headDim: 128 },
      {},
      'f32',
    );
  });

  for (const [blocks, representative] of [[2, 'center'], [3, 'first'], [4, 'center']] as const) {
    it(`f32: ${blocks} representatives per half ('${representative}'): equal masks, also in rounds where halves are shorter than that`, async () => {
      await expectEqualMasks(
        `hip-mask ${blocks} representatives ${representative}`,
        { batch: 1, heads: 4, kvHeads: 2, queryLength: 1700, keyLength: 1700, headDim: 64 },
        { ...SMALL, representativeBlocks: blocks, representative },
        'f32',
      );
    });
  }

  it('f32: 2 representatives per half, decode refresh (queryLength 1), defaults otherwise', async () => {
    await expectEqualMasks(
      'hip-mask decode 2 representatives',
      { batch: 1, heads: 4, kvHeads: 1, queryLength: 1, keyLength: 6000, keyCapacity: 6016, headDim: 64 },
      { representativeBlocks: 2 },
      'f32',
    );
  });

  it('f16 storage (plain f32 accumulation): recall ≥ 0.99 vs the CPU on the same f16-rounded inputs', async () => {
    const r = await run('hip-mask f16', { batch: 1, heads: 4, kvHeads: 1, queryLength: 1500, keyLength: 1500, headDim: 64 }, SMALL, 'f16');
    expect(r.recall).toBeGreaterThanOrEqual(0.99);
  });

  it('f32 without compensated dots: recall ≥ 0.99 (fraction of equal masks logged)', async () => {
    const r = await run('hip-mask f32 plain', { batch: 1, heads: 4, kvHeads: 1, queryLength: 1500, keyLength: 1500, headDim: 64 }, SMALL, 'f32', {
      accurate: false,
    });
    expect(r.recall).toBeGreaterThanOrEqual(0.99);
  });

  it('tensor-core data flow (matrix path, matrix ops emulated), f16: recall ≥ 0.99', async () => {
    if (!gpu!.features.shaderF16) return;
    const r = await run(
      'hip-mask matrix-emulated f16',
      { batch: 1, heads: 4, kvHeads: 1, queryLength: 1500, keyLength: 1500, headDim: 64 },
      SMALL,
      'f16',
      { path: 'matrix-emulated' },
    );
    expect(r.recall).toBeGreaterThanOrEqual(0.99);
  });

  it('tensor-core data flow (matrix path, matrix ops emulated), f32, one subgroup per workgroup, head groups and strided keys: equal masks', async () => {
    const r = await run(
      'hip-mask matrix-emulated f32',
      { batch: 2, heads: 4, kvHeads: 2, queryLength: 700, keyLength: 700, headDim: 64, qLayout: 'bthd' },
      { ...SMALL, headGroupSize: 2, blockStrideK: 2 },
      'f32',
      { path: 'matrix-emulated', matrixSubgroups: 1 },
    );
    expect(r.recall).toBeGreaterThanOrEqual(0.999);
  });

  // 32 strided rows per block (two row tiles): the lean kernel's default layout pairs 8 subgroups
  // per 16-key tile (row split 2) with two steps of gathers in flight. Ragged length: the last
  // block has 6 rows (per-row checks); the others take the unchecked reduction.
  const WIDE: Partial<HipOptions> = { topK: 64, blockSizeK: 2, blockSizeQ: 64, blockStrideQ: 2, sinkTokens: 8, slidingWindow: 64 };
  it('tensor-core data flow, lean kernel, 32 rows split over subgroup pairs (matrix ops emulated), f16: recall ≥ 0.99', async () => {
    if (!gpu!.features.shaderF16) return;
    const r = await run('hip-mask lean pairs f16', { batch: 1, heads: 2, kvHeads: 1, queryLength: 870, keyLength: 870, headDim: 64 }, WIDE, 'f16', {
      path: 'matrix-emulated',
      matrixSubgroups: 8,
      matrixRowSplit: 2,
      matrixPrefetch: 2,
    });
    expect(r.recall).toBeGreaterThanOrEqual(0.99);
  });

  it('tensor-core data flow, lean kernel, 3 representatives per half (matrix ops emulated), f32: recall ≥ 0.999', async () => {
    const r = await run('hip-mask lean 3 representatives f32', { batch: 1, heads: 2, kvHeads: 1, queryLength: 870, keyLength: 870, headDim: 64 }, { ...WIDE, representativeBlocks: 3 }, 'f32', {
      path: 'matrix-emulated',
    });
    expect(r.recall).toBeGreaterThanOrEqual(0.999);
  });

  it('tensor-core data flow, lean kernel, 8-key tiles (16 subgroups in pairs; matrix ops emulated), f16: recall ≥ 0.99', async () => {
    if (!gpu!.features.shaderF16) return;
    const r = await run('hip-mask lean n8 f16', { batch: 1, heads: 2, kvHeads: 1, queryLength: 700, keyLength: 700, headDim: 64 }, WIDE, 'f16', {
      path: 'matrix-emulated',
      matrixN: 8,
    });
    expect(r.recall).toBeGreaterThanOrEqual(0.99);
  });

  it("tensor-core data flow, classic kernel (matrix ops emulated), f32, 'first' representative: recall ≥ 0.999", async () => {
    const r = await run('hip-mask classic emulated f32', { batch: 1, heads: 2, kvHeads: 1, queryLength: 800, keyLength: 800, headDim: 64 }, { ...SMALL, representative: 'first' }, 'f32', {
      path: 'matrix-emulated',
      matrixKernel: 'classic',
    });
    expect(r.recall).toBeGreaterThanOrEqual(0.999);
  });

  it("tensor-core data flow, classic kernel (matrix ops emulated), f32, 2 representatives per half: recall ≥ 0.999", async () => {
    const r = await run('hip-mask classic emulated 2 representatives', { batch: 1, heads: 2, kvHeads: 1, queryLength: 800, keyLength: 800, headDim: 64 }, { ...SMALL, representativeBlocks: 2 }, 'f32', {
      path: 'matrix-emulated',
      matrixKernel: 'classic',
    });
    expect(r.recall).toBeGreaterThanOrEqual(0.999);
  });

  it.runIf(gpu?.features.subgroupMatrix)('tensor cores (subgroup matrices), f16, 2 representatives per half: recall ≥ 0.99', async () => {
    const r = await run(
      'hip-mask matrix f16 2 representatives',
      { batch: 1, heads: 4, kvHeads: 1, queryLength: 3000, keyLength: 3000, headDim: 128 },
      { representativeBlocks: 2 },
      'f16',
      { path: 'matrix' },
    );
    expect(r.recall).toBeGreaterThanOrEqual(0.99);
  });

  it.runIf(gpu?.features.subgroupMatrix)('tensor cores (subgroup matrices), f16, defaults: recall ≥ 0.99', async () => {
    const r = await run(
      'hip-mask matrix f16',
      { batch: 1, heads: 4, kvHeads: 1, queryLength: 3000, keyLength: 3000, headDim: 128 },
      {},
      'f16',
      { path: 'matrix' },
    );
    expect(r.recall).toBeGreaterThanOrEqual(0.99);
  });

  it('splits q, k and mask bindings over several dispatches when they exceed the binding limit', async () => {
    await expectEqualMasks(
      'hip-mask split bindings',
      { batch: 2, heads: 4, kvHeads: 1, queryLength: 700, keyLength: 700, headDim: 64 },
      SMALL,
      'f32',
      { maxBindingBytes: 256 * 1024 },
    );
    // the split really happened
    const e = await createHipMaskEstimator(gpu!, { dtype: 'f32', headDim: 64, options: SMALL, kinds: ['prefill'], maxBindingBytes: 256 * 1024 });
    const cpu = randomCpuProblem(1, { batch: 2, heads: 4, kvHeads: 1, queryLength: 700, keyLength: 700, headDim: 64 }, 'f32');
    const p = uploadProblem(gpu!, cpu, { batch: 2, heads: 4, kvHeads: 1, queryLength: 700, keyLength: 700, headDim: 64 }, 'f32');
    expect(e.describe(p).dispatches.length).toBeGreaterThan(1);
    p.destroy();
    e.destroy();
  });

  it('refuses a KV head that no binding can hold, naming bytes needed and the limit', async () => {
    const spec = { batch: 1, heads: 2, kvHeads: 1, queryLength: 300, keyLength: 300, headDim: 64 };
    const e = await createHipMaskEstimator(gpu!, { dtype: 'f32', headDim: 64, options: SMALL, kinds: ['prefill'], maxBindingBytes: 16 * 1024 });
    const p = uploadProblem(gpu!, randomCpuProblem(2, spec, 'f32'), spec, 'f32');
    const enc = gpu!.device.createCommandEncoder();
    let err: unknown;
    try {
      e.encode(enc, p);
    } catch (x) {
      err = x;
    }
    expect(err).toBeInstanceOf(HipAttnError);
    expect((err as HipAttnError).code).toBe('OUT_OF_MEMORY');
    expect((err as Error).message).toMatch(/keys of one \(batch, KV head\) need a 75\.00 KiB .*maxStorageBufferBindingSize of 16\.00 KiB/);
    p.destroy();
    e.destroy();
  });

  it('reuses the mask buffer for the same shape, writes into a given mask, and checks shapes', async () => {
    const spec = { batch: 1, heads: 2, kvHeads: 1, queryLength: 200, keyLength: 200, headDim: 64 };
    const e = await createHipMaskEstimator(gpu!, { dtype: 'f32', headDim: 64, options: SMALL, kinds: ['prefill'] });
    const cpu = randomCpuProblem(3, spec, 'f32');
    const p = uploadProblem(gpu!, cpu, spec, 'f32');
    const enc = gpu!.device.createCommandEncoder();
    const m1 = e.encode(enc, p);
    const m2 = e.encode(enc, p);
    expect(m2.buffer).toBe(m1.buffer);
    const ref = cpuMask(cpu, SMALL);
    const mine = uploadHipMask(gpu!, { ...ref, blockStarts: new Int32Array(ref.blockStarts.length).fill(7) });
    const m3 = e.encode(enc, p, mine);
    expect(m3.buffer).toBe(mine.buffer);
    gpu!.device.queue.submit([enc.finish()]);
    expect(compareMasks(await readGpuHipMask(gpu!, m3), ref).fractionEqual).toBe(1);
    const other = uploadHipMask(gpu!, estimateHipMask({ ...cpu, shape: { ...cpu.shape } }, { ...SMALL, topK: 32 }, { checkFinite: false }));
    expect(() => e.encode(gpu!.device.createCommandEncoder(), p, other)).toThrow(/out mask is/);
    expect(() => e.encode(gpu!.device.createCommandEncoder(), { ...p, shape: { ...p.shape, headDim: 128 } })).toThrow(/headDim/);
    mine.buffer.destroy();
    other.buffer.destroy();
    p.destroy();
    e.destroy();
  });
});

// Dawn's null backend exposes chromium-experimental-subgroup-matrix (without running anything):
// the real tensor-core kernels must at least pass Tint (syntax, types, uniformity).
const nullGpu = await acquireGpu({ dawnToggles: ['backend=null', 'enable-dawn-features=allow_unsafe_apis'], ifUnavailable: 'null' }).catch(() => null);
afterAll(() => nullGpu?.destroy());

describe.skipIf(!nullGpu?.features.subgroupMatrix)('tensor-core kernel WGSL (Dawn null backend: compile only)', () => {
  for (const dtype of ['f16', 'f32'] as const) {
    for (const [headDim, nodes, rows] of [[128, 256, 32], [64, 16, 16]] as const) {
      for (const subgroupSort of [32, 0]) {
        it(`${dtype}, d ${headDim}, n ${nodes}, ${subgroupSort ? 'subgroup sort, query fragments in registers' : 'workgroup sort, query fragments reloaded'}`, async () => {
          const v: HipMaskVariant = {
            dtype,
            path: 'matrix',
            accurate: false,
            headDim,
            vec4: true,
            nodes,
            sortSize: 2 * nodes,
            rowsCap: rows,
            rowBlock: 1,
            workgroupSize: 128,
            subgroupSort,
            matrix: { M: 16, N: 16, K: 16, subgroupSize: 32, subgroups: 4, kernel: 'classic', qRegisters: subgroupSort !== 0 },
          };
          if (workgroupBytes(v) <= nullGpu!.limits.maxComputeWorkgroupStorageSize) {
            // small enough for the null device's workgroup memory: full pipeline validation
            await nullGpu!.pipelines.computePipeline({
              name: `hip-mask/matrix-${dtype}`,
              code: hipMaskWgsl(v),
              bindings: [['uniform', 'read-only-storage', 'read-only-storage', 'storage']],
            });
          } else {
            await compileShader(nullGpu!.device, `hip-mask/matrix-${dtype}`, hipMaskWgsl(v));
          }
        });
      }
    }
  }
});

describe.skipIf(!nullGpu?.features.subgroupMatrix)('lean tensor-core kernel WGSL (Dawn null backend: compile only)', () => {
  // [subgroups, row split, prefetch, keys per tile]: the auto choice on NVIDIA, the classic
  // tiling, pairs without prefetch, 16 subgroups on 16×8×16 tiles
  const layouts = [[8, 2, 2, 16], [4, 1, 1, 16], [4, 2, 1, 16], [16, 2, 2, 8]] as const;
  for (const dtype of ['f16', 'f32'] as const) {
    for (const [headDim, nodes, rows, kb] of [[128, 256, 32, 2], [64, 16, 16, 4]] as const) {
      for (const [subgroups, rowSplit, prefetch, keys] of layouts) {
        if ((rows / 16) % rowSplit !== 0) continue;
        it(`${dtype}, d ${headDim}, n ${nodes}, ${subgroups} subgroups, row split ${rowSplit}, prefetch ${prefetch}, ${keys}-key tiles`, async () => {
          const wg = subgroups * 32;
          const v: HipMaskVariant = {
            dtype,
            path: 'matrix',
            accurate: false,
            headDim,
            vec4: true,
            nodes,
            sortSize: 2 * nodes,
            rowsCap: rows,
            rowBlock: 1,
            workgroupSize: wg,
            subgroupSort: (2 * nodes) / wg <= 8 ? 32 : 0,
            keysPerBlock: kb,
            reuse: true,
            matrix: { M: 16, N: keys, K: 16, subgroupSize: 32, subgroups, kernel: 'lean', rowSplit, prefetch },
          };
          if (workgroupBytes(v) <= nullGpu!.limits.maxComputeWorkgroupStorageSize && wg % nullGpu!.adapterInfo.subgroupMaxSize === 0) {
            await nullGpu!.pipelines.computePipeline({
              name: `hip-mask/lean-${dtype}`,
              code: hipMaskWgsl(v),
              bindings: [['uniform', 'read-only-storage', 'read-only-storage', 'storage']],
            });
          } else {
            await compileShader(nullGpu!.device, `hip-mask/lean-${dtype}`, hipMaskWgsl(v));
          }
        });
      }
    }
  }
});

describe('hipMaskCost', () => {
  it('counts the parent-score reuse with one representative per half (the rounds splitting 2- and 3-block nodes; every left half with representative first), none with two', () => {
    const shape = { batch: 1, heads: 32, kvHeads: 8, queryLength: 131072, keyLength: 131072, headDim: 128 };
    const one = { representativeBlocks: 1 };
    const nominal = hipMaskCost(shape, one, 'f16').flops;
    const reused = hipMaskCost(shape, one, 'f16', { reuse: true }).flops;
    // one or two of the ~8 rounds score half the candidates: ≈ 0.89 at 128k
    expect(reused / nominal).toBeGreaterThan(0.87);
    expect(reused / nominal).toBeLessThan(0.92);
    const first = hipMaskCost(shape, { ...one, representative: 'first' }, 'f16', { reuse: true }).flops;
    expect(first / nominal).toBeGreaterThan(0.5);
    expect(first / nominal).toBeLessThan(0.6);
    // the default (two representatives): a half's score is never its parent's
    expect(hipMaskCost(shape, {}, 'f16', { reuse: true }).flops).toBe(hipMaskCost(shape, {}, 'f16').flops);
  });

  it('bounds the CPU reference’s q·k products and grows like T log T', () => {
    const shape = { batch: 1, heads: 1, kvHeads: 1, queryLength: 3000, keyLength: 3000, headDim: 8 };
    const rng = randomCpuProblem(5, { ...shape }, 'f32');
    const ref = estimateHipMask({ q: rng.q, k: rng.k, v: rng.v, shape }, {}, { checkFinite: false });
    const c = hipMaskCost(shape, {}, 'f32');
    const products = c.flops / (2 * shape.headDim);
    expect(products).toBeGreaterThanOrEqual(ref.qkProducts);
    expect(products).toBeLessThanOrEqual(1.5 * ref.qkProducts);
    const bigShape = { batch: 1, heads: 32, kvHeads: 8, queryLength: 131072, keyLength: 131072, headDim: 128 };
    const big = hipMaskCost(bigShape, { representativeBlocks: 1 }, 'f16');
    // ≈ 3.8 TFLOP at 128k for H = 32, d = 128 (HIP.md's 2n·log2(T/k) tiles of 32 × 2)
    expect(big.flops / 1e12).toBeGreaterThan(2.5);
    expect(big.flops / 1e12).toBeLessThan(5);
    expect(big.maxRounds).toBe(8);
    // two representatives per half (default): twice that in the 7 rounds with halves of ≥ 2 blocks
    const two = hipMaskCost(bigShape, {}, 'f16');
    expect(two.flops / big.flops).toBeGreaterThan(1.8);
    expect(two.flops / big.flops).toBeLessThan(2);
  });
});

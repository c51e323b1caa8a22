/**
 * The real tensor-core (subgroup-matrix) attention kernel through Tint on Dawn's null backend,
 * which exposes chromium-experimental-subgroup-matrix without running anything: syntax, types
 * and uniformity of every GPU configuration, and full pipeline validation where the null
 * device's limits allow (16 KiB of workgroup memory, maxSubgroupSize 128). Its numerics are
 * tested through the emulated twin (attention.test.ts) and on a GPU (bench/gpu-attention-check.ts).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { acquireGpu, compileShader } from '../../gpu/index.js';
import { mmaWgsl, mmaWorkgroupBytes, type MmaVariant } from './flash-mma.wgsl.js';

const nullGpu = await acquireGpu({ dawnToggles: ['backend=null', 'enable-dawn-features=allow_unsafe_apis'], ifUnavailable: 'null' }).catch(() => null);
afterAll(() => nullGpu?.destroy());
if (!nullGpu?.features.subgroupMatrix) console.warn('[attention] Dawn null backend without subgroup matrices: tensor-core WGSL not validated');

const BINDINGS = [['uniform', 'read-only-storage', 'read-only-storage', 'read-only-storage', 'storage', 'read-only-storage', 'storage'] as const].map((g) => [...g]);

describe.skipIf(!nullGpu?.features.subgroupMatrix)('tensor-core attention kernel WGSL (Dawn null backend: compile only)', () => {
  for (const headDim of [64, 128]) {
    for (const hip of [false, true]) {
      for (const [warps, bk] of [[4, 32], [2, 32]] as const) {
        it(`d ${headDim}, ${hip ? 'HiP' : 'dense/streaming'}, ${warps} warps, key tiles of ${bk}: Tint accepts it`, async () => {
          for (const unroll of [true, false]) {
            const v: MmaVariant = { dtype: 'f16', headDim, hip, emulate: false, m: 16, sg: 32, warps, bk, unroll };
            await expect(compileShader(nullGpu!.device, 'attention/flash-mma', mmaWgsl(v))).resolves.toBeDefined();
          }
        });
      }
    }
  }
  it('d 16, 4 warps (fits the null device): full compute-pipeline validation', async () => {
    for (const hip of [false, true]) {
      const v: MmaVariant = { dtype: 'f16', headDim: 16, hip, emulate: false, m: 16, sg: 32, warps: 4, bk: 32, unroll: true };
      expect(mmaWorkgroupBytes(v)).toBeLessThanOrEqual(nullGpu!.limits.maxComputeWorkgroupStorageSize);
      await expect(nullGpu!.pipelines.computePipeline({ name: 'attention/flash-mma', code: mmaWgsl(v), bindings: BINDINGS })).resolves.toBeDefined();
    }
  });
});

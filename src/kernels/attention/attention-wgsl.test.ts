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
import { mma2Wgsl, mma2WorkgroupBytes, type Mma2Variant } from './flash-mma2.wgsl.js';

const nullGpu = await acquireGpu({ dawnToggles: ['backend=null', 'enable-dawn-features=allow_unsafe_apis'], ifUnavailable: 'null' }).catch(() => null);
afterAll(() => nullGpu?.destroy());
if (!nullGpu?.features.subgroupMatrix) console.warn('[attention] Dawn null backend without subgroup matrices: tensor-core WGSL not validated');

const BINDINGS = [['uniform', 'read-only-storage', 'read-only-storage', 'read-only-storage', 'storage', 'read-only-storage', 'storage'] as const].map((g) => [...g]);
const BINDINGS_KV = [['uniform', 'read-only-storage', 'read-only-storage', 'read-only-storage', 'storage', 'read-only-storage', 'storage', 'read-only-storage', 'read-only-storage'] as const].map((g) => [...g]);

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
  for (const headDim of [64, 128]) {
    for (const [warps, bk, rows, qSmem, sync] of [
      [4, 16, 1, false, 'workgroup'],
      [2, 32, 1, false, 'subgroup'],
      [8, 16, 1, false, 'subgroup'],
      [1, 16, 1, false, 'subgroup'],
      [2, 16, 2, true, 'subgroup'],
      [4, 16, 2, false, 'workgroup'],
    ] as const) {
      it(`pipelined kernel (mma2) d ${headDim}, ${warps} warps, key tiles of ${bk}, ${rows} fragment(s)${qSmem ? ', Q in workgroup memory' : ''}, ${sync} sync: Tint accepts it`, async () => {
        for (const [hip, ld16, blkCap, unroll, direct] of [
          [false, true, 0, true, false],
          [false, true, 0, true, true],
          [true, true, 256, true, true],
          [true, false, 0, false, false],
        ] as const) {
          const v: Mma2Variant = { dtype: 'f16', headDim, hip, emulate: false, m: 16, sg: 32, warps, bk, rows, sync, ld16, qSmem, blkCap, unroll, direct };
          await expect(compileShader(nullGpu!.device, 'attention/flash-mma2', mma2Wgsl(v))).resolves.toBeDefined();
        }
      });
    }
  }
  it('pipelined kernel (mma2) d 16, 4 warps (fits the null device): full compute-pipeline validation', async () => {
    for (const [hip, sync, direct] of [[false, 'subgroup', true], [true, 'workgroup', false]] as const) {
      const v: Mma2Variant = { dtype: 'f16', headDim: 16, hip, emulate: false, m: 16, sg: 32, warps: 4, bk: 16, rows: 1, sync, ld16: true, qSmem: false, blkCap: hip ? 64 : 0, unroll: true, direct };
      expect(mma2WorkgroupBytes(v)).toBeLessThanOrEqual(nullGpu!.limits.maxComputeWorkgroupStorageSize);
      await expect(nullGpu!.pipelines.computePipeline({ name: `attention/flash-mma2-${hip}`, code: mma2Wgsl(v), bindings: direct ? BINDINGS_KV : BINDINGS })).resolves.toBeDefined();
    }
  });
  it('d 16, 4 warps (fits the null device): full compute-pipeline validation', async () => {
    for (const hip of [false, true]) {
      const v: MmaVariant = { dtype: 'f16', headDim: 16, hip, emulate: false, m: 16, sg: 32, warps: 4, bk: 32, unroll: true };
      expect(mmaWorkgroupBytes(v)).toBeLessThanOrEqual(nullGpu!.limits.maxComputeWorkgroupStorageSize);
      await expect(nullGpu!.pipelines.computePipeline({ name: 'attention/flash-mma', code: mmaWgsl(v), bindings: BINDINGS })).resolves.toBeDefined();
    }
  });
});

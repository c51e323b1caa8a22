import { afterAll, describe, expect, it } from 'vitest';
import { createStorageBuffer, readFloat16, readFloat32, roundToFloat16, toFloat16Bits } from '../../gpu/index.js';
import { applyRope, ropeInvFreq, ropeTables } from '../../model/rope.js';
import { getTestGpu, testSeed } from '../../../test/gpu-helpers.js';
import { Rng } from '../../util/rng.js';
import { GpuRope, packRopeTable } from './rope.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

describe.skipIf(!gpu)('rope kernel vs CPU', () => {
  it('q and k heads of a fused qkv row, positions far from 0, llama3 scaling, f32 and f16', async () => {
    const rng = new Rng(testSeed('rope'));
    const d = 16, qHeads = 4, kHeads = 2, T = 3, start = 70_000;
    const ld = (qHeads + 2 * kHeads) * d + 5; // padded row: q | k | v | pad
    const inv = ropeInvFreq({ theta: 500000, scaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } }, d);
    const { cos, sin } = ropeTables(inv, start, T);
    const table = createStorageBuffer(gpu!, packRopeTable(cos, sin));
    for (const dtype of ['f32', 'f16'] as const) {
      if (dtype === 'f16' && !gpu!.features.shaderF16) continue;
      let x = rng.normalArray(T * ld);
      if (dtype === 'f16') x = roundToFloat16(x);
      const xb = createStorageBuffer(gpu!, dtype === 'f16' ? toFloat16Bits(x) : x);
      const k = await GpuRope.create(gpu!, { x: xb, dtype, table, headDim: d, qHeads, kHeads, ld, qOffset: 0, kOffset: qHeads * d });
      k.set(T, T * (d / 2));
      const enc = gpu!.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      k.encode(pass);
      pass.end();
      gpu!.device.queue.submit([enc.finish()]);
      const got = dtype === 'f16' ? await readFloat16(gpu!, xb, T * ld) : await readFloat32(gpu!, xb, T * ld);
      const want = x.slice();
      for (let t = 0; t < T; t++) applyRope(want, t * ld, qHeads + kHeads, d, cos, sin, t);
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
      console.log(`rope ${dtype}: max |Δ| = ${worst.toExponential(2)} (v and padding untouched: ${got.subarray(qHeads * d + kHeads * d, (qHeads + 2 * kHeads) * d).every((v, i) => v === x[qHeads * d + kHeads * d + i])})`);
      expect(worst).toBeLessThanOrEqual(dtype === 'f16' ? 8e-3 : 1e-6);
      k.destroy();
      xb.destroy();
    }
    table.destroy();
  });
});

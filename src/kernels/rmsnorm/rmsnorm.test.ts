import { afterAll, describe, expect, it } from 'vitest';
import { createStorageBuffer, readFloat16, readFloat32 } from '../../gpu/index.js';
import { rmsNorm } from '../../model/cpu-ops.js';
import { getTestGpu, maxRelError, testSeed } from '../../../test/gpu-helpers.js';
import { Rng } from '../../util/rng.js';
import { GpuRmsNorm } from './rmsnorm.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

describe.skipIf(!gpu)('rmsnorm kernel vs CPU', () => {
  it('ragged rows and dims, offsets (last row only), f32 and f16 output', async () => {
    const rng = new Rng(testSeed('rmsnorm'));
    for (const [rows, dim, output] of [[5, 300, 'f32'], [3, 64, 'f16'], [1, 1000, 'f32']] as const) {
      if (output === 'f16' && !gpu!.features.shaderF16) continue;
      const x = rng.normalArray(rows * dim, 3);
      const w = rng.normalArray(dim);
      const eps = 1e-5;
      const xb = createStorageBuffer(gpu!, x);
      const wb = createStorageBuffer(gpu!, w);
      const yb = createStorageBuffer(gpu!, (rows + 1) * dim * 4);
      const k = await GpuRmsNorm.create(gpu!, { x: xb, weight: wb, y: yb, output, dim, eps });
      const run = async (r: number, xOffset: number, yOffset: number) => {
        k.set({ rows: r, xOffset, yOffset });
        const enc = gpu!.device.createCommandEncoder();
        const pass = enc.beginComputePass();
        k.encode(pass);
        pass.end();
        gpu!.device.queue.submit([enc.finish()]);
        return output === 'f16' ? readFloat16(gpu!, yb, r * dim, yOffset) : readFloat32(gpu!, yb, r * dim, yOffset);
      };
      const want = rmsNorm(x, w, rows, dim, eps);
      const tol = output === 'f16' ? 1e-3 : 1e-5;
      const all = await run(rows, 0, 0);
      const e1 = maxRelError(all, want, 1e-2);
      const last = await run(1, (rows - 1) * dim, dim);
      const e2 = maxRelError(last, want.subarray((rows - 1) * dim), 1e-2);
      console.log(`rmsnorm rows ${rows} dim ${dim} ${output}: max rel error ${e1.toExponential(2)}, last row only ${e2.toExponential(2)}`);
      expect(e1).toBeLessThanOrEqual(tol);
      expect(e2).toBeLessThanOrEqual(tol);
      k.destroy();
      [xb, wb, yb].forEach((b) => b.destroy());
    }
  });
});

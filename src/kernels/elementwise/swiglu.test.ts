import { afterAll, describe, expect, it } from 'vitest';
import { createStorageBuffer, readFloat16, readFloat32, roundToFloat16, toFloat16Bits } from '../../gpu/index.js';
import { siluMul } from '../../model/cpu-ops.js';
import { getTestGpu, testSeed } from '../../../test/gpu-helpers.js';
import { Rng } from '../../util/rng.js';
import { GpuSwiglu } from './swiglu.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

describe.skipIf(!gpu)('swiglu kernel vs CPU', () => {
  it('fused gate|up rows, ragged width, f32 and f16', async () => {
    const rng = new Rng(testSeed('swiglu'));
    const T = 3, I = 37;
    for (const dt of ['f32', 'f16'] as const) {
      if (dt === 'f16' && !gpu!.features.shaderF16) continue;
      let gu = rng.normalArray(T * 2 * I, 4);
      if (dt === 'f16') gu = roundToFloat16(gu);
      const gb = createStorageBuffer(gpu!, dt === 'f16' ? toFloat16Bits(gu) : gu);
      const ob = createStorageBuffer(gpu!, T * I * 4);
      const k = await GpuSwiglu.create(gpu!, { gateUp: gb, input: dt, out: ob, output: dt, intermediate: I });
      k.set(T);
      const enc = gpu!.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      k.encode(pass);
      pass.end();
      gpu!.device.queue.submit([enc.finish()]);
      const got = dt === 'f16' ? await readFloat16(gpu!, ob, T * I) : await readFloat32(gpu!, ob, T * I);
      let worst = 0;
      for (let t = 0; t < T; t++) {
        const want = siluMul(gu.slice(t * 2 * I, t * 2 * I + I), gu.slice(t * 2 * I + I, (t + 1) * 2 * I));
        for (let i = 0; i < I; i++) worst = Math.max(worst, Math.abs(got[t * I + i]! - want[i]!) / Math.max(1, Math.abs(want[i]!)));
      }
      console.log(`swiglu ${dt}: max error ${worst.toExponential(2)}`);
      expect(worst).toBeLessThanOrEqual(dt === 'f16' ? 1e-3 : 1e-6);
      k.destroy();
      gb.destroy();
      ob.destroy();
    }
  });
});

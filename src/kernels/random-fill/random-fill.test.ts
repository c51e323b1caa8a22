import { afterAll, describe, expect, it } from 'vitest';
import { readFloat16, readFloat32 } from '../../gpu/index.js';
import { getTestGpu, testSeed } from '../../../test/gpu-helpers.js';
import { GpuRandomFill, randomWeightValues } from './random-fill.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

describe.skipIf(!gpu)('random weight fill', () => {
  it('GPU values equal the CPU twin bit for bit (f32 and f16, linear and norm, offsets)', async () => {
    const seed = testSeed('random fill');
    for (const dtype of ['f32', 'f16'] as const) {
      if (dtype === 'f16' && !gpu!.features.shaderF16) continue;
      const fill = await GpuRandomFill.create(gpu!, dtype);
      const n = 3001;
      const buf = gpu!.device.createBuffer({ size: 2 * n * 4 + 16, usage: 0x80 | 0x4 | 0x8 });
      const enc = gpu!.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      const done = [
        fill.encode(pass, buf, { count: n, seed, tensorId: 7, kind: 'linear', scaleExp: -6 }),
        fill.encode(pass, buf, { count: n, seed, tensorId: 8, kind: 'norm', dstOffset: n + 1 }),
      ];
      pass.end();
      gpu!.device.queue.submit([enc.finish()]);
      const read = (len: number, off: number) => (dtype === 'f16' ? readFloat16(gpu!, buf, len, off) : readFloat32(gpu!, buf, len, off));
      const a = randomWeightValues(n, seed, 7, 'linear', -6);
      const b = randomWeightValues(n, seed, 8, 'norm');
      expect(Array.from(await read(n, 0))).toEqual(Array.from(a));
      expect(Array.from(await read(n, n + 1))).toEqual(Array.from(b));
      expect(Math.max(...a)).toBeLessThan(1 / 64);
      expect(Math.min(...b)).toBeGreaterThanOrEqual(0.75);
      done.forEach((d) => d());
      buf.destroy();
    }
  });
});

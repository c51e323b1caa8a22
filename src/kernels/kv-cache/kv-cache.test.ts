import { afterAll, describe, expect, it } from 'vitest';
import { createStorageBuffer, readFloat16, readFloat32, roundToFloat16, toFloat16Bits } from '../../gpu/index.js';
import { KvCache } from '../../model/llama-cpu.js';
import { getTestGpu, testSeed } from '../../../test/gpu-helpers.js';
import { Rng } from '../../util/rng.js';
import { GpuKvWrite } from './kv-cache.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

describe.skipIf(!gpu)('KV-cache write', () => {
  it('writes k and v of fused qkv rows at their positions, leaving the rest of the cache alone (f32, f16)', async () => {
    const rng = new Rng(testSeed('kv write'));
    const kvHeads = 2, d = 8, cap = 10, heads = 4, T = 3, start = 4;
    const ld = (heads + 2 * kvHeads) * d;
    for (const dtype of ['f32', 'f16'] as const) {
      if (dtype === 'f16' && !gpu!.features.shaderF16) continue;
      let src = rng.normalArray(T * ld);
      if (dtype === 'f16') src = roundToFloat16(src);
      const enc16 = (a: Float32Array) => (dtype === 'f16' ? toFloat16Bits(a) : a);
      const sb = createStorageBuffer(gpu!, enc16(src));
      const init = new Float32Array(kvHeads * cap * d).fill(7);
      const kb = createStorageBuffer(gpu!, enc16(init));
      const vb = createStorageBuffer(gpu!, enc16(init));
      const k = await GpuKvWrite.create(gpu!, { src: sb, kCache: kb, vCache: vb, dtype, kvHeads, headDim: d, capacity: cap, ld, kOffset: heads * d, vOffset: (heads + kvHeads) * d });
      k.set(T, start);
      const enc = gpu!.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      k.encode(pass);
      pass.end();
      gpu!.device.queue.submit([enc.finish()]);
      const read = (b: GPUBuffer) => (dtype === 'f16' ? readFloat16(gpu!, b, init.length) : readFloat32(gpu!, b, init.length));
      // Reference: the CPU KvCache's layout.
      const ref = new KvCache(1, kvHeads, cap, d);
      ref.k[0]!.fill(7);
      ref.v[0]!.fill(7);
      const kRows = new Float32Array(T * kvHeads * d);
      const vRows = new Float32Array(T * kvHeads * d);
      for (let t = 0; t < T; t++) {
        kRows.set(src.subarray(t * ld + heads * d, t * ld + (heads + kvHeads) * d), t * kvHeads * d);
        vRows.set(src.subarray(t * ld + (heads + kvHeads) * d, (t + 1) * ld), t * kvHeads * d);
      }
      ref.write(0, start, T, kRows, vRows);
      expect(Array.from(await read(kb))).toEqual(Array.from(ref.k[0]!));
      expect(Array.from(await read(vb))).toEqual(Array.from(ref.v[0]!));
      k.destroy();
      [sb, kb, vb].forEach((b) => b.destroy());
    }
  });
});

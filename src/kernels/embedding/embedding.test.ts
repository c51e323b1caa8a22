import { afterAll, describe, expect, it } from 'vitest';
import { createStorageBuffer, readFloat32, roundToFloat16, toFloat16Bits } from '../../gpu/index.js';
import { getTestGpu, testSeed } from '../../../test/gpu-helpers.js';
import { Rng } from '../../util/rng.js';
import { GpuEmbedding } from './embedding.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

describe.skipIf(!gpu)('embedding gather', () => {
  it('gathers rows exactly, f32 and f16 tables, whole and split into binding chunks', async () => {
    const rng = new Rng(testSeed('embedding'));
    const vocab = 300, hidden = 24, T = 9;
    for (const tableType of ['f32', 'f16'] as const) {
      for (const maxBindingBytes of [undefined, 4096]) {
        let tab = rng.normalArray(vocab * hidden);
        if (tableType === 'f16') tab = roundToFloat16(tab);
        const ids = Uint32Array.from({ length: T }, () => rng.int(vocab));
        ids[0] = vocab - 1;
        ids[1] = 0;
        const tb = createStorageBuffer(gpu!, tableType === 'f16' ? toFloat16Bits(tab) : tab);
        const ib = createStorageBuffer(gpu!, ids);
        const xb = createStorageBuffer(gpu!, T * hidden * 4);
        const k = await GpuEmbedding.create(gpu!, { ids: ib, table: tb, tableType, vocab, hidden, x: xb, ...(maxBindingBytes ? { maxBindingBytes } : {}) });
        k.set(T);
        const enc = gpu!.device.createCommandEncoder();
        const pass = enc.beginComputePass();
        k.encode(pass);
        pass.end();
        gpu!.device.queue.submit([enc.finish()]);
        const got = await readFloat32(gpu!, xb, T * hidden);
        for (let t = 0; t < T; t++) expect(Array.from(got.subarray(t * hidden, (t + 1) * hidden))).toEqual(Array.from(tab.subarray(ids[t]! * hidden, (ids[t]! + 1) * hidden)));
        k.destroy();
        [tb, ib, xb].forEach((b) => b.destroy());
      }
    }
  });
});

import { afterAll, describe, expect, it } from 'vitest';
import { type HipMask, maskForDecodeStep } from '../../attention/mask.js';
import { resolveHipOptions } from '../../attention/options.js';
import { getTestGpu } from '../../../test/gpu-helpers.js';
import { randomBlockStarts, seededRng } from '../../../test/helpers.js';
import type { Rng } from '../../util/rng.js';
import { createDecodeShift } from './decode-shift.js';
import { readGpuHipMask, uploadHipMask } from './index.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

/** A random mask: per row a random number of distinct ascending block starts (0 … n), −1 padded. */
function randomMask(rng: Rng, heads: number, numQueryBlocks: number, n: number, blockSizeK: number, refreshAt: number, shiftedBlocks = true): HipMask {
  const rows = heads * numQueryBlocks;
  const blockStarts = new Int32Array(rows * n);
  const grid = Math.floor((refreshAt - 64) / blockSizeK);
  for (let r = 0; r < rows; r++) blockStarts.set(randomBlockStarts(rng, n, r === 0 ? n : r === 1 ? 0 : rng.int(n + 1), grid, blockSizeK), r * n);
  const options = resolveHipOptions({ topK: n * blockSizeK, blockSizeK, blockSizeQ: 16, slidingWindow: 64, shiftedBlocks });
  const queryLength = 16 * numQueryBlocks;
  return { batch: 1, heads, queryLength, queryOffset: refreshAt + 1 - queryLength, keyLength: refreshAt + 1, numQueryBlocks, blocksPerQuery: n, blockStarts, options, qkProducts: 0 };
}

describe('decode-shift kernel (GPU) = maskForDecodeStep (CPU)', () => {
  it.skipIf(!gpu)('merges every row with its shifted copy exactly, for random masks and shifts', async () => {
    const rng = seededRng('decode shift gpu');
    const shifter = await createDecodeShift(gpu!);
    let rowsChecked = 0;
    try {
      for (const [heads, nqb, n, bk] of [
        [8, 1, 256, 2],
        [5, 3, 37, 4],
        [32, 1, 64, 1],
      ] as const) {
        const refreshAt = 5000 + rng.int(3000);
        const mask = randomMask(rng, heads, nqb, n, bk, refreshAt);
        const gpuMask = uploadHipMask(gpu!, mask);
        for (const shift of [0, 1, 2, 3, 7, bk, 2 * bk + 1]) {
          const position = refreshAt + shift;
          const enc = gpu!.device.createCommandEncoder();
          const stepped = shifter.encode(enc, gpuMask, position);
          gpu!.device.queue.submit([enc.finish()]);
          const got = await readGpuHipMask(gpu!, stepped);
          const want = maskForDecodeStep(mask, position);
          expect(got.blocksPerQuery).toBe(want.blocksPerQuery);
          expect(got.options.slidingWindow).toBe(want.options.slidingWindow);
          expect(got.options.sinkTokens).toBe(want.options.sinkTokens);
          expect(want.options.sinkTokens).toBe(mask.options.sinkTokens + shift);
          expect([...got.blockStarts]).toEqual([...want.blockStarts]);
          rowsChecked += heads * nqb;
        }
        gpuMask.buffer.destroy();
      }
      console.log(`[decode shift] ${rowsChecked} mask rows equal to the CPU merge`);
    } finally {
      shifter.destroy();
    }
  });

  it.skipIf(!gpu)('with shiftedBlocks off, returns the refresh mask with the window reaching back (no dispatch)', async () => {
    const rng = seededRng('decode shift off');
    const shifter = await createDecodeShift(gpu!);
    const mask = randomMask(rng, 4, 1, 32, 2, 3000, false);
    const gpuMask = uploadHipMask(gpu!, mask);
    try {
      const stepped = shifter.encode(gpu!.device.createCommandEncoder(), gpuMask, 3005);
      expect(stepped.buffer).toBe(gpuMask.buffer);
      expect(stepped.blocksPerQuery).toBe(32);
      expect(stepped.options.slidingWindow).toBe(mask.options.slidingWindow + 5);
      expect(stepped.options.sinkTokens).toBe(mask.options.sinkTokens);
    } finally {
      gpuMask.buffer.destroy();
      shifter.destroy();
    }
  });
});

import { afterAll, describe, expect, it } from 'vitest';
import { getTestBrowser } from './harness.js';
import { testSeed } from '../gpu-helpers.js';
import { compareMasks, cpuMask, randomCpuProblem, type MaskProblemSpec } from '../../src/kernels/hip-mask/testing.js';
import type { HipMaskEntryArgs } from './entries/hip-mask.entry.js';

const browser = await getTestBrowser();
afterAll(() => browser?.close());

const entry = new URL('./entries/hip-mask.entry.ts', import.meta.url);
const SMALL = { topK: 64, blockSizeK: 4, blockSizeQ: 16, blockStrideQ: 2, sinkTokens: 8, slidingWindow: 32 };

describe.skipIf(!browser)('HiP mask estimation in headless Chromium (SwiftShader, f32)', () => {
  for (const path of ['scalar', 'matrix-emulated'] as const) {
    it(`${path}: masks equal the CPU reference's (GQA 2, ragged, q as [tokens, heads, d])`, async () => {
      const spec: MaskProblemSpec = { batch: 1, heads: 4, kvHeads: 2, queryLength: 777, keyLength: 777, headDim: 64, qLayout: 'bthd' };
      const args: HipMaskEntryArgs = { seed: testSeed(`browser hip-mask ${path}`), spec, options: SMALL, path };
      const r = await browser!.run<{ blockStarts: number[]; variant: string; ms: number }, HipMaskEntryArgs>(entry, { args });
      expect(r.features.shaderF16).toBe(false);
      const ref = cpuMask(randomCpuProblem(args.seed, spec, 'f32'), SMALL);
      const c = compareMasks({ ...ref, blockStarts: Int32Array.from(r.report.blockStarts) }, ref);
      console.log(
        `chromium ${r.adapterInfo.vendor} ${r.adapterInfo.architecture}: ${r.report.variant}: ${c.equalSlots}/${c.slots} masks equal, ` +
          `recall ${c.recall.toFixed(5)}, GPU ${r.report.ms.toFixed(0)} ms (page run ${r.runMs.toFixed(0)} ms)`,
      );
      expect(c.firstDiff).toBeUndefined();
      expect(c.fractionEqual).toBe(1);
    });
  }
});

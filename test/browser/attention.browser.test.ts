import { afterAll, describe, expect, it } from 'vitest';
import { getTestBrowser } from './harness.js';
import { testSeed } from '../gpu-helpers.js';
import type { AttentionBrowserArgs } from './entries/attention.entry.js';

const browser = await getTestBrowser();
afterAll(() => browser?.close());

const entry = new URL('./entries/attention.entry.ts', import.meta.url);
const hip = { topK: 32, blockSizeQ: 32, blockSizeK: 2, sinkTokens: 8, slidingWindow: 48, refreshInterval: 4 };
const base = { batch: 1, heads: 4, kvHeads: 1, headDim: 64 };

describe.skipIf(!browser)('attention kernels in headless Chromium (SwiftShader, f32 path)', () => {
  it('prefill and decode, dense / StreamingLLM / HiP, match the CPU reference to 1e-5', async () => {
    const args: AttentionBrowserArgs = {
      seed: testSeed('attention browser'),
      cases: [
        { name: 'dense prefill, GQA 4, model layout, query offset', method: 'dense', mode: 'prefill', layout: 'model', shape: { ...base, batch: 2, queryLength: 70, keyLength: 150 } },
        { name: 'streaming prefill, GQA 1', method: 'streaming', mode: 'prefill', streaming: { sinkTokens: 8, slidingWindow: 40 }, shape: { ...base, heads: 2, kvHeads: 2, queryLength: 120, keyLength: 120 } },
        { name: 'HiP prefill, GQA 4, d 128', method: 'hip', mode: 'prefill', layout: 'model', hip, shape: { ...base, headDim: 128, queryLength: 170, keyLength: 170 } },
        { name: 'dense decode, GQA 8, KV capacity > length', method: 'dense', mode: 'decode', shape: { ...base, heads: 8, queryLength: 1, keyLength: 300, keyCapacity: 320 } },
        { name: 'HiP decode, GQA 4, 3 splits', method: 'hip', mode: 'decode', decodeSplits: 3, hip, shape: { ...base, queryLength: 1, keyLength: 222 } },
        { name: 'dense prefill with bindings split (40 KiB limit)', method: 'dense', mode: 'prefill', layout: 'model', maxBindingBytes: 40 * 1024, shape: { ...base, batch: 2, heads: 4, kvHeads: 2, queryLength: 130, keyLength: 130 } },
      ],
    };
    const r = await browser!.run<{ results: { name: string; dtype: string; prefillPath: string; decodePath: string; maxRowRelError: number; maxAbsErrorRel: number; ms: number }[] }, AttentionBrowserArgs>(entry, { args });
    console.log(`chromium ${r.userAgent}; adapter ${r.adapterInfo.vendor} ${r.adapterInfo.architecture}; shaderF16=${r.features.shaderF16}`);
    expect(r.report.results).toHaveLength(args.cases.length);
    for (const x of r.report.results) {
      console.log(`[attention browser] ${x.dtype} prefill ${x.prefillPath} / decode ${x.decodePath} ${x.name}: max row rel err ${x.maxRowRelError.toExponential(2)}, abs/max ${x.maxAbsErrorRel.toExponential(2)} (${x.ms.toFixed(0)} ms)`);
      expect(x.maxRowRelError, x.name).toBeLessThanOrEqual(x.dtype === 'f16' ? 2e-3 : 1e-5);
    }
  });
});

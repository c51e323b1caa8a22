import { afterAll, describe, expect, it } from 'vitest';
import { getTestBrowser } from './harness.js';
import { testSeed } from '../gpu-helpers.js';
import { saxpyError } from '../kernels/saxpy.js';
import { saxpyInputs, type SaxpyArgs } from './entries/saxpy.entry.js';

const browser = await getTestBrowser();
afterAll(() => browser?.close());

const entry = new URL('./entries/saxpy.entry.ts', import.meta.url);

describe.skipIf(!browser)('WebGPU in headless Chromium (SwiftShader)', () => {
  it('runs saxpy and matches the CPU, on SwiftShader without shader-f16', async () => {
    const args: SaxpyArgs = { seed: testSeed('browser saxpy'), n: 10_007 };
    const r = await browser!.run<{ n: number; bits: number[]; subgroupSize: number }, SaxpyArgs>(entry, { args });
    console.log(`chromium: ${r.userAgent}\nadapter ${JSON.stringify(r.adapterInfo)}\nfeatures ${JSON.stringify(r.features)} bundle ${r.bundleMs.toFixed(0)} ms, run ${r.runMs.toFixed(0)} ms`);
    expect(`${r.adapterInfo.vendor} ${r.adapterInfo.architecture}`).toMatch(/swiftshader/i);
    expect(r.features.shaderF16).toBe(false);
    expect(r.features.subgroups).toBe(true);
    expect(r.limits.maxStorageBufferBindingSize).toBeGreaterThan(0);
    const { a, x, y } = saxpyInputs(args);
    const got = new Float32Array(new Uint32Array(r.report.bits).buffer);
    expect(got.length).toBe(args.n);
    expect(saxpyError(a, x, y, got)).toBeLessThanOrEqual(2 ** -22);
  });

  it('passes acquire options into the page (feature-off fallback)', async () => {
    const r = await browser!.run(entry, { args: { seed: 1, n: 64 }, acquire: { disable: { subgroups: true, timestampQuery: true } } });
    expect(r.features.subgroups).toBe(false);
    expect(r.features.timestampQuery).toBe(false);
  });

  it('surfaces an exception thrown in the page', async () => {
    const bad = new URL('./entries/throws.entry.ts', import.meta.url);
    await expect(browser!.run(bad)).rejects.toThrow(/deliberate failure in the page/);
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import { getTestGpu, maxRelError, seededRandom } from './gpu-helpers.js';
import { getTestBrowser } from './browser/harness.js';

const saved = process.env.HIPATTN_REQUIRE_WEBGPU;
afterEach(() => {
  if (saved === undefined) delete process.env.HIPATTN_REQUIRE_WEBGPU;
  else process.env.HIPATTN_REQUIRE_WEBGPU = saved;
});

describe('GPU test gating', () => {
  console.log('[hipattn test] the two NO-WEBGPU notices below are expected: this file tests the skip path on purpose');
  it('getTestGpu skips (null, loud notice) without an adapter, and fails when HIPATTN_REQUIRE_WEBGPU=1', async () => {
    delete process.env.HIPATTN_REQUIRE_WEBGPU;
    // Node has no navigator.gpu: the browser backend finds no adapter.
    expect(await getTestGpu({ backend: 'browser' })).toBeNull();
    process.env.HIPATTN_REQUIRE_WEBGPU = '1';
    await expect(getTestGpu({ backend: 'browser' })).rejects.toThrow(/HIPATTN_REQUIRE_WEBGPU=1 but no WebGPU adapter/);
  });

  it('getTestBrowser skips without Chromium, and fails when HIPATTN_REQUIRE_WEBGPU=1', async () => {
    delete process.env.HIPATTN_REQUIRE_WEBGPU;
    expect(await getTestBrowser({ executablePath: '/nonexistent/chromium' })).toBeNull();
    process.env.HIPATTN_REQUIRE_WEBGPU = '1';
    await expect(getTestBrowser({ executablePath: '/nonexistent/chromium' })).rejects.toThrow(/Chromium not found at \/nonexistent\/chromium/);
  });
});

describe('test utilities', () => {
  it('seededRandom is deterministic and uniform-ish', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const xs = Array.from({ length: 10000 }, () => a());
    expect(xs.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => b()));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.02);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
  });

  it('maxRelError propagates NaN', () => {
    expect(maxRelError([1, 2], [1, 2])).toBe(0);
    expect(maxRelError([1, NaN], [1, 2])).toBeNaN();
  });
});

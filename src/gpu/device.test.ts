import { afterAll, describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import { acquireGpu, withErrorScope, type GpuContext } from './index.js';
import { getTestGpu } from '../../test/gpu-helpers.js';

const gpu = await getTestGpu();
const extra: GpuContext[] = [];
afterAll(() => {
  for (const c of extra) c.destroy();
  gpu?.destroy();
});

describe('acquireGpu without an adapter', () => {
  it("resolves to null with ifUnavailable: 'null'", async () => {
    // In Node there is no navigator.gpu, so the browser backend finds nothing.
    expect(await acquireGpu({ backend: 'browser', ifUnavailable: 'null' })).toBeNull();
  });

  it("throws HipAttnError('GPU') by default", async () => {
    const err = await acquireGpu({ backend: 'browser' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HipAttnError);
    expect((err as HipAttnError).code).toBe('GPU');
    expect((err as Error).message).toMatch(/navigator\.gpu/);
  });
});

describe.skipIf(!gpu)('acquireGpu in Node (Dawn)', () => {
  it('describes the adapter and its features', () => {
    const ctx = gpu!;
    expect(ctx.runtime).toBe('node');
    expect(ctx.adapter).not.toBeNull();
    expect(typeof ctx.adapterInfo.vendor).toBe('string');
    // A plain object: survives JSON.
    expect(JSON.parse(JSON.stringify(ctx.adapterInfo))).toEqual(ctx.adapterInfo);
    const has = (f: string) => ctx.device.features.has(f as GPUFeatureName);
    expect(ctx.features.shaderF16).toBe(has('shader-f16'));
    expect(ctx.features.subgroups).toBe(has('subgroups'));
    expect(ctx.features.timestampQuery).toBe(has('timestamp-query'));
    expect(ctx.features.subgroupMatrix).toBe(has('chromium-experimental-subgroup-matrix'));
    // Every feature the adapter has and we want is requested.
    for (const f of ['shader-f16', 'subgroups', 'timestamp-query', 'chromium-experimental-subgroup-matrix']) {
      expect(has(f)).toBe(ctx.adapter!.features.has(f as GPUFeatureName));
    }
    console.log('adapter', JSON.stringify(ctx.adapterInfo), 'features', JSON.stringify(ctx.features));
  });

  it("raises the limits to the adapter's maximum", () => {
    const ctx = gpu!;
    const a = ctx.adapter!.limits;
    expect(ctx.limits.maxStorageBufferBindingSize).toBe(a.maxStorageBufferBindingSize);
    expect(ctx.limits.maxBufferSize).toBe(a.maxBufferSize);
    expect(ctx.limits.maxComputeWorkgroupStorageSize).toBe(a.maxComputeWorkgroupStorageSize);
    expect(ctx.limits.maxComputeInvocationsPerWorkgroup).toBe(a.maxComputeInvocationsPerWorkgroup);
    expect(ctx.limits.minStorageBufferOffsetAlignment).toBeGreaterThan(0);
    console.log('limits', JSON.stringify({
      maxStorageBufferBindingSize: ctx.limits.maxStorageBufferBindingSize,
      maxBufferSize: ctx.limits.maxBufferSize,
      maxComputeWorkgroupStorageSize: ctx.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: ctx.limits.maxComputeInvocationsPerWorkgroup,
    }));
  });

  it('the disable option removes features from the device and the context', async () => {
    const ctx = await acquireGpu({ disable: { shaderF16: true, subgroups: true, subgroupMatrix: true, timestampQuery: true } });
    extra.push(ctx);
    expect(ctx.features).toEqual({ shaderF16: false, subgroups: false, subgroupMatrix: false, timestampQuery: false });
    for (const f of ['shader-f16', 'subgroups', 'timestamp-query', 'chromium-experimental-subgroup-matrix']) {
      expect(ctx.device.features.has(f as GPUFeatureName)).toBe(false);
    }
    // And the device really lacks f16: a shader that enables it does not compile.
    if (gpu!.features.shaderF16) {
      await expect(
        ctx.pipelines.computePipeline({ name: 'needs-f16', code: 'enable f16;\n@compute @workgroup_size(1) fn main() { let h: f16 = 1.0h; }' }),
      ).rejects.toThrow(/needs-f16/);
    }
  });

  it('disabling one feature keeps the others', async () => {
    const ctx = await acquireGpu({ disable: { shaderF16: true } });
    extra.push(ctx);
    expect(ctx.features.shaderF16).toBe(false);
    expect(ctx.features.subgroups).toBe(gpu!.features.subgroups);
    expect(ctx.features.timestampQuery).toBe(gpu!.features.timestampQuery);
  });

  it('accepts a device the caller already has, masking disabled features, and leaves it alive', async () => {
    const own = gpu!.device;
    const ctx = await acquireGpu({ device: own, disable: { subgroups: true } });
    expect(ctx.runtime).toBe('external');
    expect(ctx.device).toBe(own);
    expect(ctx.features.subgroups).toBe(false);
    expect(ctx.features.subgroupMatrix).toBe(false);
    expect(ctx.features.shaderF16).toBe(gpu!.features.shaderF16);
    ctx.destroy(); // not ours: must not destroy the device
    const b = own.createBuffer({ size: 16, usage: 0x80 });
    await expect(withErrorScope(own, 'after external destroy', () => b.destroy())).resolves.toBeUndefined();
  });

  it('several contexts coexist, each with its own pipeline cache', async () => {
    const a = await acquireGpu();
    const b = await acquireGpu();
    extra.push(a, b);
    expect(a.device).not.toBe(b.device);
    expect(a.pipelines).not.toBe(b.pipelines);
  });

  it('onUncapturedError receives errors outside error scopes', async () => {
    const seen: string[] = [];
    const ctx = await acquireGpu({ onUncapturedError: (e) => seen.push(e.message) });
    extra.push(ctx);
    ctx.device.createBuffer({ size: 16, usage: 0x1 | 0x80 }); // invalid usage combination
    await ctx.device.queue.onSubmittedWorkDone();
    for (let i = 0; i < 50 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(seen.length).toBeGreaterThan(0);
  });

  it('withErrorScope turns a validation error into HipAttnError', async () => {
    const ctx = gpu!;
    const err = await withErrorScope(ctx.device, 'bad buffer', () =>
      // MAP_READ may only be combined with COPY_DST: a validation error.
      ctx.device.createBuffer({ size: 16, usage: 0x1 | 0x80 }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HipAttnError);
    expect((err as HipAttnError).code).toBe('GPU');
    expect((err as Error).message).toMatch(/^bad buffer: WebGPU validation error/);
  });
});

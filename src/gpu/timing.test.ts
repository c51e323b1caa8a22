import { afterAll, describe, expect, it } from 'vitest';
import { acquireGpu, bindBuffers, createStorageBuffer, createUniformBuffer, defineUniforms, GpuTimer, timeGpu, type GpuContext } from './index.js';
import { getTestGpu } from '../../test/gpu-helpers.js';
import { saxpyWgsl } from '../../test/kernels/saxpy.js';

const gpu = await getTestGpu();
const extra: GpuContext[] = [];
afterAll(() => {
  for (const c of extra) c.destroy();
  gpu?.destroy();
});

/** Encodes `passes` saxpy passes over n elements; returns an encoder callback for the timer. */
async function saxpyWork(ctx: GpuContext, n: number) {
  const c = await ctx.pipelines.computePipeline({ name: 'test/saxpy', code: saxpyWgsl(), bindings: [['uniform', 'read-only-storage', 'storage']] });
  const P = defineUniforms('Params', { n: 'u32', a: 'f32', rowStride: 'u32' });
  const groups = Math.ceil(n / 64);
  const ub = createUniformBuffer(ctx, P, { n, a: 0.5, rowStride: groups * 64 });
  const x = createStorageBuffer(ctx, n * 4);
  const y = createStorageBuffer(ctx, n * 4);
  const bg = bindBuffers(ctx.device, c, [ub, x, y]);
  return {
    encodePass(pass: GPUComputePassEncoder) {
      pass.setPipeline(c.pipeline);
      pass.setBindGroup(0, bg);
      pass.dispatchWorkgroups(groups);
      pass.end();
    },
    destroy() {
      ub.destroy();
      x.destroy();
      y.destroy();
    },
  };
}

describe.skipIf(!gpu)('GPU timing', () => {
  it('uses timestamp queries when the device has them', async () => {
    const ctx = gpu!;
    const work = await saxpyWork(ctx, 1 << 20);
    const timer = new GpuTimer(ctx);
    expect(timer.source).toBe(ctx.features.timestampQuery ? 'timestamp' : 'wall-clock');
    const t = await timer.time((enc) => {
      work.encodePass(enc.beginComputePass('first'));
      work.encodePass(enc.beginComputePass('second'));
    });
    console.log('timing', JSON.stringify(t));
    expect(t.source).toBe(timer.source);
    expect(Number.isFinite(t.ms)).toBe(true);
    expect(t.ms).toBeGreaterThan(0);
    if (t.source === 'timestamp') {
      expect(t.passes.map((p) => p.label)).toEqual(['first', 'second']);
      for (const p of t.passes) expect(p.ms).toBeGreaterThan(0);
      expect(t.ms).toBeGreaterThanOrEqual(Math.max(...t.passes.map((p) => p.ms)));
    }
    // The timer is reusable.
    const again = await timer.time((enc) => work.encodePass(enc.beginComputePass()));
    expect(again.ms).toBeGreaterThan(0);
    timer.destroy();
    work.destroy();
  });

  it("falls back to wall-clock time with mode 'wall-clock'", async () => {
    const work = await saxpyWork(gpu!, 1 << 18);
    const t = await timeGpu(gpu!, (enc) => work.encodePass(enc.beginComputePass('p')), { mode: 'wall-clock' });
    expect(t.source).toBe('wall-clock');
    expect(t.ms).toBeGreaterThan(0);
    expect(t.passes).toEqual([]);
    work.destroy();
  });

  it('falls back to wall-clock time on a device without timestamp-query', async () => {
    const ctx = await acquireGpu({ disable: { timestampQuery: true } });
    extra.push(ctx);
    const work = await saxpyWork(ctx, 1 << 18);
    const t = await timeGpu(ctx, (enc) => work.encodePass(enc.beginComputePass('p')));
    expect(t.source).toBe('wall-clock');
    expect(t.ms).toBeGreaterThan(0);
    work.destroy();
  });
});

import { afterAll, describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import { bindBuffers, createStorageBuffer, formatCompilationErrors, readFloat32, readUint32 } from './index.js';
import { getTestGpu, randomFloat32, seededRandom, testSeed } from '../../test/gpu-helpers.js';
import { saxpyError, saxpyGpu, saxpyWgsl } from '../../test/kernels/saxpy.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

describe('formatCompilationErrors', () => {
  it('names the shader, line and column and quotes the line with a caret', () => {
    const code = 'fn a() {}\nfn b() { let x = y; }\n';
    const msg = formatCompilationErrors('demo', code, [{ message: "unresolved value 'y'", type: 'error', lineNum: 2, linePos: 18, length: 1 }]);
    expect(msg).toContain('shader "demo" at line 2, column 18');
    expect(msg).toContain("unresolved value 'y'");
    expect(msg).toContain('2 | fn b() { let x = y; }');
    const lines = msg.split('\n');
    expect(lines[2]!.indexOf('^')).toBe(lines[1]!.indexOf('y;'));
  });
});

describe.skipIf(!gpu)('pipelines on the device', () => {
  it('runs saxpy on random data and matches the CPU', async () => {
    const rand = seededRandom(testSeed('saxpy'));
    for (const n of [1, 63, 64, 1000, 100_003]) {
      const x = randomFloat32(rand, n, -10, 10);
      const y = randomFloat32(rand, n, -10, 10);
      const a = (rand() - 0.5) * 8;
      const got = await saxpyGpu(gpu!, a, x, y);
      expect(got.length).toBe(n);
      // Only FMA contraction may differ from the CPU's two roundings: ≤ ~1 ulp of |a·x| + |y|.
      expect(saxpyError(a, x, y, got)).toBeLessThanOrEqual(2 ** -22);
    }
  });

  it('compiles a pipeline once per (name, code, entry point)', async () => {
    const cache = gpu!.pipelines;
    const spec = { name: 'test/cache', code: saxpyWgsl(32), bindings: [['uniform', 'read-only-storage', 'storage']] as const };
    const before = cache.compileCount;
    const [p1, p2] = await Promise.all([
      cache.computePipeline({ ...spec, bindings: spec.bindings.map((g) => [...g]) }),
      cache.computePipeline({ ...spec, bindings: spec.bindings.map((g) => [...g]) }),
    ]);
    expect(p1).toBe(p2);
    expect(cache.compileCount).toBe(before + 1);
    const p3 = await cache.computePipeline({ ...spec, code: saxpyWgsl(16), bindings: [['uniform', 'read-only-storage', 'storage']] });
    expect(p3).not.toBe(p1);
    expect(cache.compileCount).toBe(before + 2);
    // Same code under another entry point name in the key: a new pipeline, the module is reused.
    const p4 = await cache.computePipeline({ name: 'test/cache', code: saxpyWgsl(32) });
    expect(p4).not.toBe(p1);
    expect(cache.compileCount).toBe(before + 2);
  });

  it("supports 'auto' layouts", async () => {
    const code = `
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < arrayLength(&out)) { out[g.x] = g.x * 3u + 1u; }
}`;
    const c = await gpu!.pipelines.computePipeline({ name: 'test/auto', code });
    const buf = createStorageBuffer(gpu!, 100 * 4, { label: 'out' });
    const enc = gpu!.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(c.pipeline);
    pass.setBindGroup(0, bindBuffers(gpu!.device, c, [buf]));
    pass.dispatchWorkgroups(2);
    pass.end();
    gpu!.device.queue.submit([enc.finish()]);
    const got = await readUint32(gpu!, buf);
    expect(Array.from(got)).toEqual(Array.from({ length: 100 }, (_, i) => i * 3 + 1));
    buf.destroy();
  });

  it('reports WGSL errors with the shader name, line, column and source line', async () => {
    const code = ['@group(0) @binding(0) var<storage, read_write> out: array<f32>;', '@compute @workgroup_size(1)', 'fn main() {', '  out[0] = undefined_thing * 2.0;', '}'].join('\n');
    const err = await gpu!.pipelines.computePipeline({ name: 'test/broken', code }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HipAttnError);
    expect((err as HipAttnError).code).toBe('GPU');
    const msg = (err as Error).message;
    console.log(msg);
    expect(msg).toContain('shader "test/broken" at line 4, column');
    expect(msg).toContain('undefined_thing');
    expect(msg).toContain('4 |   out[0] = undefined_thing * 2.0;');
    // A failed compilation is not cached: asking again fails again.
    await expect(gpu!.pipelines.computePipeline({ name: 'test/broken', code })).rejects.toThrow(/test\/broken/);
  });

  it('reports pipeline errors (missing entry point) with the shader name', async () => {
    const err = await gpu!.pipelines
      .computePipeline({ name: 'test/entry', code: '@compute @workgroup_size(1) fn main() {}', entryPoint: 'nope' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HipAttnError);
    expect((err as Error).message).toMatch(/shader "test\/entry".*"nope"/s);
  });

  it.runIf(gpu?.features.subgroups)('runs a subgroups kernel (subgroupAdd)', async () => {
    const code = `
enable subgroups;
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) i: u32, @builtin(subgroup_size) sg: u32) {
  let s = subgroupAdd(1u);
  out[i] = s * 1000u + sg;
}`;
    const c = await gpu!.pipelines.computePipeline({ name: 'test/subgroups', code, bindings: [['storage']] });
    const buf = createStorageBuffer(gpu!, 64 * 4, { label: 'out' });
    const enc = gpu!.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(c.pipeline);
    pass.setBindGroup(0, bindBuffers(gpu!.device, c, [buf]));
    pass.dispatchWorkgroups(1);
    pass.end();
    gpu!.device.queue.submit([enc.finish()]);
    const got = await readUint32(gpu!, buf);
    const sg = got[0]! % 1000;
    console.log('subgroup size', sg);
    for (const v of got) expect(v).toBe(sg * 1000 + sg);
  });

  it.runIf(gpu?.features.shaderF16)('runs an f16 kernel (f16 arithmetic, f32 out)', async () => {
    const code = `
enable f16;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1) fn main() {
  let a: f16 = 1.5h;
  let b: f16 = 2048.0h;
  out[0] = f32(a * b);
  out[1] = f32(b + 1.0h); // 2049 is not representable in f16: ties to even → 2048
}`;
    const c = await gpu!.pipelines.computePipeline({ name: 'test/f16', code, bindings: [['storage']] });
    const buf = createStorageBuffer(gpu!, 8, { label: 'out' });
    const enc = gpu!.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(c.pipeline);
    pass.setBindGroup(0, bindBuffers(gpu!.device, c, [buf]));
    pass.dispatchWorkgroups(1);
    pass.end();
    gpu!.device.queue.submit([enc.finish()]);
    const got = await readFloat32(gpu!, buf);
    expect(got[0]).toBe(3072);
    expect([2048, 2050]).toContain(got[1]);
  });
});

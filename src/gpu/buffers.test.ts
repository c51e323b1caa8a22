import { afterAll, describe, expect, it } from 'vitest';
import { HipAttnError } from '../errors.js';
import {
  bindBuffers,
  checkTensorFits,
  createStorageBuffer,
  createStorageBufferF16,
  createUniformBuffer,
  defineUniforms,
  f16BitsToF32Bits,
  planBindingChunks,
  readBuffer,
  readFloat16,
  readFloat32,
  readInt32,
  readUint32,
  toFloat16Bits,
  type BufferLimits,
  type GpuContext,
} from './index.js';
import { getTestGpu, randomFloat32, seededRandom, testSeed } from '../../test/gpu-helpers.js';

const gpu = await getTestGpu();
afterAll(() => gpu?.destroy());

function expectHipError(fn: () => unknown, code: string, ...patterns: RegExp[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(HipAttnError);
  expect((err as HipAttnError).code).toBe(code);
  for (const p of patterns) expect((err as Error).message).toMatch(p);
}

/** Runs a one-binding-group kernel over `buffers` with `groups` workgroups. */
async function run(ctx: GpuContext, name: string, code: string, kinds: ('storage' | 'read-only-storage' | 'uniform')[], buffers: (GPUBuffer | GPUBufferBinding)[], groups: number) {
  const c = await ctx.pipelines.computePipeline({ name, code, bindings: [kinds] });
  const enc = ctx.device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(c.pipeline);
  pass.setBindGroup(0, bindBuffers(ctx.device, c, buffers));
  pass.dispatchWorkgroups(groups);
  pass.end();
  ctx.device.queue.submit([enc.finish()]);
}

describe('size checks and binding chunks (no device needed)', () => {
  const limits: BufferLimits = { maxBufferSize: 1 << 30, maxStorageBufferBindingSize: 1 << 27, minStorageBufferOffsetAlignment: 256 };

  it('checkTensorFits names the tensor, the bytes needed and the limit', () => {
    expect(() => checkTensorFits(limits, 1 << 27, 'ok')).not.toThrow();
    expectHipError(() => checkTensorFits(limits, (1 << 27) + 4, 'K cache'), 'OUT_OF_MEMORY', /"K cache"/, /134217732 bytes/, /maxStorageBufferBindingSize is 128\.00 MiB \(134217728 bytes\)/, /planBindingChunks/);
    expect(() => checkTensorFits(limits, (1 << 27) + 4, 'K cache', { splitBindings: true })).not.toThrow();
    expectHipError(() => checkTensorFits(limits, 3 * 2 ** 30, 'V cache', { splitBindings: true }), 'OUT_OF_MEMORY', /"V cache" needs 3\.00 GiB \(3221225472 bytes\)/, /maxBufferSize is 1\.00 GiB \(1073741824 bytes\)/);
  });

  it('planBindingChunks covers the tensor with aligned, bounded, granule-respecting chunks', () => {
    const rand = seededRandom(testSeed('planBindingChunks'));
    for (let trial = 0; trial < 300; trial++) {
      const elementBytes = [2, 4, 8][Math.floor(rand() * 3)]!;
      const granule = 1 + Math.floor(rand() * 300);
      const align = [4, 16, 256][Math.floor(rand() * 3)]!;
      const total = Math.floor(rand() * 200_000);
      const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);
      const step = (granule * elementBytes * align) / gcd(granule * elementBytes, align);
      const maxChunkBytes = step + 4 * Math.floor(rand() * 20_000);
      const lim = { ...limits, minStorageBufferOffsetAlignment: align };
      const chunks = planBindingChunks(total, elementBytes, lim, { granuleElements: granule, maxChunkBytes });
      let next = 0;
      for (const c of chunks) {
        expect(c.firstElement).toBe(next);
        expect(c.offset).toBe(c.firstElement * elementBytes);
        expect(c.offset % align).toBe(0);
        expect(c.firstElement % granule).toBe(0);
        expect(c.size % 4).toBe(0);
        expect(c.size).toBeLessThanOrEqual(maxChunkBytes);
        expect(c.size).toBeGreaterThanOrEqual(c.elementCount * elementBytes);
        expect(c.size - c.elementCount * elementBytes).toBeLessThan(4);
        expect(c.elementCount).toBeGreaterThan(0);
        next += c.elementCount;
      }
      expect(next).toBe(total);
      if (chunks.length > 1) for (const c of chunks.slice(0, -1)) expect(c.elementCount).toBe(chunks[0]!.elementCount);
    }
  });

  it('planBindingChunks refuses a granule bigger than a binding', () => {
    expectHipError(() => planBindingChunks(1000, 4, limits, { granuleElements: 100, maxChunkBytes: 256 }), 'OUT_OF_MEMORY', /granule of 100 elements/);
  });

  it('uniform layouts emit WGSL and pack values, rejecting bad ones', () => {
    const P = defineUniforms('P', { n: 'u32', k: 'i32', s: 'f32' });
    expect(P.wgsl()).toBe('struct P {\n  n: u32,\n  k: i32,\n  s: f32,\n}');
    expect(P.byteLength).toBe(16);
    const v = new DataView(P.pack({ n: 4_000_000_000, k: -7, s: 0.5 }));
    expect([v.getUint32(0, true), v.getInt32(4, true), v.getFloat32(8, true)]).toEqual([4_000_000_000, -7, 0.5]);
    expectHipError(() => P.pack({ n: -1, k: 0, s: 0 }), 'INVALID_OPTION', /P\.n/);
    expectHipError(() => P.pack({ n: 1.5, k: 0, s: 0 }), 'INVALID_OPTION', /not a u32/);
    expectHipError(() => P.pack({ n: 1, k: 0 } as never), 'INVALID_OPTION', /P\.s/);
    expect(defineUniforms('Q', { a: 'u32', b: 'u32', c: 'u32', d: 'u32', e: 'f32' }).byteLength).toBe(32);
  });
});

describe.skipIf(!gpu)('buffers on the device', () => {
  it('reads back what was written, with the right sizes, for f32/u32/i32', async () => {
    const ctx = gpu!;
    const f = new Float32Array([1.5, -2, 3.25, 1e30, -0]);
    const fb = createStorageBuffer(ctx, f, { label: 'f' });
    expect(fb.size).toBe(20);
    expect(Array.from(await readFloat32(ctx, fb))).toEqual(Array.from(f));
    expect(Array.from(await readFloat32(ctx, fb, 2, 3))).toEqual([1e30, -0].map(Math.fround));
    expect((await readFloat32(ctx, fb, 0)).length).toBe(0);
    const u = new Uint32Array([0, 1, 0xffffffff, 123456789]);
    const ub = createStorageBuffer(ctx, u);
    expect(Array.from(await readUint32(ctx, ub))).toEqual(Array.from(u));
    const i = new Int32Array([-1, -2147483648, 2147483647, 5]);
    const ib = createStorageBuffer(ctx, i);
    expect(Array.from(await readInt32(ctx, ib, 3, 1))).toEqual([-2147483648, 2147483647, 5]);
    // Unaligned byte ranges.
    const bytes = new Uint8Array(await readBuffer(ctx, ub, { byteOffset: 5, byteLength: 6 }));
    expect(Array.from(bytes)).toEqual(Array.from(new Uint8Array(u.buffer).slice(5, 11)));
    const tooMany = await readFloat32(ctx, fb, 6).catch((e: unknown) => e);
    expectHipError(() => { throw tooMany; }, 'SHAPE_MISMATCH', /asked for 6 elements/, /holds 5/);
    await expect(readBuffer(ctx, fb, { byteOffset: 16, byteLength: 8 })).rejects.toThrow(/outside buffer "f" of 20 bytes/);
    const zero = createStorageBuffer(ctx, 10);
    expect(zero.size).toBe(12);
    expect(Array.from(await readUint32(ctx, zero))).toEqual([0, 0, 0]);
    for (const b of [fb, ub, ib, zero]) b.destroy();
  });

  it('f16 storage: odd lengths pad to 4 bytes and read back rounded', async () => {
    const ctx = gpu!;
    const x = new Float32Array([0.1, 1, -2.5, 65504, 70000, 1e-8, 3]);
    const b = createStorageBufferF16(ctx, x);
    expect(b.size).toBe(16);
    const back = await readFloat16(ctx, b, 7);
    expect(back.length).toBe(7);
    expect(Array.from(back)).toEqual([0.0999755859375, 1, -2.5, 65504, Infinity, 0, 3]);
    b.destroy();
  });

  it('refuses a tensor larger than the limits before allocating', () => {
    const ctx = gpu!;
    expectHipError(() => createStorageBuffer(ctx, ctx.limits.maxStorageBufferBindingSize + 4, { label: 'too big' }), 'OUT_OF_MEMORY', /"too big"/, /maxStorageBufferBindingSize/);
    expectHipError(() => createStorageBuffer(ctx, ctx.limits.maxBufferSize + 4, { label: 'huge', splitBindings: true }), 'OUT_OF_MEMORY', /maxBufferSize/);
  });

  it('uniform buffers reach the shader with the declared layout', async () => {
    const ctx = gpu!;
    const P = defineUniforms('P', { n: 'u32', k: 'i32', s: 'f32', t: 'f32', m: 'u32' });
    const code = `${P.wgsl()}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1) fn main() {
  out[0] = f32(p.n); out[1] = f32(p.k); out[2] = p.s; out[3] = p.t; out[4] = f32(p.m);
}`;
    const ub = createUniformBuffer(ctx, P, { n: 7, k: -3, s: 0.25, t: -1e-3, m: 65536 });
    const out = createStorageBuffer(ctx, 5 * 4);
    await run(ctx, 'test/uniform', code, ['uniform', 'storage'], [ub, out], 1);
    expect(Array.from(await readFloat32(ctx, out))).toEqual([7, -3, 0.25, Math.fround(-1e-3), 65536]);
    ub.destroy();
    out.destroy();
  });

  it('binding chunks at aligned offsets address the whole tensor', async () => {
    const ctx = gpu!;
    const n = 10_007;
    const data = new Uint32Array(n).map((_, i) => i);
    const buf = createStorageBuffer(ctx, data, { label: 'chunked' });
    // Force several chunks of whole rows of 3 elements.
    const chunks = planBindingChunks(n, 4, ctx, { granuleElements: 3, maxChunkBytes: 4096 });
    expect(chunks.length).toBeGreaterThan(5);
    const code = `
struct P { first: u32, count: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> t: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < p.count) { t[g.x] = t[g.x] * 2u + p.first * 0u + 1u; }
}`;
    const P = defineUniforms('P', { first: 'u32', count: 'u32' });
    const params: GPUBuffer[] = [];
    for (const c of chunks) {
      const ub = createUniformBuffer(ctx, P, { first: c.firstElement, count: c.elementCount });
      params.push(ub);
      await run(ctx, 'test/chunks', code, ['uniform', 'storage'], [ub, { buffer: buf, offset: c.offset, size: c.size }], Math.ceil(c.elementCount / 64));
    }
    const got = await readUint32(ctx, buf);
    let bad = 0;
    for (let i = 0; i < n; i++) if (got[i] !== 2 * i + 1) bad++;
    expect(bad).toBe(0);
    buf.destroy();
    for (const p of params) p.destroy();
  });

  it.runIf(gpu?.features.shaderF16)('GPU f16 decoding of all 65536 half values matches ours', async () => {
    const ctx = gpu!;
    const all = new Uint16Array(65536).map((_, i) => i);
    const src = createStorageBuffer(ctx, all, { label: 'halves' });
    const out = createStorageBuffer(ctx, 65536 * 4, { label: 'widened' });
    const code = `
enable f16;
@group(0) @binding(0) var<storage, read> h: array<f16>;
@group(0) @binding(1) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) { o[g.x] = f32(h[g.x]); }`;
    await run(ctx, 'test/f16-decode', code, ['read-only-storage', 'storage'], [src, out], 256);
    const got = new Uint32Array((await readFloat32(ctx, out)).buffer);
    let normalBad = 0;
    let subnormalFlushed = 0;
    let subnormalBad = 0;
    for (let h = 0; h < 65536; h++) {
      const e = (h >> 10) & 0x1f;
      if (e === 31) continue; // Inf/NaN in f16 storage: WGSL leaves the result indeterminate
      const want = f16BitsToF32Bits(h);
      if (got[h] === want) continue;
      if (e === 0) {
        if ((got[h]! & 0x7fffffff) === 0) subnormalFlushed++;
        else subnormalBad++;
      } else normalBad++;
    }
    console.log(`GPU f16→f32: ${subnormalFlushed} subnormals flushed to zero`);
    expect(normalBad).toBe(0);
    expect(subnormalBad).toBe(0);
    src.destroy();
    out.destroy();
  });

  it.runIf(gpu?.features.shaderF16)('GPU f32→f16 conversion agrees with ours within one half ulp step', async () => {
    const ctx = gpu!;
    const rand = seededRandom(testSeed('GPU f32→f16'));
    const n = 1 << 16;
    const x = randomFloat32(rand, n, -1, 1).map((v) => v * 2 ** Math.floor(rand() * 30 - 14));
    const src = createStorageBuffer(ctx, x);
    const out = createStorageBuffer(ctx, n * 2);
    const code = `
enable f16;
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> o: array<f16>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) { o[g.x] = f16(x[g.x]); }`;
    await run(ctx, 'test/f16-encode', code, ['read-only-storage', 'storage'], [src, out], n / 256);
    const got = new Uint16Array(await readBuffer(ctx, out));
    const ours = toFloat16Bits(x);
    let exact = 0;
    let off = 0;
    for (let i = 0; i < n; i++) {
      if (got[i] === ours[i]) exact++;
      else if (Math.abs(got[i]! - ours[i]!) > 1) off++;
    }
    console.log(`GPU f32→f16: ${exact}/${n} identical to round-to-nearest-even`);
    // WGSL lets the GPU round either way; it may not be further off than the neighbour.
    expect(off).toBe(0);
    src.destroy();
    out.destroy();
  });
});

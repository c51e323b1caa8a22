/**
 * A trivial kernel (y ← a·x + y) used to test the WebGPU plumbing end to end, in Node and in
 * the browser. Not part of the package.
 */

import {
  bindBuffers,
  createStorageBuffer,
  createUniformBuffer,
  defineUniforms,
  readFloat32,
  type GpuContext,
} from '../../src/gpu/index.js';

export const SAXPY_WORKGROUP = 64;

const Params = defineUniforms('Params', { n: 'u32', a: 'f32', rowStride: 'u32' });

export function saxpyWgsl(workgroup = SAXPY_WORKGROUP): string {
  return /* wgsl */ `
${Params.wgsl()}
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(${workgroup})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * params.rowStride + gid.x;
  if (i < params.n) {
    y[i] = params.a * x[i] + y[i];
  }
}
`;
}

/** CPU reference, rounding each step to f32 as the GPU does (up to FMA contraction). */
export function saxpyCpu(a: number, x: Float32Array, y: Float32Array): Float32Array {
  const out = new Float32Array(y.length);
  for (let i = 0; i < y.length; i++) out[i] = Math.fround(Math.fround(a * x[i]!) + y[i]!);
  return out;
}

/**
 * Largest |got − cpu| / (|a·x| + |y|) over the elements: FMA contraction and the CPU's two
 * roundings differ by at most about one f32 ulp of that scale (2^-23 ≈ 1.2e-7).
 */
export function saxpyError(a: number, x: Float32Array, y: Float32Array, got: ArrayLike<number>): number {
  const ref = saxpyCpu(a, x, y);
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const scale = Math.abs(a * x[i]!) + Math.abs(y[i]!) + 1e-30;
    const e = Math.abs(got[i]! - ref[i]!) / scale;
    if (!(e <= worst)) worst = e;
  }
  return worst;
}

/** Runs saxpy on the GPU and reads the result back. */
export async function saxpyGpu(ctx: GpuContext, a: number, x: Float32Array, y: Float32Array): Promise<Float32Array> {
  const n = x.length;
  const compiled = await ctx.pipelines.computePipeline({
    name: 'test/saxpy',
    code: saxpyWgsl(),
    bindings: [['uniform', 'read-only-storage', 'storage']],
  });
  const groups = Math.ceil(n / SAXPY_WORKGROUP);
  const maxX = ctx.limits.maxComputeWorkgroupsPerDimension;
  const gx = Math.min(groups, maxX);
  const gy = Math.ceil(groups / gx);
  const params = createUniformBuffer(ctx, Params, { n, a, rowStride: gx * SAXPY_WORKGROUP });
  const xb = createStorageBuffer(ctx, x, { label: 'x' });
  const yb = createStorageBuffer(ctx, y, { label: 'y' });
  try {
    const encoder = ctx.device.createCommandEncoder();
    const pass = encoder.beginComputePass({ label: 'saxpy' });
    pass.setPipeline(compiled.pipeline);
    pass.setBindGroup(0, bindBuffers(ctx.device, compiled, [params, xb, yb]));
    pass.dispatchWorkgroups(gx, gy);
    pass.end();
    ctx.device.queue.submit([encoder.finish()]);
    return await readFloat32(ctx, yb, n);
  } finally {
    params.destroy();
    xb.destroy();
    yb.destroy();
  }
}

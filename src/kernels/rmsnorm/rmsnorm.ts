/**
 * RMSNorm of rows of an f32 activation: y = x / sqrt(mean(x²) + eps) · weight, as in
 * transformers (and src/model/cpu-ops.ts rmsNorm). One workgroup per row; the sum of squares
 * is reduced with subgroupAdd where the device has subgroups, else a tree in workgroup memory.
 * The output (f16 or f32) may start at another offset, e.g. to normalise only the last token.
 */
import { defineUniforms, type GpuContext } from '../../gpu/index.js';
import { BoundKernel, compileKernel, grid2d, requireF16 } from '../common.js';
import type { StorageType } from '../types.js';

export const RMSNORM_PARAMS = defineUniforms('Params', { rows: 'u32', dim: 'u32', eps: 'f32', xOffset: 'u32', yOffset: 'u32', gridX: 'u32' });

export interface RmsNormVariant {
  output: StorageType;
  workgroupSize: number;
  subgroups: boolean;
}

export function rmsNormWgsl(v: RmsNormVariant): string {
  const WG = v.workgroupSize;
  const reduce = v.subgroups
    ? `  let s = subgroupAdd(ss);
  if (sgLane == 0u) { red[lid / sgSize] = s; }
  workgroupBarrier();
  if (lid == 0u) {
    var t = 0.0;
    for (var j = 0u; j < (WG + sgSize - 1u) / sgSize; j++) { t += red[j]; }
    red[0] = t;
  }
  workgroupBarrier();`
    : `  red[lid] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }`;
  return `${v.output === 'f16' ? 'enable f16;\n' : ''}${v.subgroups ? 'enable subgroups;\n' : ''}
${RMSNORM_PARAMS.wgsl()}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> Wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<${v.output}>;
const WG = ${WG}u;
var<workgroup> red: array<f32, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${v.subgroups ? ', @builtin(subgroup_size) sgSize: u32, @builtin(subgroup_invocation_id) sgLane: u32' : ''}) {
  let row = wid.y * p.gridX + wid.x;
  if (row >= p.rows) { return; }
  let xb = p.xOffset + row * p.dim;
  let yb = p.yOffset + row * p.dim;
  var ss = 0.0;
  for (var i = lid; i < p.dim; i += WG) { let v = X[xb + i]; ss = fma(v, v, ss); }
${reduce}
  let inv = 1.0 / sqrt(red[0] / f32(p.dim) + p.eps);
  for (var i = lid; i < p.dim; i += WG) { Y[yb + i] = ${v.output}(Wt[i] * (X[xb + i] * inv)); }
}
`;
}

export interface RmsNormOptions {
  /** f32 [rows, dim] (from xOffset). */
  x: GPUBuffer;
  /** f32 [dim]. */
  weight: GPUBuffer;
  /** [rows, dim] (from yOffset). */
  y: GPUBuffer;
  output: StorageType;
  dim: number;
  eps: number;
  label?: string;
}

/** RMSNorm bound to its buffers; `set({ rows, xOffset?, yOffset? })` then `encode(pass)`. */
export class GpuRmsNorm {
  private constructor(private readonly k: BoundKernel<'rows' | 'dim' | 'eps' | 'xOffset' | 'yOffset' | 'gridX'>, private readonly o: RmsNormOptions) {}

  /** `shareParamsWith`: another GpuRmsNorm of the same shape whose uniforms this one reuses (one `set` for both). */
  static async create(gpu: GpuContext, o: RmsNormOptions, shareParamsWith?: GpuRmsNorm): Promise<GpuRmsNorm> {
    requireF16(gpu, 'rmsnorm', o.output);
    const v: RmsNormVariant = { output: o.output, workgroupSize: gpu.adapterInfo.isFallbackAdapter ? 64 : 256, subgroups: gpu.features.subgroups };
    const compiled = await compileKernel(gpu, `rmsnorm/${v.output} wg${v.workgroupSize}${v.subgroups ? ' sg' : ''}`, rmsNormWgsl(v), ['ro', 'ro', 'rw']);
    return new GpuRmsNorm(new BoundKernel(gpu, compiled, RMSNORM_PARAMS, [o.x, o.weight, o.y], o.label ?? 'rmsnorm', shareParamsWith?.k), o);
  }

  set(v: { rows: number; xOffset?: number; yOffset?: number }): void {
    const [gx] = grid2d(v.rows, this.k.gpu.limits.maxComputeWorkgroupsPerDimension);
    this.k.set({ rows: v.rows, dim: this.o.dim, eps: this.o.eps, xOffset: v.xOffset ?? 0, yOffset: v.yOffset ?? 0, gridX: gx });
  }

  encode(pass: GPUComputePassEncoder): void {
    const [gx, gy] = grid2d(this.k.current.rows, this.k.gpu.limits.maxComputeWorkgroupsPerDimension);
    this.k.encode(pass, gx, gy);
  }

  destroy(): void {
    this.k.destroy();
  }
}

/**
 * KV-cache write: copies the new tokens' k and v (rows of the fused qkv activation, after RoPE)
 * into the layer's cache [kvHeads, capacity, headDim] at positions start … start + tokens − 1.
 * Source and cache share the storage type (the attention problem's dtype).
 */
import { defineUniforms, type GpuContext } from '../../gpu/index.js';
import { BoundKernel, compileKernel, grid2d, requireF16 } from '../common.js';
import type { StorageType } from '../types.js';

export const KV_WRITE_PARAMS = defineUniforms('Params', {
  tokens: 'u32',
  kvHeads: 'u32',
  headDim: 'u32',
  ld: 'u32',
  kOffset: 'u32',
  vOffset: 'u32',
  capacity: 'u32',
  start: 'u32',
  gridX: 'u32',
});
const WG = 64;

export function kvWriteWgsl(dtype: StorageType): string {
  return `${dtype === 'f16' ? 'enable f16;\n' : ''}
${KV_WRITE_PARAMS.wgsl()}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> Src: array<${dtype}>;
@group(0) @binding(2) var<storage, read_write> KC: array<${dtype}>;
@group(0) @binding(3) var<storage, read_write> VC: array<${dtype}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = (wid.y * p.gridX + wid.x) * ${WG}u + lid;
  let row = p.kvHeads * p.headDim;
  if (g >= p.tokens * row) { return; }
  let t = g / row;
  let h = (g % row) / p.headDim;
  let i = g % p.headDim;
  let dst = (h * p.capacity + p.start + t) * p.headDim + i;
  KC[dst] = Src[t * p.ld + p.kOffset + h * p.headDim + i];
  VC[dst] = Src[t * p.ld + p.vOffset + h * p.headDim + i];
}
`;
}

export interface KvWriteOptions {
  src: GPUBuffer;
  kCache: GPUBuffer;
  vCache: GPUBuffer;
  dtype: StorageType;
  kvHeads: number;
  headDim: number;
  capacity: number;
  ld: number;
  kOffset: number;
  vOffset: number;
}

export class GpuKvWrite {
  private constructor(private readonly k: BoundKernel<'tokens' | 'kvHeads' | 'headDim' | 'ld' | 'kOffset' | 'vOffset' | 'capacity' | 'start' | 'gridX'>, private readonly o: KvWriteOptions) {}

  /** `shareParamsWith`: the same op of another layer, whose uniforms this one reuses. */
  static async create(gpu: GpuContext, o: KvWriteOptions, shareParamsWith?: GpuKvWrite): Promise<GpuKvWrite> {
    requireF16(gpu, 'kv-cache write', o.dtype);
    const compiled = await compileKernel(gpu, `kv-write/${o.dtype}`, kvWriteWgsl(o.dtype), ['ro', 'rw', 'rw']);
    return new GpuKvWrite(new BoundKernel(gpu, compiled, KV_WRITE_PARAMS, [o.src, o.kCache, o.vCache], 'kv-write', shareParamsWith?.k), o);
  }

  private groups(tokens: number): [number, number] {
    return grid2d(Math.ceil((tokens * this.o.kvHeads * this.o.headDim) / WG), this.k.gpu.limits.maxComputeWorkgroupsPerDimension);
  }

  set(tokens: number, start: number): void {
    const o = this.o;
    this.k.set({ tokens, kvHeads: o.kvHeads, headDim: o.headDim, ld: o.ld, kOffset: o.kOffset, vOffset: o.vOffset, capacity: o.capacity, start, gridX: this.groups(tokens)[0] });
  }

  encode(pass: GPUComputePassEncoder): void {
    const [gx, gy] = this.groups(this.k.current.tokens);
    this.k.encode(pass, gx, gy);
  }

  destroy(): void {
    this.k.destroy();
  }
}

/**
 * Rotary position embeddings, in place, in the Hugging Face rotate_half layout (dimension i of
 * a head pairs with i + headDim/2), on the q and k heads of each token's row:
 *
 *   x'[i] = x[i]·cos − x[i + d/2]·sin,   x'[i + d/2] = x[i + d/2]·cos + x[i]·sin
 *
 * The cos/sin tables of the chunk's positions ([tokens, d/2] each, one buffer: cos then sin)
 * are computed on the CPU from the inverse frequencies of src/model/rope.ts (ropeTables), so
 * every scaling type (default, linear, llama3, llama.cpp freq factors) is covered and the
 * angles are exactly the CPU reference's: float32 angle p·invFreq, then cos/sin. No GPU sin/cos,
 * whose accuracy at angles of 10⁵ rad (long contexts) is not specified by WGSL.
 */
import { defineUniforms, type GpuContext } from '../../gpu/index.js';
import { BoundKernel, compileKernel, grid2d, requireF16 } from '../common.js';
import type { StorageType } from '../types.js';

export const ROPE_PARAMS = defineUniforms('Params', {
  tokens: 'u32',
  /** heads rotated per row: q heads then k heads */
  qHeads: 'u32',
  kHeads: 'u32',
  half: 'u32',
  /** row stride of the activation (elements) */
  ld: 'u32',
  /** element offset of q head 0 and k head 0 within a row */
  qOffset: 'u32',
  kOffset: 'u32',
  /** element offset of the sin table in the table buffer */
  sinOffset: 'u32',
  gridX: 'u32',
});

const WG = 64;

export function ropeWgsl(dtype: StorageType): string {
  return `${dtype === 'f16' ? 'enable f16;\n' : ''}
${ROPE_PARAMS.wgsl()}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> X: array<${dtype}>;
@group(0) @binding(2) var<storage, read> Tab: array<f32>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = (wid.y * p.gridX + wid.x) * ${WG}u + lid;
  let heads = p.qHeads + p.kHeads;
  if (g >= p.tokens * heads * p.half) { return; }
  let i = g % p.half;
  let h = (g / p.half) % heads;
  let t = g / (p.half * heads);
  var base = t * p.ld;
  if (h < p.qHeads) { base += p.qOffset + h * 2u * p.half; } else { base += p.kOffset + (h - p.qHeads) * 2u * p.half; }
  let c = Tab[t * p.half + i];
  let s = Tab[p.sinOffset + t * p.half + i];
  let a = f32(X[base + i]);
  let b = f32(X[base + p.half + i]);
  X[base + i] = ${dtype}(a * c - b * s);
  X[base + p.half + i] = ${dtype}(b * c + a * s);
}
`;
}

export interface RopeOptions {
  /** The activation holding q and k, rotated in place. */
  x: GPUBuffer;
  dtype: StorageType;
  /** f32 table buffer: cos [tokens, d/2] then sin [tokens, d/2] from `sinOffset`. */
  table: GPUBuffer;
  headDim: number;
  qHeads: number;
  kHeads: number;
  ld: number;
  qOffset: number;
  kOffset: number;
  label?: string;
}

export class GpuRope {
  private constructor(private readonly k: BoundKernel<'tokens' | 'qHeads' | 'kHeads' | 'half' | 'ld' | 'qOffset' | 'kOffset' | 'sinOffset' | 'gridX'>, private readonly o: RopeOptions) {}

  static async create(gpu: GpuContext, o: RopeOptions): Promise<GpuRope> {
    requireF16(gpu, 'rope', o.dtype);
    const compiled = await compileKernel(gpu, `rope/${o.dtype}`, ropeWgsl(o.dtype), ['rw', 'ro']);
    return new GpuRope(new BoundKernel(gpu, compiled, ROPE_PARAMS, [o.x, o.table], o.label ?? 'rope'), o);
  }

  private groups(tokens: number): [number, number] {
    const n = tokens * (this.o.qHeads + this.o.kHeads) * (this.o.headDim / 2);
    return grid2d(Math.ceil(n / WG), this.k.gpu.limits.maxComputeWorkgroupsPerDimension);
  }

  /** `tokens` rows; the sin table starts at element `sinOffset` of the table buffer. */
  set(tokens: number, sinOffset: number): void {
    const o = this.o;
    this.k.set({ tokens, qHeads: o.qHeads, kHeads: o.kHeads, half: o.headDim / 2, ld: o.ld, qOffset: o.qOffset, kOffset: o.kOffset, sinOffset, gridX: this.groups(tokens)[0] });
  }

  encode(pass: GPUComputePassEncoder): void {
    const [gx, gy] = this.groups(this.k.current.tokens);
    this.k.encode(pass, gx, gy);
  }

  destroy(): void {
    this.k.destroy();
  }
}

/** Packs cos then sin of a chunk ([count, half] each) into one table: [cos…, sin…]. */
export function packRopeTable(cos: Float32Array, sin: Float32Array, out?: Float32Array): Float32Array {
  const t = out ?? new Float32Array(cos.length + sin.length);
  t.set(cos, 0);
  t.set(sin, cos.length);
  return t;
}

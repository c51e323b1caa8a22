/**
 * SwiGLU gate: out[t, i] = silu(gu[t, i]) · gu[t, I + i], silu(g) = g / (1 + e^−g), where gu is
 * the output of the fused gate|up projection ([tokens, 2I]: gate columns then up columns).
 * (The residual adds of the model are fused into the matmul epilogue: GpuLinear accumulate.)
 */
import { defineUniforms, type GpuContext } from '../../gpu/index.js';
import { BoundKernel, compileKernel, grid2d, requireF16 } from '../common.js';
import type { StorageType } from '../types.js';

export const SWIGLU_PARAMS = defineUniforms('Params', { tokens: 'u32', inter: 'u32', ldIn: 'u32', ldOut: 'u32', gridX: 'u32' });
const WG = 64;

export function swigluWgsl(input: StorageType, output: StorageType): string {
  return `${input === 'f16' || output === 'f16' ? 'enable f16;\n' : ''}
${SWIGLU_PARAMS.wgsl()}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> GU: array<${input}>;
@group(0) @binding(2) var<storage, read_write> Out: array<${output}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = (wid.y * p.gridX + wid.x) * ${WG}u + lid;
  if (g >= p.tokens * p.inter) { return; }
  let t = g / p.inter;
  let i = g % p.inter;
  let gate = f32(GU[t * p.ldIn + i]);
  let up = f32(GU[t * p.ldIn + p.inter + i]);
  Out[t * p.ldOut + i] = ${output}(gate / (1.0 + exp(-gate)) * up);
}
`;
}

export interface SwigluOptions {
  gateUp: GPUBuffer;
  input: StorageType;
  out: GPUBuffer;
  output: StorageType;
  intermediate: number;
  ldIn?: number;
  ldOut?: number;
}

export class GpuSwiglu {
  private constructor(private readonly k: BoundKernel<'tokens' | 'inter' | 'ldIn' | 'ldOut' | 'gridX'>, private readonly o: SwigluOptions) {}

  static async create(gpu: GpuContext, o: SwigluOptions): Promise<GpuSwiglu> {
    requireF16(gpu, 'swiglu', o.input, o.output);
    const compiled = await compileKernel(gpu, `swiglu/${o.input}-${o.output}`, swigluWgsl(o.input, o.output), ['ro', 'rw']);
    return new GpuSwiglu(new BoundKernel(gpu, compiled, SWIGLU_PARAMS, [o.gateUp, o.out], 'swiglu'), o);
  }

  private groups(tokens: number): [number, number] {
    return grid2d(Math.ceil((tokens * this.o.intermediate) / WG), this.k.gpu.limits.maxComputeWorkgroupsPerDimension);
  }

  set(tokens: number): void {
    const I = this.o.intermediate;
    this.k.set({ tokens, inter: I, ldIn: this.o.ldIn ?? 2 * I, ldOut: this.o.ldOut ?? I, gridX: this.groups(tokens)[0] });
  }

  encode(pass: GPUComputePassEncoder): void {
    const [gx, gy] = this.groups(this.k.current.tokens);
    this.k.encode(pass, gx, gy);
  }

  destroy(): void {
    this.k.destroy();
  }
}

/**
 * Deterministic pseudo-random weights, generated on the GPU and reproducible bit for bit on the
 * CPU (`randomWeightValues`): for benchmarking models of real shapes (e.g. Llama-3-8B) without
 * a checkpoint, and for checking a GPU model built that way against the CPU reference.
 *
 * Element i of tensor `tensorId` under `seed`: h = hash(i ^ hash(seed + tensorId·0x9E3779B9))
 * (lowbias32 integer hash), then
 *   kind 'linear': ((h >>> 21)·2 − 2047) / 2048 · 2^scaleExp   — odd multiples of 2^(scaleExp−11)
 *   kind 'norm':   (384 + (h >>> 24)) / 512                    — in [0.75, 1.25)
 * Every value is exactly representable in f16 and f32, so the GPU's f16 and f32 buffers and the
 * CPU's Float32Array hold the same numbers.
 */
import { defineUniforms, type GpuContext } from '../../gpu/index.js';
import { BoundKernel, compileKernel, grid2d, requireF16 } from '../common.js';
import type { StorageType } from '../types.js';

export type RandomKind = 'linear' | 'norm';

export const FILL_PARAMS = defineUniforms('Params', { count: 'u32', seed: 'u32', tensorId: 'u32', kind: 'u32', scaleExp: 'i32', dstOffset: 'u32', gridX: 'u32' });
const WG = 256;

function hashJs(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** The values the fill kernel writes, computed on the CPU. */
export function randomWeightValues(count: number, seed: number, tensorId: number, kind: RandomKind, scaleExp = 0): Float32Array {
  const out = new Float32Array(count);
  const key = hashJs((seed + Math.imul(tensorId, 0x9e3779b9)) >>> 0);
  const scale = 2 ** scaleExp;
  for (let i = 0; i < count; i++) {
    const h = hashJs((i ^ key) >>> 0);
    out[i] = kind === 'norm' ? (384 + (h >>> 24)) / 512 : (((h >>> 21) * 2 - 2047) / 2048) * scale;
  }
  return out;
}

export function fillWgsl(dtype: StorageType): string {
  return `${dtype === 'f16' ? 'enable f16;\n' : ''}
${FILL_PARAMS.wgsl()}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> Dst: array<${dtype}>;

fn hash(x: u32) -> u32 {
  var h = x;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * p.gridX + wid.x) * ${WG}u + lid;
  if (i >= p.count) { return; }
  let h = hash(i ^ hash(p.seed + p.tensorId * 0x9e3779b9u));
  var v: f32;
  if (p.kind == 1u) {
    v = f32(384u + (h >> 24u)) / 512.0;
  } else {
    v = (f32((h >> 21u) * 2u) - 2047.0) / 2048.0 * exp2(f32(p.scaleExp));
  }
  Dst[p.dstOffset + i] = ${dtype}(v);
}
`;
}

/** Fills regions of a buffer with `randomWeightValues`. */
export class GpuRandomFill {
  private constructor(
    private readonly gpu: GpuContext,
    private readonly compiled: Awaited<ReturnType<typeof compileKernel>>,
  ) {}

  static async create(gpu: GpuContext, dtype: StorageType): Promise<GpuRandomFill> {
    requireF16(gpu, 'random fill', dtype);
    return new GpuRandomFill(gpu, await compileKernel(gpu, `random-fill/${dtype}`, fillWgsl(dtype), ['rw']));
  }

  /** Encodes the fill of `count` elements of `dst` from element `dstOffset` (a new uniform per call). */
  encode(pass: GPUComputePassEncoder, dst: GPUBuffer, v: { count: number; seed: number; tensorId: number; kind: RandomKind; scaleExp?: number; dstOffset?: number }): () => void {
    const [gx, gy] = grid2d(Math.ceil(v.count / WG), this.gpu.limits.maxComputeWorkgroupsPerDimension);
    const k = new BoundKernel(this.gpu, this.compiled, FILL_PARAMS, [dst], 'random-fill');
    k.set({ count: v.count, seed: v.seed >>> 0, tensorId: v.tensorId, kind: v.kind === 'norm' ? 1 : 0, scaleExp: v.scaleExp ?? 0, dstOffset: v.dstOffset ?? 0, gridX: gx });
    k.encode(pass, gx, gy);
    return () => k.destroy();
  }
}

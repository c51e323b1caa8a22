/**
 * Token embedding gather: x[t, :] = table[ids[t], :] as f32. The table ([vocab, hidden], f16 or
 * f32) may be split into row chunks when it exceeds one storage binding (a 128k × 4096 f16
 * table is 1 GiB); one dispatch per chunk, each writing the tokens whose id falls in it.
 */
import { defineUniforms, type GpuContext, planBindingChunks } from '../../gpu/index.js';
import { BoundKernel, bytesOf, compileKernel, grid2d, readDecl } from '../common.js';
import type { StorageType } from '../types.js';

export const EMBED_PARAMS = defineUniforms('Params', { tokens: 'u32', hidden: 'u32', rowStart: 'u32', rows: 'u32', gridX: 'u32' });
const WG = 64;

export function embeddingWgsl(table: StorageType): string {
  return `${EMBED_PARAMS.wgsl()}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> Ids: array<u32>;
${readDecl('Tab', 2, table, 'tab')}
@group(0) @binding(3) var<storage, read_write> X: array<f32>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = (wid.y * p.gridX + wid.x) * ${WG}u + lid;
  if (g >= p.tokens * p.hidden) { return; }
  let t = g / p.hidden;
  let h = g % p.hidden;
  let id = Ids[t];
  if (id < p.rowStart || id >= p.rowStart + p.rows) { return; }
  X[g] = tab((id - p.rowStart) * p.hidden + h);
}
`;
}

export interface EmbeddingOptions {
  /** u32 [≥ tokens] */
  ids: GPUBuffer;
  /** [vocab, hidden] */
  table: GPUBuffer;
  tableType: StorageType;
  vocab: number;
  hidden: number;
  /** f32 [tokens, hidden] */
  x: GPUBuffer;
  maxBindingBytes?: number;
}

export class GpuEmbedding {
  private tokens = 0;
  private constructor(
    private readonly gpu: GpuContext,
    private readonly chunks: { k: BoundKernel<'tokens' | 'hidden' | 'rowStart' | 'rows' | 'gridX'>; rowStart: number; rows: number }[],
    private readonly hidden: number,
  ) {}

  static async create(gpu: GpuContext, o: EmbeddingOptions): Promise<GpuEmbedding> {
    const compiled = await compileKernel(gpu, `embedding/${o.tableType}`, embeddingWgsl(o.tableType), ['ro', 'ro', 'rw']);
    const limits = o.maxBindingBytes ? { ...gpu.limits, maxStorageBufferBindingSize: Math.min(o.maxBindingBytes, gpu.limits.maxStorageBufferBindingSize) } : gpu.limits;
    const plan = planBindingChunks(o.vocab * o.hidden, bytesOf(o.tableType), limits as GpuContext['limits'], { granuleElements: o.hidden });
    const chunks = plan.map((c) => ({
      k: new BoundKernel(gpu, compiled, EMBED_PARAMS, [o.ids, { buffer: o.table, offset: c.offset, size: c.size }, o.x], 'embedding'),
      rowStart: c.firstElement / o.hidden,
      rows: c.elementCount / o.hidden,
    }));
    return new GpuEmbedding(gpu, chunks, o.hidden);
  }

  private groups(): [number, number] {
    return grid2d(Math.ceil((this.tokens * this.hidden) / WG), this.gpu.limits.maxComputeWorkgroupsPerDimension);
  }

  set(tokens: number): void {
    this.tokens = tokens;
    const [gx] = this.groups();
    for (const c of this.chunks) c.k.set({ tokens, hidden: this.hidden, rowStart: c.rowStart, rows: c.rows, gridX: gx });
  }

  encode(pass: GPUComputePassEncoder): void {
    const [gx, gy] = this.groups();
    for (const c of this.chunks) c.k.encode(pass, gx, gy);
  }

  destroy(): void {
    for (const c of this.chunks) c.k.destroy();
  }
}

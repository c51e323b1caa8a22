/**
 * Small helpers shared by the model's kernel families (matmul, rmsnorm, rope, embedding,
 * elementwise, kv-cache): WGSL snippets for f16/f32 storage and dispatch-grid splitting.
 */
import { HipAttnError } from '../errors.js';
import { BufferUsage, type CompiledPipeline, type GpuContext, type UniformLayout } from '../gpu/index.js';
import type { StorageType } from './types.js';

/** `enable f16;` when any of the types is f16. */
export function enableF16(...types: (StorageType | undefined)[]): string {
  return types.includes('f16') ? 'enable f16;\n' : '';
}

/** Bytes per element. */
export function bytesOf(t: StorageType): number {
  return t === 'f16' ? 2 : 4;
}

/** Throws when an f16 type is asked for on a device without shader-f16. */
export function requireF16(gpu: GpuContext, what: string, ...types: (StorageType | undefined)[]): void {
  if (types.includes('f16') && !gpu.features.shaderF16) {
    throw new HipAttnError('UNSUPPORTED', `${what}: f16 storage needs the 'shader-f16' feature, which this device lacks (use f32)`);
  }
}

/**
 * Splits `groups` workgroups into an (x, y) grid within maxComputeWorkgroupsPerDimension. The
 * kernel linearises with `wid.y * gridX + wid.x` and must skip indices ≥ groups.
 */
export function grid2d(groups: number, maxPerDim: number): [number, number] {
  if (groups <= maxPerDim) return [Math.max(1, groups), 1];
  const y = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / y), y];
}

/** Throws INVALID_OPTION unless `v` is a non-negative integer that fits a u32. */
export function checkU32(what: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new HipAttnError('INVALID_OPTION', `${what} must be a u32, got ${v}`);
  return v;
}

/**
 * A compiled kernel bound to its buffers once: binding 0 is a uniform struct (`layout`), the
 * rest are the given buffers in order. `set` rewrites the uniforms (queued: applies to work
 * submitted afterwards); `encode` records one dispatch.
 */
export class BoundKernel<K extends string> {
  readonly params: GPUBuffer;
  readonly bindGroup: GPUBindGroup;
  private values: Record<K, number> | null = null;

  /** The kernel whose uniform buffer (and values) this one shares, or itself. */
  private readonly owner: BoundKernel<K>;

  /**
   * `shareParamsWith`: another binding of the same kernel (e.g. the same op in another layer)
   * whose uniform buffer this one reads, so one `set` serves both.
   */
  constructor(
    readonly gpu: GpuContext,
    readonly compiled: CompiledPipeline,
    readonly layout: UniformLayout<K>,
    buffers: readonly (GPUBuffer | GPUBufferBinding)[],
    readonly label: string,
    shareParamsWith?: BoundKernel<K>,
  ) {
    this.owner = shareParamsWith ? shareParamsWith.owner : this;
    this.params = shareParamsWith
      ? this.owner.params
      : gpu.device.createBuffer({ label: `${label} params`, size: layout.byteLength, usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST });
    this.bindGroup = gpu.device.createBindGroup({
      label,
      layout: compiled.bindGroupLayout(0),
      entries: [this.params, ...buffers].map((b, i) => ({ binding: i, resource: 'buffer' in b ? b : { buffer: b } })),
    });
  }

  set(values: Record<K, number>): void {
    this.owner.values = values;
    this.gpu.device.queue.writeBuffer(this.params, 0, this.layout.pack(values));
  }

  /** Values set last (throws if never set). */
  get current(): Record<K, number> {
    const v = this.owner.values;
    if (!v) throw new HipAttnError('INVALID_OPTION', `${this.label}: set() was never called`);
    return v;
  }

  encode(pass: GPUComputePassEncoder, x: number, y = 1, z = 1): void {
    if (x === 0 || y === 0 || z === 0) return;
    pass.setPipeline(this.compiled.pipeline);
    pass.setBindGroup(0, this.bindGroup);
    pass.dispatchWorkgroups(x, y, z);
  }

  destroy(): void {
    if (this.owner === this) this.params.destroy();
  }
}

/** Compiles a kernel with an explicit layout: a uniform then storage buffers ('ro' read-only, 'rw'). */
export function compileKernel(gpu: GpuContext, name: string, code: string, storage: ('ro' | 'rw')[]): Promise<CompiledPipeline> {
  return gpu.pipelines.computePipeline({
    name,
    code,
    bindings: [['uniform', ...storage.map((s) => (s === 'ro' ? ('read-only-storage' as const) : ('storage' as const)))]],
  });
}

/** WGSL accessor for reading element i of a storage array of type t declared as `name` (f16 read as packed u32). */
export function readDecl(name: string, binding: number, t: StorageType, fn: string): string {
  return t === 'f16'
    ? `@group(0) @binding(${binding}) var<storage, read> ${name}: array<u32>;
fn ${fn}(i: u32) -> f32 { return unpack2x16float(${name}[i >> 1u])[i & 1u]; }`
    : `@group(0) @binding(${binding}) var<storage, read> ${name}: array<f32>;
fn ${fn}(i: u32) -> f32 { return ${name}[i]; }`;
}

/**
 * Small helpers shared by the model's kernel families (matmul, rmsnorm, rope, embedding,
 * elementwise, kv-cache): WGSL snippets for f16/f32 storage and dispatch-grid splitting.
 */
import { HipAttnError } from '../errors.js';
import type { GpuContext } from '../gpu/index.js';
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

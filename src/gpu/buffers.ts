/**
 * Buffers: storage buffers from typed arrays, readback, uniform structs, f16 storage, and the
 * size checks / binding chunking that keep big tensors within the device's limits.
 */

import { HipAttnError } from '../errors.js';
import type { GpuContext } from './device.js';
import { fromFloat16Bits, toFloat16Bits } from './f16.js';

/** `GPUBufferUsage` flags as plain numbers (Dawn for Node has no global `GPUBufferUsage`). */
export const BufferUsage = {
  MAP_READ: 0x1,
  MAP_WRITE: 0x2,
  COPY_SRC: 0x4,
  COPY_DST: 0x8,
  INDEX: 0x10,
  VERTEX: 0x20,
  UNIFORM: 0x40,
  STORAGE: 0x80,
  INDIRECT: 0x100,
  QUERY_RESOLVE: 0x200,
} as const;

/** `GPUMapMode.READ` / `WRITE` as plain numbers. */
export const MapMode = { READ: 0x1, WRITE: 0x2 } as const;

/** Anything a buffer helper can get a device and its limits from. */
export type GpuLike = GpuContext | GPUDevice;

/** The limits the size checks read. */
export interface BufferLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  minStorageBufferOffsetAlignment: number;
}

function deviceOf(gpu: GpuLike): GPUDevice {
  return 'device' in gpu && 'pipelines' in gpu ? gpu.device : (gpu as GPUDevice);
}

function limitsOf(gpu: GpuLike | BufferLimits): BufferLimits {
  if ('maxBufferSize' in gpu) return gpu;
  if ('limits' in gpu) return gpu.limits as unknown as BufferLimits;
  return (gpu as GPUDevice).limits as unknown as BufferLimits;
}

/** Formats a byte count as "1.50 GiB (1610612736 bytes)". */
export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${bytes} bytes` : `${v.toFixed(2)} ${units[u]} (${bytes} bytes)`;
}

/** Rounds `n` up to a multiple of `m`. */
export function alignTo(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

export interface CheckTensorOptions {
  /**
   * True when the caller will bind the tensor in chunks (see `planBindingChunks`), so only
   * `maxBufferSize` applies. Default false: the whole tensor is one binding.
   */
  splitBindings?: boolean;
}

/**
 * Throws HipAttnError('OUT_OF_MEMORY') when a single tensor of `bytes` cannot be held in one
 * buffer (`maxBufferSize`) or, unless `splitBindings`, bound whole
 * (`maxStorageBufferBindingSize`). The message names the tensor, the bytes needed and the limit.
 */
export function checkTensorFits(
  gpu: GpuLike | BufferLimits,
  bytes: number,
  what: string,
  options: CheckTensorOptions = {},
): void {
  const limits = limitsOf(gpu);
  if (!Number.isFinite(bytes) || bytes < 0) {
    throw new HipAttnError('INVALID_OPTION', `tensor "${what}": invalid byte size ${bytes}`);
  }
  if (bytes > limits.maxBufferSize) {
    throw new HipAttnError(
      'OUT_OF_MEMORY',
      `tensor "${what}" needs ${formatBytes(bytes)} in one GPU buffer, but this device's ` +
        `maxBufferSize is ${formatBytes(limits.maxBufferSize)}; use a shorter context, fewer heads ` +
        `or a smaller batch, or split the tensor across buffers`,
    );
  }
  if (!options.splitBindings && bytes > limits.maxStorageBufferBindingSize) {
    throw new HipAttnError(
      'OUT_OF_MEMORY',
      `tensor "${what}" needs ${formatBytes(bytes)} in one storage binding, but this device's ` +
        `maxStorageBufferBindingSize is ${formatBytes(limits.maxStorageBufferBindingSize)}; ` +
        `bind it in chunks (planBindingChunks)`,
    );
  }
}

/** One binding-sized piece of a tensor stored in one buffer. */
export interface BindingChunk {
  /** Byte offset of the chunk in the buffer (a multiple of minStorageBufferOffsetAlignment). */
  offset: number;
  /** Byte size of the binding (a multiple of 4, ≤ maxStorageBufferBindingSize). */
  size: number;
  /** Index of the chunk's first element in the tensor. */
  firstElement: number;
  /** Number of tensor elements in the chunk (the binding may be up to 3 bytes longer). */
  elementCount: number;
}

export interface PlanBindingChunksOptions {
  /**
   * Chunks start at multiples of this many elements, so that a row (e.g. one head vector of
   * `d` elements, or a key block) never straddles two bindings. Default 1.
   */
  granuleElements?: number;
  /** Cap on a chunk's bytes below the device limit (e.g. for tests). */
  maxChunkBytes?: number;
}

/**
 * Splits a tensor of `totalElements` elements of `elementBytes` bytes each, stored from offset 0
 * of one buffer, into bindings no larger than `maxStorageBufferBindingSize`, each starting at a
 * multiple of `minStorageBufferOffsetAlignment` and of `granuleElements`. A kernel binds the
 * chunks as separate bindings (or dispatches once per chunk) and indexes element i of the
 * tensor as element `i - chunk.firstElement` of the chunk holding it. All chunks but the last
 * have the same `elementCount`, so chunk = floor(i / chunks[0].elementCount).
 *
 * Buffers made by `createStorageBuffer` are padded to 4 bytes, so the last chunk's rounded-up
 * size always fits.
 * @throws HipAttnError('OUT_OF_MEMORY') when one granule alone exceeds the binding limit.
 */
export function planBindingChunks(
  totalElements: number,
  elementBytes: number,
  gpu: GpuLike | BufferLimits,
  options: PlanBindingChunksOptions = {},
): BindingChunk[] {
  const limits = limitsOf(gpu);
  const granule = options.granuleElements ?? 1;
  if (!Number.isInteger(totalElements) || totalElements < 0) {
    throw new HipAttnError('INVALID_OPTION', `planBindingChunks: totalElements must be a non-negative integer, got ${totalElements}`);
  }
  if (!Number.isInteger(granule) || granule < 1 || !Number.isInteger(elementBytes) || elementBytes < 1) {
    throw new HipAttnError('INVALID_OPTION', `planBindingChunks: granuleElements and elementBytes must be positive integers`);
  }
  const maxBytes = Math.floor(Math.min(limits.maxStorageBufferBindingSize, options.maxChunkBytes ?? Infinity) / 4) * 4;
  const align = limits.minStorageBufferOffsetAlignment;
  // The smallest step (in bytes) that is a whole number of granules and of the alignment.
  const granuleBytes = granule * elementBytes;
  const stepBytes = lcm(granuleBytes, align);
  const stepsPerChunk = Math.floor(maxBytes / stepBytes);
  if (totalElements === 0) return [];
  if (totalElements * elementBytes <= maxBytes) {
    return [{ offset: 0, size: alignTo(totalElements * elementBytes, 4), firstElement: 0, elementCount: totalElements }];
  }
  if (stepsPerChunk < 1) {
    throw new HipAttnError(
      'OUT_OF_MEMORY',
      `planBindingChunks: a granule of ${granule} elements × ${elementBytes} bytes aligned to ${align} ` +
        `needs ${formatBytes(stepBytes)} per binding, over the binding limit of ${formatBytes(maxBytes)}`,
    );
  }
  const chunkElements = (stepsPerChunk * stepBytes) / elementBytes;
  const chunks: BindingChunk[] = [];
  for (let first = 0; first < totalElements; first += chunkElements) {
    const count = Math.min(chunkElements, totalElements - first);
    chunks.push({ offset: first * elementBytes, size: alignTo(count * elementBytes, 4), firstElement: first, elementCount: count });
  }
  return chunks;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

export interface StorageBufferOptions {
  label?: string;
  /** Usage flags; default STORAGE | COPY_SRC | COPY_DST. */
  usage?: number;
  /** The tensor will be bound in chunks: skip the one-binding size check. Default false. */
  splitBindings?: boolean;
}

/**
 * Creates a storage buffer holding `data` (any typed array; its bytes are copied), or a
 * zero-filled one of `data` bytes when `data` is a number. The size is padded to a multiple
 * of 4 bytes. Checks the size against the device's limits first (`checkTensorFits`).
 */
export function createStorageBuffer(gpu: GpuLike, data: ArrayBufferView | number, options: StorageBufferOptions = {}): GPUBuffer {
  const device = deviceOf(gpu);
  const label = options.label ?? 'storage';
  const byteLength = typeof data === 'number' ? data : data.byteLength;
  checkTensorFits(gpu, byteLength, label, { splitBindings: options.splitBindings ?? false });
  const size = Math.max(4, alignTo(byteLength, 4));
  const usage = options.usage ?? BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST;
  if (typeof data === 'number') {
    return device.createBuffer({ label, size, usage });
  }
  const buffer = device.createBuffer({ label, size, usage, mappedAtCreation: true });
  new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  buffer.unmap();
  return buffer;
}

/** Creates an f16 storage buffer (half bits, `array<f16>` in WGSL) from float32 values. */
export function createStorageBufferF16(gpu: GpuLike, data: Float32Array, options: StorageBufferOptions = {}): GPUBuffer {
  return createStorageBuffer(gpu, toFloat16Bits(data), options);
}

/** Writes a typed array into a buffer at `byteOffset` (padded to 4 bytes as WebGPU requires). */
export function writeBuffer(gpu: GpuLike, buffer: GPUBuffer, data: ArrayBufferView, byteOffset = 0): void {
  const device = deviceOf(gpu);
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (bytes.byteLength % 4 === 0) {
    device.queue.writeBuffer(buffer, byteOffset, bytes as Uint8Array<ArrayBuffer>);
  } else {
    const padded = new Uint8Array(alignTo(bytes.byteLength, 4));
    padded.set(bytes);
    device.queue.writeBuffer(buffer, byteOffset, padded);
  }
}

export interface ReadOptions {
  /** Byte offset into the buffer (default 0). */
  byteOffset?: number;
  /** Bytes to read (default: to the end of the buffer). */
  byteLength?: number;
}

/**
 * Copies a buffer range (it needs COPY_SRC usage) to a staging buffer, maps it and returns a
 * copy of the bytes. Waits for all work submitted before it.
 */
export async function readBuffer(gpu: GpuLike, buffer: GPUBuffer, options: ReadOptions = {}): Promise<ArrayBuffer> {
  const device = deviceOf(gpu);
  const byteOffset = options.byteOffset ?? 0;
  const byteLength = options.byteLength ?? buffer.size - byteOffset;
  if (byteOffset < 0 || byteLength < 0 || byteOffset + byteLength > buffer.size) {
    throw new HipAttnError(
      'SHAPE_MISMATCH',
      `readBuffer: range [${byteOffset}, ${byteOffset + byteLength}) is outside buffer "${buffer.label}" of ${buffer.size} bytes`,
    );
  }
  if (byteLength === 0) return new ArrayBuffer(0);
  // copyBufferToBuffer needs 4-byte aligned offsets and sizes.
  const start = Math.floor(byteOffset / 4) * 4;
  const end = Math.min(buffer.size, alignTo(byteOffset + byteLength, 4));
  const copySize = alignTo(end - start, 4);
  const staging = device.createBuffer({
    label: `readback of ${buffer.label}`,
    size: copySize,
    usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST,
  });
  try {
    const encoder = device.createCommandEncoder({ label: 'readback' });
    encoder.copyBufferToBuffer(buffer, start, staging, 0, copySize);
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(MapMode.READ);
    const mapped = staging.getMappedRange();
    const out = mapped.slice(byteOffset - start, byteOffset - start + byteLength);
    staging.unmap();
    return out;
  } finally {
    staging.destroy();
  }
}

function elementRange(buffer: GPUBuffer, bytesPerElement: number, length: number | undefined, offsetElements: number, fn: string): ReadOptions {
  const byteOffset = offsetElements * bytesPerElement;
  const available = Math.floor((buffer.size - byteOffset) / bytesPerElement);
  const n = length ?? available;
  if (!Number.isInteger(n) || n < 0 || n > available) {
    throw new HipAttnError(
      'SHAPE_MISMATCH',
      `${fn}: asked for ${n} elements at element ${offsetElements}, but buffer "${buffer.label}" of ${buffer.size} bytes holds ${Math.max(0, available)} from there`,
    );
  }
  return { byteOffset, byteLength: n * bytesPerElement };
}

/** Reads `length` f32 elements (default: the whole buffer) starting at element `offset`. */
export async function readFloat32(gpu: GpuLike, buffer: GPUBuffer, length?: number, offset = 0): Promise<Float32Array> {
  return new Float32Array(await readBuffer(gpu, buffer, elementRange(buffer, 4, length, offset, 'readFloat32')));
}

/** Reads `length` u32 elements (default: the whole buffer) starting at element `offset`. */
export async function readUint32(gpu: GpuLike, buffer: GPUBuffer, length?: number, offset = 0): Promise<Uint32Array> {
  return new Uint32Array(await readBuffer(gpu, buffer, elementRange(buffer, 4, length, offset, 'readUint32')));
}

/** Reads `length` i32 elements (default: the whole buffer) starting at element `offset`. */
export async function readInt32(gpu: GpuLike, buffer: GPUBuffer, length?: number, offset = 0): Promise<Int32Array> {
  return new Int32Array(await readBuffer(gpu, buffer, elementRange(buffer, 4, length, offset, 'readInt32')));
}

/** Reads `length` f16 elements (default: the whole buffer) and widens them to f32. */
export async function readFloat16(gpu: GpuLike, buffer: GPUBuffer, length?: number, offset = 0): Promise<Float32Array> {
  const bytes = await readBuffer(gpu, buffer, elementRange(buffer, 2, length, offset, 'readFloat16'));
  return fromFloat16Bits(new Uint16Array(bytes));
}

// ---------------------------------------------------------------------------------------------
// Uniform structs

/** Scalar field types of a uniform struct (4 bytes each). */
export type UniformScalar = 'u32' | 'i32' | 'f32';

/**
 * A uniform struct of 4-byte scalar fields, laid out in order without gaps (WGSL's layout for
 * such a struct), total size rounded up to 16 bytes.
 */
export class UniformLayout<K extends string = string> {
  readonly structName: string;
  readonly fields: readonly (readonly [K, UniformScalar])[];
  /** Buffer size in bytes (a multiple of 16). */
  readonly byteLength: number;

  constructor(structName: string, fields: readonly (readonly [K, UniformScalar])[]) {
    const names = new Set<string>();
    for (const [name, type] of fields) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || names.has(name)) {
        throw new HipAttnError('INVALID_OPTION', `uniform struct ${structName}: bad or duplicate field name "${name}"`);
      }
      if (type !== 'u32' && type !== 'i32' && type !== 'f32') {
        throw new HipAttnError('INVALID_OPTION', `uniform struct ${structName}: field ${name} has unsupported type ${String(type)}`);
      }
      names.add(name);
    }
    this.structName = structName;
    this.fields = fields;
    this.byteLength = Math.max(16, alignTo(fields.length * 4, 16));
  }

  /** The WGSL declaration, e.g. `struct Params {\n  n: u32,\n  alpha: f32,\n}`. */
  wgsl(): string {
    return `struct ${this.structName} {\n${this.fields.map(([n, t]) => `  ${n}: ${t},\n`).join('')}}`;
  }

  /** Packs values into the struct's bytes; every field must be given, in range for its type. */
  pack(values: Record<K, number>): ArrayBuffer {
    const buf = new ArrayBuffer(this.byteLength);
    const view = new DataView(buf);
    this.fields.forEach(([name, type], i) => {
      const v = values[name];
      if (typeof v !== 'number' || Number.isNaN(v)) {
        throw new HipAttnError('INVALID_OPTION', `uniform ${this.structName}.${name}: expected a number, got ${String(v)}`);
      }
      if (type === 'f32') {
        view.setFloat32(i * 4, v, true);
      } else if (type === 'u32') {
        if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
          throw new HipAttnError('INVALID_OPTION', `uniform ${this.structName}.${name}: ${v} is not a u32`);
        }
        view.setUint32(i * 4, v, true);
      } else {
        if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
          throw new HipAttnError('INVALID_OPTION', `uniform ${this.structName}.${name}: ${v} is not an i32`);
        }
        view.setInt32(i * 4, v, true);
      }
    });
    return buf;
  }
}

/** Shorthand: `defineUniforms('Params', { n: 'u32', alpha: 'f32' })` (fields in key order). */
export function defineUniforms<K extends string>(structName: string, fields: Record<K, UniformScalar>): UniformLayout<K> {
  return new UniformLayout<K>(structName, Object.entries(fields) as [K, UniformScalar][]);
}

/** Creates a UNIFORM | COPY_DST buffer holding the packed struct. */
export function createUniformBuffer<K extends string>(
  gpu: GpuLike,
  layout: UniformLayout<K>,
  values: Record<K, number>,
  label?: string,
): GPUBuffer {
  const device = deviceOf(gpu);
  const buffer = device.createBuffer({
    label: label ?? layout.structName,
    size: layout.byteLength,
    usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST,
    mappedAtCreation: true,
  });
  new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(layout.pack(values)));
  buffer.unmap();
  return buffer;
}

/** Rewrites a uniform buffer's values (queued; takes effect for later submissions). */
export function writeUniforms<K extends string>(gpu: GpuLike, buffer: GPUBuffer, layout: UniformLayout<K>, values: Record<K, number>): void {
  deviceOf(gpu).queue.writeBuffer(buffer, 0, layout.pack(values));
}

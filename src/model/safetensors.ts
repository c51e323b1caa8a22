/**
 * safetensors reader: single files and sharded checkpoints (model.safetensors.index.json).
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 *   { "<tensor>": { "dtype": "BF16", "shape": [..], "data_offsets": [begin, end] }, "__metadata__": {..} }
 * then the data section; offsets are relative to its start (byte 8 + N).
 *
 * Everything in the header is validated before any tensor is trusted; tensors are read lazily,
 * one at a time, from the byte source.
 */
import { HipAttnError } from '../errors.js';
import { type ByteSource, type ModelDirectory, readJson } from './byte-source.js';
import { type FiniteCheck, bf16ToF32, f16ToF32, f32FromBytes, firstNonFiniteF32, u16View } from './dtypes.js';
import { type StoredDType, type TensorInfo, type TensorStore, checkedF16Bits, nonFiniteWeight, numel, toF16Checked } from './tensor-store.js';

/** Bytes per element of every dtype safetensors defines. */
const SAFETENSORS_DTYPE_SIZE: Readonly<Record<string, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};

/** Largest header accepted (the reference implementation's limit is 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

function formatError(file: string, msg: string): HipAttnError {
  return new HipAttnError('MODEL_FORMAT', `${file}: ${msg}`);
}

function readU64(bytes: Uint8Array, at: number): number {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(at, true);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.POSITIVE_INFINITY : Number(v);
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/**
 * Converts stored float bytes to float32; UNSUPPORTED for non-float dtypes, NON_FINITE naming
 * the tensor when a value is NaN or ±Infinity (checked during the conversion, see dtypes.ts).
 */
export function decodeToF32(info: TensorInfo, bytes: Uint8Array): Float32Array {
  const check: FiniteCheck = { firstNonFinite: -1 };
  let out: Float32Array;
  switch (info.dtype) {
    case 'F32':
      out = f32FromBytes(bytes);
      check.firstNonFinite = firstNonFiniteF32(out);
      break;
    case 'F16':
      out = f16ToF32(u16View(bytes), check);
      break;
    case 'BF16':
      out = bf16ToF32(u16View(bytes), check);
      break;
    default:
      throw new HipAttnError(
        'UNSUPPORTED',
        `${info.file}: tensor "${info.name}" has dtype ${info.dtype}; only F32, F16 and BF16 weights are supported`,
      );
  }
  if (check.firstNonFinite >= 0) throw nonFiniteWeight(info.file, info.name, check.firstNonFinite, out[check.firstNonFinite]!);
  return out;
}

/** One validated .safetensors file. */
export class SafetensorsFile implements TensorStore {
  readonly name: string;
  /** The file's "__metadata__" (string → string), if any. */
  readonly metadata: Readonly<Record<string, string>>;
  private readonly tensors: Map<string, TensorInfo>;

  private constructor(private readonly source: ByteSource, tensors: Map<string, TensorInfo>, metadata: Record<string, string>) {
    this.name = source.name;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  /** Reads and validates the header. Throws MODEL_FORMAT naming the file (and tensor) on any inconsistency. */
  static async open(source: ByteSource): Promise<SafetensorsFile> {
    const file = source.name;
    if (source.size < 8) throw formatError(file, `too small for a safetensors file (${source.size} bytes, the header length alone is 8)`);
    const headerLen = readU64(await source.read(0, 8), 0);
    if (headerLen < 2) throw formatError(file, `header length ${headerLen} is too small for a JSON object`);
    if (headerLen > MAX_HEADER_BYTES) throw formatError(file, `header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`);
    if (8 + headerLen > source.size) {
      throw formatError(file, `header length ${headerLen} reaches beyond the end of the file (${source.size} bytes; truncated?)`);
    }
    const headerText = new TextDecoder('utf-8', { fatal: false }).decode(await source.read(8, headerLen));
    let header: unknown;
    try {
      header = JSON.parse(headerText);
    } catch (e) {
      throw formatError(file, `header is not valid JSON (${(e as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) throw formatError(file, 'header is not a JSON object');

    const dataStart = 8 + headerLen;
    const dataSize = source.size - dataStart;
    const tensors = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw formatError(file, '__metadata__ is not an object');
        metadata = Object.fromEntries(Object.entries(entry as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
        continue;
      }
      const where = `tensor "${name}"`;
      if (typeof entry !== 'object' || entry === null) throw formatError(file, `${where}: entry is not an object`);
      const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
      if (typeof dtype !== 'string' || !(dtype in SAFETENSORS_DTYPE_SIZE)) {
        throw formatError(file, `${where}: unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(SAFETENSORS_DTYPE_SIZE).join(', ')})`);
      }
      if (!Array.isArray(shape) || !shape.every(isNonNegInt)) throw formatError(file, `${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt) || offsets[0] > offsets[1]) {
        throw formatError(file, `${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 ≤ begin ≤ end`);
      }
      const [begin, end] = offsets as [number, number];
      if (end > dataSize) {
        throw formatError(file, `${where}: data_offsets [${begin}, ${end}] lie outside the data section (${dataSize} bytes; truncated file?)`);
      }
      const elements = numel(shape as number[]);
      const expected = elements * SAFETENSORS_DTYPE_SIZE[dtype]!;
      if (end - begin !== expected) {
        throw formatError(file, `${where}: ${end - begin} data bytes but shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${expected}`);
      }
      tensors.set(name, { name, dtype: dtype as StoredDType, shape: shape as number[], file, byteOffset: dataStart + begin, byteLength: end - begin });
    }
    // As the reference implementation requires: the tensors tile the data section exactly, in
    // offset order, with no shared bytes, no gaps and nothing after the last one. A header length
    // that stops inside the header's space padding still parses as JSON but shifts every tensor;
    // it shows up here as bytes left over at the end.
    const sorted = [...tensors.values()].sort((a, b) => a.byteOffset - b.byteOffset || a.byteLength - b.byteLength);
    let end = dataStart;
    let prev: TensorInfo | undefined;
    for (const cur of sorted) {
      if (cur.byteOffset < end) throw formatError(file, `tensors "${prev!.name}" and "${cur.name}" overlap in the data section`);
      if (cur.byteOffset > end) {
        throw formatError(file, `${cur.byteOffset - end} unused bytes before tensor "${cur.name}" in the data section (the reference format allows no gaps)`);
      }
      end = cur.byteOffset + cur.byteLength;
      prev = cur;
    }
    if (end !== source.size) {
      throw formatError(
        file,
        `the data section holds ${dataSize} bytes but the tensors cover ${end - dataStart}: ${source.size - end} bytes after the last tensor (a header length of ${headerLen} that stops inside the header's padding would shift every tensor)`,
      );
    }
    return new SafetensorsFile(source, tensors, metadata);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo | undefined {
    return this.tensors.get(name);
  }

  private need(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw formatError(this.name, `tensor "${name}" is not in this file`);
    return t;
  }

  async readRaw(name: string): Promise<Uint8Array> {
    const t = this.need(name);
    return this.source.read(t.byteOffset, t.byteLength);
  }

  /** Float32 values; NON_FINITE error when a weight is NaN or ±Infinity. */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.need(name);
    return decodeToF32(t, await this.readRaw(name));
  }

  /** Float16 bits; NON_FINITE error when a weight is NaN or ±Infinity, or beyond the float16 range. */
  async readF16Bits(name: string): Promise<Uint16Array> {
    const t = this.need(name);
    const raw = await this.readRaw(name);
    if (t.dtype === 'F16') return checkedF16Bits(u16View(raw).slice(), this.name, name);
    return toF16Checked(decodeToF32(t, raw), this.name, name);
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}

/** A sharded checkpoint: the shards listed by model.safetensors.index.json, read as one store. */
export class ShardedSafetensors implements TensorStore {
  readonly name: string;
  private constructor(name: string, private readonly shards: SafetensorsFile[], private readonly owner: Map<string, SafetensorsFile>) {
    this.name = name;
  }

  /**
   * Opens every shard named in the index's weight_map, validates each shard, and checks that
   * every tensor the index lists is in the shard the index names (and that no shard holds a
   * tensor twice across shards).
   */
  static async open(dir: ModelDirectory, indexFile = 'model.safetensors.index.json'): Promise<ShardedSafetensors> {
    const indexSrc = await dir.open(indexFile);
    if (!indexSrc) throw formatError(`${dir.name}/${indexFile}`, 'not found');
    let index: unknown;
    try {
      index = await readJson(indexSrc);
    } finally {
      await indexSrc.close();
    }
    const where = indexSrc.name;
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) throw formatError(where, '"weight_map" is missing or not an object');
    const byShard = new Map<string, string[]>();
    for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
      if (typeof shard !== 'string' || shard.length === 0 || shard.includes('/') || shard.includes('\\') || shard === '.' || shard === '..') {
        throw formatError(where, `tensor "${tensor}": shard ${JSON.stringify(shard)} is not a plain file name`);
      }
      const list = byShard.get(shard) ?? [];
      list.push(tensor);
      byShard.set(shard, list);
    }
    if (byShard.size === 0) throw formatError(where, 'weight_map lists no tensors');
    const shards: SafetensorsFile[] = [];
    const owner = new Map<string, SafetensorsFile>();
    try {
      for (const [shardName, tensors] of byShard) {
        const src = await dir.open(shardName);
        if (!src) throw formatError(`${dir.name}/${shardName}`, `shard listed in ${indexFile} (for tensor "${tensors[0]}") is missing`);
        const shard = await SafetensorsFile.open(src).catch(async (e: unknown) => {
          await src.close();
          throw e;
        });
        shards.push(shard);
        for (const t of tensors) {
          if (!shard.info(t)) throw formatError(shard.name, `tensor "${t}" is listed for this shard in ${indexFile} but is not in it`);
          owner.set(t, shard);
        }
        for (const t of shard.names()) {
          const prev = owner.get(t);
          if (prev && prev !== shard) throw formatError(shard.name, `tensor "${t}" is also in ${prev.name}`);
          if (!prev) owner.set(t, shard); // present in the shard but not listed: still readable
        }
      }
    } catch (e) {
      await Promise.all(shards.map((s) => s.close()));
      throw e;
    }
    return new ShardedSafetensors(where, shards, owner);
  }

  names(): string[] {
    return [...this.owner.keys()];
  }

  info(name: string): TensorInfo | undefined {
    return this.owner.get(name)?.info(name);
  }

  private shardOf(name: string): SafetensorsFile {
    const s = this.owner.get(name);
    if (!s) throw formatError(this.name, `tensor "${name}" is not in any shard`);
    return s;
  }

  readF32(name: string): Promise<Float32Array> {
    return this.shardOf(name).readF32(name);
  }

  readF16Bits(name: string): Promise<Uint16Array> {
    return this.shardOf(name).readF16Bits(name);
  }

  readRaw(name: string): Promise<Uint8Array> {
    return this.shardOf(name).readRaw(name);
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((s) => s.close()));
  }
}

/** Opens the weights of a Hugging Face model directory: the sharded index if present, else model.safetensors. */
export async function openSafetensorsDir(dir: ModelDirectory): Promise<TensorStore> {
  const index = await dir.open('model.safetensors.index.json');
  if (index) {
    await index.close();
    return ShardedSafetensors.open(dir);
  }
  const single = await dir.open('model.safetensors');
  if (!single) {
    throw new HipAttnError('MODEL_FORMAT', `${dir.name}: neither model.safetensors nor model.safetensors.index.json found`);
  }
  try {
    return await SafetensorsFile.open(single);
  } catch (e) {
    await single.close();
    throw e;
  }
}

/** Serialises tensors into a safetensors file (for tests and tools). Data must already be encoded in the given dtype. */
export function writeSafetensors(
  tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20); // space-padded to 8 bytes
  headerBytes.set(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const t of tensors) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}

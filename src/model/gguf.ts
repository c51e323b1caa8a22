/**
 * GGUF (v2, v3) reader: metadata, tensor directory and tensor data (F32, F16, BF16, Q8_0), and
 * the mapping of llama.cpp's llama / qwen2 tensors and metadata onto the Hugging Face names,
 * layout and LlamaConfig the rest of the model code uses.
 *
 * Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata
 * key/values, the tensor infos (name, dims ne[0..n), ggml type, offset), padding to
 * `general.alignment` (default 32), then the tensor data. ne[0] is the fastest dimension, so a
 * GGUF shape [in, out] is the row-major [out, in] of Hugging Face.
 *
 * Why our own parser: @huggingface/gguf reads URLs and (in Node) local paths, but not an
 * arbitrary byte source such as a browser File, and it does not bound-check counts against the
 * file size. This parser does, so a malformed file gives an error, never a hang or a huge
 * allocation. (The tests cross-check its metadata against @huggingface/gguf.)
 *
 * Q/K row order: llama.cpp's converter permutes the rows of q_proj and k_proj of `llama`
 * models (each head's rows i and i + d/2 become rows 2i and 2i+1) because llama.cpp rotates
 * adjacent pairs. The store below undoes it, so the forward pass's rotate_half RoPE computes
 * the same function for GGUF and Hugging Face weights. qwen2 GGUFs are not permuted.
 */
import { HipAttnError } from '../errors.js';
import type { ByteSource } from './byte-source.js';
import type { LlamaConfig, RopeScaling } from './config.js';
import { MAX_CONFIG_INT, showValue, validateLlamaConfig } from './config.js';
import { type FiniteCheck, bf16ToF32, f16ToF32, f32FromBytes, firstNonFiniteF32, u16View } from './dtypes.js';
import { type StoredDType, type TensorInfo, type TensorStore, checkedF16Bits, nonFiniteWeight, numel, toF16Checked } from './tensor-store.js';
import { EMBED_NAME, FINAL_NORM_NAME, LM_HEAD_NAME } from './weights.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian

export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

export type GgufValue = number | bigint | boolean | string | GgufValue[];

/** ggml tensor types: id → name, block size (elements) and bytes per block. */
const GGML_TYPES: Readonly<Record<number, { name: string; block: number; bytes: number }>> = {
  0: { name: 'F32', block: 1, bytes: 4 },
  1: { name: 'F16', block: 1, bytes: 2 },
  2: { name: 'Q4_0', block: 32, bytes: 18 },
  3: { name: 'Q4_1', block: 32, bytes: 20 },
  6: { name: 'Q5_0', block: 32, bytes: 22 },
  7: { name: 'Q5_1', block: 32, bytes: 24 },
  8: { name: 'Q8_0', block: 32, bytes: 34 },
  9: { name: 'Q8_1', block: 32, bytes: 36 },
  10: { name: 'Q2_K', block: 256, bytes: 84 },
  11: { name: 'Q3_K', block: 256, bytes: 110 },
  12: { name: 'Q4_K', block: 256, bytes: 144 },
  13: { name: 'Q5_K', block: 256, bytes: 176 },
  14: { name: 'Q6_K', block: 256, bytes: 210 },
  15: { name: 'Q8_K', block: 256, bytes: 292 },
  24: { name: 'I8', block: 1, bytes: 1 },
  25: { name: 'I16', block: 1, bytes: 2 },
  26: { name: 'I32', block: 1, bytes: 4 },
  27: { name: 'I64', block: 1, bytes: 8 },
  28: { name: 'F64', block: 1, bytes: 8 },
  30: { name: 'BF16', block: 1, bytes: 2 },
};
/** ggml types this reader converts to float32. */
const READABLE: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16', 'Q8_0']);

export interface GgufTensorInfo {
  /** GGUF tensor name, e.g. "blk.0.attn_q.weight". */
  name: string;
  /** ne[]: GGUF order, fastest dimension first. */
  ne: number[];
  /** ggml type name (F32, F16, Q8_0, …). */
  type: string;
  /** Absolute byte offset in the file. */
  byteOffset: number;
  byteLength: number;
}

export interface GgufFile {
  source: ByteSource;
  version: number;
  metadata: Map<string, GgufValue>;
  tensors: Map<string, GgufTensorInfo>;
  alignment: number;
  dataOffset: number;
}

class NeedMoreBytes extends Error {}

/**
 * Largest GGUF header (metadata and tensor directory) read. The biggest real ones, vocabularies
 * of 256k tokens with their merges, take tens of MB; without a cap, a corrupt array or string
 * length in a multi-GB file would make the reader pull gigabytes into memory before finding out.
 */
export const MAX_GGUF_HEADER_BYTES = 256 * 2 ** 20;

/** Synchronous little-endian reader over a prefix of the file; throws NeedMoreBytes at its end. */
class Cursor {
  pos = 0;
  private readonly dv: DataView;
  private readonly utf8 = new TextDecoder('utf-8', { fatal: false });
  constructor(
    private readonly bytes: Uint8Array,
    /** Size of the whole file: counts are checked against it. */
    private readonly fileSize: number,
    private readonly file: string,
  ) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(n: number, what: string): void {
    if (this.pos + n > this.fileSize) {
      throw new HipAttnError('MODEL_FORMAT', `${this.file}: ${what} at byte ${this.pos} needs ${n} bytes but the file ends at ${this.fileSize} (truncated or corrupt GGUF)`);
    }
    if (this.pos + n > MAX_GGUF_HEADER_BYTES) {
      throw new HipAttnError('MODEL_FORMAT', `${this.file}: ${what} at byte ${this.pos} needs ${n} bytes, beyond the ${MAX_GGUF_HEADER_BYTES}-byte limit of a GGUF header (corrupt length?)`);
    }
    if (this.pos + n > this.bytes.byteLength) throw new NeedMoreBytes();
  }
  u8(what: string): number {
    this.need(1, what);
    return this.dv.getUint8(this.pos++);
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(what: string): number {
    this.need(4, what);
    const v = this.dv.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  /** u64 as a number; error when above 2^53 (no real count or offset is). */
  u64(what: string): number {
    this.need(8, what);
    const v = this.dv.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new HipAttnError('MODEL_FORMAT', `${this.file}: ${what} = ${v} is implausibly large (corrupt GGUF)`);
    return Number(v);
  }
  value(type: number, what: string, depth = 0): GgufValue {
    switch (type) {
      case GgufValueType.UINT8: return this.u8(what);
      case GgufValueType.INT8: this.need(1, what); return this.dv.getInt8(this.pos++);
      case GgufValueType.UINT16: { this.need(2, what); const v = this.dv.getUint16(this.pos, true); this.pos += 2; return v; }
      case GgufValueType.INT16: { this.need(2, what); const v = this.dv.getInt16(this.pos, true); this.pos += 2; return v; }
      case GgufValueType.UINT32: return this.u32(what);
      case GgufValueType.INT32: return this.i32(what);
      case GgufValueType.FLOAT32: { this.need(4, what); const v = this.dv.getFloat32(this.pos, true); this.pos += 4; return v; }
      case GgufValueType.BOOL: return this.u8(what) !== 0;
      case GgufValueType.STRING: return this.string(what);
      case GgufValueType.UINT64: { this.need(8, what); const v = this.dv.getBigUint64(this.pos, true); this.pos += 8; return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v; }
      case GgufValueType.INT64: { this.need(8, what); const v = this.dv.getBigInt64(this.pos, true); this.pos += 8; return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v; }
      case GgufValueType.FLOAT64: { this.need(8, what); const v = this.dv.getFloat64(this.pos, true); this.pos += 8; return v; }
      case GgufValueType.ARRAY: {
        if (depth > 4) throw new HipAttnError('MODEL_FORMAT', `${this.file}: ${what}: arrays nested too deeply`);
        const elemType = this.u32(`${what} element type`);
        const count = this.u64(`${what} length`);
        const minSize = elemType === GgufValueType.STRING ? 8 : elemType === GgufValueType.ARRAY ? 12 : valueSize(elemType);
        if (minSize === 0) throw new HipAttnError('MODEL_FORMAT', `${this.file}: ${what}: unknown array element type ${elemType}`);
        const left = Math.min(this.fileSize, MAX_GGUF_HEADER_BYTES) - this.pos;
        if (count * minSize > left) {
          throw new HipAttnError('MODEL_FORMAT', `${this.file}: ${what}: array of ${count} elements cannot fit in the ${left} bytes left for the header (corrupt GGUF)`);
        }
        const out: GgufValue[] = new Array(count);
        for (let i = 0; i < count; i++) out[i] = this.value(elemType, what, depth + 1);
        return out;
      }
      default:
        throw new HipAttnError('MODEL_FORMAT', `${this.file}: ${what}: unknown value type ${type}`);
    }
  }
  string(what: string): string {
    const len = this.u64(`${what} string length`);
    this.need(len, what);
    const s = this.utf8.decode(this.bytes.subarray(this.pos, this.pos + len));
    this.pos += len;
    return s;
  }
}

function valueSize(t: number): number {
  switch (t) {
    case GgufValueType.UINT8: case GgufValueType.INT8: case GgufValueType.BOOL: return 1;
    case GgufValueType.UINT16: case GgufValueType.INT16: return 2;
    case GgufValueType.UINT32: case GgufValueType.INT32: case GgufValueType.FLOAT32: return 4;
    case GgufValueType.UINT64: case GgufValueType.INT64: case GgufValueType.FLOAT64: return 8;
    default: return 0;
  }
}

function parseHeader(bytes: Uint8Array, source: ByteSource): Omit<GgufFile, 'source'> {
  const file = source.name;
  const c = new Cursor(bytes, source.size, file);
  const magic = c.u32('magic');
  if (magic !== GGUF_MAGIC) throw new HipAttnError('MODEL_FORMAT', `${file}: not a GGUF file (magic 0x${magic.toString(16)}, expected "GGUF")`);
  const version = c.u32('version');
  if (version !== 2 && version !== 3) throw new HipAttnError('UNSUPPORTED', `${file}: GGUF version ${version} is not supported (2 and 3 are)`);
  const tensorCount = c.u64('tensor count');
  const kvCount = c.u64('metadata count');
  // Each key/value takes ≥ 13 bytes and each tensor info ≥ 28: bound the counts by the file size.
  const room = Math.min(source.size, MAX_GGUF_HEADER_BYTES);
  if (kvCount * 13 + tensorCount * 28 > room) throw new HipAttnError('MODEL_FORMAT', `${file}: ${kvCount} metadata entries and ${tensorCount} tensors cannot fit in ${room} bytes of header (corrupt GGUF)`);
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata key ${i}`);
    const type = c.u32(`type of metadata "${key}"`);
    metadata.set(key, c.value(type, `metadata "${key}"`));
  }
  const alignRaw = metadata.get('general.alignment') ?? 32;
  if (typeof alignRaw !== 'number' || !Number.isInteger(alignRaw) || alignRaw < 1 || (alignRaw & (alignRaw - 1)) !== 0) {
    throw new HipAttnError('MODEL_FORMAT', `${file}: general.alignment ${String(alignRaw)} is not a power of two`);
  }
  const alignment = alignRaw;
  const raw: { name: string; ne: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`tensor ${i} name`);
    const nDims = c.u32(`tensor "${name}" dimension count`);
    if (nDims < 1 || nDims > 4) throw new HipAttnError('MODEL_FORMAT', `${file}: tensor "${name}" has ${nDims} dimensions (1 to 4 allowed)`);
    const ne: number[] = [];
    for (let j = 0; j < nDims; j++) ne.push(c.u64(`tensor "${name}" dimension ${j}`));
    const type = c.u32(`tensor "${name}" type`);
    const offset = c.u64(`tensor "${name}" offset`);
    raw.push({ name, ne, type, offset });
  }
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const tensors = new Map<string, GgufTensorInfo>();
  for (const t of raw) {
    const where = `${file}: tensor "${t.name}"`;
    if (tensors.has(t.name)) throw new HipAttnError('MODEL_FORMAT', `${where} appears twice`);
    const ty = GGML_TYPES[t.type];
    if (!ty) throw new HipAttnError('MODEL_FORMAT', `${where} has unknown ggml type ${t.type}`);
    const n = numel(t.ne);
    if (!Number.isSafeInteger(n)) throw new HipAttnError('MODEL_FORMAT', `${where}: shape [${t.ne.join(', ')}] is implausibly large`);
    if (t.ne[0]! % ty.block !== 0) throw new HipAttnError('MODEL_FORMAT', `${where}: first dimension ${t.ne[0]} is not a multiple of the ${ty.name} block size ${ty.block}`);
    if (t.offset % alignment !== 0) throw new HipAttnError('MODEL_FORMAT', `${where}: data offset ${t.offset} is not aligned to ${alignment}`);
    const byteLength = (n / ty.block) * ty.bytes;
    const byteOffset = dataOffset + t.offset;
    if (byteOffset + byteLength > source.size) {
      throw new HipAttnError(
        'MODEL_FORMAT',
        `${where}: data [${byteOffset}, ${byteOffset + byteLength}) lies beyond the end of the file (${source.size} bytes; truncated?)`,
      );
    }
    tensors.set(t.name, { name: t.name, ne: t.ne, type: ty.name, byteOffset, byteLength });
  }
  const sorted = [...tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.byteOffset - b.byteOffset);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.byteOffset < a.byteOffset + a.byteLength) throw new HipAttnError('MODEL_FORMAT', `${file}: tensors "${a.name}" and "${b.name}" overlap`);
  }
  return { version, metadata, tensors, alignment, dataOffset };
}

/** Reads and validates a GGUF header (metadata and tensor directory); tensor data stays on the source. */
export async function readGguf(source: ByteSource): Promise<GgufFile> {
  if (source.size < 24) throw new HipAttnError('MODEL_FORMAT', `${source.name}: too small for a GGUF file (${source.size} bytes)`);
  let chunk = Math.min(source.size, 1 << 20);
  for (;;) {
    const bytes = await source.read(0, chunk);
    try {
      return { source, ...parseHeader(bytes, source) };
    } catch (e) {
      if (!(e instanceof NeedMoreBytes)) throw e;
      if (chunk >= source.size) throw new HipAttnError('MODEL_FORMAT', `${source.name}: GGUF header runs past the end of the file`);
      chunk = Math.min(source.size, MAX_GGUF_HEADER_BYTES, chunk * 4);
    }
  }
}

/** Q8_0 blocks (f16 scale + 32 int8) → float32. `check`: a block's values are finite exactly when its scale is. */
export function dequantizeQ8_0(bytes: Uint8Array, count: number, check?: FiniteCheck): Float32Array {
  const out = new Float32Array(count);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const scaleBits = new Uint16Array(1);
  const blocks = count / 32;
  if (check) check.firstNonFinite = -1;
  for (let b = 0; b < blocks; b++) {
    const at = b * 34;
    scaleBits[0] = dv.getUint16(at, true);
    const d = f16ToF32(scaleBits)[0]!;
    if (check && check.firstNonFinite < 0 && !Number.isFinite(d)) check.firstNonFinite = b * 32;
    for (let i = 0; i < 32; i++) out[b * 32 + i] = d * dv.getInt8(at + 2 + i);
  }
  return out;
}

/**
 * Reads one tensor as float32 in GGUF element order (ne[0] fastest). NON_FINITE naming the
 * tensor when a value is NaN or ±Infinity (checked during the conversion).
 */
export async function readGgufTensorF32(g: GgufFile, t: GgufTensorInfo): Promise<Float32Array> {
  if (!READABLE.has(t.type)) {
    throw new HipAttnError('UNSUPPORTED', `${g.source.name}: tensor "${t.name}" is ${t.type}; supported GGUF tensor types are F32, F16, BF16 and Q8_0`);
  }
  const bytes = await g.source.read(t.byteOffset, t.byteLength);
  const check: FiniteCheck = { firstNonFinite: -1 };
  let out: Float32Array;
  switch (t.type) {
    case 'F32':
      out = f32FromBytes(bytes);
      check.firstNonFinite = firstNonFiniteF32(out);
      break;
    case 'F16': out = f16ToF32(u16View(bytes), check); break;
    case 'BF16': out = bf16ToF32(u16View(bytes), check); break;
    default: out = dequantizeQ8_0(bytes, numel(t.ne), check);
  }
  if (check.firstNonFinite >= 0) throw nonFiniteWeight(g.source.name, t.name, check.firstNonFinite, out[check.firstNonFinite]!);
  return out;
}

// ---------------------------------------------------------------------------------------------
// llama.cpp names → Hugging Face names

const LAYER_MAP: Readonly<Record<string, string>> = {
  'attn_norm.weight': 'input_layernorm.weight',
  'attn_q.weight': 'self_attn.q_proj.weight',
  'attn_k.weight': 'self_attn.k_proj.weight',
  'attn_v.weight': 'self_attn.v_proj.weight',
  'attn_output.weight': 'self_attn.o_proj.weight',
  'attn_q.bias': 'self_attn.q_proj.bias',
  'attn_k.bias': 'self_attn.k_proj.bias',
  'attn_v.bias': 'self_attn.v_proj.bias',
  'attn_output.bias': 'self_attn.o_proj.bias',
  'ffn_norm.weight': 'post_attention_layernorm.weight',
  'ffn_gate.weight': 'mlp.gate_proj.weight',
  'ffn_up.weight': 'mlp.up_proj.weight',
  'ffn_down.weight': 'mlp.down_proj.weight',
};
const GLOBAL_MAP: Readonly<Record<string, string>> = {
  'token_embd.weight': EMBED_NAME,
  'output_norm.weight': FINAL_NORM_NAME,
  'output.weight': LM_HEAD_NAME,
};

/** Hugging Face name of a GGUF tensor, or undefined for tensors without one (e.g. rope_freqs). */
export function hfNameOfGguf(name: string): string | undefined {
  if (name in GLOBAL_MAP) return GLOBAL_MAP[name];
  const m = /^blk\.(\d+)\.(.+)$/.exec(name);
  if (m && m[2]! in LAYER_MAP) return `model.layers.${m[1]}.${LAYER_MAP[m[2]!]}`;
  return undefined;
}

/**
 * Undoes llama.cpp's Q/K row permutation. `rows` rows of `rowLen` elements (any element type)
 * form `heads` heads of `headDim` rows; GGUF row 2i + j of a head is Hugging Face row j·d/2 + i.
 */
export function unpermuteRows<T extends Float32Array | Uint16Array | Uint8Array>(data: T, heads: number, headDim: number, rowLen: number): T {
  const out = new (data.constructor as new (n: number) => T)(data.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (h * headDim + 2 * i + j) * rowLen;
        const dst = (h * headDim + j * half + i) * rowLen;
        out.set(data.subarray(src, src + rowLen), dst);
      }
    }
  }
  return out;
}

/** GGUF type name → StoredDType (the store's vocabulary). */
function storedDType(type: string): StoredDType {
  return (type === 'I8' || type === 'I16' || type === 'I32' || type === 'I64' || type === 'F64' || type === 'F32' || type === 'F16' || type === 'BF16' || type === 'Q8_0'
    ? type
    : 'U8') as StoredDType;
}

/**
 * A GGUF file seen as a TensorStore with Hugging Face names, row-major [out, in] shapes, and
 * (for `llama` models) Q/K rows in Hugging Face order. Tensors without a Hugging Face name are
 * listed under their GGUF name, unchanged.
 */
export class GgufTensorStore implements TensorStore {
  readonly name: string;
  private readonly byHf = new Map<string, GgufTensorInfo>();
  /** HF name → number of heads, for tensors whose rows must be unpermuted. */
  private readonly permuted = new Map<string, number>();

  constructor(readonly gguf: GgufFile, private readonly config: LlamaConfig, private readonly permuteQK: boolean) {
    this.name = gguf.source.name;
    for (const t of gguf.tensors.values()) this.byHf.set(hfNameOfGguf(t.name) ?? t.name, t);
    if (permuteQK) {
      for (let l = 0; l < config.numLayers; l++) {
        for (const [proj, heads] of [['q_proj', config.numHeads], ['k_proj', config.numKvHeads]] as const) {
          this.permuted.set(`model.layers.${l}.self_attn.${proj}.weight`, heads);
          this.permuted.set(`model.layers.${l}.self_attn.${proj}.bias`, heads);
        }
      }
    }
  }

  names(): string[] {
    return [...this.byHf.keys()];
  }

  info(name: string): TensorInfo | undefined {
    const t = this.byHf.get(name);
    if (!t) return undefined;
    return { name, dtype: storedDType(t.type), shape: [...t.ne].reverse(), file: this.name, byteOffset: t.byteOffset, byteLength: t.byteLength };
  }

  private need(name: string): GgufTensorInfo {
    const t = this.byHf.get(name);
    if (!t) throw new HipAttnError('MODEL_FORMAT', `${this.name}: tensor "${name}" is missing`);
    return t;
  }

  private fixOrder<T extends Float32Array | Uint16Array | Uint8Array>(name: string, t: GgufTensorInfo, data: T): T {
    const heads = this.permuted.get(name);
    if (heads === undefined) return data;
    const rows = t.ne.length === 1 ? t.ne[0]! : t.ne[1]!;
    if (rows !== heads * this.config.headDim) {
      throw new HipAttnError('MODEL_FORMAT', `${this.name}: tensor "${t.name}" has ${rows} rows, expected ${heads} heads × ${this.config.headDim}`);
    }
    return unpermuteRows(data, heads, this.config.headDim, data.length / rows);
  }

  /** Float32 values; NON_FINITE error when a weight is NaN or ±Infinity. */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.need(name);
    return this.fixOrder(name, t, await readGgufTensorF32(this.gguf, t));
  }

  /** Float16 bits; NON_FINITE error when a weight is NaN or ±Infinity, or beyond the float16 range. */
  async readF16Bits(name: string): Promise<Uint16Array> {
    const t = this.need(name);
    const bits = t.type === 'F16'
      ? checkedF16Bits(u16View(await this.gguf.source.read(t.byteOffset, t.byteLength)).slice(), this.name, t.name)
      : toF16Checked(await readGgufTensorF32(this.gguf, t), this.name, t.name);
    return this.fixOrder(name, t, bits);
  }

  /** Stored bytes (rows of Q/K in Hugging Face order, each row's bytes unchanged). */
  async readRaw(name: string): Promise<Uint8Array> {
    const t = this.need(name);
    return this.fixOrder(name, t, (await this.gguf.source.read(t.byteOffset, t.byteLength)).slice());
  }

  async close(): Promise<void> {
    await this.gguf.source.close();
  }
}

// ---------------------------------------------------------------------------------------------
// metadata → LlamaConfig

function metaNumber(g: GgufFile, key: string, fallback?: number): number {
  const v = g.metadata.get(key) ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    if (v === undefined) throw new HipAttnError('MODEL_FORMAT', `${g.source.name}: metadata "${key}" is missing`);
    if (Array.isArray(v)) throw new HipAttnError('UNSUPPORTED', `${g.source.name}: metadata "${key}" is a per-layer array; a single number is required`);
    throw new HipAttnError('MODEL_FORMAT', `${g.source.name}: metadata "${key}" must be a number, got ${showValue(v)}`);
  }
  return v;
}

/** A positive number (epsilons, RoPE bases and factors). */
function metaPosNumber(g: GgufFile, key: string, fallback?: number): number {
  const v = metaNumber(g, key, fallback);
  if (!(v > 0)) throw new HipAttnError('MODEL_FORMAT', `${g.source.name}: metadata "${key}" must be a positive number, got ${v}`);
  return v;
}

/** A count or size: an integer in [1, MAX_CONFIG_INT] (checked against the tensors later). */
function metaPosInt(g: GgufFile, key: string, fallback?: number): number {
  const v = metaNumber(g, key, fallback);
  if (!Number.isSafeInteger(v) || v < 1) throw new HipAttnError('MODEL_FORMAT', `${g.source.name}: metadata "${key}" must be a positive integer, got ${v}`);
  if (v > MAX_CONFIG_INT) throw new HipAttnError('MODEL_FORMAT', `${g.source.name}: metadata "${key}" is ${v}, implausibly large (at most ${MAX_CONFIG_INT})`);
  return v;
}

function metaOptPosInt(g: GgufFile, key: string): number | undefined {
  return g.metadata.get(key) === undefined ? undefined : metaPosInt(g, key);
}

/** 1 + the largest N of any "blk.N." tensor (0 if none). */
function ggufBlockCount(g: GgufFile): number {
  let count = 0;
  for (const name of g.tensors.keys()) {
    const m = /^blk\.(\d{1,9})\./.exec(name);
    if (m) count = Math.max(count, Number(m[1]) + 1);
  }
  return count;
}

/** Architectures mapped to LlamaConfig (mistral GGUFs use "llama"). */
const GGUF_ARCHS = ['llama', 'qwen2'] as const;

/** The LlamaConfig of a GGUF file's metadata (and whether Q/K rows are permuted). */
export async function ggufLlamaConfig(g: GgufFile): Promise<{ config: LlamaConfig; permutedQK: boolean }> {
  const file = g.source.name;
  const arch = g.metadata.get('general.architecture');
  if (typeof arch !== 'string' || !(GGUF_ARCHS as readonly string[]).includes(arch)) {
    throw new HipAttnError('UNSUPPORTED', `${file}: GGUF architecture ${showValue(arch)} is not supported (supported: ${GGUF_ARCHS.join(', ')})`);
  }
  const k = (s: string) => `${arch}.${s}`;
  // Every count is bounded by the file before anything is allocated from it: the layer count
  // by the blk.N tensors present (a corrupt block_count of 2^32 would otherwise build a map
  // entry per layer), the sizes by the tensor shapes (checkTensorShapes).
  const numLayers = metaPosInt(g, k('block_count'));
  const blocks = ggufBlockCount(g);
  if (numLayers !== blocks) {
    throw new HipAttnError(
      'MODEL_FORMAT',
      `${file}: metadata "${k('block_count')}" is ${numLayers} but the file holds tensors of ${blocks} block${blocks === 1 ? '' : 's'} (blk.0 to blk.${blocks - 1})`,
    );
  }
  const hiddenSize = metaPosInt(g, k('embedding_length'));
  const numHeads = metaPosInt(g, k('attention.head_count'));
  const numKvHeads = metaPosInt(g, k('attention.head_count_kv'), numHeads);
  let headDim = metaOptPosInt(g, k('attention.key_length'));
  if (headDim === undefined) {
    if (hiddenSize % numHeads !== 0) {
      throw new HipAttnError('MODEL_FORMAT', `${file}: "${k('embedding_length')}" ${hiddenSize} is not a multiple of "${k('attention.head_count')}" ${numHeads} and no "${k('attention.key_length')}" is given`);
    }
    headDim = hiddenSize / numHeads;
  }
  const valueLength = metaOptPosInt(g, k('attention.value_length'));
  if (valueLength !== undefined && valueLength !== headDim) {
    throw new HipAttnError('UNSUPPORTED', `${file}: key length ${headDim} ≠ value length ${valueLength} is not supported`);
  }
  const ropeDims = metaOptPosInt(g, k('rope.dimension_count'));
  if (ropeDims !== undefined && ropeDims !== headDim) {
    throw new HipAttnError('UNSUPPORTED', `${file}: RoPE on ${ropeDims} of ${headDim} head dimensions (partial rotary) is not supported`);
  }
  const swa = g.metadata.get(k('attention.sliding_window'));
  if (typeof swa === 'number' && swa > 0) throw new HipAttnError('UNSUPPORTED', `${file}: sliding-window attention (${swa}) is not supported`);

  let scaling: RopeScaling = { type: 'default' };
  const scalingType = g.metadata.get(k('rope.scaling.type'));
  if (scalingType === 'linear') {
    scaling = { type: 'linear', factor: metaPosNumber(g, k('rope.scaling.factor')) };
  } else if (scalingType !== undefined && scalingType !== 'none') {
    throw new HipAttnError('UNSUPPORTED', `${file}: RoPE scaling ${showValue(scalingType)} is not supported (none, linear, and llama3 via rope_freqs are)`);
  }
  const freqs = g.tensors.get('rope_freqs.weight');
  if (freqs) {
    if (scaling.type !== 'default') throw new HipAttnError('UNSUPPORTED', `${file}: both rope_freqs and ${scaling.type} RoPE scaling are set`);
    const count = numel(freqs.ne);
    if (count !== headDim / 2) throw new HipAttnError('MODEL_FORMAT', `${file}: tensor "rope_freqs.weight" has ${count} entries, head dimension ${headDim} needs ${headDim / 2}`);
    scaling = { type: 'freq_factors', factors: Array.from(await readGgufTensorF32(g, freqs)) };
  }

  const tokens = g.metadata.get('tokenizer.ggml.tokens');
  const embd = g.tensors.get('token_embd.weight');
  if (!embd) throw new HipAttnError('MODEL_FORMAT', `${file}: tensor "token_embd.weight" is missing`);
  const vocabSize = metaOptPosInt(g, k('vocab_size')) ?? (Array.isArray(tokens) ? tokens.length : embd.ne[1] ?? 0);
  if (!Number.isSafeInteger(vocabSize) || vocabSize < 1) throw new HipAttnError('MODEL_FORMAT', `${file}: the vocabulary is empty`);
  const tokenId = (key: string): number | undefined => {
    const v = g.metadata.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v >= vocabSize) {
      throw new HipAttnError('MODEL_FORMAT', `${file}: metadata "${key}" ${showValue(v)} is not a token id of the vocabulary of ${vocabSize}`);
    }
    return v;
  };
  const eos = tokenId('tokenizer.ggml.eos_token_id');
  const eot = tokenId('tokenizer.ggml.eot_token_id');
  const eosTokenIds = [...new Set([eos, eot].filter((x): x is number => x !== undefined))];

  const config: LlamaConfig = {
    modelType: arch === 'qwen2' ? 'qwen2' : 'llama',
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: metaPosInt(g, k('feed_forward_length')),
    rmsNormEps: metaPosNumber(g, k('attention.layer_norm_rms_epsilon')),
    vocabSize,
    tieWordEmbeddings: !g.tensors.has('output.weight'),
    qkvBias: g.tensors.has('blk.0.attn_q.bias'),
    oBias: g.tensors.has('blk.0.attn_output.bias'),
    mlpBias: g.tensors.has('blk.0.ffn_up.bias'),
    maxPositionEmbeddings: metaPosInt(g, k('context_length'), 2048),
    bosTokenId: tokenId('tokenizer.ggml.bos_token_id'),
    eosTokenIds,
    rope: { theta: metaPosNumber(g, k('rope.freq_base'), 10000), scaling },
  };
  if (config.mlpBias) throw new HipAttnError('UNSUPPORTED', `${file}: MLP biases in GGUF files are not supported`);
  if (numHeads % numKvHeads !== 0) {
    throw new HipAttnError('MODEL_FORMAT', `${file}: "${k('attention.head_count')}" ${numHeads} is not a multiple of "${k('attention.head_count_kv')}" ${numKvHeads}`);
  }
  return { config: validateLlamaConfig(config, file), permutedQK: arch === 'llama' };
}

/** Opens a GGUF file as (config, tensor store with Hugging Face names and layout). */
export async function openGgufModel(source: ByteSource): Promise<{ gguf: GgufFile; config: LlamaConfig; store: GgufTensorStore }> {
  const g = await readGguf(source);
  const { config, permutedQK } = await ggufLlamaConfig(g);
  return { gguf: g, config, store: new GgufTensorStore(g, config, permutedQK) };
}

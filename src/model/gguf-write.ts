/**
 * A small GGUF v3 writer: metadata and F32 / F16 / Q8_0 tensors. Used by the tests to build
 * GGUF files (well-formed and deliberately broken) and by tools that convert Hugging Face
 * checkpoints; it applies llama.cpp's Q/K row permutation when asked, as llama.cpp's converter does.
 */
import { f32ToF16Bits } from './dtypes.js';
import { GGUF_MAGIC, GgufValueType } from './gguf.js';

export type GgufWriteValue =
  | { type: 'u32' | 'i32' | 'f32' | 'u64' | 'f64' | 'u8'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; of: 'string'; value: string[] }
  | { type: 'array'; of: 'f32' | 'i32' | 'u32'; value: number[] };

export interface GgufWriteTensor {
  name: string;
  /** GGUF order: ne[0] fastest (a row-major [out, in] matrix is ne = [in, out]). */
  ne: number[];
  type: 'F32' | 'F16' | 'Q8_0';
  /** Values in GGUF element order. */
  data: Float32Array;
}

const TYPE_ID = { F32: 0, F16: 1, Q8_0: 8 } as const;

class Writer {
  private chunks: Uint8Array[] = [];
  length = 0;
  private push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  bytes(b: Uint8Array): void {
    this.push(b);
  }
  u32(v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.push(b);
  }
  i32(v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setInt32(0, v, true);
    this.push(b);
  }
  u64(v: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    this.push(b);
  }
  f32(v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
  }
  f64(v: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.push(b);
  }
  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.push(b);
  }
  pad(alignment: number): void {
    const n = (alignment - (this.length % alignment)) % alignment;
    if (n > 0) this.push(new Uint8Array(n));
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

function scalarType(t: string): number {
  switch (t) {
    case 'u8': return GgufValueType.UINT8;
    case 'u32': return GgufValueType.UINT32;
    case 'i32': return GgufValueType.INT32;
    case 'f32': return GgufValueType.FLOAT32;
    case 'u64': return GgufValueType.UINT64;
    case 'f64': return GgufValueType.FLOAT64;
    case 'bool': return GgufValueType.BOOL;
    default: return GgufValueType.STRING;
  }
}

function writeScalar(w: Writer, type: string, v: number | boolean | string): void {
  switch (type) {
    case 'u8': w.bytes(new Uint8Array([v as number])); break;
    case 'u32': w.u32(v as number); break;
    case 'i32': w.i32(v as number); break;
    case 'f32': w.f32(v as number); break;
    case 'u64': w.u64(v as number); break;
    case 'f64': w.f64(v as number); break;
    case 'bool': w.bytes(new Uint8Array([v ? 1 : 0])); break;
    default: w.string(v as string);
  }
}

/** Q8_0 blocks: per 32 values, an f16 scale max|x|/127 and 32 rounded int8 (as llama.cpp quantizes). */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const blocks = x.length / 32;
  const out = new Uint8Array(blocks * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b * 32 + i]!));
    const d = amax / 127;
    const id = d !== 0 ? 1 / d : 0;
    dv.setUint16(b * 34, f32ToF16Bits(d), true);
    for (let i = 0; i < 32; i++) dv.setInt8(b * 34 + 2 + i, Math.round(x[b * 32 + i]! * id));
  }
  return out;
}

function encodeTensor(t: GgufWriteTensor): Uint8Array {
  if (t.type === 'F32') return new Uint8Array(new Float32Array(t.data).buffer);
  if (t.type === 'F16') {
    const h = new Uint16Array(t.data.length);
    for (let i = 0; i < h.length; i++) h[i] = f32ToF16Bits(t.data[i]!);
    return new Uint8Array(h.buffer);
  }
  return quantizeQ8_0(t.data);
}

/** Serialises a GGUF v3 file. */
export function writeGguf(metadata: Record<string, GgufWriteValue>, tensors: GgufWriteTensor[], alignment = 32): Uint8Array {
  const w = new Writer();
  w.u32(GGUF_MAGIC);
  w.u32(3);
  w.u64(tensors.length);
  w.u64(Object.keys(metadata).length);
  for (const [key, v] of Object.entries(metadata)) {
    w.string(key);
    if (v.type === 'array') {
      w.u32(GgufValueType.ARRAY);
      w.u32(scalarType(v.of));
      w.u64(v.value.length);
      for (const x of v.value) writeScalar(w, v.of, x);
    } else {
      w.u32(scalarType(v.type));
      writeScalar(w, v.type, v.value);
    }
  }
  const encoded = tensors.map(encodeTensor);
  let offset = 0;
  const offsets: number[] = [];
  for (const e of encoded) {
    offsets.push(offset);
    offset += Math.ceil(e.length / alignment) * alignment;
  }
  tensors.forEach((t, i) => {
    w.string(t.name);
    w.u32(t.ne.length);
    for (const d of t.ne) w.u64(d);
    w.u32(TYPE_ID[t.type]);
    w.u64(offsets[i]!);
  });
  w.pad(alignment);
  for (const e of encoded) {
    w.bytes(e);
    w.pad(alignment);
  }
  return w.concat();
}

/**
 * llama.cpp's permutation of q_proj / k_proj rows for its RoPE layout: within each head, Hugging
 * Face row j·d/2 + i becomes row 2i + j. (The inverse of gguf.ts's unpermuteRows.)
 */
export function permuteRowsForGguf(data: Float32Array, heads: number, headDim: number, rowLen: number): Float32Array {
  const out = new Float32Array(data.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (h * headDim + j * half + i) * rowLen;
        const dst = (h * headDim + 2 * i + j) * rowLen;
        out.set(data.subarray(src, src + rowLen), dst);
      }
    }
  }
  return out;
}

/**
 * The one interface the model loader reads weights through, whatever the file format
 * (safetensors, sharded safetensors, GGUF). Shapes follow the PyTorch / Hugging Face
 * convention: row-major, last dimension fastest, so a linear weight is [out, in].
 */
import { HipAttnError, NonFiniteError } from '../errors.js';
import { f32ToF16 } from './dtypes.js';

/** Storage types a tensor can have on disk. */
export type StoredDType =
  | 'F64' | 'F32' | 'F16' | 'BF16'
  | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL'
  | 'F8_E4M3' | 'F8_E5M2'
  | 'Q8_0';

export interface TensorInfo {
  name: string;
  dtype: StoredDType;
  /** Row-major, last dimension fastest (GGUF's ne[] is reversed into this order). */
  shape: number[];
  /** File holding the tensor (for error messages). */
  file: string;
  /** Absolute byte offset of the data in that file. */
  byteOffset: number;
  byteLength: number;
}

export interface TensorStore {
  /** For error messages: the file or directory. */
  readonly name: string;
  names(): string[];
  info(name: string): TensorInfo | undefined;
  /** The tensor converted to float32 (F32, F16, BF16 and, for GGUF, Q8_0). */
  readF32(name: string): Promise<Float32Array>;
  /** The tensor as float16 bits, for GPU f16 storage: F16 as stored, other float types rounded. */
  readF16Bits(name: string): Promise<Uint16Array>;
  /** The stored bytes, unconverted. */
  readRaw(name: string): Promise<Uint8Array>;
  close(): Promise<void>;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Looks a tensor up or throws a MODEL_FORMAT error naming the store and tensor. */
export function requireInfo(store: TensorStore, name: string): TensorInfo {
  const info = store.info(name);
  if (!info) throw new HipAttnError('MODEL_FORMAT', `${store.name}: tensor "${name}" is missing`);
  return info;
}

/** readF16Bits in terms of readF32 (for stores whose data is not stored as F16). */
export async function f16BitsViaF32(store: TensorStore, name: string): Promise<Uint16Array> {
  return f32ToF16(await store.readF32(name));
}

/**
 * Throws NON_FINITE naming the file and tensor when `data` holds NaN or ±Infinity. Weights like
 * that load but make every logit NaN (the model then "answers" with token 0 or EOS at once), so
 * each tensor is checked as it is read: one pass over values the reader has just produced.
 */
export function requireFinite(data: Float32Array, file: string, tensor: string): void {
  // x · 0 is ±0 for finite x and NaN for NaN and ±Infinity, so one branch-free sum tells (about
  // 3× faster than testing every value); the slow search runs only on a bad tensor.
  let acc = 0;
  for (let i = 0; i < data.length; i++) acc += data[i]! * 0;
  if (acc === 0) return;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) throw nonFinite(file, tensor, i, String(v));
  }
}

/** requireFinite for float16 bits (exponent all ones = ±Infinity or NaN; rounding f32 weights beyond ±65504 gives it too). */
export function requireFiniteF16(bits: Uint16Array, file: string, tensor: string): void {
  // (exponent + 1) carries into bit 15 only when the exponent is all ones: branch-free first pass.
  let bad = 0;
  for (let i = 0; i < bits.length; i++) bad |= ((bits[i]! & 0x7c00) + 0x400) & 0x8000;
  if (bad === 0) return;
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]!;
    if ((b & 0x7c00) === 0x7c00) throw nonFinite(file, tensor, i, (b & 0x3ff) !== 0 ? 'NaN' : `${b & 0x8000 ? '-' : ''}Infinity in float16`);
  }
}

function nonFinite(file: string, tensor: string, index: number, value: string): NonFiniteError {
  return new NonFiniteError(`${file}: tensor "${tensor}" holds a non-finite weight (element ${index} is ${value}); the file is corrupt or was saved from a diverged model`);
}

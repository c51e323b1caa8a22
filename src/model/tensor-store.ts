/**
 * The one interface the model loader reads weights through, whatever the file format
 * (safetensors, sharded safetensors, GGUF). Shapes follow the PyTorch / Hugging Face
 * convention: row-major, last dimension fastest, so a linear weight is [out, in].
 */
import { HipAttnError, NonFiniteError } from '../errors.js';
import { type FiniteCheck, f16BitsToNumber, f32ToF16, firstNonFiniteF16 } from './dtypes.js';

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
 * NON_FINITE error for a weight that is NaN or ±Infinity. Weights like that load but make every
 * logit NaN (the model then "answers" with token 0 or EOS at once), so the readers check each
 * tensor as they convert it (dtypes.ts FiniteCheck) and refuse it naming the file and tensor.
 */
export function nonFiniteWeight(file: string, tensor: string, index: number, value: number | string): NonFiniteError {
  return new NonFiniteError(`${file}: tensor "${tensor}" holds a non-finite weight (element ${index} is ${String(value)}); the file is corrupt or was saved from a diverged model`);
}

/** Float16 bits of a tensor's float32 values; NON_FINITE when a value is beyond the float16 range (it would become ±Infinity). */
export function toF16Checked(values: Float32Array, file: string, tensor: string): Uint16Array {
  const check: FiniteCheck = { firstNonFinite: -1 };
  const bits = f32ToF16(values, check);
  if (check.firstNonFinite >= 0) throw nonFiniteWeight(file, tensor, check.firstNonFinite, `${values[check.firstNonFinite]} (beyond the float16 range)`);
  return bits;
}

/** Float16 bits as stored; NON_FINITE when one is NaN or ±Infinity. */
export function checkedF16Bits(bits: Uint16Array, file: string, tensor: string): Uint16Array {
  const bad = firstNonFiniteF16(bits);
  if (bad >= 0) throw nonFiniteWeight(file, tensor, bad, f16BitsToNumber(bits[bad]!));
  return bits;
}

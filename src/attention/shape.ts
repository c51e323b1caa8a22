/**
 * Tensor layout shared by every attention method and backend.
 *
 *   q: [batch, heads,   queryLength, headDim]   row-major (headDim fastest)
 *   k: [batch, kvHeads, keyCapacity, headDim]   only the first keyLength rows of each head are read
 *   v: [batch, kvHeads, keyCapacity, headDim]
 *   output: [batch, heads, queryLength, headDim]
 *
 * Query i sits at key position `queryOffset + i` (causal: it sees keys 0 … queryOffset + i).
 * The default queryOffset is keyLength − queryLength: the queries are the last tokens of the
 * key sequence, which covers prefill (offset 0), chunked prefill and decoding (queryLength 1).
 * Query head h reads KV head floor(h / (heads / kvHeads)) (grouped-query attention).
 */
import { NonFiniteError, ShapeError } from '../errors.js';

export type FloatArray = Float32Array | Float64Array;

export interface AttentionShape {
  batch: number;
  heads: number;
  kvHeads: number;
  queryLength: number;
  keyLength: number;
  headDim: number;
  /** Position of query 0 among the keys. Default keyLength − queryLength. */
  queryOffset?: number;
  /** Rows allocated per KV head in k and v (≥ keyLength), e.g. a KV cache's capacity. Default keyLength. */
  keyCapacity?: number;
}

export type ResolvedShape = Required<AttentionShape>;

export interface AttentionInput<T extends FloatArray = FloatArray> {
  q: T;
  k: T;
  v: T;
  shape: AttentionShape;
}

function positiveInt(name: string, v: unknown, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new ShapeError(`shape.${name} must be an integer ≥ ${min}, got ${String(v)}`);
  }
  return v;
}

/** Validates a shape and fills in queryOffset and keyCapacity. */
export function resolveShape(shape: AttentionShape): ResolvedShape {
  const batch = positiveInt('batch', shape.batch);
  const heads = positiveInt('heads', shape.heads);
  const kvHeads = positiveInt('kvHeads', shape.kvHeads);
  const queryLength = positiveInt('queryLength', shape.queryLength);
  const keyLength = positiveInt('keyLength', shape.keyLength);
  const headDim = positiveInt('headDim', shape.headDim);
  if (heads % kvHeads !== 0) {
    throw new ShapeError(`heads (${heads}) must be a multiple of kvHeads (${kvHeads}) for grouped-query attention`);
  }
  const queryOffset = shape.queryOffset ?? keyLength - queryLength;
  if (!Number.isInteger(queryOffset) || queryOffset < 0) {
    throw new ShapeError(
      `queryOffset must be an integer ≥ 0, got ${queryOffset} (keyLength ${keyLength} < queryLength ${queryLength}?)`,
    );
  }
  if (queryOffset + queryLength > keyLength) {
    throw new ShapeError(
      `queries end at position ${queryOffset + queryLength - 1} but only ${keyLength} keys are given (queryOffset ${queryOffset} + queryLength ${queryLength} > keyLength ${keyLength})`,
    );
  }
  const keyCapacity = shape.keyCapacity ?? keyLength;
  if (!Number.isInteger(keyCapacity) || keyCapacity < keyLength) {
    throw new ShapeError(`keyCapacity (${keyCapacity}) must be an integer ≥ keyLength (${keyLength})`);
  }
  return { batch, heads, kvHeads, queryLength, keyLength, headDim, queryOffset, keyCapacity };
}

function checkLength(name: string, arr: unknown, expected: number, layout: string): void {
  if (!(arr instanceof Float32Array) && !(arr instanceof Float64Array)) {
    throw new ShapeError(`${name} must be a Float32Array or Float64Array`);
  }
  if (arr.length !== expected) {
    throw new ShapeError(`${name} has ${arr.length} elements but shape ${layout} needs ${expected}`);
  }
}

function checkFinite(name: string, arr: FloatArray, rowLength: number, rows?: (row: number) => boolean): void {
  for (let i = 0; i < arr.length; i++) {
    const x = arr[i]!;
    if (x - x !== 0) {
      const row = Math.floor(i / rowLength);
      if (rows && !rows(row)) continue;
      throw new NonFiniteError(`${name} holds a non-finite value (${x}) at flat index ${i} (row ${row}, column ${i % rowLength})`);
    }
  }
}

/** Options of a CPU attention call that are not about the method. */
export interface RunOptions {
  /** Scan q, k and v for NaN / ±Infinity (default true). Only the keyLength valid rows of k/v are checked. */
  checkFinite?: boolean;
  /** Called with the fraction of the work done (0…1), for progress bars on long runs. */
  onProgress?: (fraction: number) => void;
}

/** Validates lengths of q/k/v against the shape (and finiteness); returns the resolved shape. */
export function validateInput(input: AttentionInput, opts: RunOptions = {}): ResolvedShape {
  const s = resolveShape(input.shape);
  checkLength('q', input.q, s.batch * s.heads * s.queryLength * s.headDim, `[batch ${s.batch}, heads ${s.heads}, queryLength ${s.queryLength}, headDim ${s.headDim}]`);
  const kvLayout = `[batch ${s.batch}, kvHeads ${s.kvHeads}, keyCapacity ${s.keyCapacity}, headDim ${s.headDim}]`;
  const kvSize = s.batch * s.kvHeads * s.keyCapacity * s.headDim;
  checkLength('k', input.k, kvSize, kvLayout);
  checkLength('v', input.v, kvSize, kvLayout);
  if (opts.checkFinite ?? true) {
    checkFinite('q', input.q, s.headDim);
    const valid = (row: number) => row % s.keyCapacity < s.keyLength;
    checkFinite('k', input.k, s.headDim, s.keyCapacity === s.keyLength ? undefined : valid);
    checkFinite('v', input.v, s.headDim, s.keyCapacity === s.keyLength ? undefined : valid);
  }
  return s;
}

/** Offset of q[b, h, i, 0]. */
export function qIndex(s: ResolvedShape, b: number, h: number, i: number): number {
  return ((b * s.heads + h) * s.queryLength + i) * s.headDim;
}

/** Offset of k[b, kvh, t, 0] (same for v). */
export function kIndex(s: ResolvedShape, b: number, kvh: number, t: number): number {
  return ((b * s.kvHeads + kvh) * s.keyCapacity + t) * s.headDim;
}

/** KV head read by query head h. */
export function kvHeadOf(s: ResolvedShape, h: number): number {
  return Math.floor(h / (s.heads / s.kvHeads));
}

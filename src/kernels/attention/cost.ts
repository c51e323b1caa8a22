/**
 * FLOP and byte counts of an attention problem: the work any exact implementation must do for
 * the key set (useful FLOPs: 2·d for q·k plus 2·d for p·v per attended (query, key) pair and
 * head), and the bytes it must move at the least (q and out once, each needed K/V row once
 * per KV head). Benchmarks divide these by the measured time to report TFLOP/s and GB/s.
 */
import type { ResolvedShape } from '../../attention/shape.js';
import type { StorageType } from '../types.js';
import { bytesOf } from '../common.js';

export type CostKeySet =
  | { kind: 'dense' }
  | { kind: 'streaming'; sinkTokens: number; slidingWindow: number }
  | { kind: 'hip'; sinkTokens: number; slidingWindow: number; topK: number; blockSizeQ: number };

export interface AttentionCost {
  /** Attended (query, key) pairs, summed over batch and heads. */
  pairs: number;
  /** Useful floating-point operations: 4 · d · pairs. */
  flops: number;
  /** Bytes that must be read or written at the least (q, out, the K/V rows some query reads). */
  bytes: number;
}

function keysOf(p: number, ks: CostKeySet): number {
  if (ks.kind === 'dense') return p + 1;
  const sinkEnd = Math.min(ks.sinkTokens, p + 1);
  const win = Math.max(sinkEnd, p - ks.slidingWindow + 1);
  const windowKeys = p + 1 - win;
  if (ks.kind === 'streaming') return sinkEnd + windowKeys;
  // HiP: the selected keys of the query's block (at most topK, from the candidates before the
  // window of the block's last query), never more than the keys between sink and window.
  return sinkEnd + Math.min(ks.topK, Math.max(0, win - sinkEnd)) + windowKeys;
}

/** Cost of attention for a shape and key set (HiP: assumes every selection slot is used). */
export function attentionCost(shape: ResolvedShape, keySet: CostKeySet, dtype: StorageType): AttentionCost {
  const eb = bytesOf(dtype);
  const d = shape.headDim;
  let pairsPerHead = 0;
  let maxKeyRows = 0;
  const q0 = shape.queryOffset;
  const n = shape.queryLength;
  if (keySet.kind === 'dense') {
    // Σ_{p=q0}^{q0+n-1} (p + 1)
    pairsPerHead = n * (q0 + 1) + (n * (n - 1)) / 2;
    maxKeyRows = q0 + n;
  } else {
    for (let i = 0; i < n; i++) pairsPerHead += keysOf(q0 + i, keySet);
    maxKeyRows =
      keySet.kind === 'streaming' && n === 1
        ? keysOf(q0, keySet)
        : keySet.kind === 'hip' && n === 1
          ? keysOf(q0, keySet)
          : q0 + n;
  }
  const pairs = pairsPerHead * shape.batch * shape.heads;
  const flops = 4 * d * pairs;
  const qBytes = shape.batch * shape.heads * n * d * eb;
  const kvBytes = 2 * shape.batch * shape.kvHeads * Math.min(maxKeyRows, shape.keyLength) * d * eb;
  return { pairs, flops, bytes: 2 * qBytes + kvBytes };
}

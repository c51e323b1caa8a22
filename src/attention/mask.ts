/**
 * The HiP mask: for every (batch, head, query block) the start positions of the selected key
 * blocks. Backend-independent — the CPU reference and the GPU kernels produce the same type —
 * and inspectable: `hipAttendedKeys` tells exactly which keys a query reads and why.
 */
import { ShapeError } from '../errors.js';
import { hipKeys, KeyKind } from './keys.js';
import type { HipOptions } from './options.js';

export interface HipMask {
  batch: number;
  heads: number;
  /** Queries covered, and the key position of query 0, at estimation time. */
  queryLength: number;
  queryOffset: number;
  keyLength: number;
  /** ceil(queryLength / blockSizeQ). */
  numQueryBlocks: number;
  /** topK / blockSizeK: slots per query block. */
  blocksPerQuery: number;
  /**
   * [batch, heads, numQueryBlocks, blocksPerQuery]: first key position of each selected key
   * block, ascending; unused slots (fewer candidates than slots) hold −1 at the end.
   */
  blockStarts: Int32Array;
  /** The options the mask was estimated with. */
  options: HipOptions;
  /** Cost of estimation: number of q·k dot products computed (HIP.md: grows like T log T). */
  qkProducts: number;
}

/** Offset of the first slot of (b, h, queryBlock) in `mask.blockStarts`. */
export function maskSlot(mask: HipMask, b: number, h: number, queryBlock: number): number {
  return ((b * mask.heads + h) * mask.numQueryBlocks + queryBlock) * mask.blocksPerQuery;
}

/** Selected key-block starts of (b, h, queryBlock), ascending, without unused slots. */
export function selectedBlocks(mask: HipMask, b: number, h: number, queryBlock: number): number[] {
  const from = maskSlot(mask, b, h, queryBlock);
  const res: number[] = [];
  for (let j = 0; j < mask.blocksPerQuery; j++) {
    const s = mask.blockStarts[from + j]!;
    if (s < 0) break;
    res.push(s);
  }
  return res;
}

export interface AttendedKeys {
  /** Key position of the query. */
  position: number;
  sink: number[];
  selected: number[];
  window: number[];
}

/**
 * Exactly the key positions that HiP attention reads for query `i` of the mask's queries
 * (or, for a mask reused while decoding, for a query at `position`), by category.
 */
/**
 * The mask as a decoding step at key position `position` reads it. A mask is reused for
 * refreshInterval − 1 steps after the refresh that estimated it (at the last query position of
 * its block); meanwhile the window reaches back to where the refresh's window started, so the
 * keys that slid out of the window since are still read: every key up to `position` is a sink
 * key, a candidate of the refresh's tree search, or in this window (at most
 * slidingWindow + refreshInterval − 1 keys). Returns the mask itself at the refresh position.
 */
export function maskForDecodeStep<M extends Pick<HipMask, 'queryOffset' | 'queryLength' | 'options'>>(mask: M, position: number): M {
  const refreshedAt = mask.queryOffset + mask.queryLength - 1;
  const extra = position - refreshedAt;
  return extra <= 0 ? mask : { ...mask, options: { ...mask.options, slidingWindow: mask.options.slidingWindow + extra } };
}

export function hipAttendedKeys(mask: HipMask, b: number, h: number, i: number, position?: number): AttendedKeys {
  if (b < 0 || b >= mask.batch || h < 0 || h >= mask.heads || i < 0 || i >= mask.queryLength) {
    throw new ShapeError(
      `no query (batch ${b}, head ${h}, index ${i}) in a mask of batch ${mask.batch}, heads ${mask.heads}, queryLength ${mask.queryLength}`,
    );
  }
  const p = position ?? mask.queryOffset + i;
  // a later position reads the mask as a decoding step does (window anchored at the refresh)
  const o = position === undefined ? mask.options : maskForDecodeStep(mask, position).options;
  const qb = Math.floor(i / o.blockSizeQ);
  const out = new Int32Array(p + 1);
  const kinds = new Uint8Array(p + 1);
  const n = hipKeys(p, o.sinkTokens, o.slidingWindow, o.blockSizeK, mask.blockStarts, maskSlot(mask, b, h, qb), mask.blocksPerQuery, out, kinds);
  const res: AttendedKeys = { position: p, sink: [], selected: [], window: [] };
  for (let j = 0; j < n; j++) {
    const kind = kinds[j];
    (kind === KeyKind.Sink ? res.sink : kind === KeyKind.Selected ? res.selected : res.window).push(out[j]!);
  }
  return res;
}

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

/** Steps that a decoding query at `position` comes after the refresh that estimated `mask` (0 at the refresh). */
export function stepsSinceRefresh(mask: Pick<HipMask, 'queryOffset' | 'queryLength'>, position: number): number {
  return Math.max(0, position - (mask.queryOffset + mask.queryLength - 1));
}

/**
 * The sink and window of a mask reused while decoding. A mask is reused for refreshInterval − 1
 * steps after the refresh that estimated it (at the last query position of its block);
 * meanwhile the window reaches back to where the refresh's window started, so the keys that
 * slid out of the window since are still read: every key up to `position` is a sink key, a
 * candidate of the refresh's tree search, or in this window (at most
 * slidingWindow + refreshInterval − 1 keys). With `shiftedBlocks` the sink, like the selected
 * blocks, is also read shifted by the steps since the refresh: a non-empty sink reaches
 * `shift` keys further (a passkey right after BOS is copied across the sink's end; with
 * shift > sinkTokens, possible only when refreshInterval > sinkTokens + 1, the keys between
 * the sink and its shifted copy are read too). Returns the mask itself at the
 * refresh position. Works on CPU and GPU masks alike; the shifted blocks are added by
 * maskForDecodeStep (CPU) or the decode-shift kernel (src/kernels/hip-mask/decode-shift.ts).
 */
export function decodeStepSpans<M extends Pick<HipMask, 'queryOffset' | 'queryLength' | 'options'>>(mask: M, position: number): M {
  const extra = stepsSinceRefresh(mask, position);
  if (extra === 0) return mask;
  const o = mask.options;
  // the sink [0, S) and its shifted copy [extra, S + extra): one span [0, S + extra) while extra ≤ S
  const sinkTokens = o.shiftedBlocks && o.sinkTokens > 0 ? o.sinkTokens + extra : o.sinkTokens;
  return { ...mask, options: { ...o, slidingWindow: o.slidingWindow + extra, sinkTokens } };
}

/**
 * Merges the ascending block starts src[from … from + count) (−1 padded at the end) with the
 * same starts plus `shift`, into out[outFrom … outFrom + 2·count): ascending, −1 padded. On a
 * tie the unshifted start comes first. Overlapping blocks are fine: attention reads each key
 * once (src/attention/keys.ts).
 */
export function mergeShiftedStarts(src: Int32Array, from: number, count: number, shift: number, out: Int32Array, outFrom: number): void {
  let valid = 0;
  while (valid < count && src[from + valid]! >= 0) valid++;
  let i = 0;
  let j = 0;
  let o = outFrom;
  while (i < valid || j < valid) {
    const a = i < valid ? src[from + i]! : Number.POSITIVE_INFINITY;
    const b = j < valid ? src[from + j]! + shift : Number.POSITIVE_INFINITY;
    if (a <= b) {
      out[o++] = a;
      i++;
    } else {
      out[o++] = b;
      j++;
    }
  }
  out.fill(-1, o, outFrom + 2 * count);
}

/**
 * The mask as a decoding step at key position `position` reads it: decodeStepSpans' sink and
 * window, and with `shiftedBlocks` (default) every selected block also shifted right by the
 * steps since the refresh (2·blocksPerQuery slots, mergeShiftedStarts). Returns the mask itself
 * at the refresh position.
 */
export function maskForDecodeStep(mask: HipMask, position: number): HipMask {
  const windowed = decodeStepSpans(mask, position);
  const shift = stepsSinceRefresh(mask, position);
  if (shift === 0 || !mask.options.shiftedBlocks) return windowed;
  const n = mask.blocksPerQuery;
  const rows = mask.batch * mask.heads * mask.numQueryBlocks;
  const blockStarts = new Int32Array(rows * 2 * n);
  for (let r = 0; r < rows; r++) mergeShiftedStarts(mask.blockStarts, r * n, n, shift, blockStarts, r * 2 * n);
  return { ...windowed, blocksPerQuery: 2 * n, blockStarts };
}

/**
 * Exactly the key positions that HiP attention reads for query `i` of the mask's queries
 * (or, for a mask reused while decoding, for a query at `position`), by category.
 */
export function hipAttendedKeys(mask: HipMask, b: number, h: number, i: number, position?: number): AttendedKeys {
  if (b < 0 || b >= mask.batch || h < 0 || h >= mask.heads || i < 0 || i >= mask.queryLength) {
    throw new ShapeError(
      `no query (batch ${b}, head ${h}, index ${i}) in a mask of batch ${mask.batch}, heads ${mask.heads}, queryLength ${mask.queryLength}`,
    );
  }
  const p = position ?? mask.queryOffset + i;
  // a later position reads the mask as a decoding step does (window anchored at the refresh, shifted blocks)
  const m = position === undefined ? mask : maskForDecodeStep(mask, position);
  const o = m.options;
  const qb = Math.floor(i / o.blockSizeQ);
  const out = new Int32Array(p + 1);
  const kinds = new Uint8Array(p + 1);
  const n = hipKeys(p, o.sinkTokens, o.slidingWindow, o.blockSizeK, m.blockStarts, maskSlot(m, b, h, qb), m.blocksPerQuery, out, kinds);
  const res: AttendedKeys = { position: p, sink: [], selected: [], window: [] };
  for (let j = 0; j < n; j++) {
    const kind = kinds[j];
    (kind === KeyKind.Sink ? res.sink : kind === KeyKind.Selected ? res.selected : res.window).push(out[j]!);
  }
  return res;
}

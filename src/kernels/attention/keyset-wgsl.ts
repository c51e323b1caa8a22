/**
 * WGSL shared by the attention kernels of this folder: the uniform block, and the key-set
 * logic (which keys a tile of queries reads, in which order, and which (query, key) pairs are
 * valid) — the GPU transcription of src/attention/keys.ts.
 *
 * Key sets. Every method is "sink ∪ (HiP: selected blocks) ∪ window" with per-query masks:
 *   dense:     sink = 0,  window = ∞       → keys [0, p]
 *   streaming: sink = S,  window = W       → [0, min(S, p+1)) ∪ [winStart(p), p]
 *   hip:       sink, blocks of the query's query block, window (each key once, never after p)
 * with winStart(p) = max(min(S, p + 1), p − W + 1). For a tile of queries at positions
 * P0 … P1 a kernel walks three phases of key tiles of BK keys each:
 *   phase 0 (sink):   keys [0, min(S, P1 + 1))                 valid for query p iff t ≤ p
 *   phase 1 (blocks): key slots of the selected blocks          valid iff t ≥ S, t not in an
 *                     (i32 starts ascending, −1 padded)          earlier block, t < winStart(p)
 *   phase 2 (window): keys [winStart(P0), P1]                    valid iff winStart(p) ≤ t ≤ p
 * Per query the three valid sets are disjoint and their union is exactly hipKeys /
 * streamingKeys / denseKeys. With several heads per tile (decode: the G query heads of one KV
 * head), phase 1 is walked once per head ("sub-phases"), valid only for that head's rows.
 */
import { defineUniforms } from '../../gpu/index.js';

/**
 * Uniforms of one dispatch. Offsets and strides are in vec4 units (4 elements) relative to the
 * bound range of each buffer; the mask's in i32 elements.
 */
export const AttnParams = defineUniforms('Params', {
  qLen: 'u32', // queries in the problem
  kLen: 'u32', // keys (keyLength)
  qOff: 'i32', // position of query 0
  heads: 'u32', // query heads H
  group: 'u32', // H / H_kv
  b0: 'u32', // first batch of this dispatch
  h0: 'u32', // first head (or, with several heads per tile, first KV head) of this dispatch
  t0: 'u32', // first query tile of this dispatch
  qD: 'u32', // first query of this dispatch (q/out bases point at it)
  qBase: 'u32',
  qSB: 'u32',
  qSH: 'u32',
  qST: 'u32',
  kBase: 'u32',
  kSB: 'u32',
  kSH: 'u32',
  kST: 'u32',
  vBase: 'u32',
  vSB: 'u32',
  vSH: 'u32',
  vST: 'u32',
  oBase: 'u32',
  oSB: 'u32',
  oSH: 'u32',
  oST: 'u32',
  mBase: 'u32', // mask: element offset of [b0, 0, 0, 0] minus the bound range's start
  mSB: 'u32',
  mSH: 'u32',
  mQB: 'i32', // mask query-block index (relative to the bound range) = query block + mQB
  bpq: 'u32', // slots per query block
  bsq: 'u32', // query-block size (HiP blockSizeQ; dense/streaming: the query tile)
  bsk: 'u32', // HiP blockSizeK
  tilesPerQB: 'u32', // query tiles per query block
  sink: 'i32',
  window: 'i32',
  scaleLog2: 'f32', // log2(e) / sqrt(d)
  splits: 'u32', // key splits per query tile (decode); 1 otherwise
  tilesPerSplit: 'u32', // key tiles per split
  partRows: 'u32', // rows of the split-K partials (batch × heads × qLen)
  zero: 'u32', // always 0: added to loop bounds the compiler must not unroll (software adapters)
});
export type AttnParamValues = Parameters<typeof AttnParams.pack>[0];

/**
 * A constant loop bound, or (unroll false) the same bound made opaque to the shader compiler.
 * Software rasterisers (lavapipe, SwiftShader) spend tens of seconds in LLVM fully unrolling
 * a kernel's inner loops; on GPUs unrolled loops are faster.
 */
export function loopBound(n: number, unroll: boolean): string {
  return unroll ? `${n}u` : `(${n}u + P.zero)`;
}

/** Large negative finite "minus infinity" (WGSL implementations may assume no infinities). */
export const NEG = '-1.0e30';

/** Helpers on positions and phases. */
export function keySetFns(): string {
  return /* wgsl */ `
const NEG: f32 = ${NEG};
fn winStart(p: i32) -> i32 {
  return max(min(P.sink, p + 1), p - P.window + 1);
}
// Whether the key at position t (−1: empty slot) is read by the query at position p (−1:
// padding row) in phase ph; for phase 1 only rows of sub-phase head hh (rowHH) count.
fn keyValid(ph: u32, hh: u32, rowHH: u32, p: i32, t: i32) -> bool {
  if (t < 0 || p < 0) { return false; }
  if (ph == 0u) { return t <= p; }
  if (ph == 1u) { return rowHH == hh && t < winStart(p); }
  return t >= winStart(p) && t <= p;
}`;
}

/**
 * WGSL for the key-tile enumeration of a tile. Declares workgroup state and two functions:
 *   prepareTiles(lid, P0, P1, maskBase[hh]) — counts the usable blocks per head (collective:
 *     call from uniform control flow; contains barriers),
 *   and, after it, `tilePlan` (uniform values) usable by the kernels:
 *     nS (sink keys), wLo / nW (window keys), nb_sh[hh] (valid blocks), tS, tW, tB[hh].
 * `slotKey(ph, hh, base, c)` returns the key position of slot c of the tile whose first slot
 * is `base` (−1 if none), for phase ph (and head hh in phase 1).
 */
export function tileEnumWgsl(opts: { hip: boolean; heads: number; wg: number }): string {
  const RH = opts.heads;
  return /* wgsl */ `
var<workgroup> nb_at: array<atomic<u32>, ${RH}>;
var<workgroup> nb_sh: array<u32, ${RH}>;
var<workgroup> mb_sh: array<u32, ${RH}>; // mask element offset of each head's block list
// Counts, per head, the selected blocks that can matter for queries up to position P1: block
// starts are ascending and −1 padded, so those with 0 ≤ start < winStart(P1) form a prefix.
fn countBlocks(lid: u32, P1: i32) {
${
  opts.hip
    ? `  let lim = winStart(P1);
  for (var hh = 0u; hh < ${RH}u; hh++) {
    let mb = mb_sh[hh];
    for (var j = lid; j < P.bpq; j += ${opts.wg}u) {
      let s = M[mb + j];
      if (s >= 0 && s < lim) { atomicMax(&nb_at[hh], j + 1u); }
    }
  }
  workgroupBarrier();
  if (lid < ${RH}u) { nb_sh[lid] = atomicLoad(&nb_at[lid]); }`
    : `  if (lid < ${RH}u) { nb_sh[lid] = 0u; }`
}
}
// Key position of slot c of a tile starting at slot \`base\` of phase ph (−1: no key).
fn slotKey(ph: u32, hh: u32, base: u32, c: u32, nS: u32, wLo: i32, P1: i32, nb: u32) -> i32 {
  if (ph == 0u) {
    let t = base + c;
    return select(-1, i32(t), t < nS);
  }
  if (ph == 2u) {
    let t = wLo + i32(base + c);
    return select(-1, t, t <= P1);
  }
${
  opts.hip
    ? `  let slot = base + c;
  let j = slot / P.bsk;
  if (j >= nb) { return -1; }
  let mb = mb_sh[hh];
  let s = M[mb + j];
  let t = s + i32(slot % P.bsk);
  var ok = s >= 0 && t >= P.sink && t < i32(P.kLen);
  if (j > 0u) { ok = ok && t >= M[mb + j - 1u] + i32(P.bsk); }
  return select(-1, t, ok);`
    : `  return -1;`
}
}`;
}

/**
 * Uniform tile plan of a query tile, as WGSL statements (inside main, after countBlocks and a
 * barrier): defines nS, wLo, nW, tS, tW, tBsum and the per-head tB via tilesOfHead(hh).
 */
export function tilePlanWgsl(opts: { bk: number; heads: number }): string {
  const BK = opts.bk;
  let tb = '';
  for (let hh = 0; hh < opts.heads; hh++) {
    tb += `  let nb${hh} = workgroupUniformLoad(&nb_sh[${hh}]);\n  let tB${hh} = (nb${hh} * P.bsk + ${BK - 1}u) / ${BK}u;\n`;
  }
  const sum = Array.from({ length: opts.heads }, (_, hh) => `tB${hh}`).join(' + ');
  return /* wgsl */ `
  let nS = u32(max(0, min(P.sink, P1 + 1)));
  let wLo = winStart(P0);
  let nW = u32(max(0, P1 - wLo + 1));
  let tS = (nS + ${BK - 1}u) / ${BK}u;
  let tW = (nW + ${BK - 1}u) / ${BK}u;
${tb}  let tBsum = ${sum};
  let tTotal = tS + tBsum + tW;`;
}

/**
 * WGSL statements mapping a global key-tile index \`gt\` (uniform) to (ph, hh, base, nb):
 * the phase, the sub-phase head, the first slot and the head's block count.
 */
export function tileDecodeWgsl(opts: { bk: number; heads: number }): string {
  const BK = opts.bk;
  let nested = '';
  for (let hh = 0; hh < opts.heads; hh++) {
    nested += `${'  '.repeat(hh)}      if (r < tB${hh}) { hh = ${hh}u; base = r * ${BK}u; nb = nb${hh}; } else {\n${'  '.repeat(hh)}        r -= tB${hh};\n`;
  }
  nested += `${'  '.repeat(opts.heads)}      hh = 0u;\n`;
  for (let hh = opts.heads - 1; hh >= 0; hh--) nested += `${'  '.repeat(hh)}      }\n`;
  return /* wgsl */ `
    var ph = 0u;
    var hh = 0u;
    var base = 0u;
    var nb = 0u;
    if (gt < tS) {
      base = gt * ${BK}u;
    } else if (gt < tS + tBsum) {
      ph = 1u;
      var r = gt - tS;
${nested}    } else {
      ph = 2u;
      base = (gt - tS - tBsum) * ${BK}u;
    }
    // A full sink/window tile whose keys are valid for every query of the tile (the bulk of
    // the work at long contexts) skips the per-pair validity test.
    var full = false;
    if (ph == 0u) {
      full = base + ${BK}u <= nS && i32(base) + ${BK - 1} <= P0;
    } else if (ph == 2u) {
      let ft = wLo + i32(base);
      full = base + ${BK}u <= nW && ft >= winStart(P1) && ft + ${BK - 1} <= P0;
    }`;
}

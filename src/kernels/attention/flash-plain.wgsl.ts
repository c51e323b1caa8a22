/**
 * The plain (no tensor cores) flash-attention kernel, as a WGSL template.
 *
 * One workgroup = one tile of ROWS = RH heads × RQ queries, optionally one split of the key
 * tiles (split-K, "flash decoding"). Key tiles of BK keys are gathered into workgroup memory
 * (converted to f32), scores / online softmax / P·V in f32. Prefill uses RH = 1, RQ = 16
 * (the tile lies inside one HiP query block, so it shares one block list); decode uses RH = G
 * (all query heads of one KV head, so each K/V row is loaded once), RQ = 1, with splits.
 *
 * Bindings: 0 params (uniform), 1 q, 2 k, 3 v, 4 out, 5 mask (i32), 6 partials (vec4<f32>).
 * Variants: storage f16 or f32; hip (block list) or not; split (write partial (m, l, acc) per
 * split for the reduce kernel) or final (write the normalised output).
 */
import { AttnParams, keySetFns, loopBound, tileDecodeWgsl, tileEnumWgsl, tilePlanWgsl } from './keyset-wgsl.js';
import type { StorageType } from '../types.js';

export interface PlainVariant {
  dtype: StorageType;
  headDim: number;
  /** Queries per tile. */
  rowsQ: number;
  /** Heads per tile (consecutive query heads of one KV head). */
  rowsH: number;
  /** Keys per key tile. */
  bk: number;
  /** Invocations per workgroup. */
  wg: number;
  hip: boolean;
  split: boolean;
  /** Let the compiler unroll the inner loops (GPUs: yes; software adapters: no, see loopBound). */
  unroll: boolean;
}

export function plainVariantName(v: PlainVariant): string {
  return `attention/flash-plain-${v.dtype}-d${v.headDim}-r${v.rowsH}x${v.rowsQ}-k${v.bk}-wg${v.wg}${v.hip ? '-hip' : ''}${v.split ? '-split' : ''}${v.unroll ? '' : '-nounroll'}`;
}

/** Workgroup memory of a variant, bytes. */
export function plainWorkgroupBytes(v: PlainVariant): number {
  const rows = v.rowsH * v.rowsQ;
  const d4 = v.headDim / 4;
  const dp4 = d4 + 1;
  return 16 * (rows * d4 + 2 * v.bk * dp4) + 4 * (rows * v.bk + v.bk + 4 * rows) + 12 * v.rowsH;
}

export function plainWgsl(v: PlainVariant): string {
  const { headDim: D, rowsQ: RQ, rowsH: RH, bk: BK, wg: WG } = v;
  if (D % 4 !== 0) throw new Error(`headDim ${D} must be a multiple of 4`);
  const ROWS = RH * RQ;
  const D4 = D / 4;
  const DP4 = D4 + 1; // padded row (vec4 units) of the K/V tiles
  const OPT = Math.ceil((ROWS * D4) / WG); // output vec4s per invocation
  const T = v.dtype;
  const lb = (n: number) => loopBound(n, v.unroll);
  const accInit = Array.from({ length: OPT }, () => 'vec4<f32>(0.0)').join(', ');

  let pv = '';
  let epi = '';
  for (let j = 0; j < OPT; j++) {
    pv += `
      {
        let o = lid + ${j * WG}u;
        if (o < ${ROWS * D4}u) {
          let r = o / ${D4}u;
          let c4 = o % ${D4}u;
          var a = acc[${j}] * a_sh[r];
          for (var c = 0u; c < ${lb(BK)}; c++) {
            a += s_sh[r * ${BK}u + c] * v_sh[c * ${DP4}u + c4];
          }
          acc[${j}] = a;
        }
      }`;
    epi += `
  {
    let o = lid + ${j * WG}u;
    if (o < ${ROWS * D4}u) {
      let r = o / ${D4}u;
      let c4 = o % ${D4}u;
      if (rpos_sh[r] >= 0) {
        let hh = r / ${RQ}u;
        let q = qa + r % ${RQ}u;
        let head = hFirst + hh;
${
  v.split
    ? `        let rowG = (b * P.heads + head) * P.qLen + q;
        let idx = rowG * P.splits + split;
        PART[P.partRows * P.splits + idx * ${D4}u + c4] = acc[${j}];
        if (c4 == 0u) { PART[idx] = vec4<f32>(m_sh[r], l_sh[r], 0.0, 0.0); }`
    : `        let l = l_sh[r];
        let val = select(vec4<f32>(0.0), acc[${j}] / l, l > 0.0);
        O[P.oBase + (b - P.b0) * P.oSB + (head - hD) * P.oSH + (q - P.qD) * P.oST + c4] = vec4<${T}>(val);`
}
      }
    }
  }`;
  }

  return /* wgsl */ `${T === 'f16' ? 'enable f16;\n' : ''}
${AttnParams.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<vec4<${T}>>;
@group(0) @binding(2) var<storage, read> K: array<vec4<${T}>>;
@group(0) @binding(3) var<storage, read> V: array<vec4<${T}>>;
${v.split ? '' : `@group(0) @binding(4) var<storage, read_write> O: array<vec4<${T}>>;`}
${v.hip ? '@group(0) @binding(5) var<storage, read> M: array<i32>;' : ''}
${v.split ? '@group(0) @binding(6) var<storage, read_write> PART: array<vec4<f32>>;' : ''}

var<workgroup> q_sh: array<vec4<f32>, ${ROWS * D4}>;
var<workgroup> k_sh: array<vec4<f32>, ${BK * DP4}>;
var<workgroup> v_sh: array<vec4<f32>, ${BK * DP4}>;
var<workgroup> s_sh: array<f32, ${ROWS * BK}>;
var<workgroup> kpos_sh: array<i32, ${BK}>;
var<workgroup> rpos_sh: array<i32, ${ROWS}>;
var<workgroup> m_sh: array<f32, ${ROWS}>;
var<workgroup> l_sh: array<f32, ${ROWS}>;
var<workgroup> a_sh: array<f32, ${ROWS}>;
${keySetFns()}
${tileEnumWgsl({ hip: v.hip, heads: RH, wg: WG })}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let split = wid.x % P.splits;
  let tile = P.t0 + wid.x / P.splits;
  let b = P.b0 + wid.z;
  // First query head of the dispatch and of this tile.
  let hD = ${RH === 1 ? 'P.h0' : 'P.h0 * P.group'};
  let hFirst = ${RH === 1 ? 'P.h0 + wid.y' : '(P.h0 + wid.y) * P.group'};
  let kvh = hFirst / P.group;
  let kvD = hD / P.group;
  let qb = tile / P.tilesPerQB;
  let qa = qb * P.bsq + (tile % P.tilesPerQB) * ${RQ}u;
  let qe = min(qa + ${RQ}u, min((qb + 1u) * P.bsq, P.qLen));
  if (qa >= qe) { return; }
  let P0 = P.qOff + i32(qa);
  let P1 = P.qOff + i32(qe) - 1;

  for (var r = lid; r < ${ROWS}u; r += ${WG}u) {
    let q = qa + r % ${RQ}u;
    rpos_sh[r] = select(-1, P.qOff + i32(q), q < qe);
    m_sh[r] = NEG;
    l_sh[r] = 0.0;
  }
  if (lid < ${RH}u) {
    mb_sh[lid] = P.mBase + (b - P.b0) * P.mSB + (hFirst + lid - hD) * P.mSH + u32(i32(qb) + P.mQB) * P.bpq;
    atomicStore(&nb_at[lid], 0u);
  }
  for (var i = lid; i < ${ROWS * D4}u; i += ${WG}u) {
    let r = i / ${D4}u;
    let q = qa + r % ${RQ}u;
    var x = vec4<f32>(0.0);
    if (q < qe) {
      x = vec4<f32>(Q[P.qBase + (b - P.b0) * P.qSB + (hFirst + r / ${RQ}u - hD) * P.qSH + (q - P.qD) * P.qST + i % ${D4}u]);
    }
    q_sh[i] = x;
  }
  workgroupBarrier();
  countBlocks(lid, P1);
  workgroupBarrier();
${tilePlanWgsl({ bk: BK, heads: RH })}
  let gtBegin = split * P.tilesPerSplit;
  let gtEnd = min(tTotal, gtBegin + P.tilesPerSplit);
  let kRow0 = P.kBase + (b - P.b0) * P.kSB + (kvh - kvD) * P.kSH;
  let vRow0 = P.vBase + (b - P.b0) * P.vSB + (kvh - kvD) * P.vSH;
  var acc = array<vec4<f32>, ${OPT}>(${accInit});

  for (var gt = gtBegin; gt < gtEnd; gt++) {
${tileDecodeWgsl({ bk: BK, heads: RH })}
    // Gather the tile's keys and values (zeros for empty slots).
    for (var i = lid; i < ${BK * D4}u; i += ${WG}u) {
      let c = i / ${D4}u;
      let j = i % ${D4}u;
      let t = slotKey(ph, hh, base, c, nS, wLo, P1, nb);
      if (j == 0u) { kpos_sh[c] = t; }
      var kx = vec4<f32>(0.0);
      var vx = vec4<f32>(0.0);
      if (t >= 0) {
        kx = vec4<f32>(K[kRow0 + u32(t) * P.kST + j]);
        vx = vec4<f32>(V[vRow0 + u32(t) * P.vST + j]);
      }
      k_sh[c * ${DP4}u + j] = kx;
      v_sh[c * ${DP4}u + j] = vx;
    }
    workgroupBarrier();
    // Scores (log2 domain), −∞ where the pair is not in the key set.
    for (var i = lid; i < ${ROWS * BK}u; i += ${WG}u) {
      let r = i / ${BK}u;
      let c = i % ${BK}u;
      var d = 0.0;
      for (var j = 0u; j < ${lb(D4)}; j++) {
        d += dot(q_sh[r * ${D4}u + j], k_sh[c * ${DP4}u + j]);
      }
      s_sh[i] = select(NEG, d * P.scaleLog2, full || keyValid(ph, hh, r / ${RQ}u, rpos_sh[r], kpos_sh[c]));
    }
    workgroupBarrier();
    // Online softmax, one invocation per row.
    for (var r = lid; r < ${ROWS}u; r += ${WG}u) {
      var mx = NEG;
      for (var c = 0u; c < ${lb(BK)}; c++) { mx = max(mx, s_sh[r * ${BK}u + c]); }
      let mo = m_sh[r];
      let mn = max(mo, mx);
      let alpha = exp2(mo - mn);
      var sum = 0.0;
      for (var c = 0u; c < ${lb(BK)}; c++) {
        let s = s_sh[r * ${BK}u + c];
        let p = select(0.0, exp2(s - mn), s > 0.5 * NEG);
        s_sh[r * ${BK}u + c] = p;
        sum += p;
      }
      l_sh[r] = l_sh[r] * alpha + sum;
      m_sh[r] = mn;
      a_sh[r] = alpha;
    }
    workgroupBarrier();
    // acc = acc · alpha + P · V
${pv}
    workgroupBarrier();
  }
${epi}
}
`;
}

/**
 * Subgroup flash-decoding kernel (split kernel + a parallel split-K reduce), as WGSL templates.
 *
 * Decode is memory-bound: one query row per head against a long K/V cache. One workgroup =
 * one (batch, KV head, query, split): the G query heads of the KV head together (each K/V row
 * is read once for all of them), a contiguous range of "slots" of the query's key list:
 *
 *   slots [0, nS)                 sink keys           valid for every head
 *   slots [nS, nS + nW)           window keys         valid for every head
 *   slots [nS + nW, … + G·bpq·bsk) HiP only: head hh's selected blocks (bpq·bsk slots per
 *                                 head, −1 / duplicate / out-of-range slots skipped), valid
 *                                 only for head hh
 *
 * so dense (sink 0, window ∞) is the contiguous range [0, p], StreamingLLM sink ∪ window, and
 * HiP adds every head's own blocks — split evenly over the splits whatever the method.
 *
 * Inside a workgroup, LK lanes ("a key group") share a key: each lane loads 16 bytes (8 f16,
 * or 4 f32) per chunk, D / (LK · chunk) chunks, so a group reads a 256-byte K row (d 128, f16)
 * in one coalesced access; partial q·k dot products are summed over the group with
 * subgroupShuffleXor. Each group walks NK keys per step (all loads of a step issued before any
 * use: NK K rows and NK V rows in flight per group) with an online softmax per head in f32;
 * at the end the groups' (m, l, acc) are merged through workgroup memory and the split's
 * partial is written for the reduce kernel (same layout as the plain kernel's split-K
 * partials: PART[row·splits + split] = (m, l, 0, 0), accumulators after partRows·splits).
 *
 * Needs `subgroups`, a subgroup size ≥ LK (and invocations laid out so that consecutive
 * local indices share a subgroup, as on every implementation); the host picks LK.
 */
import { AttnParams, keySetFns, loopBound } from './keyset-wgsl.js';
import type { StorageType } from '../types.js';

export interface DecodeVariant {
  dtype: StorageType;
  headDim: number;
  /** Query heads per workgroup (G = H / H_kv). */
  rowsH: number;
  /** Lanes per key (a power of two ≤ the subgroup size). */
  lanes: number;
  /** Keys per key group per step. */
  keys: number;
  /** Invocations per workgroup (a multiple of `lanes`). */
  wg: number;
  hip: boolean;
  /** f16: 16-byte K/V loads (vec4<u32>; needs even vec4 offsets/strides) instead of 8-byte. */
  ld16: boolean;
  /**
   * Key groups are first merged with subgroup shuffles inside blocks of this many lanes (≤ the
   * smallest subgroup size; = lanes: no shuffle merge), then across blocks in workgroup memory.
   */
  merge: number;
  unroll: boolean;
}

export function decodeVariantName(v: DecodeVariant): string {
  return `attention/decode-sg-${v.dtype}-d${v.headDim}-g${v.rowsH}-l${v.lanes}-k${v.keys}-wg${v.wg}-m${v.merge}${v.hip ? '-hip' : ''}${v.ld16 ? '-v16' : '-v8'}${v.unroll ? '' : '-nounroll'}`;
}

/** Elements per K/V load. */
export function decodeChunk(v: Pick<DecodeVariant, 'dtype' | 'ld16'>): number {
  return v.dtype === 'f16' && v.ld16 ? 8 : 4;
}

export function decodeWorkgroupBytes(v: DecodeVariant): number {
  const ng = v.wg / v.merge;
  return ng * v.rowsH * 8 + ng * v.rowsH * (v.headDim / 4) * 16;
}

/** Why a variant cannot be generated (null: it can). */
export function decodeUnsupported(v: DecodeVariant): string | null {
  const CH = decodeChunk(v);
  const LK = v.lanes;
  if (LK < 1 || (LK & (LK - 1)) !== 0) return `lanes per key ${LK} is not a power of two`;
  if (v.headDim % (LK * CH) !== 0) return `headDim ${v.headDim} is not a multiple of ${LK} lanes × ${CH} elements`;
  if (v.wg % LK !== 0) return `workgroup size ${v.wg} is not a multiple of ${LK}`;
  if (v.keys < 1 || v.rowsH < 1) return 'keys and rowsH must be ≥ 1';
  if (v.merge < LK || v.merge % LK !== 0 || (v.merge & (v.merge - 1)) !== 0 || v.wg % v.merge !== 0) return `merge block ${v.merge} must be a power-of-two multiple of ${LK} dividing ${v.wg}`;
  return null;
}

export function decodeWgsl(v: DecodeVariant): string {
  const why = decodeUnsupported(v);
  if (why) throw new Error(`decode kernel: ${why}`);
  const { headDim: D, rowsH: RH, lanes: LK, keys: NK, wg: WG } = v;
  const T = v.dtype;
  const CH = decodeChunk(v);
  const NV4 = CH / 4; // vec4<f32> per chunk
  const NL = D / (LK * CH); // chunks per lane per key
  const DV = NL * NV4; // vec4<f32> per lane per key
  const D4 = D / 4;
  const NG = WG / LK;
  const STEP = NG * NK;
  const SGM = v.merge;
  const NB = WG / SGM; // merge blocks (slots in workgroup memory)
  const KV = T === 'f16' ? (v.ld16 ? 'vec4<u32>' : 'vec2<u32>') : 'vec4<f32>';
  const up = (x: string, u: number): string => {
    if (T === 'f32') return x;
    const [a, b] = u === 0 ? ['x', 'y'] : ['z', 'w'];
    return `vec4<f32>(unpack2x16float(${x}.${a}), unpack2x16float(${x}.${b}))`;
  };
  const lb = (n: number) => loopBound(n, v.unroll);
  // Straight-line code on GPUs (constant register indices), WGSL loops on software adapters.
  const rep = (n: number, name: string, body: (i: string) => string): string => {
    if (v.unroll) return Array.from({ length: n }, (_, i) => body(`${i}u`)).join('');
    return `for (var ${name} = 0u; ${name} < ${lb(n)}; ${name}++) {\n${body(name)}}\n`;
  };
  // The halves of a 16-byte chunk are picked statically: always straight-line.
  const repU = (body: (u: number) => string): string => Array.from({ length: NV4 }, (_, u) => body(u)).join('');
  const rowIdx = (t: string, row0: string) => (v.ld16 && T === 'f16' ? `(${row0} + u32(${t}) * P.kST) / 2u` : `${row0} + u32(${t}) * P.kST`);
  const rowIdxV = (t: string, row0: string) => (v.ld16 && T === 'f16' ? `(${row0} + u32(${t}) * P.vST) / 2u` : `${row0} + u32(${t}) * P.vST`);

  const hipSlot = v.hip
    ? ` else {
          let r = slot - nSW;
          let hh = r / sph;
          let rr = r % sph;
          let j = rr / P.bsk;
          let mb = mb0 + hh * P.mSH;
          let s = M[mb + j];
          let tt = s + i32(rr % P.bsk);
          var ok = s >= 0 && tt >= P.sink && tt < i32(P.kLen) && tt < wLo;
          if (ok && j > 0u) { ok = tt >= M[mb + j - 1u] + i32(P.bsk); }
          if (ok) { t = tt; hsel = hh; }
        }`
    : '';

  return /* wgsl */ `${T === 'f16' ? 'enable f16;\n' : ''}enable subgroups;
diagnostic(off, subgroup_uniformity);
${AttnParams.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<vec4<${T}>>;
@group(0) @binding(2) var<storage, read> K: array<${KV}>;
@group(0) @binding(3) var<storage, read> V: array<${KV}>;
${v.hip ? '@group(0) @binding(5) var<storage, read> M: array<i32>;' : ''}
@group(0) @binding(6) var<storage, read_write> PART: array<vec4<f32>>;

var<workgroup> ml_sh: array<vec2<f32>, ${NB * RH}>;
var<workgroup> acc_sh: array<vec4<f32>, ${NB * RH * D4}>;
${keySetFns()}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let split = wid.x % P.splits;
  let tile = P.t0 + wid.x / P.splits;
  let b = P.b0 + wid.z;
  let hD = P.h0 * P.group;
  let hFirst = (P.h0 + wid.y) * P.group;
  let kvh = hFirst / P.group;
  let kvD = hD / P.group;
  let qb = tile / P.tilesPerQB;
  let q = qb * P.bsq + tile % P.tilesPerQB;
  if (q >= min((qb + 1u) * P.bsq, P.qLen)) { return; }
  let p = P.qOff + i32(q);
  let g = lid / ${LK}u;
  let li = lid % ${LK}u;

  // This lane's chunks of the G query rows, pre-scaled to the log2 domain.
  var qv: array<vec4<f32>, ${RH * DV}>;
  let qRow0 = P.qBase + (b - P.b0) * P.qSB + (hFirst - hD) * P.qSH + (q - P.qD) * P.qST;
${rep(RH, 'hh', (hh) => rep(NL, 'n', (n) => repU((u) => `  qv[${hh} * ${DV}u + ${n} * ${NV4}u + ${u}u] = vec4<f32>(Q[qRow0 + ${hh} * P.qSH + (li + ${LK}u * ${n}) * ${NV4}u + ${u}u]) * P.scaleLog2;\n`)))}
  let nS = u32(max(0, min(P.sink, p + 1)));
  let wLo = winStart(p);
  let nW = u32(max(0, p - wLo + 1));
  let nSW = nS + nW;
  let sph = P.bpq * P.bsk;
  let total = nSW${v.hip ? ` + ${RH}u * sph` : ''};
  let s0 = split * P.tilesPerSplit;
  let s1 = min(total, s0 + P.tilesPerSplit);
  let nIter = select(0u, (s1 - s0 + ${STEP - 1}u) / ${STEP}u, s1 > s0);
  let kRow0 = P.kBase + (b - P.b0) * P.kSB + (kvh - kvD) * P.kSH;
  let vRow0 = P.vBase + (b - P.b0) * P.vSB + (kvh - kvD) * P.vSH;
  let mb0 = P.mBase + (b - P.b0) * P.mSB + (hFirst - hD) * P.mSH + u32(i32(qb) + P.mQB) * P.bpq;

  var m: array<f32, ${RH}>;
  var l: array<f32, ${RH}>;
  var acc: array<vec4<f32>, ${RH * DV}>;
${rep(RH, 'hh', (hh) => `  m[${hh}] = NEG;\n`)}
  for (var it = 0u; it < nIter; it++) {
    let base = s0 + it * ${STEP}u + g * ${NK}u;
    // Key positions of this group's slots (−1: none) and the head they belong to (${RH}: all).
    var kt: array<i32, ${NK}>;
    var kh: array<u32, ${NK}>;
    for (var k = 0u; k < ${lb(NK)}; k++) {
      let slot = base + k;
      var t = -1;
      var hsel = ${RH}u;
      if (slot < s1) {
        if (slot < nS) {
          t = i32(slot);
        } else if (slot < nSW) {
          t = wLo + i32(slot - nS);
        }${hipSlot}
      }
      kt[k] = t;
      kh[k] = hsel;
    }
    // All loads of the step first.
    var kx: array<${KV}, ${NK * NL}>;
    var vx: array<${KV}, ${NK * NL}>;
${rep(NK, 'k', (k) => `    if (kt[${k}] >= 0) {
      let kr = ${rowIdx(`kt[${k}]`, 'kRow0')} + li;
      let vr = ${rowIdxV(`kt[${k}]`, 'vRow0')} + li;
${rep(NL, 'n', (n) => `      kx[${k} * ${NL}u + ${n}] = K[kr + ${n} * ${LK}u];\n      vx[${k} * ${NL}u + ${n}] = V[vr + ${n} * ${LK}u];\n`)}    }
`)}
    // Scores: partial dot products, summed over the key group's lanes.
    var sc: array<f32, ${NK * RH}>;
${rep(NK, 'k', (k) => rep(RH, 'hh', (hh) => {
  let s = `    {\n      var d = 0.0;\n`;
  s += rep(NL, 'n', (n) => repU((u) => `      d += dot(qv[${hh} * ${DV}u + ${n} * ${NV4}u + ${u}u], ${up(`kx[${k} * ${NL}u + ${n}]`, u)});\n`));
  s += `      sc[${k} * ${RH}u + ${hh}] = d;\n    }\n`;
  return s;
}))}
${Array.from({ length: Math.log2(LK) }, (_, i) => LK >> (i + 1))
  .map((o) => rep(NK * RH, 'i', (i) => `    sc[${i}] += subgroupShuffleXor(sc[${i}], ${o}u);\n`))
  .join('')}
    // Online softmax per head.
${rep(RH, 'hh', (hh) => `    {
      var mx = m[${hh}];
${rep(NK, 'k', (k) => `      {
        let ok = kt[${k}] >= 0 && (kh[${k}] == ${RH}u || kh[${k}] == ${hh});
        let s = select(NEG, sc[${k} * ${RH}u + ${hh}], ok);
        sc[${k} * ${RH}u + ${hh}] = s;
        mx = max(mx, s);
      }
`)}      let alpha = exp2(m[${hh}] - mx);
      m[${hh}] = mx;
      var ls = l[${hh}] * alpha;
${rep(DV, 'e', (e) => `      acc[${hh} * ${DV}u + ${e}] = acc[${hh} * ${DV}u + ${e}] * alpha;\n`)}${rep(NK, 'k', (k) => `      {
        let s = sc[${k} * ${RH}u + ${hh}];
        let pk = select(0.0, exp2(s - mx), s > 0.5 * NEG);
        ls += pk;
${rep(NL, 'n', (n) => repU((u) => `        acc[${hh} * ${DV}u + ${n} * ${NV4}u + ${u}u] += pk * ${up(`vx[${k} * ${NL}u + ${n}]`, u)};\n`))}      }
`)}      l[${hh}] = ls;
    }
`)}  }

  // Merge the key groups' partials: inside blocks of ${SGM} lanes with shuffles, then across
  // blocks in workgroup memory; write this split's (m, l, acc) per head.
${Array.from({ length: Math.log2(SGM / LK) }, (_, i) => LK << i)
  .map((o) => rep(RH, 'hh', (hh) => `  {
    let mo = subgroupShuffleXor(m[${hh}], ${o}u);
    let lo = subgroupShuffleXor(l[${hh}], ${o}u);
    let mx = max(m[${hh}], mo);
    let wa = exp2(m[${hh}] - mx);
    let wb = exp2(mo - mx);
    l[${hh}] = l[${hh}] * wa + lo * wb;
    m[${hh}] = mx;
${rep(DV, 'e', (e) => `    acc[${hh} * ${DV}u + ${e}] = acc[${hh} * ${DV}u + ${e}] * wa + subgroupShuffleXor(acc[${hh} * ${DV}u + ${e}], ${o}u) * wb;\n`)}  }
`))
  .join('')}
  let blk = lid / ${SGM}u;
  if (lid % ${SGM}u < ${LK}u) {
    if (li == 0u) {
${rep(RH, 'hh', (hh) => `      ml_sh[blk * ${RH}u + ${hh}] = vec2<f32>(m[${hh}], l[${hh}]);\n`)}    }
${rep(RH, 'hh', (hh) => rep(NL, 'n', (n) => repU((u) => `    acc_sh[(blk * ${RH}u + ${hh}) * ${D4}u + (li + ${LK}u * ${n}) * ${NV4}u + ${u}u] = acc[${hh} * ${DV}u + ${n} * ${NV4}u + ${u}u];\n`)))}  }
  workgroupBarrier();
  for (var i = lid; i < ${RH * D4}u; i += ${WG}u) {
    let hh = i / ${D4}u;
    let c4 = i % ${D4}u;
    var mx = NEG;
    for (var gg = 0u; gg < ${lb(NB)}; gg++) {
      let x = ml_sh[gg * ${RH}u + hh];
      if (x.y > 0.0) { mx = max(mx, x.x); }
    }
    var ls = 0.0;
    var a = vec4<f32>(0.0);
    for (var gg = 0u; gg < ${lb(NB)}; gg++) {
      let x = ml_sh[gg * ${RH}u + hh];
      if (x.y > 0.0) {
        let w = exp2(x.x - mx);
        ls += w * x.y;
        a += w * acc_sh[(gg * ${RH}u + hh) * ${D4}u + c4];
      }
    }
    let row = (b * P.heads + hFirst + hh) * P.qLen + q;
    let idx = row * P.splits + split;
    PART[P.partRows * P.splits + idx * ${D4}u + c4] = a;
    if (c4 == 0u) { PART[idx] = vec4<f32>(mx, ls, 0.0, 0.0); }
  }
}
`;
}

// ---------------------------------------------------------------------------------------------
// Split-K reduce, one workgroup per output row

export interface Reduce2Variant {
  dtype: StorageType;
  headDim: number;
  rowsQ: number;
  rowsH: number;
  /** Invocations per workgroup (a multiple of headDim / 4). */
  wg: number;
  /** Splits merged per loop step (loads in flight). */
  unrollSplits: number;
}

export function reduce2VariantName(v: Reduce2Variant): string {
  return `attention/split-reduce2-${v.dtype}-d${v.headDim}-r${v.rowsH}x${v.rowsQ}-wg${v.wg}-u${v.unrollSplits}`;
}

/**
 * Merges the split partials of one row per workgroup: invocation (c4, lane) merges splits
 * lane, lane + NSL, … of column c4 with an online max (`unrollSplits` splits per step, their
 * loads issued together), then the NSL partial merges are combined in workgroup memory.
 * Grid: x = query tile × rows of a tile (heads × queries), y = head or KV head, z = batch.
 */
export function reduce2Wgsl(v: Reduce2Variant): string {
  const { headDim: D, rowsQ: RQ, rowsH: RH, dtype: T, wg: WG, unrollSplits: U } = v;
  const D4 = D / 4;
  const ROWS = RH * RQ;
  if (WG % D4 !== 0) throw new Error(`reduce2: workgroup ${WG} is not a multiple of ${D4}`);
  const NSL = WG / D4;
  let body = '';
  for (let u = 0; u < U; u++) {
    body += `
      let s${u} = s + ${u * NSL}u;
      let ok${u} = s${u} < S;
      let i${u} = row0 + min(s${u}, S - 1u);
      let ml${u} = PART[i${u}];
      let a${u} = PART[P.partRows * P.splits + i${u} * ${D4}u + c4];`;
  }
  let merge = `      var mx = m;\n`;
  for (let u = 0; u < U; u++) merge += `      if (ok${u} && ml${u}.y > 0.0) { mx = max(mx, ml${u}.x); }\n`;
  merge += `      let sc = exp2(m - mx);\n      acc = acc * sc;\n      l = l * sc;\n`;
  for (let u = 0; u < U; u++) {
    merge += `      if (ok${u} && ml${u}.y > 0.0) { let w = exp2(ml${u}.x - mx); l += w * ml${u}.y; acc += w * a${u}; }\n`;
  }
  merge += `      m = mx;\n`;
  return /* wgsl */ `${T === 'f16' ? 'enable f16;\n' : ''}
${AttnParams.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(4) var<storage, read_write> O: array<vec4<${T}>>;
@group(0) @binding(6) var<storage, read_write> PART: array<vec4<f32>>;

var<workgroup> m_sh: array<f32, ${WG}>;
var<workgroup> l_sh: array<f32, ${WG}>;
var<workgroup> a_sh: array<vec4<f32>, ${WG}>;

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tile = P.t0 + wid.x / ${ROWS}u;
  let r = wid.x % ${ROWS}u;
  let b = P.b0 + wid.z;
  let hD = ${RH === 1 ? 'P.h0' : 'P.h0 * P.group'};
  let hFirst = ${RH === 1 ? 'P.h0 + wid.y' : '(P.h0 + wid.y) * P.group'};
  let qb = tile / P.tilesPerQB;
  let qa = qb * P.bsq + (tile % P.tilesPerQB) * ${RQ}u;
  let qe = min(qa + ${RQ}u, min((qb + 1u) * P.bsq, P.qLen));
  let q = qa + r % ${RQ}u;
  if (q >= qe) { return; }
  let head = hFirst + r / ${RQ}u;
  let S = P.splits;
  let row0 = ((b * P.heads + head) * P.qLen + q) * S;
  let c4 = lid % ${D4}u;
  let sl = lid / ${D4}u;
  var m = -1.0e30;
  var l = 0.0;
  var acc = vec4<f32>(0.0);
  for (var s = sl; s < S; s += ${NSL * U}u) {${body}
${merge}  }
  m_sh[lid] = m;
  l_sh[lid] = l;
  a_sh[lid] = acc;
  workgroupBarrier();
  if (sl == 0u) {
    var mx = -1.0e30;
    for (var j = 0u; j < ${NSL}u; j++) {
      if (l_sh[j * ${D4}u + c4] > 0.0) { mx = max(mx, m_sh[j * ${D4}u + c4]); }
    }
    var lt = 0.0;
    var at = vec4<f32>(0.0);
    for (var j = 0u; j < ${NSL}u; j++) {
      let k = j * ${D4}u + c4;
      if (l_sh[k] > 0.0) {
        let w = exp2(m_sh[k] - mx);
        lt += w * l_sh[k];
        at += w * a_sh[k];
      }
    }
    let val = select(vec4<f32>(0.0), at / lt, lt > 0.0);
    O[P.oBase + (b - P.b0) * P.oSB + (head - hD) * P.oSH + (q - P.qD) * P.oST + c4] = vec4<${T}>(val);
  }
}
`;
}

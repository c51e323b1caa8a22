/**
 * Pipelined tensor-core prefill flash attention (`chromium-experimental-subgroup-matrix`), as a
 * WGSL template: the successor of flash-mma.wgsl.ts with the per-key-tile overheads cut.
 *
 * Workgroup = W warps of SG (32) lanes, each warp owning R fragments of 16 query rows
 * (BQ = 16·R·W queries); key tiles of BK keys. Per key tile i:
 *   S = Q·Kᵀ (BK/16 × d/16 MMAs per fragment; each K matrix load feeds R MMAs)
 *   → S to the warp's own region of workgroup memory (f32) → softmax per row in registers
 *   (row max: own columns + one subgroupShuffleXor; validity by a per-key [lo, hi] range of
 *   query positions, one vec2 load per column, skipped for tiles valid for every row)
 *   → P (f16) → O += P·V (d/16 × BK/16 MMAs per fragment, O in registers).
 * Differences from flash-mma:
 *   - K and V tiles are double-buffered and prefetched through registers: the global loads of
 *     tile i+2 are issued while tile i is computed (K after QKᵀ, V after PV) and stored one
 *     phase later, so no load latency sits between two barriers;
 *   - 16-byte global loads (vec4<u32>) where K/V offsets and strides are multiples of 8 (ld16);
 *   - one workgroup barrier per tile for the S/K hand-over, plus the lazy-rescale decision:
 *     'workgroup' sync takes it workgroup-uniformly (workgroupUniformLoad, 2 more barriers);
 *     'subgroup' sync (real tensor cores only) takes it per warp (subgroupAny) and relies on
 *     the warp's own lanes seeing each other's workgroup-memory writes in program order
 *     (S → softmax → P → P·V and the O-tile round trips stay inside the warp) — 1 barrier/tile;
 *   - HiP: the query block's block list is staged in workgroup memory once (blkCap), so
 *     slot → key needs no global read per tile;
 *   - R = 2 fragments per warp (optionally Q fragments re-read from workgroup memory, qSmem,
 *     to save registers).
 * Online softmax with a lazily moved reference max as in flash-mma (P ≤ 2^threshold).
 *
 * `emulate: true` generates the same kernel with subgroup-matrix operations emulated in plain
 * WGSL (tested on lavapipe); it always uses 'workgroup' sync.
 */
import type { GpuContext } from '../../gpu/index.js';
import type { StorageType } from '../types.js';
import { AttnParams, keySetFns, loopBound, tilePlanWgsl, tileEnumWgsl } from './keyset-wgsl.js';
import { emulatedOps, realOps } from './flash-mma.wgsl.js';

export interface Mma2Variant {
  dtype: 'f16';
  headDim: number;
  hip: boolean;
  emulate: boolean;
  /** Matrix tile (16). */
  m: number;
  /** Invocations per subgroup (32 on NVIDIA). */
  sg: number;
  warps: number;
  bk: number;
  /** 16-row fragments per warp (1 or 2). */
  rows: number;
  sync: 'workgroup' | 'subgroup';
  /** 16-byte K/V loads (needs K/V offsets and strides that are multiples of 8 elements). */
  ld16: boolean;
  /** Q fragments re-read from workgroup memory at every use instead of living in registers. */
  qSmem: boolean;
  /** HiP: capacity of the block list staged in workgroup memory (0: read the mask per tile). */
  blkCap: number;
  /**
   * Tiles valid for every row of the query tile (contiguous keys: the bulk of dense and
   * StreamingLLM work) load their K/V matrices straight from the storage buffers (bindings 7
   * and 8: f16 views of K and V) instead of through workgroup memory.
   */
  direct?: boolean;
  unroll: boolean;
  /** log2 units a row max may grow before O is rescaled (default 8; 0 = always). */
  threshold?: number;
}

const PAD = 8;
const THRESHOLD = 8;

export function mma2VariantName(v: Mma2Variant): string {
  return (
    `attention/flash-mma2${v.emulate ? '-emulated' : ''}-d${v.headDim}-m${v.m}-sg${v.sg}-w${v.warps}-k${v.bk}-r${v.rows}` +
    `${v.sync === 'subgroup' ? '-sgsync' : ''}${v.ld16 ? '-v16' : ''}${v.qSmem ? '-qs' : ''}${v.direct ? '-direct' : ''}${v.hip ? `-hip-b${v.blkCap}` : ''}` +
    `${v.unroll ? '' : '-nounroll'}${v.threshold !== undefined ? `-t${v.threshold}` : ''}`
  );
}

function layout(v: Mma2Variant) {
  const DP = v.headDim + PAD;
  const WR = v.m * v.rows;
  const BQ = v.warps * WR;
  const kvHalves = 4 * v.bk * DP;
  const qOff = v.qSmem && !v.emulate ? kvHalves : 0;
  const kvLen = v.emulate ? kvHalves : v.qSmem ? kvHalves + BQ * DP : Math.max(kvHalves, BQ * DP);
  return { DP, WR, BQ, qOff, kvLen };
}

export function mma2WorkgroupBytes(v: Mma2Variant): number {
  const { DP, WR, BQ, kvLen } = layout(v);
  return 2 * kvLen + (v.emulate ? 2 * BQ * DP : 0) + 6 * v.warps * WR * v.bk + 16 * v.bk + 4 * (v.hip ? v.blkCap : 0) + 16 + 12;
}

/** Why a variant cannot be generated (null: it can). */
export function mma2Unsupported(v: Mma2Variant): string | null {
  const { WR } = layout(v);
  const WG = v.warps * v.sg;
  if (v.headDim % v.m || v.bk % v.m) return `headDim ${v.headDim} and key tile ${v.bk} must be multiples of ${v.m}`;
  if (v.rows < 1 || v.sg % WR !== 0) return `${v.rows} fragments of ${v.m} rows do not divide the subgroup of ${v.sg}`;
  const LPR = v.sg / WR;
  if ((v.m / LPR) % 4 !== 0 || v.bk % LPR !== 0 || LPR > 2) return `unsupported lanes per row ${LPR}`;
  if (WG % v.bk !== 0) return `workgroup ${WG} is not a multiple of the key tile ${v.bk}`;
  if (v.emulate && v.sync === 'subgroup') return "the emulated kernel needs 'workgroup' sync";
  return null;
}

export function mma2Wgsl(v: Mma2Variant): string {
  const why = mma2Unsupported(v);
  if (why) throw new Error(`flash-mma2: ${why}`);
  const { headDim: D, m: TM, sg: SG, warps: W, bk: BK, rows: R } = v;
  const { DP, WR, BQ, qOff: QOFF, kvLen } = layout(v);
  const direct = !!v.direct;
  const ops = v.emulate ? emulatedOps(TM, SG, false, direct) : realOps(TM);
  const lb = (n: number) => loopBound(n, v.unroll);
  const D4 = D / 4;
  const NT = D / TM;
  const KT = BK / TM;
  const LPR = SG / WR;
  const CPL = BK / LPR;
  const EPL = TM / LPR;
  const WG = W * SG;
  const TPS = WG / BK; // threads per key slot in the gather
  const CHH = v.ld16 ? 8 : 4; // halves per chunk
  const NCH = D / CHH; // chunks per row
  const NCT = Math.ceil(NCH / TPS); // chunks per thread per tile (K and V each)
  const chunkOk = (j: string) => (NCH % TPS === 0 ? 'true' : `gs + ${j} * ${TPS}u < ${NCH}u`);
  const KVT = v.ld16 ? 'vec4<u32>' : 'vec4<f16>';
  const K0 = 0;
  const V0 = 2 * BK * DP;
  const warpS = `w * ${WR * BK}u`;
  const QST = v.emulate ? 'q_emu' : 'kv_sh';
  const sub = v.sync === 'subgroup';
  const TH = (v.threshold ?? THRESHOLD).toFixed(1);

  const loop = (count: number, name: string, body: (i: string) => string): string => {
    if (v.unroll) return Array.from({ length: count }, (_, i) => body(`${i}u`)).join('');
    return `for (var ${name} = 0u; ${name} < ${lb(count)}; ${name}++) {\n${body(name)}}\n`;
  };
  const qIdx = (f: string, kk: string) => `${f} * ${NT}u + ${kk}`;
  const qLeft = (f: string, kk: string) =>
    v.qSmem && !v.emulate ? ops.loadLeft('kv_sh', `${QOFF}u + (w * ${WR}u + ${f} * ${TM}u) * ${DP}u + ${kk} * ${TM}u`, false, `${DP}u`) : `qf[${qIdx(f, kk)}]`;
  const bar = (s: string) => (sub ? '' : s);

  const qfDecl =
    v.qSmem && !v.emulate
      ? ''
      : `  var qf: array<${ops.left}, ${R * NT}>;\n` +
        loop(R, 'f', (f) => loop(NT, 'kk', (kk) => `  qf[${qIdx(f, kk)}] = ${ops.loadLeft(QST, `${QOFF}u + (w * ${WR}u + ${f} * ${TM}u) * ${DP}u + ${kk} * ${TM}u`, false, `${DP}u`)};\n`));
  const oDecl = `  var o: array<${ops.result}, ${R * NT}>;\n` + loop(R * NT, 'n', (n) => `  o[${n}] = ${ops.zero};\n`);

  // S = Q·Kᵀ for the warp's fragments: K from workgroup buffer kb, or (direct) from Kh.
  const qkFrom = (src: 'smem' | 'direct') =>
    loop(
      KT,
      'n',
      (n) =>
        `    {\n${loop(R, 'f', (f) => `      acc[${f}] = ${ops.zero};\n`)}` +
        loop(
          NT,
          'kk',
          (kk) =>
            `      {\n        let right = ${
              src === 'smem'
                ? ops.loadRight('kv_sh', `kb + ${n} * ${TM * DP}u + ${kk} * ${TM}u`, true, `${DP}u`)
                : ops.loadRight('Kh', `kd + ${n} * ${TM}u * kS4 + ${kk} * ${TM}u`, true, 'kS4')
            };\n` +
            loop(R, 'f', (f) => `        acc[${f}] = ${ops.mma(qLeft(f, kk), 'right', `acc[${f}]`)};\n`) +
            `      }\n`,
        ) +
        loop(R, 'f', (f) => `      ${ops.store('s_sh', `${warpS} + ${f} * ${TM * BK}u + ${n} * ${TM}u`, `acc[${f}]`, false, `${BK}u`)}\n`) +
        `    }\n`,
    );
  const qk = direct ? `    if (fullI) {\n${qkFrom('direct')}    } else {\n${qkFrom('smem')}    }\n` : qkFrom('smem');

  // O += P·V: V from workgroup buffer vb, or (direct) from Vh.
  const pvFrom = (src: 'smem' | 'direct') =>
    loop(NT, 'n', (n) =>
      loop(
        KT,
        'kk',
        (kk) =>
          `    {\n      let right = ${
            src === 'smem'
              ? ops.loadRight('kv_sh', `vb + ${kk} * ${TM * DP}u + ${n} * ${TM}u`, false, `${DP}u`)
              : ops.loadRight('Vh', `vd + ${kk} * ${TM}u * vS4 + ${n} * ${TM}u`, false, 'vS4')
          };\n` +
          loop(R, 'f', (f) => `      o[${f} * ${NT}u + ${n}] = ${ops.mma(`pf[${f} * ${KT}u + ${kk}]`, 'right', `o[${f} * ${NT}u + ${n}]`)};\n`) +
          `    }\n`,
      ),
    );
  const pv =
    `    var pf: array<${ops.left}, ${R * KT}>;\n` +
    loop(R, 'f', (f) => loop(KT, 'kk', (kk) => `    pf[${f} * ${KT}u + ${kk}] = ${ops.loadLeft('p_sh', `${warpS} + ${f} * ${TM * BK}u + ${kk} * ${TM}u`, false, `${BK}u`)};\n`)) +
    (direct ? `    if (fullI) {\n${pvFrom('direct')}    } else {\n${pvFrom('smem')}    }\n` : pvFrom('smem'));

  // O tiles through the warp's scratch (its S region): rescale rows by alpha / write out.
  const rescaleBody = loop(R, 'f', (f) =>
    loop(
      NT,
      'n',
      (n) => `      ${ops.store('s_sh', warpS, `o[${f} * ${NT}u + ${n}]`, false, `${TM}u`)}
      ${bar('workgroupBarrier();')}
      if (frag == ${f}) {
        for (var e = 0u; e < ${EPL}u; e++) {
          let k = ${warpS} + rr * ${TM}u + col0 + e;
          s_sh[k] = s_sh[k] * alpha;
        }
      }
      ${bar('workgroupBarrier();')}
      o[${f} * ${NT}u + ${n}] = ${ops.loadResult('s_sh', warpS, false, `${TM}u`)};
      ${bar('workgroupBarrier();')}
`,
    ),
  );
  const rescale = sub
    ? `    if (subgroupAny(alpha < 1.0)) {\n${rescaleBody}    }\n`
    : `    if (alpha < 1.0) { flag_sh = 1u; }
    let rescale = workgroupUniformLoad(&flag_sh);
    if (rescale != 0u) {
      if (lid == 0u) { flag_sh = 0u; }
${rescaleBody}    }
`;
  const epi = loop(R, 'f', (f) =>
    loop(
      NT,
      'n',
      (n) => `  ${ops.store('s_sh', warpS, `o[${f} * ${NT}u + ${n}]`, false, `${TM}u`)}
  ${bar('workgroupBarrier();')}
  if (frag == ${f} && myPos >= 0 && l > 0.0) {
    for (var e = 0u; e < ${EPL / 4}u; e++) {
      let k = ${warpS} + rr * ${TM}u + col0 + e * 4u;
      let x = vec4<f32>(s_sh[k], s_sh[k + 1u], s_sh[k + 2u], s_sh[k + 3u]) / l;
      O[oRow + (${n} * ${TM}u + col0) / 4u + e] = vec4<f16>(x);
    }
  }
  ${bar('workgroupBarrier();')}
`,
    ),
  );

  // Gather: thread → slot gc (TPS threads per slot), chunks gs + j·TPS of the row.
  const kIdx = (row0: string, st: string) => (v.ld16 ? `(${row0} + u32(t) * ${st}) / 2u + gs` : `${row0} + u32(t) * ${st} + gs`);
  const issue = (which: 'K' | 'V', reg: string) => `      if (t >= 0) {
        let r0 = ${which === 'K' ? kIdx('kRow0', 'P.kST') : kIdx('vRow0', 'P.vST')};
${loop(NCT, 'j', (j) => (NCH % TPS === 0 ? `        ${reg}[${j}] = ${which}[r0 + ${j} * ${TPS}u];\n` : `        if (${chunkOk(j)}) { ${reg}[${j}] = ${which}[r0 + ${j} * ${TPS}u]; }\n`))}      } else {
${loop(NCT, 'j', (j) => `        ${reg}[${j}] = ${KVT}();\n`)}      }
`;
  const storeChunk = (off: string, x: string) =>
    v.ld16
      ? ['x', 'y', 'z', 'w']
          .map((c, i) => `{ let h = bitcast<vec2<f16>>(${x}.${c}); kv_sh[${off} + ${2 * i}u] = h.x; kv_sh[${off} + ${2 * i + 1}u] = h.y; }`)
          .join(' ')
      : [0, 1, 2, 3].map((e) => `kv_sh[${off} + ${e}u] = ${x}[${e}];`).join(' ');
  const store = (bufBase: string, reg: string) =>
    loop(NCT, 'j', (j) => `      if (${chunkOk(j)}) { let so = ${bufBase} + gc * ${DP}u + (gs + ${j} * ${TPS}u) * ${CHH}u; ${storeChunk('so', `${reg}[${j}]`)} }\n`);

  const skipIfFull = (cond: string, body: string) => (direct ? `      if (!(${cond})) {\n${body}      }\n` : body);
  const hipFns = v.hip
    ? `
fn blkAt(mb: u32, j: u32) -> i32 { return ${v.blkCap > 0 ? 'blk_sh[j]' : 'M[mb + j]'}; }`
    : '';

  return /* wgsl */ `${v.emulate ? 'enable subgroups;\n' : ''}diagnostic(off, subgroup_uniformity);
${ops.header}
${AttnParams.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> K: array<${KVT}>;
@group(0) @binding(3) var<storage, read> V: array<${KVT}>;
@group(0) @binding(4) var<storage, read_write> O: array<vec4<f16>>;
${v.hip ? '@group(0) @binding(5) var<storage, read> M: array<i32>;' : ''}
${direct ? '@group(0) @binding(7) var<storage, read> Kh: array<f16>;\n@group(0) @binding(8) var<storage, read> Vh: array<f16>;' : ''}

// K tiles at ${K0} and ${BK * DP}, V tiles at ${V0} and ${V0 + BK * DP} (rows of ${DP} halves)${v.qSmem && !v.emulate ? `; Q tile at ${QOFF}` : '; Q staged at 0 before the loop'}.
var<workgroup> kv_sh: array<f16, ${kvLen}>;
// Per warp: S [${WR} × ${BK}] f32 (also the O-tile scratch), P [${WR} × ${BK}] f16.
var<workgroup> s_sh: array<f32, ${W * WR * BK}>;
var<workgroup> p_sh: array<f16, ${W * WR * BK}>;
// Per key column of the two tiles in flight: the query positions [lo, hi] it is valid for.
var<workgroup> lohi_sh: array<vec2<i32>, ${2 * BK}>;
${v.hip && v.blkCap > 0 ? `var<workgroup> blk_sh: array<i32, ${v.blkCap}>;` : ''}
var<workgroup> flag_sh: u32;
${v.emulate ? `var<workgroup> q_emu: array<f16, ${BQ * DP}>;` : ''}
${keySetFns()}
${tileEnumWgsl({ hip: v.hip, heads: 1, wg: WG })}
${hipFns}
const BIGI: i32 = 2147483647;
// Key position of slot c of the tile starting at slot \`base\` of phase ph (−1: none).
fn slotKey2(ph: u32, base: u32, c: u32, nS: u32, wLo: i32, P1: i32, nb: u32, mb: u32) -> i32 {
  if (ph == 0u) {
    let t = base + c;
    return select(-1, i32(t), t < nS);
  }
  if (ph == 2u) {
    let t = wLo + i32(base + c);
    return select(-1, t, t <= P1);
  }
${
  v.hip
    ? `  let slot = base + c;
  let j = slot / P.bsk;
  if (j >= nb) { return -1; }
  let s = blkAt(mb, j);
  let t = s + i32(slot % P.bsk);
  var ok = s >= 0 && t >= P.sink && t < i32(P.kLen);
  if (ok && j > 0u) { ok = t >= blkAt(mb, j - 1u) + i32(P.bsk); }
  return select(-1, t, ok);`
    : '  return -1;'
}
}
// Query positions [lo, hi] for which key t of phase ph is in the key set (see keyValid).
fn keyRange(ph: u32, t: i32) -> vec2<i32> {
  if (t < 0) { return vec2<i32>(BIGI, -1); }
  if (ph == 0u) { return vec2<i32>(t, BIGI); }
  if (ph == 1u) { return vec2<i32>(t + P.window, BIGI); }
  if (t < P.sink) { return vec2<i32>(BIGI, -1); }
  return vec2<i32>(t, t + (P.window - 1));
}
struct TileInfo { ph: u32, base: u32, full: bool, t0: i32 }
fn tileInfo(gt: u32, tS: u32, tB: u32, nS: u32, nW: u32, wLo: i32, P0: i32, P1: i32) -> TileInfo {
  var ti = TileInfo(0u, 0u, false, 0);
  if (gt < tS) {
    ti.base = gt * ${BK}u;
    ti.full = ti.base + ${BK}u <= nS && i32(ti.base) + ${BK - 1} <= P0;
    ti.t0 = i32(ti.base);
  } else if (gt < tS + tB) {
    ti.ph = 1u;
    ti.base = (gt - tS) * ${BK}u;
  } else {
    ti.ph = 2u;
    ti.base = (gt - tS - tB) * ${BK}u;
    let ft = wLo + i32(ti.base);
    ti.full = ti.base + ${BK}u <= nW && ft >= winStart(P1) && ft + ${BK - 1} <= P0;
    ti.t0 = ft;
  }
  return ti;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = lid / ${SG}u;
  let lane = lid % ${SG}u;
  let row = lane / ${LPR}u; // this lane's row of the warp's ${WR} (softmax, rescale, epilogue)
  let frag = row / ${TM}u;
  let rr = row % ${TM}u;
  let seg = (lane % ${LPR}u) * ${CPL}u; // its softmax columns
  let col0 = (lane % ${LPR}u) * ${EPL}u; // its columns of an O tile
  let gc = lid / ${TPS}u; // gather: key slot
  let gs = lid % ${TPS}u; // gather: first chunk
  let tile = P.t0 + wid.x;
  let b = P.b0 + wid.z;
  let hD = P.h0;
  let hFirst = P.h0 + wid.y;
  let kvh = hFirst / P.group;
  let kvD = hD / P.group;
  let qb = tile / P.tilesPerQB;
  let qa = qb * P.bsq + (tile % P.tilesPerQB) * ${BQ}u;
  let qe = min(qa + ${BQ}u, min((qb + 1u) * P.bsq, P.qLen));
  if (qa >= qe) { return; }
  let P0 = P.qOff + i32(qa);
  let P1 = P.qOff + i32(qe) - 1;
  let myRow = qa + w * ${WR}u + row;
  let myPos = select(-1, P.qOff + i32(myRow), myRow < qe);
  let mb = P.mBase + (b - P.b0) * P.mSB + (hFirst - hD) * P.mSH + u32(i32(qb) + P.mQB) * P.bpq;
  if (lid == 0u) {
    mb_sh[0] = mb;
    atomicStore(&nb_at[0], 0u);
    flag_sh = 0u;
  }
  let qRow0 = P.qBase + (b - P.b0) * P.qSB + (hFirst - hD) * P.qSH;
  for (var i = lid; i < ${BQ * D4}u; i += ${WG}u) {
    let r = i / ${D4}u;
    let j = i % ${D4}u;
    var x = vec4<f16>(0.0);
    if (qa + r < qe) { x = Q[qRow0 + (qa + r - P.qD) * P.qST + j]; }
    let o = ${QOFF}u + r * ${DP}u + j * 4u;
    ${QST}[o] = x.x;
    ${QST}[o + 1u] = x.y;
    ${QST}[o + 2u] = x.z;
    ${QST}[o + 3u] = x.w;
  }
${v.hip && v.blkCap > 0 ? `  for (var j = lid; j < P.bpq; j += ${WG}u) { blk_sh[j] = M[mb + j]; }\n` : ''}  workgroupBarrier();
${qfDecl}  countBlocks(lid, P1);
${tilePlanWgsl({ bk: BK, heads: 1 })}
  let kRow0 = P.kBase + (b - P.b0) * P.kSB + (kvh - kvD) * P.kSH;
  let vRow0 = P.vBase + (b - P.b0) * P.vSB + (kvh - kvD) * P.vSH;
${oDecl}  var mref = NEG;
  var lsum = 0.0;
  var acc: array<${ops.result}, ${R}>;
  var kreg: array<${KVT}, ${NCT}>;
  var vreg: array<${KVT}, ${NCT}>;
  var tK = -1; // key of this thread's slot in the tile whose K is in kreg
  var tV = -1; // … whose V is in vreg, and its validity range
  var rV = vec2<i32>(BIGI, -1);
  var rK = vec2<i32>(BIGI, -1);
  var full0 = false;
  var full1 = false;
  var ks0 = 0; // first key of the tile in buffer 0 / 1 (direct loads of full tiles)
  var ks1 = 0;
  var fullK2 = false; // whether the tile whose K loads were issued last is full

  // Prologue: tile 0 into buffers 0, tile 1 into registers.
  if (tTotal > 0u) {
    {
      let ti = tileInfo(0u, tS, tB0, nS, nW, wLo, P0, P1);
      full0 = ti.full;
      ks0 = ti.t0;
      let t = slotKey2(ti.ph, ti.base, gc, nS, wLo, P1, nb0, mb);
${skipIfFull('ti.full', `${issue('K', 'kreg')}${issue('V', 'vreg')}${store(`${K0}u`, 'kreg')}${store(`${V0}u`, 'vreg')}`)}      if (gs == 0u) { lohi_sh[gc] = keyRange(ti.ph, t); }
    }
    if (tTotal > 1u) {
      let ti = tileInfo(1u, tS, tB0, nS, nW, wLo, P0, P1);
      full1 = ti.full;
      ks1 = ti.t0;
      fullK2 = ti.full;
      let t = slotKey2(ti.ph, ti.base, gc, nS, wLo, P1, nb0, mb);
      tK = t;
      tV = t;
      rV = keyRange(ti.ph, t);
${skipIfFull('ti.full', `${issue('K', 'kreg')}${issue('V', 'vreg')}`)}    }
  }
  workgroupBarrier();

  for (var i = 0u; i < tTotal; i++) {
    let par = i & 1u;
    let fullI = select(full0, full1, par == 1u);
    let fullN = select(full1, full0, par == 1u); // tile i+1
    let kb = par * ${BK * DP}u;
    let vb = ${V0}u + par * ${BK * DP}u;
${
  direct
    ? `    let ksI = u32(max(select(ks0, ks1, par == 1u), 0));
    let kS4 = P.kST * 4u;
    let vS4 = P.vST * 4u;
    let kd = (kRow0 + ksI * P.kST) * 4u;
    let vd = (vRow0 + ksI * P.vST) * 4u;
`
    : ''
}    // S = Q · Kᵀ
${qk}    // K of tile i+1 (in registers) into the other K buffer; issue K loads of tile i+2.
    if (i + 1u < tTotal) {
${skipIfFull('fullN', store(`(1u - par) * ${BK * DP}u`, 'kreg'))}    }
    if (i + 2u < tTotal) {
      let ti = tileInfo(i + 2u, tS, tB0, nS, nW, wLo, P0, P1);
      if (par == 0u) { full0 = ti.full; ks0 = ti.t0; } else { full1 = ti.full; ks1 = ti.t0; }
      fullK2 = ti.full;
      let t = slotKey2(ti.ph, ti.base, gc, nS, wLo, P1, nb0, mb);
      tK = t;
      rK = keyRange(ti.ph, t);
${skipIfFull('ti.full', issue('K', 'kreg'))}    }
    workgroupBarrier();
    // Softmax of this lane's row and columns (log2 domain).
    let sb = ${warpS} + row * ${BK}u + seg;
    var sv: array<f32, ${CPL}>;
    var mx = NEG;
    if (fullI) {
${loop(CPL, 'c', (c) => `      sv[${c}] = s_sh[sb + ${c}] * P.scaleLog2;\n      mx = max(mx, sv[${c}]);\n`)}    } else {
${loop(CPL, 'c', (c) => `      {
        let lh = lohi_sh[par * ${BK}u + seg + ${c}];
        sv[${c}] = select(NEG, s_sh[sb + ${c}] * P.scaleLog2, myPos >= lh.x && myPos <= lh.y);
        mx = max(mx, sv[${c}]);
      }
`)}    }
${LPR === 2 ? '    mx = max(mx, subgroupShuffleXor(mx, 1u));\n' : ''}    var alpha = 1.0;
    if (mx > mref + ${TH}) {
      if (mref > 0.5 * NEG) { alpha = exp2(mref - mx); }
      mref = mx;
    }
    lsum = lsum * alpha;
${loop(CPL, 'c', (c) => `    {
      let p = f16(select(0.0, exp2(sv[${c}] - mref), sv[${c}] > 0.5 * NEG));
      p_sh[sb + ${c}] = p;
      lsum += f32(p);
    }
`)}${rescale}    // O += P · V
${pv}    // V of tile i+1 into the other V buffer (with its key ranges); issue V loads of tile i+2.
    if (i + 1u < tTotal) {
${skipIfFull('fullN', store(`${V0}u + (1u - par) * ${BK * DP}u`, 'vreg'))}      if (gs == 0u) { lohi_sh[(1u - par) * ${BK}u + gc] = rV; }
    }
    if (i + 2u < tTotal) {
      let t = tK;
      tV = t;
      rV = rK;
${skipIfFull('fullK2', issue('V', 'vreg'))}    }
  }

  // Epilogue: the row sum, then O / l.
${LPR === 2 ? '  lsum += subgroupShuffleXor(lsum, 1u);\n' : ''}  let l = lsum;
  let oRow = P.oBase + (b - P.b0) * P.oSB + (hFirst - hD) * P.oSH + u32(max(myPos - P.qOff, 0) - i32(P.qD)) * P.oST;
  workgroupBarrier();
${epi}}
`;
}

/**
 * Defaults of the pipelined kernel on a real GPU (set from the H200 sweep,
 * bench/gpu-attention-check.ts --sweep): the first tile configuration tried, the sync mode and
 * whether full tiles load K/V directly from the buffers.
 */
export const MMA2_DEFAULTS = {
  // 8 warps × 16-key tiles measured fastest for dense prefill on the H200 (84 ms vs 131 ms for
  // 4 warps at T=32k) and within 6 % of the best for HiP (bench/results/h200/attention-sweep-run2.txt)
  warps: 8,
  bk: 16,
  rows: 1,
  qSmem: false,
  sync: 'workgroup' as 'workgroup' | 'subgroup',
  direct: false,
};

export interface Mma2Config {
  m: number;
  sg: number;
  warps: number;
  bk: number;
  rows: number;
  sync: 'workgroup' | 'subgroup';
  qSmem: boolean;
}

/** Whether the pipelined tensor-core kernel can run here, and its tile configuration. */
export function pickMma2Config(
  gpu: GpuContext,
  o: { dtype: StorageType; headDim: number; emulate: boolean; warps?: number; bk?: number; rows?: number; sync?: 'workgroup' | 'subgroup'; qSmem?: boolean },
): { ok: true; config: Mma2Config } | { ok: false; why: string } {
  const m = 16;
  if (o.dtype !== 'f16') return { ok: false, why: 'the tensor-core kernel needs f16 storage' };
  if (!gpu.features.shaderF16) return { ok: false, why: "the device lacks 'shader-f16'" };
  if (!gpu.features.subgroups) return { ok: false, why: "the device lacks 'subgroups'" };
  if (o.headDim % m !== 0) return { ok: false, why: `headDim ${o.headDim} is not a multiple of ${m}` };
  let sg = 32;
  if (!o.emulate) {
    if (!gpu.features.subgroupMatrix) return { ok: false, why: "the device lacks 'chromium-experimental-subgroup-matrix'" };
    const cfg = gpu.adapterInfo.subgroupMatrixConfigs.find((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === m && c.N === m && c.K === m);
    if (!cfg && gpu.adapterInfo.subgroupMatrixConfigs.length > 0) {
      return { ok: false, why: `no f16 → f32 ${m}×${m}×${m} subgroup-matrix config (have ${JSON.stringify(gpu.adapterInfo.subgroupMatrixConfigs)})` };
    }
    const { subgroupMinSize: lo, subgroupMaxSize: hi } = gpu.adapterInfo;
    if (hi > 0 && lo !== hi) return { ok: false, why: `the subgroup size varies (${lo}–${hi}); the kernel needs a fixed size` };
    if (hi > 0) sg = hi;
  } else if (gpu.adapterInfo.subgroupMinSize > 0 && gpu.adapterInfo.subgroupMinSize < 2) {
    return { ok: false, why: 'the emulated kernel needs subgroups of at least 2 lanes' };
  }
  const sync = o.emulate ? 'workgroup' : (o.sync ?? MMA2_DEFAULTS.sync);
  const wgMem = gpu.limits.maxComputeWorkgroupStorageSize;
  const given = o.warps !== undefined || o.bk !== undefined || o.rows !== undefined;
  const D = MMA2_DEFAULTS;
  const candidates: [number, number, number, boolean][] = given
    ? [[o.warps ?? D.warps, o.bk ?? D.bk, o.rows ?? 1, o.qSmem ?? false]]
    : [[D.warps, D.bk, D.rows, D.qSmem], [4, 16, 1, false], [2, 16, 1, false], [4, 32, 1, false], [2, 32, 1, false]];
  let last = '';
  for (const [warps, bk, rows, qSmem] of candidates) {
    const v: Mma2Variant = { dtype: 'f16', headDim: o.headDim, hip: true, emulate: o.emulate, m, sg, warps, bk, rows, sync, ld16: true, qSmem, blkCap: 1024, unroll: true };
    const why = mma2Unsupported(v);
    if (why) { last = why; continue; }
    if (warps * sg > gpu.limits.maxComputeInvocationsPerWorkgroup) { last = 'too many invocations'; continue; }
    if (mma2WorkgroupBytes({ ...v, blkCap: 256 }) <= wgMem) return { ok: true, config: { m, sg, warps, bk, rows, sync, qSmem } };
    last = `needs ${mma2WorkgroupBytes({ ...v, blkCap: 256 })} bytes of workgroup memory, the device allows ${wgMem}`;
  }
  return { ok: false, why: `no tile configuration fits: ${last}` };
}

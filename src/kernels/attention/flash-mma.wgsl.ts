/**
 * Tensor-core prefill flash attention (`chromium-experimental-subgroup-matrix`), as a WGSL
 * template. f16 storage, f16 operands, f32 accumulation; 16×16×16 subgroup matrices.
 *
 * Workgroup = WARPS subgroups of SG (32) invocations; a query tile of BQ = 16·WARPS queries,
 * each warp owning 16 query rows. Per key tile of BK keys (gathered into workgroup memory, so
 * HiP's 2-key blocks become dense tiles):
 *   S_w[16 × BK]  = Q_w · K_tileᵀ      (BK/16 result tiles × d/16 MMAs; Q fragments live in
 *                                        registers for the whole kernel)
 *   softmax        per row in f32 (2 lanes per row), P stored as f16 in workgroup memory
 *   O_w[16 × d]  += P_w · V_tile        (d/16 result tiles × BK/16 MMAs; O lives in registers)
 * Online softmax with a lazily moved reference max: P = 2^(s − m_ref) where the row max has
 * not grown past m_ref + 8 (P ≤ 256, exact in f16, sums in f32); only when some row's max grows
 * further are the O tiles rescaled (stored to workgroup memory, scaled per row, reloaded) —
 * rare after the first tiles, and never needed for rows that had no keys yet.
 *
 * `emulate: true` generates the same kernel with every subgroup-matrix type and builtin
 * replaced by plain WGSL with identical semantics (each invocation holds a full copy of a
 * matrix; loads/stores follow the extension's row-/column-major + stride rules), so the kernel's
 * indexing, masking and softmax logic can be tested on devices without the feature.
 */
import type { GpuContext } from '../../gpu/index.js';
import type { StorageType } from '../types.js';
import { AttnParams, keySetFns, loopBound, tileDecodeWgsl, tileEnumWgsl, tilePlanWgsl } from './keyset-wgsl.js';

export interface MmaVariant {
  dtype: 'f16';
  headDim: number;
  hip: boolean;
  emulate: boolean;
  /** Matrix tile (16: M = N = K = 16). */
  m: number;
  /** Invocations per subgroup (32 on NVIDIA). */
  sg: number;
  warps: number;
  bk: number;
  /** Let the compiler unroll the loops (see loopBound). */
  unroll: boolean;
  /** log2 units a row max may grow before O is rescaled (default 8; 0 = on every growth, for tests). */
  threshold?: number;
}

export function mmaVariantName(v: MmaVariant): string {
  return `attention/flash-mma${v.emulate ? '-emulated' : ''}-d${v.headDim}-m${v.m}-sg${v.sg}-w${v.warps}-k${v.bk}${v.hip ? '-hip' : ''}${v.unroll ? '' : '-nounroll'}${v.threshold !== undefined ? `-t${v.threshold}` : ''}`;
}

const PAD = 8; // f16 elements of padding per K/V/Q row in workgroup memory (keeps 16-byte alignment)
const THRESHOLD = 8; // log2 units the row max may grow before O is rescaled

export function mmaWorkgroupBytes(v: MmaVariant): number {
  const DP = v.headDim + PAD;
  const bq = v.warps * v.m;
  return (v.emulate ? 2 * bq * DP : 0) + 2 * (2 * v.bk * DP) + 4 * v.warps * v.m * v.bk + 2 * v.warps * v.m * v.bk + 4 * v.bk + 4 * bq + 4 * v.warps * v.sg + 16 + 12;
}

export interface Ops {
  header: string;
  left: string;
  right: string;
  result: string;
  zero: string;
  loadLeft(arr: 'kv_sh' | 'p_sh' | 'q_emu', off: string, colMajor: boolean, stride: string): string;
  /** 'Kh' / 'Vh': K and V straight from their storage buffers (array<f16> views; flash-mma2). */
  loadRight(arr: 'kv_sh' | 'Kh' | 'Vh', off: string, colMajor: boolean, stride: string): string;
  loadResult(arr: 's_sh', off: string, colMajor: boolean, stride: string): string;
  store(arr: 's_sh', off: string, value: string, colMajor: boolean, stride: string): string;
  mma(a: string, b: string, c: string): string;
}

export function realOps(m: number): Ops {
  const left = `subgroup_matrix_left<f16, ${m}, ${m}>`;
  const right = `subgroup_matrix_right<f16, ${m}, ${m}>`;
  const result = `subgroup_matrix_result<f32, ${m}, ${m}>`;
  return {
    header: 'diagnostic(off, chromium.subgroup_matrix_uniformity);\nenable f16;\nenable subgroups;\nenable chromium_experimental_subgroup_matrix;\n',
    left,
    right,
    result,
    zero: `${result}()`,
    loadLeft: (arr, off, cm, stride) => `subgroupMatrixLoad<${left}>(&${arr}, ${off}, ${cm}, ${stride})`,
    loadRight: (arr, off, cm, stride) => `subgroupMatrixLoad<${right}>(&${arr}, ${off}, ${cm}, ${stride})`,
    loadResult: (arr, off, cm, stride) => `subgroupMatrixLoad<${result}>(&${arr}, ${off}, ${cm}, ${stride})`,
    store: (arr, off, value, cm, stride) => `subgroupMatrixStore(&${arr}, ${off}, ${value}, ${cm}, ${stride});`,
    mma: (a, b, c) => `subgroupMatrixMultiplyAccumulate(${a}, ${b}, ${c})`,
  };
}

/**
 * Plain-WGSL stand-ins with the extension's semantics ([r, c] at off + r·stride + c, or
 * off + c·stride + r column-major). Left/right operands are kept as references into
 * workgroup memory and read when multiplied (the kernel never changes an operand's memory
 * between its load and its use); a result matrix is spread over the warp's lanes, e per lane.
 */
export function emulatedOps(m: number, sg: number, unroll: boolean, direct = false): Ops {
  const lb = (n: number) => loopBound(n, unroll);
  const n = m * m;
  const e = n / sg;
  const R = `array<f32, ${e}>`;
  const header = `enable f16;
struct EmuRef { arr: u32, off: u32, cm: u32, stride: u32 }
fn emuRead(a: EmuRef, r: u32, c: u32) -> f32 {
  let i = select(a.off + r * a.stride + c, a.off + c * a.stride + r, a.cm != 0u);
  if (a.arr == 0u) { return f32(kv_sh[i]); }
  if (a.arr == 1u) { return f32(p_sh[i]); }${direct ? `
  if (a.arr == 3u) { return f32(Kh[i]); }
  if (a.arr == 4u) { return f32(Vh[i]); }` : ''}
  return f32(q_emu[i]);
}
fn emuMma(a: EmuRef, b: EmuRef, c: ${R}, lane: u32) -> ${R} {
  var x = c;
  for (var k8 = 0u; k8 < ${lb(e)}; k8++) {
    let el = lane + k8 * ${sg}u;
    let i = el / ${m}u;
    let j = el % ${m}u;
    var s = x[k8];
    for (var k = 0u; k < ${lb(m)}; k++) { s += emuRead(a, i, k) * emuRead(b, k, j); }
    x[k8] = s;
  }
  return x;
}
fn emuStore_s(off: u32, x: ${R}, cm: bool, stride: u32, lane: u32) {
  for (var k8 = 0u; k8 < ${e}u; k8++) {
    let el = lane + k8 * ${sg}u;
    let r = el / ${m}u;
    let c = el % ${m}u;
    s_sh[select(off + r * stride + c, off + c * stride + r, cm)] = x[k8];
  }
}
fn emuLoad_s(off: u32, cm: bool, stride: u32, lane: u32) -> ${R} {
  var x: ${R};
  for (var k8 = 0u; k8 < ${e}u; k8++) {
    let el = lane + k8 * ${sg}u;
    let r = el / ${m}u;
    let c = el % ${m}u;
    x[k8] = s_sh[select(off + r * stride + c, off + c * stride + r, cm)];
  }
  return x;
}
`;
  const ref = (arr: string, off: string, cm: boolean, stride: string) =>
    `EmuRef(${arr === 'kv_sh' ? 0 : arr === 'p_sh' ? 1 : arr === 'Kh' ? 3 : arr === 'Vh' ? 4 : 2}u, ${off}, ${cm ? 1 : 0}u, ${stride})`;
  return {
    header,
    left: 'EmuRef',
    right: 'EmuRef',
    result: R,
    zero: `${R}()`,
    loadLeft: (arr, off, cm, stride) => ref(arr, off, cm, stride),
    loadRight: (arr, off, cm, stride) => ref(arr, off, cm, stride),
    loadResult: (_arr, off, cm, stride) => `emuLoad_s(${off}, ${cm}, ${stride}, lane)`,
    store: (_arr, off, value, cm, stride) => `emuStore_s(${off}, ${value}, ${cm}, ${stride}, lane);`,
    mma: (a, b, c) => `emuMma(${a}, ${b}, ${c}, lane)`,
  };
}

export function mmaWgsl(v: MmaVariant): string {
  const { headDim: D, m: TM, sg: SG, warps: W, bk: BK } = v;
  const ops = v.emulate ? emulatedOps(TM, SG, false) : realOps(TM); // emulation internals never unrolled (test-only code)
  const lb = (n: number) => loopBound(n, v.unroll);
  const BQ = W * TM;
  const DP = D + PAD;
  const D4 = D / 4;
  const NT = D / TM; // O tiles and QK k-steps
  const KT = BK / TM; // S tiles and PV k-steps
  const LPR = SG / TM; // lanes per row in the softmax / epilogue
  const CPL = BK / LPR; // softmax columns per lane
  const EPL = TM / LPR; // O columns per lane per tile
  if (D % TM || BK % TM || SG % TM || BK % LPR || EPL % 4 || BQ > 2 * BK) {
    throw new Error(`flash-mma: unsupported configuration d=${D} m=${TM} sg=${SG} warps=${W} bk=${BK}`);
  }
  const WG = W * SG;
  const V_OFF = BK * DP;
  const warpS = `w * ${TM * BK}u`;
  const QST = v.emulate ? 'q_emu' : 'kv_sh'; // where the Q tile is staged

  // Tile loops: unrolled (constant indices; the real kernel on GPUs) or WGSL loops (software
  // adapters). Both paths use the same index formulas; fragments live in arrays either way.
  const loop = (count: number, name: string, body: (i: string) => string): string => {
    if (v.unroll) return Array.from({ length: count }, (_, i) => body(`${i}u`)).join('');
    return `for (var ${name} = 0u; ${name} < ${lb(count)}; ${name}++) {\n${body(name)}}\n`;
  };

  const qfDecl =
    `  var qf: array<${ops.left}, ${NT}>;\n` +
    loop(NT, 'kk', (kk) => `  qf[${kk}] = ${ops.loadLeft(QST, `w * ${TM * DP}u + ${kk} * ${TM}u`, false, `${DP}u`)};\n`);
  const oDecl = `  var o: array<${ops.result}, ${NT}>;\n` + loop(NT, 'n', (n) => `  o[${n}] = ${ops.zero};\n`);

  const qk = loop(
    KT,
    'n',
    (n) =>
      `    {\n      var acc = ${ops.zero};\n` +
      loop(NT, 'kk', (kk) => `      acc = ${ops.mma(`qf[${kk}]`, ops.loadRight('kv_sh', `${n} * ${TM * DP}u + ${kk} * ${TM}u`, true, `${DP}u`), 'acc')};\n`) +
      `      ${ops.store('s_sh', `${warpS} + ${n} * ${TM}u`, 'acc', false, `${BK}u`)}\n    }\n`,
  );

  const rescale = loop(
    NT,
    'n',
    (n) => `      ${ops.store('s_sh', warpS, `o[${n}]`, false, `${TM}u`)}
      workgroupBarrier();
      for (var e = 0u; e < ${EPL}u; e++) {
        let i = ${warpS} + row * ${TM}u + col0 + e;
        s_sh[i] = s_sh[i] * alpha;
      }
      workgroupBarrier();
      o[${n}] = ${ops.loadResult('s_sh', warpS, false, `${TM}u`)};
      workgroupBarrier();
`,
  );

  const pv =
    `    var pf: array<${ops.left}, ${KT}>;\n` +
    loop(KT, 'kk', (kk) => `    pf[${kk}] = ${ops.loadLeft('p_sh', `${warpS} + ${kk} * ${TM}u`, false, `${BK}u`)};\n`) +
    loop(NT, 'n', (n) =>
      loop(KT, 'kk', (kk) => `    o[${n}] = ${ops.mma(`pf[${kk}]`, ops.loadRight('kv_sh', `${V_OFF}u + ${kk} * ${TM * DP}u + ${n} * ${TM}u`, false, `${DP}u`), `o[${n}]`)};\n`),
    );

  const epi = loop(
    NT,
    'n',
    (n) => `  ${ops.store('s_sh', warpS, `o[${n}]`, false, `${TM}u`)}
  workgroupBarrier();
  if (myPos >= 0 && l > 0.0) {
    for (var e = 0u; e < ${EPL / 4}u; e++) {
      let i = ${warpS} + row * ${TM}u + col0 + e * 4u;
      let x = vec4<f32>(s_sh[i], s_sh[i + 1u], s_sh[i + 2u], s_sh[i + 3u]) / l;
      O[oRow + (${n} * ${TM}u + col0) / 4u + e] = vec4<f16>(x);
    }
  }
  workgroupBarrier();
`,
  );

  // Gather the key tile: each invocation owns one slot (key) and TPS of them share its row,
  // so the slot's key position is computed once; empty slots are zero-filled.
  const TPS = WG / BK;
  const store4 = (base: string, x: string) =>
    [0, 1, 2, 3].map((e) => `kv_sh[${base} + ${e}u] = ${x}.${'xyzw'[e]};`).join(' ');
  const gather =
    WG % BK === 0 && D4 % TPS === 0
      ? `    {
      let c = lid / ${TPS}u;
      let t = slotKey(ph, hh, base, c, nS, wLo, P1, nb);
      if (lid % ${TPS}u == 0u) { kpos_sh[c] = t; }
      let kr = kRow0 + u32(max(t, 0)) * P.kST;
      let vr = vRow0 + u32(max(t, 0)) * P.vST;
      for (var jj = 0u; jj < ${lb(D4 / TPS)}; jj++) {
        let j = lid % ${TPS}u + jj * ${TPS}u;
        var kx = vec4<f16>(0.0);
        var vx = vec4<f16>(0.0);
        if (t >= 0) {
          kx = K[kr + j];
          vx = V[vr + j];
        }
        let o = c * ${DP}u + j * 4u;
        ${store4('o', 'kx')}
        ${store4(`${V_OFF}u + o`, 'vx')}
      }
    }
`
      : `    for (var i = lid; i < ${BK * D4}u; i += ${WG}u) {
      let c = i / ${D4}u;
      let j = i % ${D4}u;
      let t = slotKey(ph, hh, base, c, nS, wLo, P1, nb);
      if (j == 0u) { kpos_sh[c] = t; }
      var kx = vec4<f16>(0.0);
      var vx = vec4<f16>(0.0);
      if (t >= 0) {
        kx = K[kRow0 + u32(t) * P.kST + j];
        vx = V[vRow0 + u32(t) * P.vST + j];
      }
      let o = c * ${DP}u + j * 4u;
      ${store4('o', 'kx')}
      ${store4(`${V_OFF}u + o`, 'vx')}
    }
`;

  return /* wgsl */ `${ops.header}
${AttnParams.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> K: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read> V: array<vec4<f16>>;
@group(0) @binding(4) var<storage, read_write> O: array<vec4<f16>>;
${v.hip ? '@group(0) @binding(5) var<storage, read> M: array<i32>;' : ''}

// K tile at 0, V tile at ${V_OFF} (rows of ${DP} halves); the Q tile at the start.
var<workgroup> kv_sh: array<f16, ${2 * BK * DP}>;
// Per warp: S [${TM} × ${BK}] f32 (also the O-tile scratch), P [${TM} × ${BK}] f16.
var<workgroup> s_sh: array<f32, ${W * TM * BK}>;
var<workgroup> p_sh: array<f16, ${W * TM * BK}>;
var<workgroup> kpos_sh: array<i32, ${BK}>;
var<workgroup> rpos_sh: array<i32, ${BQ}>;
var<workgroup> red_sh: array<f32, ${W * SG}>;
var<workgroup> flag_sh: u32;
${v.emulate ? `var<workgroup> q_emu: array<f16, ${BQ * DP}>; // emulation: operands are read at multiply time` : ''}
${keySetFns()}
${tileEnumWgsl({ hip: v.hip, heads: 1, wg: WG })}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let w = lid / ${SG}u;
  let lane = lid % ${SG}u;
  let row = lane / ${LPR}u; // this lane's row in the warp's ${TM} (softmax, rescale, epilogue)
  let seg = (lane % ${LPR}u) * ${CPL}u; // its softmax columns
  let col0 = (lane % ${LPR}u) * ${EPL}u; // its columns of an O tile
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

  for (var r = lid; r < ${BQ}u; r += ${WG}u) {
    rpos_sh[r] = select(-1, P.qOff + i32(qa + r), qa + r < qe);
  }
  if (lid == 0u) {
    mb_sh[0] = P.mBase + (b - P.b0) * P.mSB + (hFirst - hD) * P.mSH + u32(i32(qb) + P.mQB) * P.bpq;
    atomicStore(&nb_at[0], 0u);
    flag_sh = 0u;
  }
  let qRow0 = P.qBase + (b - P.b0) * P.qSB + (hFirst - hD) * P.qSH;
  for (var i = lid; i < ${BQ * D4}u; i += ${WG}u) {
    let r = i / ${D4}u;
    let j = i % ${D4}u;
    var x = vec4<f16>(0.0);
    if (qa + r < qe) { x = Q[qRow0 + (qa + r - P.qD) * P.qST + j]; }
    let o = r * ${DP}u + j * 4u;
    ${QST}[o] = x.x;
    ${QST}[o + 1u] = x.y;
    ${QST}[o + 2u] = x.z;
    ${QST}[o + 3u] = x.w;
  }
  workgroupBarrier();
${qfDecl}  workgroupBarrier();
  countBlocks(lid, P1);
  workgroupBarrier();
${tilePlanWgsl({ bk: BK, heads: 1 })}
  let myPos = rpos_sh[w * ${TM}u + row];
  let kRow0 = P.kBase + (b - P.b0) * P.kSB + (kvh - kvD) * P.kSH;
  let vRow0 = P.vBase + (b - P.b0) * P.vSB + (kvh - kvD) * P.vSH;
${oDecl}  var mref = NEG;
  var lsum = 0.0;

  for (var gt = 0u; gt < tTotal; gt++) {
${tileDecodeWgsl({ bk: BK, heads: 1 })}
${gather}    workgroupBarrier();
    // S = Q · Kᵀ for this warp's rows.
${qk}    workgroupBarrier();
    // Softmax: row max over the whole tile (each lane of the row), P for this lane's columns.
    let sb = ${warpS} + row * ${BK}u;
    var mx = NEG;
    if (full) {
      for (var c = 0u; c < ${lb(BK)}; c++) { mx = max(mx, s_sh[sb + c]); }
      mx = mx * P.scaleLog2;
    } else {
      for (var c = 0u; c < ${lb(BK)}; c++) {
        if (keyValid(ph, hh, 0u, myPos, kpos_sh[c])) { mx = max(mx, s_sh[sb + c] * P.scaleLog2); }
      }
    }
    var alpha = 1.0;
    if (mx > mref + ${(v.threshold ?? THRESHOLD).toFixed(1)}) {
      if (mref > 0.5 * NEG) {
        alpha = exp2(mref - mx);
        flag_sh = 1u;
      }
      mref = mx;
    }
    lsum = lsum * alpha;
    for (var c = seg; c < seg + ${lb(CPL)}; c++) {
      var p = f16(0.0);
      if (full || keyValid(ph, hh, 0u, myPos, kpos_sh[c])) { p = f16(exp2(s_sh[sb + c] * P.scaleLog2 - mref)); }
      p_sh[sb + c] = p;
      lsum += f32(p);
    }
    let rescale = workgroupUniformLoad(&flag_sh);
    if (rescale != 0u) {
      if (lid == 0u) { flag_sh = 0u; }
${rescale}    }
    // O += P · V
${pv}    workgroupBarrier();
  }

  // Epilogue: the row sum over the row's lanes, then O / l.
  red_sh[lid] = lsum;
  workgroupBarrier();
  var l = 0.0;
  for (var i = 0u; i < ${LPR}u; i++) { l += red_sh[w * ${SG}u + row * ${LPR}u + i]; }
  let oRow = P.oBase + (b - P.b0) * P.oSB + (hFirst - hD) * P.oSH + u32(max(myPos - P.qOff, 0) - i32(P.qD)) * P.oST;
${epi}}
`;
}

export interface MmaConfig {
  m: number;
  sg: number;
  warps: number;
  bk: number;
}

/** Whether the tensor-core prefill kernel can run here, and its tile configuration. */
export function pickMmaConfig(
  gpu: GpuContext,
  o: { dtype: StorageType; headDim: number; emulate: boolean; warps?: number; bk?: number },
): { ok: true; config: MmaConfig } | { ok: false; why: string } {
  const m = 16;
  if (o.dtype !== 'f16') return { ok: false, why: 'the tensor-core kernel needs f16 storage' };
  if (!gpu.features.shaderF16) return { ok: false, why: "the device lacks 'shader-f16'" };
  if (o.headDim % m !== 0) return { ok: false, why: `headDim ${o.headDim} is not a multiple of ${m}` };
  let sg = 32;
  if (!o.emulate) {
    if (!gpu.features.subgroupMatrix) return { ok: false, why: "the device lacks 'chromium-experimental-subgroup-matrix'" };
    const cfg = gpu.adapterInfo.subgroupMatrixConfigs.find(
      (c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === m && c.N === m && c.K === m,
    );
    // An empty list means the platform did not report its configs: try (pipeline creation
    // fails loudly if the shape is unsupported).
    if (!cfg && gpu.adapterInfo.subgroupMatrixConfigs.length > 0) {
      return { ok: false, why: `no f16 → f32 ${m}×${m}×${m} subgroup-matrix config (have ${JSON.stringify(gpu.adapterInfo.subgroupMatrixConfigs)})` };
    }
    const { subgroupMinSize: lo, subgroupMaxSize: hi } = gpu.adapterInfo;
    if (hi > 0 && lo !== hi) return { ok: false, why: `the subgroup size varies (${lo}–${hi}); the kernel needs a fixed size` };
    if (hi > 0) sg = hi;
    if (sg % m !== 0 || (m / (sg / m)) % 4 !== 0) return { ok: false, why: `subgroup size ${sg} is not supported` };
  }
  const wgMem = gpu.limits.maxComputeWorkgroupStorageSize;
  const candidates: [number, number][] = o.warps || o.bk ? [[o.warps ?? 4, o.bk ?? 32]] : [[4, 32], [2, 32], [2, 16]];
  for (const [warps, bk] of candidates) {
    const v: MmaVariant = { dtype: 'f16', headDim: o.headDim, hip: true, emulate: o.emulate, m, sg, warps, bk, unroll: true };
    if (warps * m > 2 * bk || bk % m !== 0) continue;
    if (warps * sg > gpu.limits.maxComputeInvocationsPerWorkgroup) continue;
    if (mmaWorkgroupBytes(v) <= wgMem) return { ok: true, config: { m, sg, warps, bk } };
  }
  return { ok: false, why: `no tile configuration fits ${wgMem} bytes of workgroup memory` };
}

/**
 * WGSL for HiP mask estimation, generated from a variant descriptor (one source, templated).
 *
 * One workgroup estimates the mask of one (batch, head group, query block): all refinement
 * rounds of the tree search (src/attention/tree-search.ts) run inside the workgroup, with the
 * n nodes and ≤ 2n candidates in workgroup memory; the block's strided queries are loaded into
 * workgroup memory once (or once per round and chunk when they do not fit).
 *
 * Per round:
 *  1. every thread reads its nodes into registers; a workgroup-uniform flag says whether any
 *     node still spans more than one key block (else the search is over);
 *  2. node i becomes candidate slots 2i and 2i+1 (its two halves [a, a+ceil(c/2)),
 *     [a+ceil(c/2), e)), or slot 2i alone when it is one block (carried with its score) and a
 *     padding entry in 2i+1; the slots that need a score are appended to a list;
 *  3. scoring: every listed candidate's representative block is scored as the max over the
 *     strided queries × strided keys (clipped to R, causal) of q·k, accumulated with atomicMax
 *     on an order-preserving u32 encoding of the f32 score. Two implementations:
 *     - 'scalar': one thread per (candidate, key of the block), all rows of the chunk in
 *       registers (optionally with compensated, error-free-transformation dot products, so the
 *       f32 result is the correctly rounded exact dot in practice: masks then equal the float64
 *       CPU reference's);
 *     - 'matrix': subgroup matrices (tensor cores). Each subgroup gathers 16 candidate keys into
 *       workgroup memory (prefetched into registers one tile ahead), multiplies the query tile
 *       (rows × d) by them with subgroupMatrixMultiplyAccumulate, stores the rows × 16 scores,
 *       and reduces columns with atomicMax. 'matrix-emulated' is the same data flow with the
 *       three matrix builtins replaced by scalar code, so it runs (and is tested) on adapters
 *       without subgroup matrices.
 *  4. bitonic sort of the P ≥ 2n (key, start, end) entries, best first: (score desc, block
 *     index asc), exactly the CPU's compareCandidates; the first n are the new nodes.
 * At the end the n single-block nodes are written in ascending order (rank by start).
 */

export type HipMaskPath = 'scalar' | 'matrix' | 'matrix-emulated';

export interface HipMaskVariant {
  /** Storage type of q and k. */
  dtype: 'f32' | 'f16';
  path: HipMaskPath;
  /** Scalar path: compensated (TwoProduct/TwoSum) dot products. */
  accurate: boolean;
  headDim: number;
  /** Scalar path: 4-element vector loads (headDim, strides and offsets multiples of 4). */
  vec4: boolean;
  /** n = topK / blockSizeK. */
  nodes: number;
  /** Bitonic sort size, the power of two ≥ 2n. */
  sortSize: number;
  /** Query rows held in workgroup memory at once (a multiple of rowBlock / of M). */
  rowsCap: number;
  /** Scalar path: rows accumulated per pass over a key. */
  rowBlock: number;
  workgroupSize: number;
  /**
   * Subgroup size for the register bitonic sort (each invocation holds P / workgroupSize
   * entries; partners in the same invocation are swapped in registers, in the same subgroup
   * through subgroupShuffleXor, and only the widest stages go through workgroup memory), or 0
   * for the plain workgroup-memory sort (one barrier per stage). Needs a fixed subgroup size.
   */
  subgroupSort: number;
  /**
   * Matrix paths: tile shape (M rows × N keys × K dims), subgroup size, subgroups per workgroup,
   * and whether the query tile's left-matrix fragments stay in registers for a whole round.
   */
  matrix?: { M: number; N: number; K: number; subgroupSize: number; subgroups: number; qRegisters?: boolean };
}

/** Field order of the uniform struct (all u32). */
export const PARAM_FIELDS = [
  'batch',
  'heads',
  'kvHeads',
  'groupSize',
  'queryLength',
  'queryOffset',
  'numQueryBlocks',
  'bq',
  'bsq',
  'bk',
  'bsk',
  'sink',
  'window',
  'repFirst',
  'keysPerBlock',
  'headDim',
  'qOff',
  'qsB',
  'qsH',
  'qsT',
  'kOff',
  'ksB',
  'ksH',
  'ksT',
  'outOff',
  'b0',
  'nB',
  'g0',
  'nG',
  'qb0',
  'nQB',
  'gx',
  'total',
] as const;
export type ParamField = (typeof PARAM_FIELDS)[number];

/** Padding (elements) added to each row of matrix-path tiles in workgroup memory (bank conflicts). */
export const MATRIX_ROW_PAD = 8;

/** Bytes of workgroup memory a variant declares. */
export function workgroupBytes(v: HipMaskVariant): number {
  const P = v.sortSize;
  const n2 = 2 * v.nodes;
  let bytes = 3 * P * 4 + n2 * 4 /* acc */ + n2 * 4 /* list */ + 64; /* counters, alignment slack */
  if (v.path === 'scalar') {
    bytes += v.rowsCap * v.headDim * 4;
  } else {
    const m = v.matrix!;
    const eb = v.dtype === 'f16' ? 2 : 4;
    const qs = v.headDim + MATRIX_ROW_PAD;
    bytes += v.rowsCap * qs * eb; // query tile
    bytes += m.subgroups * m.N * qs * eb; // key staging
    bytes += m.subgroups * v.rowsCap * m.N * 4; // results
  }
  return bytes;
}

function unrolled(count: number, body: (i: number) => string): string {
  let s = '';
  for (let i = 0; i < count; i++) s += body(i);
  return s;
}

/** Generates the WGSL of a variant. */
export function hipMaskWgsl(v: HipMaskVariant): string {
  const D = v.headDim;
  const N = v.nodes;
  const P = v.sortSize;
  const WG = v.workgroupSize;
  const NPT = Math.ceil(N / WG); // nodes per thread
  const ROWS = v.rowsCap;
  const isMatrix = v.path !== 'scalar';
  const realMatrix = v.path === 'matrix';
  const f16 = v.dtype === 'f16';
  if (P < 2 * N || (P & (P - 1)) !== 0) throw new Error(`hip-mask wgsl: sortSize ${P} must be a power of two ≥ 2n (${2 * N})`);

  const enables: string[] = [];
  if (realMatrix) enables.push('diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);');
  if (isMatrix && f16) enables.push('enable f16;');
  if (v.subgroupSort || realMatrix) enables.push('enable subgroups;');
  if (realMatrix) enables.push('enable chromium_experimental_subgroup_matrix;');

  // ---- storage bindings and loaders ---------------------------------------------------------
  // Element e (of q or k) is read through loadQ*/loadK* helpers. Matrix paths read 8 halves
  // (f16) or 4 floats (f32) at a time; the scalar path 4 at a time (vec4) or 1.
  let storage: string;
  let loaders: string;
  if (isMatrix) {
    if (f16) {
      storage = `@group(0) @binding(1) var<storage, read> qbuf: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> kbuf: array<vec4<u32>>;`;
      loaders = `
alias ET = f16;
alias Chunk = vec4<u32>;
const CHUNK = 8u; // elements per load
fn loadQc(e: u32) -> Chunk { return qbuf[e >> 3u]; }
fn loadKc(e: u32) -> Chunk { return kbuf[e >> 3u]; }
`;
    } else {
      storage = `@group(0) @binding(1) var<storage, read> qbuf: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kbuf: array<vec4<f32>>;`;
      loaders = `
alias ET = f32;
alias Chunk = vec4<f32>;
const CHUNK = 4u;
fn loadQc(e: u32) -> Chunk { return qbuf[e >> 2u]; }
fn loadKc(e: u32) -> Chunk { return kbuf[e >> 2u]; }
`;
    }
  } else if (v.vec4) {
    if (f16) {
      storage = `@group(0) @binding(1) var<storage, read> qbuf: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> kbuf: array<vec2<u32>>;`;
      loaders = `
fn loadQ4(e: u32) -> vec4<f32> { let w = qbuf[e >> 2u]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
fn loadK4(e: u32) -> vec4<f32> { let w = kbuf[e >> 2u]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }
`;
    } else {
      storage = `@group(0) @binding(1) var<storage, read> qbuf: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kbuf: array<vec4<f32>>;`;
      loaders = `
fn loadQ4(e: u32) -> vec4<f32> { return qbuf[e >> 2u]; }
fn loadK4(e: u32) -> vec4<f32> { return kbuf[e >> 2u]; }
`;
    }
  } else if (f16) {
    storage = `@group(0) @binding(1) var<storage, read> qbuf: array<u32>;
@group(0) @binding(2) var<storage, read> kbuf: array<u32>;`;
    loaders = `
fn loadQ1(e: u32) -> f32 { return unpack2x16float(qbuf[e >> 1u])[e & 1u]; }
fn loadK1(e: u32) -> f32 { return unpack2x16float(kbuf[e >> 1u])[e & 1u]; }
`;
  } else {
    storage = `@group(0) @binding(1) var<storage, read> qbuf: array<f32>;
@group(0) @binding(2) var<storage, read> kbuf: array<f32>;`;
    loaders = `
fn loadQ1(e: u32) -> f32 { return qbuf[e]; }
fn loadK1(e: u32) -> f32 { return kbuf[e]; }
`;
  }

  const params = `struct Params {\n${PARAM_FIELDS.map((f) => `  ${f}: u32,\n`).join('')}}`;

  // ---- query tile and scoring ---------------------------------------------------------------
  let qDecl: string;
  let loadQ: string;
  let score: string;
  if (!isMatrix) {
    const W = v.vec4 ? 4 : 1;
    const DW = D / W;
    const RB = v.rowBlock;
    const QT = v.vec4 ? 'vec4<f32>' : 'f32';
    qDecl = `const DW = ${DW}u; // q/k words (of ${W} elements) per row
var<workgroup> qs: array<${QT}, ${ROWS * DW}>;`;
    loadQ = `
// Loads rows [rowStart, rowStart + rc) of head h's strided queries of this block; pads with 0.
fn loadQueries(qBase: u32, rc: u32, tid: u32) {
  for (var e = tid; e < ${ROWS * DW}u; e += WG) {
    let r = e / DW;
    let c = e % DW;
    var x = ${QT}(0.0);
    if (r < rc) { x = ${v.vec4 ? 'loadQ4' : 'loadQ1'}(qBase + r * params.bsq * params.qsT + c * ${W}u); }
    qs[e] = x;
  }
}`;
    const mul = (i: number) => (v.vec4 ? `qs[(r0 + ${i}u) * DW + c] * kv` : `qs[(r0 + ${i}u) * DW + c] * kv`);
    let inner: string;
    let finish: string;
    if (v.accurate) {
      // Error-free transformations: p + pe = a·b exactly (fma), s + se = hi + p exactly (TwoSum).
      const comps = v.vec4 ? ['x', 'y', 'z', 'w'] : [''];
      inner = unrolled(RB, (i) => {
        let s = `      { let pr = ${mul(i)};\n`;
        const qv = `qs[(r0 + ${i}u) * DW + c]`;
        for (const cc of comps) {
          const a = cc ? `${qv}.${cc}` : qv;
          const b = cc ? `kv.${cc}` : 'kv';
          const p = cc ? `pr.${cc}` : 'pr';
          s += `        { let p = ${p}; let pe = fma(${a}, ${b}, -p); let s = h${i} + p; let bb = s - h${i}; l${i} += pe + ((h${i} - (s - bb)) + (p - bb)); h${i} = s; }\n`;
        }
        return s + '      }\n';
      });
      finish = unrolled(RB, (i) => `    if (r0 + ${i}u < rc && t <= posBase + (r0 + ${i}u) * params.bsq) { best = max(best, h${i} + l${i}); any = true; }\n`);
    } else {
      inner = unrolled(RB, (i) => `      a${i} += ${v.vec4 ? `dot(qs[(r0 + ${i}u) * DW + c], kv)` : `qs[(r0 + ${i}u) * DW + c] * kv`};\n`);
      finish = unrolled(RB, (i) => `    if (r0 + ${i}u < rc && t <= posBase + (r0 + ${i}u) * params.bsq) { best = max(best, a${i}); any = true; }\n`);
    }
    const decl = v.accurate
      ? unrolled(RB, (i) => `    var h${i} = 0.0f; var l${i} = 0.0f;\n`)
      : unrolled(RB, (i) => `    var a${i} = 0.0f;\n`);
    score = `
// Scores this chunk's rows against every listed candidate (one thread per candidate key).
fn scoreChunk(count: u32, kBase: u32, posBase: u32, rc: u32, rs: u32, re: u32, tid: u32) {
  let kb = params.keysPerBlock;
  for (var slot = tid; slot < count * kb; slot += WG) {
    let ci = list[slot / kb];
    let u = slot % kb;
    let a = cStart[ci];
    let rep = select(a + ((cEnd[ci] - a) >> 1u), a, params.repFirst != 0u);
    let t0 = rs + rep * params.bk;
    let t = t0 + u * params.bsk;
    if (t >= min(t0 + params.bk, re)) { continue; }
    let kRow = kBase + t * params.ksT;
    var best = LOWEST;
    var any = false;
    // (a uniform bound, not the constant DW: lavapipe's LLVM takes minutes to compile the
    // fully unrolled loop)
    let dw = params.headDim / ${W}u;
    for (var r0 = 0u; r0 < rc; r0 += ${RB}u) {
${decl}      for (var c = 0u; c < dw; c++) {
        let kv = ${v.vec4 ? 'loadK4' : 'loadK1'}(kRow + c * ${W}u);
${inner}      }
${finish}    }
    if (any) { atomicMax(&acc[ci], enc(best)); }
  }
}`;
  } else {
    const m = v.matrix!;
    const QS = D + MATRIX_ROW_PAD;
    const MT = ROWS / m.M; // row tiles
    const NS = m.subgroups;
    const ET = f16 ? 'f16' : 'f32';
    const CH = f16 ? 8 : 4; // elements per load
    const chunksPerKey = D / CH;
    const gatherPerLane = Math.ceil(chunksPerKey / (m.subgroupSize / m.N));
    qDecl = `const QS = ${QS}u; // row stride (elements) of query and key tiles in workgroup memory
const MT = ${MT}u;
const SGS = ${m.subgroupSize}u;
const NSG = ${NS}u;
const TN = ${m.N}u;
const TM = ${m.M}u;
const TK = ${m.K}u;
var<workgroup> qh: array<${ET}, ${ROWS * QS}>;
var<workgroup> stage: array<${ET}, ${NS * m.N * QS}>;
var<workgroup> res: array<f32, ${NS * ROWS * m.N}>;`;
    const writeChunk = (arr: string, off: string, val: string) =>
      f16
        ? `{ let o = ${off}; let wv = ${val};
      let h0 = bitcast<vec2<f16>>(wv.x); let h1 = bitcast<vec2<f16>>(wv.y); let h2 = bitcast<vec2<f16>>(wv.z); let h3 = bitcast<vec2<f16>>(wv.w);
      ${arr}[o] = h0.x; ${arr}[o + 1u] = h0.y; ${arr}[o + 2u] = h1.x; ${arr}[o + 3u] = h1.y;
      ${arr}[o + 4u] = h2.x; ${arr}[o + 5u] = h2.y; ${arr}[o + 6u] = h3.x; ${arr}[o + 7u] = h3.y; }`
        : `{ let o = ${off}; let wv = ${val}; ${arr}[o] = wv.x; ${arr}[o + 1u] = wv.y; ${arr}[o + 2u] = wv.z; ${arr}[o + 3u] = wv.w; }`;
    loadQ = `
fn loadQueries(qBase: u32, rc: u32, tid: u32) {
  for (var e = tid; e < ${ROWS * chunksPerKey}u; e += WG) {
    let r = e / ${chunksPerKey}u;
    let c = e % ${chunksPerKey}u;
    var w = Chunk();
    if (r < rc) { w = loadQc(qBase + r * params.bsq * params.qsT + c * CHUNK); }
    ${writeChunk('qh', `r * QS + c * CHUNK`, 'w')}
  }
}`;
    // Gather: lane l of a subgroup loads key column l % TN of the tile, chunks l / TN,
    // l / TN + SGS / TN, … (16 lanes read 16 rows at the same offset: full 32-byte sectors).
    const parts = m.subgroupSize / m.N;
    const gatherDecl = unrolled(gatherPerLane, (i) => `  var g${i} = Chunk();\n`);
    const gatherLoad = (tileExpr: string) =>
      `    {
      let kr = keyRow(${tileExpr} * TN + lane % TN, count, kBase, rs, re);
${unrolled(gatherPerLane, (i) => `      g${i} = Chunk();\n`)}      if (kr != NO_KEY) {
${unrolled(gatherPerLane, (i) => `        { let ch = lane / TN + ${i * parts}u; if (ch < ${chunksPerKey}u) { g${i} = loadKc(kr + ch * CHUNK); } }\n`)}      }
    }\n`;
    const gatherStore = unrolled(
      gatherPerLane,
      (i) => `    { let ch = lane / TN + ${i * parts}u; if (ch < ${chunksPerKey}u) ${writeChunk('stage', `sb + (lane % TN) * QS + ch * CHUNK`, `g${i}`)} }\n`,
    );
    const KS = D / m.K; // k-steps
    const qRegs = realMatrix && (m.qRegisters ?? true);
    const lmType = `subgroup_matrix_left<ET, TK, TM>`;
    const lmAt = (mt: number, kk: number) => `subgroupMatrixLoad<${lmType}, row_major>(&qh, ${mt * m.M}u * QS + ${kk * m.K}u, QS)`;
    const qFrags = qRegs
      ? unrolled(MT, (mt) => unrolled(KS, (kk) => `  let lq${mt}_${kk} = ${lmAt(mt, kk)};\n`))
      : '';
    const mma = realMatrix
      ? `    // rows × TN scores of this tile: Σ over k-steps of (query tile) × (keys)ᵀ
${unrolled(MT, (mt) => `    var acc${mt} = subgroup_matrix_result<f32, TN, TM>();\n`)}${unrolled(
          KS,
          (kk) =>
            `    { let rm = subgroupMatrixLoad<subgroup_matrix_right<ET, TN, TK>, col_major>(&stage, sb + ${kk * m.K}u, QS);\n` +
            unrolled(MT, (mt) => `      acc${mt} = subgroupMatrixMultiplyAccumulate(${qRegs ? `lq${mt}_${kk}` : lmAt(mt, kk)}, rm, acc${mt});\n`) +
            '    }\n',
        )}${unrolled(MT, (mt) => `    subgroupMatrixStore<row_major>(&res, rb + ${mt * m.M * m.N}u, acc${mt}, TN);\n`)}`
      : `    // Emulation of the subgroup-matrix product: res[r][c] = Σ_d qh[r][d] · stage[c][d].
    for (var e = lane; e < ${ROWS * m.N}u; e += SGS) {
      let r = e / TN;
      let c = e % TN;
      var s = 0.0f;
      for (var dd = 0u; dd < params.headDim; dd++) { s += f32(qh[r * QS + dd]) * f32(stage[sb + c * QS + dd]); }
      res[rb + r * TN + c] = s;
    }`;
    const rowParts = m.subgroupSize / m.N;
    score = `
const NO_KEY = 0xffffffffu;
// Key-row element offset of key slot \`slot\` (candidate list[slot / kb], key slot % kb), or NO_KEY.
fn keyRow(slot: u32, count: u32, kBase: u32, rs: u32, re: u32) -> u32 {
  let kb = params.keysPerBlock;
  if (slot >= count * kb) { return NO_KEY; }
  let ci = list[slot / kb];
  let a = cStart[ci];
  let rep = select(a + ((cEnd[ci] - a) >> 1u), a, params.repFirst != 0u);
  let t0 = rs + rep * params.bk;
  let t = t0 + (slot % kb) * params.bsk;
  if (t >= min(t0 + params.bk, re)) { return NO_KEY; }
  return kBase + t * params.ksT;
}

fn keyPos(slot: u32, rs: u32) -> u32 {
  let kb = params.keysPerBlock;
  let ci = list[slot / kb];
  let a = cStart[ci];
  let rep = select(a + ((cEnd[ci] - a) >> 1u), a, params.repFirst != 0u);
  return rs + rep * params.bk + (slot % kb) * params.bsk;
}

// Scores this chunk's rows against every listed candidate, N key slots per subgroup tile.
// Every invocation runs the same number of iterations (barriers inside).
fn scoreChunk(count: u32, kBase: u32, posBase: u32, rc: u32, rs: u32, re: u32, sg: u32, lane: u32) {
  let kb = params.keysPerBlock;
  let tiles = (count * kb + TN - 1u) / TN;
  let iters = (tiles + NSG - 1u) / NSG;
  let sb = sg * TN * QS;
  let rb = sg * ${ROWS}u * TN;
${qFrags}${gatherDecl}  if (iters > 0u) {
${gatherLoad('sg')}  }
  for (var it = 0u; it < iters; it++) {
    let tile = it * NSG + sg;
${gatherStore}    workgroupBarrier();
    // prefetch the next tile's keys while this one is multiplied
    if (it + 1u < iters) {
${gatherLoad('(tile + NSG)')}    }
${mma}
    workgroupBarrier();
    // column maxima: lane → key column lane % TN, rows lane / TN, + ${rowParts}, …
    {
      let c = lane % TN;
      let slot = tile * TN + c;
      let kr = keyRow(slot, count, kBase, rs, re);
      if (kr != NO_KEY) {
        let t = keyPos(slot, rs);
        var best = LOWEST;
        var any = false;
        for (var r = lane / TN; r < rc; r += ${rowParts}u) {
          if (t <= posBase + r * params.bsq) { best = max(best, res[rb + r * TN + c]); any = true; }
        }
        if (any) { atomicMax(&acc[list[slot / kb]], enc(best)); }
      }
    }
  }
}`;
  }

  // ---- sort -------------------------------------------------------------------------------
  // Entries better-first: key desc, then start asc. Stage (kk, j) compares lo = 2p − (p & (j−1))
  // with hi = lo + j; the pair is ordered best-first when (lo & kk) == 0, worst-first otherwise.
  const sort = v.subgroupSort ? registerSort(P, WG, v.subgroupSort) : `
fn better(ka: u32, sa: u32, kb: u32, sb: u32) -> bool { return ka > kb || (ka == kb && sa < sb); }

fn sortCandidates(tid: u32) {
  for (var kk = 2u; kk <= P; kk <<= 1u) {
    for (var j = kk >> 1u; j > 0u; j >>= 1u) {
      for (var p = tid; p < P / 2u; p += WG) {
        let lo = 2u * p - (p & (j - 1u));
        let hi = lo + j;
        let kl = cKey[lo];
        let kh = cKey[hi];
        let sl = cStart[lo];
        let sh = cStart[hi];
        if (better(kh, sh, kl, sl) == ((lo & kk) == 0u)) {
          cKey[lo] = kh; cKey[hi] = kl;
          cStart[lo] = sh; cStart[hi] = sl;
          let el = cEnd[lo]; cEnd[lo] = cEnd[hi]; cEnd[hi] = el;
        }
      }
      workgroupBarrier();
    }
  }
}`;

  // ---- main -------------------------------------------------------------------------------
  const nodeRegs = unrolled(NPT, (i) => `  var na${i} = 0u; var ne${i} = 0u; var nk${i} = 0u;\n`);
  const readNodes = unrolled(
    NPT,
    (i) => `    { let i = tid + ${i * WG}u; if (i < N) { na${i} = cStart[i]; ne${i} = cEnd[i]; nk${i} = cKey[i]; if (ne${i} - na${i} > 1u) { split = true; } } }\n`,
  );
  // Node i → candidate slots 2i, 2i+1. Slots that need a score are appended to \`list\`: with
  // subgroups, one atomicAdd per subgroup (positions by subgroupExclusiveAdd), else one per slot.
  const aggregate = v.subgroupSort !== 0;
  const writeCands =
    unrolled(
      NPT,
      (i) => `    var cnt${i} = 0u;
    { let i = tid + ${i * WG}u; if (i < N) {
      let a = na${i}; let e = ne${i};
      if (e - a > 1u) {
        let mid = a + ((e - a + 1u) >> 1u);
        cStart[2u * i] = a; cEnd[2u * i] = mid;
        cStart[2u * i + 1u] = mid; cEnd[2u * i + 1u] = e;
        atomicStore(&acc[2u * i], ENC_NEG_INF);
        atomicStore(&acc[2u * i + 1u], ENC_NEG_INF);
        cnt${i} = 2u;
      } else {
        cStart[2u * i] = a; cEnd[2u * i] = e; cKey[2u * i] = nk${i};
        if (nk${i} == UNSCORED) {
          atomicStore(&acc[2u * i], ENC_NEG_INF);
          cnt${i} = 1u;
        }
        cKey[2u * i + 1u] = 0u; cStart[2u * i + 1u] = PAD; cEnd[2u * i + 1u] = PAD;
      }
    } }\n`,
    ) +
    (aggregate
      ? `    let mine = ${unrolled(NPT, (i) => `${i ? ' + ' : ''}cnt${i}`)};
    let before = subgroupExclusiveAdd(mine);
    let total = subgroupAdd(mine);
    var base = 0u;
    if (sgl == 0u) { base = atomicAdd(&listCount, total); }
    var pos = subgroupBroadcast(base, 0u) + before;\n`
      : `    var pos = atomicAdd(&listCount, ${unrolled(NPT, (i) => `${i ? ' + ' : ''}cnt${i}`)});\n`) +
    unrolled(
      NPT,
      (i) => `    { let i = tid + ${i * WG}u;
      if (cnt${i} >= 1u) { list[pos] = 2u * i; }
      if (cnt${i} == 2u) { list[pos + 1u] = 2u * i + 1u; }
      pos += cnt${i}; }\n`,
    );

  const builtins = [
    '@builtin(workgroup_id) wid: vec3<u32>',
    '@builtin(local_invocation_index) tid: u32',
  ];
  if (realMatrix || v.subgroupSort) builtins.push('@builtin(subgroup_id) sgid: u32', '@builtin(subgroup_invocation_id) sgl: u32');
  const sgLane = realMatrix ? 'let sg = sgid; let lane = sgl;' : isMatrix ? `let sg = tid / ${v.matrix!.subgroupSize}u; let lane = tid % ${v.matrix!.subgroupSize}u;` : '';
  const scoreCall = isMatrix ? 'scoreChunk(count, kBase, posBase, rc, rs, re, sg, lane);' : 'scoreChunk(count, kBase, posBase, rc, rs, re, tid);';

  return `// hipattn: HiP mask estimation (${v.path}, ${v.dtype}${v.accurate ? ', compensated dots' : ''}), generated
${enables.join('\n')}

${params}
@group(0) @binding(0) var<uniform> params: Params;
${storage}
@group(0) @binding(3) var<storage, read_write> outMask: array<i32>;

const WG = ${WG}u;
const N = ${N}u;
const P = ${P}u;
const ROWS = ${ROWS}u;
const UNSCORED = 0xffffffffu;
const PAD = 0xffffffffu;
const ENC_NEG_INF = 0x007fffffu; // enc(-inf)
const LOWEST = -0x1.fffffep+127f; // start of a max (scores of finite inputs never go below)

var<workgroup> cKey: array<u32, ${P}>;
var<workgroup> cStart: array<u32, ${P}>;
var<workgroup> cEnd: array<u32, ${P}>;
var<workgroup> acc: array<atomic<u32>, ${2 * N}>;
var<workgroup> list: array<u32, ${2 * N}>;
var<workgroup> listCount: atomic<u32>;
var<workgroup> splitFlag: atomic<u32>;
var<workgroup> uShared: u32;
${qDecl}
${loaders}
// Order-preserving encoding of an f32 score as u32 (−0 counts as +0, as in a float compare).
fn enc(f: f32) -> u32 {
  let b = bitcast<u32>(select(f, 0.0f, f == 0.0f));
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
${loadQ}
${score}
${sort}

@compute @workgroup_size(${WG})
fn main(${builtins.join(', ')}) {
  ${sgLane}
  let lin = wid.y * params.gx + wid.x;
  if (lin >= params.total) { return; }
  // heaviest (latest) query blocks first
  let qb = params.qb0 + (params.nQB - 1u - lin % params.nQB);
  let rest = lin / params.nQB;
  let g = params.g0 + rest % params.nG;
  let b = params.b0 + rest / params.nG;
  let G = params.groupSize;
  let h0 = g * G;
  let qStart = qb * params.bq;
  let qEnd = min(qStart + params.bq, params.queryLength);
  let p1 = params.queryOffset + qEnd; // last position + 1
  let rs = params.sink;
  var re = rs;
  if (p1 > params.window) { re = max(rs, p1 - params.window); }
  let nb = (re - rs + params.bk - 1u) / params.bk;
  let headStride = params.numQueryBlocks * N;
  let outBase = params.outOff + ((b * params.heads + h0) * params.numQueryBlocks + qb) * N;

  if (nb <= N) {
    // every block of R is selected (none when R is empty)
    for (var j = tid; j < N; j += WG) {
      let val = select(-1, i32(rs + j * params.bk), j < nb);
      for (var hh = 0u; hh < G; hh++) { outMask[outBase + hh * headStride + j] = val; }
    }
    return;
  }

  for (var i = tid; i < N; i += WG) {
    cStart[i] = (i * nb) / N;
    cEnd[i] = ((i + 1u) * nb) / N;
    cKey[i] = UNSCORED;
  }
  if (tid == 0u) { atomicStore(&splitFlag, 0u); }

  let rowsPerHead = (qEnd - qStart + params.bsq - 1u) / params.bsq;
  let chunksPerHead = (rowsPerHead + ROWS - 1u) / ROWS;
  let numChunks = G * chunksPerHead;
  let heads_per_kv = params.heads / params.kvHeads;
  if (numChunks == 1u) {
    loadQueries(params.qOff + b * params.qsB + h0 * params.qsH + qStart * params.qsT, rowsPerHead, tid);
  }
${nodeRegs}
  var round = 1u;
  loop {
    workgroupBarrier();
    var split = false;
${readNodes}    if (split) { atomicMax(&splitFlag, round); }
    if (tid == 0u) { atomicStore(&listCount, 0u); }
    workgroupBarrier();
    if (tid == 0u) { uShared = atomicLoad(&splitFlag); }
    if (workgroupUniformLoad(&uShared) != round) { break; }

${writeCands}    for (var s = ${2 * N}u + tid; s < P; s += WG) { cKey[s] = 0u; cStart[s] = PAD; cEnd[s] = PAD; }
    workgroupBarrier();
    if (tid == 0u) { uShared = atomicLoad(&listCount); }
    let count = workgroupUniformLoad(&uShared);

    for (var ch = 0u; ch < numChunks; ch++) {
      let hh = ch / chunksPerHead;
      let rowStart = (ch % chunksPerHead) * ROWS;
      let rc = min(ROWS, rowsPerHead - rowStart);
      let h = h0 + hh;
      if (numChunks > 1u) {
        workgroupBarrier();
        loadQueries(params.qOff + b * params.qsB + h * params.qsH + (qStart + rowStart * params.bsq) * params.qsT, rc, tid);
        workgroupBarrier();
      }
      let kBase = params.kOff + b * params.ksB + (h / heads_per_kv) * params.ksH;
      let posBase = params.queryOffset + qStart + rowStart * params.bsq;
      ${scoreCall}
    }
    workgroupBarrier();
    for (var l = tid; l < count; l += WG) { let s = list[l]; cKey[s] = atomicLoad(&acc[s]); }
    workgroupBarrier();
    sortCandidates(${v.subgroupSort ? `sgid * ${v.subgroupSort}u + sgl` : 'tid'});
    round++;
  }

  // the n single-block nodes, ascending by block index (rank = number of smaller starts)
  for (var i = tid; i < N; i += WG) {
    let s = cStart[i];
    var rank = 0u;
    for (var j = 0u; j < N; j++) { rank += select(0u, 1u, cStart[j] < s); }
    let val = i32(rs + s * params.bk);
    for (var hh = 0u; hh < G; hh++) { outMask[outBase + hh * headStride + rank] = val; }
  }
}
`;
}

/**
 * Bitonic sort of the P entries with E = max(1, P / WG) entries per invocation held in
 * registers: invocation L holds entries L·E … L·E + E − 1 (L = subgroup_id · SG + lane, a
 * bijection onto [0, WG) for full subgroups of the fixed size SG). A stage with partner
 * distance j < E swaps registers, E ≤ j < E·SG exchanges with lane ^ (j / E) by
 * subgroupShuffleXor, and only j ≥ E·SG goes through workgroup memory (two barriers). Entries
 * with index ≥ P (when P < WG) are padding whose partners are padding too.
 */
function registerSort(P: number, WG: number, SG: number): string {
  const E = Math.max(1, P / WG);
  const idx = Array.from({ length: E }, (_, i) => i);
  const regStages: string[] = [];
  for (let jj = 1; jj < E; jj *= 2) {
    let body = '';
    for (const a of idx) {
      if ((a & jj) !== 0) continue;
      const b = a | jj;
      body += `        { let desc = ((L * ${E}u + ${a}u) & kk) == 0u;
          if (better(k${b}, s${b}, k${a}, s${a}) == desc) { let tk = k${a}; k${a} = k${b}; k${b} = tk; let ts = s${a}; s${a} = s${b}; s${b} = ts; let tx = x${a}; x${a} = x${b}; x${b} = tx; } }\n`;
    }
    regStages.push(`      ${regStages.length ? 'else ' : ''}if (j == ${jj}u) {\n${body}      }\n`);
  }
  return `
fn better(ka: u32, sa: u32, kb: u32, sb: u32) -> bool { return ka > kb || (ka == kb && sa < sb); }

fn sortCandidates(L: u32) {
${idx.map((i) => `  var k${i} = 0u; var s${i} = PAD; var x${i} = PAD;\n  if (L * ${E}u + ${i}u < P) { k${i} = cKey[L * ${E}u + ${i}u]; s${i} = cStart[L * ${E}u + ${i}u]; x${i} = cEnd[L * ${E}u + ${i}u]; }\n`).join('')}  for (var kk = 2u; kk <= P; kk <<= 1u) {
    for (var j = kk >> 1u; j > 0u; j >>= 1u) {
      if (j >= ${E * SG}u) {
        // partners in other subgroups: through workgroup memory
${idx.map((i) => `        if (L * ${E}u + ${i}u < P) { cKey[L * ${E}u + ${i}u] = k${i}; cStart[L * ${E}u + ${i}u] = s${i}; cEnd[L * ${E}u + ${i}u] = x${i}; }\n`).join('')}        workgroupBarrier();
${idx
  .map(
    (i) => `        { let e = L * ${E}u + ${i}u; let f = e ^ j;
          if (f < P) { let pk = cKey[f]; let ps = cStart[f]; let px = cEnd[f];
            if (better(pk, ps, k${i}, s${i}) == (((e & j) == 0u) == ((e & kk) == 0u))) { k${i} = pk; s${i} = ps; x${i} = px; } } }\n`,
  )
  .join('')}        workgroupBarrier();
      } else if (j >= ${E}u) {
        // partner in lane ^ (j / E) of this subgroup
        let m = j / ${E}u;
${idx
  .map(
    (i) => `        { let e = L * ${E}u + ${i}u;
          let pk = subgroupShuffleXor(k${i}, m); let ps = subgroupShuffleXor(s${i}, m); let px = subgroupShuffleXor(x${i}, m);
          if (better(pk, ps, k${i}, s${i}) == (((e & j) == 0u) == ((e & kk) == 0u))) { k${i} = pk; s${i} = ps; x${i} = px; } }\n`,
  )
  .join('')}      } else {
        // partner in this invocation's registers
${regStages.join('')}      }
    }
  }
${idx.map((i) => `  if (L * ${E}u + ${i}u < P) { cKey[L * ${E}u + ${i}u] = k${i}; cStart[L * ${E}u + ${i}u] = s${i}; cEnd[L * ${E}u + ${i}u] = x${i}; }\n`).join('')}}`;
}

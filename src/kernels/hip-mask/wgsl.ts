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
 *  3. scoring: every listed candidate's representative blocks (SAMPLES of them at most, see
 *     sampleOf) are scored as the max over the strided queries × strided keys (clipped to R,
 *     causal) of q·k, accumulated with atomicMax
 *     on an order-preserving u32 encoding of the f32 score. Two implementations:
 *     - 'scalar': one thread per (candidate, key of the block), all rows of the chunk in
 *       registers (optionally with compensated, error-free-transformation dot products, so the
 *       f32 result is the correctly rounded exact dot in practice: masks then equal the float64
 *       CPU reference's);
 *     - 'matrix': subgroup matrices (tensor cores). Each subgroup gathers 16 candidate keys into
 *       workgroup memory (prefetched into registers one tile ahead), multiplies the query tile
 *       (rows × d) by them with subgroupMatrixMultiplyAccumulate, stores the rows × 16 scores,
 *       and reduces columns with atomicMax ('classic'; the 'lean' kernel — fragments kept for
 *       the workgroup's lifetime, subgroup pairs per tile, shuffle-reduced maxima — is
 *       described at leanMatrixCode). 'matrix-emulated' is the same data flow with the matrix
 *       builtins (and, in the lean kernel, subgroup shuffles) replaced by scalar code, so it
 *       runs (and is tested) on adapters without subgroup matrices.
 *  4. bitonic sort of the P ≥ 2n (key, start, end) entries, best first: (score desc, block
 *     index asc), exactly the CPU's compareCandidates; the first n are the new nodes (when
 *     P = 2n the last merge stops after its first stage: the n best are then in the first half,
 *     in bitonic rather than sorted order, which is all the next round needs).
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
  matrix?: MatrixTiling;
  /**
   * Keys scored per representative block, ceil(blockSizeK / blockStrideK), as a shader constant
   * (the 'lean' matrix kernel; the others read it from the uniforms).
   */
  keysPerBlock?: number;
  /**
   * Parent-score reuse (default true): a half whose representative block is its parent node's
   * (center: a 2- or 3-block node's halves; 'first': every left half) takes the parent's score
   * instead of being scored again. The score is the same function of the same block and rows,
   * so masks are unchanged; the work drops by ~11 % at 128k with the defaults (the rounds that
   * split 2- and 3-block nodes) and by ~43 % with representative 'first'.
   */
  reuse?: boolean;
  /**
   * Representatives per scored half (HipOptions.representativeBlocks, default 1): the half's
   * score is the max over them (tree-search.ts sampleBlock). A shader constant; each round
   * lists min(this, the round's largest half) key-block slots per candidate. Parent-score
   * reuse needs 1.
   */
  representativeBlocks?: number;
}

/**
 * Matrix-path tiling. 'classic': every subgroup gathers 16 keys per step into its own staging
 * tile and multiplies all query rows by them (two workgroup barriers per step). 'lean': the same
 * step structure with less work per key — query fragments loaded once per workgroup into
 * registers (the query tile in workgroup memory is aliased with the key staging), key slot
 * arithmetic with a constant keys-per-block, column maxima combined with subgroup shuffles (one
 * atomic per candidate), row/causal checks only where a chunk needs them — plus `rowSplit`
 * (subgroups sharing one 16-key tile, each multiplying its share of the row tiles: more
 * subgroups for the same workgroup memory) and `prefetch` (gathers in flight: tiles ahead).
 */
export interface MatrixTiling {
  M: number;
  N: number;
  K: number;
  subgroupSize: number;
  subgroups: number;
  qRegisters?: boolean;
  kernel?: 'classic' | 'lean';
  /** Lean: subgroups per 16-key tile (1 or 2; each owns rowsCap / M / rowSplit row tiles). */
  rowSplit?: number;
  /** Lean: tiles of gathered keys in flight in registers per subgroup (1 or 2). */
  prefetch?: number;
  /** Lean: rotate the words of a lane's gathered chunk when storing it (bank spread; default true). */
  rotate?: boolean;
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
  } else if (v.matrix?.kernel === 'lean') {
    const L = leanLayout(v);
    bytes += (L.stageLen + L.qhLen + L.qeLen) * L.eb + L.resLen * 4 + L.scratchLen * 4;
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
  let lean: LeanCode | null = null;
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
fn scoreChunk(count: u32, sr: u32, kBase: u32, posBase: u32, rc: u32, rs: u32, re: u32, tid: u32) {
  for (var slot = tid; slot < count * params.keysPerBlock * sr; slot += WG) {
    let kt = slotKey(slot, count, params.keysPerBlock, sr, rs, re);
    if (kt.x == NO_KEY) { continue; }
    let ci = kt.x;
    let t = kt.y;
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
  } else if (v.matrix!.kernel === 'lean') {
    const g = leanMatrixCode(v);
    qDecl = g.decl;
    loadQ = g.loadQ;
    score = g.helpers;
    lean = g;
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
      let kt = slotKey(${tileExpr} * TN + lane % TN, count, params.keysPerBlock, sr, rs, re);
${unrolled(gatherPerLane, (i) => `      g${i} = Chunk();\n`)}      if (kt.x != NO_KEY) {
        let kr = kBase + kt.y * params.ksT;
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
// Scores this chunk's rows against every listed candidate, N key slots per subgroup tile.
// Every invocation runs the same number of iterations (barriers inside).
fn scoreChunk(count: u32, sr: u32, kBase: u32, posBase: u32, rc: u32, rs: u32, re: u32, sg: u32, lane: u32) {
  let tiles = (count * params.keysPerBlock * sr + TN - 1u) / TN;
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
      let kt = slotKey(slot, count, params.keysPerBlock, sr, rs, re);
      if (kt.x != NO_KEY) {
        let t = kt.y;
        var best = LOWEST;
        var any = false;
        for (var r = lane / TN; r < rc; r += ${rowParts}u) {
          if (t <= posBase + r * params.bsq) { best = max(best, res[rb + r * TN + c]); any = true; }
        }
        if (any) { atomicMax(&acc[kt.x], enc(best)); }
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
    for (var j = kk >> 1u; j >= select(1u, LAST_J, kk == P); j >>= 1u) {
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
  const SAMPLES = v.representativeBlocks ?? 1;
  // (a half's score is its parent's only when both are scored by the same single block)
  const reuse = (v.reuse ?? true) && SAMPLES === 1;
  const writeCands =
    unrolled(
      NPT,
      (i) => `    var cnt${i} = 0u; var lo${i} = false; var hi${i} = false;
    { let i = tid + ${i * WG}u; if (i < N) {
      let a = na${i}; let e = ne${i};
      if (e - a > 1u) {
        let mid = a + ((e - a + 1u) >> 1u);
        cStart[2u * i] = a; cEnd[2u * i] = mid;
        cStart[2u * i + 1u] = mid; cEnd[2u * i + 1u] = e;
        lo${i} = true; hi${i} = true;${
          reuse
            ? `
        // a half represented by its parent's representative block keeps the parent's score
        if (nk${i} != UNSCORED) {
          let pr = sampleOf(a, e, 0u);
          if (sampleOf(a, mid, 0u) == pr) { cKey[2u * i] = nk${i}; lo${i} = false; }
          if (sampleOf(mid, e, 0u) == pr) { cKey[2u * i + 1u] = nk${i}; hi${i} = false; }
        }`
            : ''
        }
        if (lo${i}) { atomicStore(&acc[2u * i], ENC_NEG_INF); }
        if (hi${i}) { atomicStore(&acc[2u * i + 1u], ENC_NEG_INF); }
        cnt${i} = select(0u, 1u, lo${i}) + select(0u, 1u, hi${i});
      } else {
        cStart[2u * i] = a; cEnd[2u * i] = e; cKey[2u * i] = nk${i};
        if (nk${i} == UNSCORED) {
          atomicStore(&acc[2u * i], ENC_NEG_INF);
          cnt${i} = 1u; lo${i} = true;
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
      if (lo${i}) { list[pos] = 2u * i; }
      if (hi${i}) { list[pos + select(0u, 1u, lo${i})] = 2u * i + 1u; }
      pos += cnt${i}; }\n`,
    );

  const builtins = [
    '@builtin(workgroup_id) wid: vec3<u32>',
    '@builtin(local_invocation_index) tid: u32',
  ];
  if (realMatrix || v.subgroupSort) builtins.push('@builtin(subgroup_id) sgid: u32', '@builtin(subgroup_invocation_id) sgl: u32');
  const sgLane =
    (realMatrix ? 'let sg = sgid; let lane = sgl;' : isMatrix ? `let sg = tid / ${v.matrix!.subgroupSize}u; let lane = tid % ${v.matrix!.subgroupSize}u;` : '') +
    (lean ? `\n  let team = sg / RS; let rsub = sg % RS;\n${lean.fragDecl}` : '');
  const scoreCall = lean ? lean.inline : isMatrix ? 'scoreChunk(count, sr, kBase, posBase, rc, rs, re, sg, lane);' : 'scoreChunk(count, sr, kBase, posBase, rc, rs, re, tid);';
  const fragLoad = lean ? `\n    workgroupBarrier();\n${lean.fragLoad}` : '';

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
// Only the set of the n best matters (nodes are ranked by start at the end): when P = 2n, the
// final merge's first half-cleaner (j = P/2) already puts the n best of the bitonic sequence in
// the first half; its later stages only order them.
const LAST_J = ${P === 2 * N ? 'P / 2u' : '1u'};
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

const SAMPLES = ${SAMPLES}u; // representatives per scored half
const NO_BLOCK = 0xffffffffu;
const NO_KEY = 0xffffffffu;
// Representative i of the half [a, e) (tree-search.ts sampleBlock): the half cut into
// s = min(SAMPLES, e − a) equal parts, part i represented by its centre or first block;
// NO_BLOCK for i ≥ s. With SAMPLES = 1, i = 0: the centre block a + ⌊(e − a) / 2⌋ or a.
fn sampleOf(a: u32, e: u32, i: u32) -> u32 {
  let len = e - a;
  let s = min(SAMPLES, len);
  if (i >= s) { return NO_BLOCK; }
  return select(a + ((2u * i + 1u) * len) / (2u * s), a + (i * len) / s, params.repFirst != 0u);
}

// Key slot → (candidate slot, key position), or NO_KEY. Each of the \`count\` listed candidates has
// sr · kb slots: sr representatives (sampleOf) of kb strided keys each. NO_KEY past the list,
// past a short half's representatives, or where the key is clipped to R.
fn slotKey(slot: u32, count: u32, kb: u32, sr: u32, rs: u32, re: u32) -> vec2<u32> {
  let kc = kb * sr;
  if (slot >= count * kc) { return vec2<u32>(NO_KEY, 0u); }
  let ci = list[slot / kc];
  let j = slot % kc;
  let rep = sampleOf(cStart[ci], cEnd[ci], j / kb);
  if (rep == NO_BLOCK) { return vec2<u32>(NO_KEY, 0u); }
  let t0 = rs + rep * params.bk;
  let t = t0 + (j % kb) * params.bsk;
  if (t >= min(t0 + params.bk, re)) { return vec2<u32>(NO_KEY, 0u); }
  return vec2<u32>(ci, t);
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
  // strided scoring queries are counted back from the block's last query (which is always scored)
  let qFirst = qStart + (qEnd - qStart - 1u) % params.bsq;
  let p1 = params.queryOffset + qEnd; // last position + 1
  let rs = params.sink;
  var re = rs;
  if (p1 > params.window) { re = max(rs, p1 - params.window); }
  let nb = (re - rs + params.bk - 1u) / params.bk;
  let headStride = params.numQueryBlocks * N;
  let nodeMax = (nb + N - 1u) / N;
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
    loadQueries(params.qOff + b * params.qsB + h0 * params.qsH + qFirst * params.qsT, rowsPerHead, tid);${fragLoad}
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
    // nodes start ⌈nb / N⌉ blocks long at most and halve (rounding up) every round
    // key-block slots listed per candidate this round: min(SAMPLES, the round's largest half)
    let sr = min(SAMPLES, (nodeMax + (1u << round) - 1u) >> round);

    for (var ch = 0u; ch < numChunks; ch++) {
      let hh = ch / chunksPerHead;
      let rowStart = (ch % chunksPerHead) * ROWS;
      let rc = min(ROWS, rowsPerHead - rowStart);
      let h = h0 + hh;
      if (numChunks > 1u) {
        workgroupBarrier();
        loadQueries(params.qOff + b * params.qsB + h * params.qsH + (qFirst + rowStart * params.bsq) * params.qsT, rc, tid);
        workgroupBarrier();${lean ? `\n${lean.fragLoad}        workgroupBarrier();` : ''}
      }
      let kBase = params.kOff + b * params.ksB + (h / heads_per_kv) * params.ksH;
      let posBase = params.queryOffset + qFirst + rowStart * params.bsq;
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
    for (var j = kk >> 1u; j >= select(1u, LAST_J, kk == P); j >>= 1u) {
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

/** Workgroup-memory layout of the 'lean' matrix kernel (element counts). */
export function leanLayout(v: HipMaskVariant) {
  const m = v.matrix!;
  const emu = v.path === 'matrix-emulated';
  const eb = v.dtype === 'f16' ? 2 : 4;
  const QS = v.headDim + MATRIX_ROW_PAD;
  const RS = m.rowSplit ?? 1;
  const S = m.subgroups;
  const SG = m.subgroupSize;
  const TPS = S / RS; // 16-key tiles per step
  const MT = v.rowsCap / m.M;
  const MTS = MT / RS; // row tiles per subgroup
  const CPS = m.N / RS; // reduce: key columns per subgroup
  const LPC = SG / CPS; // reduce: lanes per column
  // result row stride: ≥ N, 16-byte multiple, and the LPC row groups of a reduce read start in
  // distinct CPS-wide bank ranges (conflict-free for 32 banks)
  const cps = m.N / RS;
  const groups = Math.min(SG / cps, 32 / cps);
  const conflictFree = (r: number) => {
    const starts = Array.from({ length: groups }, (_, g) => (g * r) % 32);
    return starts.every((x) => x % cps === 0) && new Set(starts).size === groups;
  };
  let RSTR = m.N;
  for (let r = m.N; r <= m.N + 32; r += 4) {
    if (conflictFree(r)) {
      RSTR = r;
      break;
    }
  }
  const stageLen = TPS * m.N * QS;
  const qAliased = v.rowsCap * QS <= stageLen;
  const problems: string[] = [];
  if (!Number.isInteger(TPS) || TPS < 1) problems.push(`rowSplit ${RS} must divide the ${S} subgroups`);
  if (!Number.isInteger(MTS) || MTS < 1) problems.push(`rowSplit ${RS} must divide the ${MT} row tiles`);
  if (!Number.isInteger(LPC) || LPC < 1 || v.rowsCap % LPC !== 0) problems.push(`subgroup size ${SG} / ${CPS} columns per subgroup must divide ${v.rowsCap} rows`);
  if ((RS * SG) % m.N !== 0) problems.push(`${RS * SG} lanes per tile must be a multiple of ${m.N}`);
  return {
    emu,
    eb,
    QS,
    RS,
    S,
    SG,
    TPS,
    MT,
    MTS,
    CPS,
    LPC,
    RSTR,
    stageLen,
    qAliased,
    qhLen: qAliased ? 0 : v.rowsCap * QS,
    /** emulated path: the query fragments' stand-in */
    qeLen: emu ? v.rowsCap * QS : 0,
    resLen: TPS * v.rowsCap * RSTR,
    scratchLen: emu ? S * SG : 0,
    problems,
  };
}

interface LeanCode {
  decl: string;
  loadQ: string;
  helpers: string;
  /** main-scope declarations (after sg / lane / team / rsub) */
  fragDecl: string;
  /** loads this subgroup's query fragments from the query tile (all invocations, uniform flow) */
  fragLoad: string;
  /** the scoring of one chunk, inline in main (count, kBase, posBase, rc, rs, re in scope) */
  inline: string;
}

/** 16-byte chunk `val` (8 halves or 4 floats) → `arr[off …]`. */
function writeChunkCode(f16: boolean, arr: string, off: string, val: string): string {
  return f16
    ? `{ let o = ${off}; let wv = ${val};
      let h0 = bitcast<vec2<f16>>(wv.x); let h1 = bitcast<vec2<f16>>(wv.y); let h2 = bitcast<vec2<f16>>(wv.z); let h3 = bitcast<vec2<f16>>(wv.w);
      ${arr}[o] = h0.x; ${arr}[o + 1u] = h0.y; ${arr}[o + 2u] = h1.x; ${arr}[o + 3u] = h1.y;
      ${arr}[o + 4u] = h2.x; ${arr}[o + 5u] = h2.y; ${arr}[o + 6u] = h3.x; ${arr}[o + 7u] = h3.y; }`
    : `{ let o = ${off}; let wv = ${val}; ${arr}[o] = wv.x; ${arr}[o + 1u] = wv.y; ${arr}[o + 2u] = wv.z; ${arr}[o + 3u] = wv.w; }`;
}

/**
 * The 'lean' tensor-core scoring (see MatrixTiling). Per step, team `sg / rowSplit` of
 * `rowSplit` subgroups owns one 16-key tile: its lanes store the gathered keys (prefetched
 * `prefetch` steps ahead) into the team's staging tile; barrier; each subgroup multiplies its
 * row tiles (fragments in registers) by the tile and stores rows × 16 scores; barrier; each
 * subgroup reduces 16 / rowSplit key columns over all rows, combines lanes of a column and keys
 * of a block with subgroup shuffles, and one lane per candidate does the atomicMax.
 */
function leanMatrixCode(v: HipMaskVariant): LeanCode {
  const m = v.matrix!;
  const L = leanLayout(v);
  if (L.problems.length) throw new Error(`hip-mask lean kernel: ${L.problems.join('; ')}`);
  const real = !L.emu;
  const f16 = v.dtype === 'f16';
  const D = v.headDim;
  const ROWS = v.rowsCap;
  const ET = f16 ? 'f16' : 'f32';
  const CH = f16 ? 8 : 4;
  const CPK = D / CH; // 16-byte chunks per key
  const PARTS = (L.RS * L.SG) / m.N; // lanes per key column in the gather
  const GPL = Math.ceil(CPK / PARTS); // chunks per lane
  const KS = D / m.K;
  const KB = v.keysPerBlock ?? 0;
  if (!(KB >= 1)) throw new Error('hip-mask lean kernel: keysPerBlock must be set');
  const DEPTH = Math.max(1, Math.min(2, m.prefetch ?? 1));
  const rotate = m.rotate ?? true;
  // keys of one block combined by shuffles when they always share a subgroup's columns
  const combineKB = (KB & (KB - 1)) === 0 && KB <= L.CPS && KB > 1;
  const QH = L.qAliased ? 'stage' : 'qh';
  const u = (x: number) => `${x}u`;

  const decl = `const QS = ${u(L.QS)}; // row stride (elements) of query and key tiles in workgroup memory
const SGS = ${u(L.SG)};
const NSG = ${u(L.S)};
const RS = ${u(L.RS)}; // subgroups per key tile
const TPS = ${u(L.TPS)}; // key tiles per step
const MTS = ${u(L.MTS)}; // row tiles per subgroup
const TN = ${u(m.N)};
const TM = ${u(m.M)};
const TK = ${u(m.K)};
const KB = ${u(KB)}; // keys per representative block
const CPS = ${u(L.CPS)}; // reduce: key columns per subgroup
const LPC = ${u(L.LPC)}; // reduce: lanes per column
const RSTR = ${u(L.RSTR)}; // row stride of the score tiles
const PARTS = ${u(PARTS)}; // gather: lanes per key
const CPK = ${u(CPK)}; // gather: 16-byte chunks per key
var<workgroup> stage: array<${ET}, ${L.stageLen}>;${L.qAliased ? ' // also the query tile, before the fragments are loaded' : ''}
${L.qhLen ? `var<workgroup> qh: array<${ET}, ${L.qhLen}>;\n` : ''}${L.qeLen ? `var<workgroup> qe: array<${ET}, ${L.qeLen}>; // emulation: the query fragments\n` : ''}var<workgroup> res: array<f32, ${L.resLen}>;
${L.scratchLen ? `var<workgroup> scratch: array<u32, ${L.scratchLen}>; // emulation: subgroup shuffles\n` : ''}`;

  const loadQ = `
fn loadQueries(qBase: u32, rc: u32, tid: u32) {
  for (var e = tid; e < ${ROWS * CPK}u; e += WG) {
    let r = e / CPK;
    let c = e % CPK;
    var w = Chunk();
    if (r < rc) { w = loadQc(qBase + r * params.bsq * params.qsT + c * CHUNK); }
    ${writeChunkCode(f16, QH, 'r * QS + c * CHUNK', 'w')}
  }
}`;

  const helpers = `
${
  real
    ? ''
    : `
// Emulation of subgroupShuffleXor within an emulated subgroup (uniform control flow only).
fn shuffleXor(x: u32, m: u32, tid: u32) -> u32 {
  scratch[tid] = x;
  workgroupBarrier();
  let y = scratch[tid ^ m];
  workgroupBarrier();
  return y;
}`
}`;
  const shfl = (x: string, mask: number) => (real ? `subgroupShuffleXor(${x}, ${mask}u)` : `shuffleXor(${x}, ${mask}u, tid)`);

  const lmType = `subgroup_matrix_left<ET, TK, TM>`;
  const fragDecl = real
    ? unrolled(L.MTS, (mt) => unrolled(KS, (kk) => `  var lq${mt}_${kk} = ${lmType}();\n`))
    : '';
  const fragLoad = real
    ? unrolled(
        L.MTS,
        (mt) =>
          unrolled(KS, (kk) => `    lq${mt}_${kk} = subgroupMatrixLoad<${lmType}, row_major>(&${QH}, (rsub * MTS + ${mt}u) * TM * QS + ${kk * m.K}u, QS);\n`),
      )
    : `    // (emulated fragments: team 0 copies its row tiles of the query tile)
    if (team == 0u) {
      for (var e = lane; e < MTS * TM * params.headDim; e += SGS) {
        let r = rsub * MTS * TM + e / params.headDim;
        let dd = e % params.headDim;
        qe[r * QS + dd] = ${QH}[r * QS + dd];
      }
    }\n`;

  const gDecl = unrolled(DEPTH, (x) => unrolled(GPL, (i) => `      var g${x}_${i} = Chunk();\n`));
  const cond = (i: number) => (CPK % PARTS === 0 ? '' : `if (gpart + ${i * PARTS}u < CPK) `);
  const gather = (x: number, step: string) => `        {
          let kt = slotKey(((${step}) * TPS + team) * TN + gcol, count, KB, sr, rs, re);
${unrolled(GPL, (i) => `          g${x}_${i} = Chunk();\n`)}          if (kt.x != NO_KEY) {
            let kr = kBase + kt.y * params.ksT;
${unrolled(GPL, (i) => `            ${cond(i)}{ g${x}_${i} = loadKc(kr + (gpart + ${i * PARTS}u) * CHUNK); }\n`)}          }
        }\n`;
  // A lane's 16-byte chunk is written as 2- or 4-byte elements; chunks start on 4-word
  // boundaries, so writing element j of every lane at once would use only 8 bank groups (4-way
  // conflicts). Lanes start at word `rot` of their chunk instead: the 4 lanes of a bank group
  // get distinct rotations.
  const store = (x: number) =>
    unrolled(
      GPL,
      (i) =>
        `        ${cond(i)}{ let o = sb + gcol * QS + (gpart + ${i * PARTS}u) * CHUNK; let wv = g${x}_${i};\n` +
        unrolled(4, (p) =>
          f16
            ? `          { let q = ${rotate ? `(${p}u + rot) & 3u` : `${p}u`}; let hh = bitcast<vec2<f16>>(wv[q]); stage[o + 2u * q] = hh.x; stage[o + 2u * q + 1u] = hh.y; }\n`
            : `          { let q = ${rotate ? `(${p}u + rot) & 3u` : `${p}u`}; stage[o + q] = wv[q]; }\n`,
        ) +
        '        }\n',
    );
  const mma = real
    ? `        // this subgroup's row tiles × the team's 16 keys: Σ over k-steps of (query tile) × (keys)ᵀ
${unrolled(L.MTS, (mt) => `        var acc${mt} = subgroup_matrix_result<f32, TN, TM>();\n`)}${unrolled(
        KS,
        (kk) =>
          `        { let rm = subgroupMatrixLoad<subgroup_matrix_right<ET, TN, TK>, col_major>(&stage, sb + ${kk * m.K}u, QS);\n` +
          unrolled(L.MTS, (mt) => `          acc${mt} = subgroupMatrixMultiplyAccumulate(lq${mt}_${kk}, rm, acc${mt});\n`) +
          '        }\n',
      )}${unrolled(L.MTS, (mt) => `        subgroupMatrixStore<row_major>(&res, rb + (rsub * MTS + ${mt}u) * TM * RSTR, acc${mt}, RSTR);\n`)}`
    : `        // emulated product: res[r][c] = Σ_d qe[r][d] · stage[c][d] for this subgroup's row tiles
        for (var e = lane; e < MTS * TM * TN; e += SGS) {
          let r = rsub * MTS * TM + e / TN;
          let c = e % TN;
          var s2 = 0.0f;
          for (var dd = 0u; dd < params.headDim; dd++) { s2 += f32(qe[r * QS + dd]) * f32(stage[sb + c * QS + dd]); }
          res[rb + r * RSTR + c] = s2;
        }\n`;
  const rowsPerLane = ROWS / L.LPC;
  let combine = '';
  for (let mk = L.CPS; mk < L.SG; mk *= 2) combine += `          e = max(e, ${shfl('e', mk)});\n`;
  if (combineKB) for (let mk = 1; mk < KB; mk *= 2) combine += `          e = max(e, ${shfl('e', mk)});\n`;
  const reduce = `        {
          // column maxima: lane → key column rsub·CPS + lane % CPS, rows lane / CPS + LPC·j
          let col = rsub * CPS + lane % CPS;
          let rg = lane / CPS;
          let kt = slotKey((stp * TPS + team) * TN + col, count, KB, sr, rs, re);
          var e = 0u; // enc(score) > 0 for every float
          if (kt.x != NO_KEY) {
            var best = LOWEST;
            if (fast) {
${unrolled(rowsPerLane, (j) => `              best = max(best, res[rb + (rg + ${j * L.LPC}u) * RSTR + col]);\n`)}              e = enc(best);
            } else {
              var any = false;
              for (var r = rg; r < rc; r += LPC) {
                if (kt.y <= posBase + r * params.bsq) { best = max(best, res[rb + r * RSTR + col]); any = true; }
              }
              if (any) { e = enc(best); }
            }
          }
          // lanes of one column${combineKB ? ', then the keys of one block' : ''}
${combine}          if (rg == 0u && e != 0u${combineKB ? ' && col % KB == 0u' : ''}) { atomicMax(&acc[kt.x], e); }
        }\n`;
  const stepBody = (x: number, stepExpr: string) => `      {
        let stp = ${stepExpr};
${store(x)}        workgroupBarrier();
        // gathers of a later step in flight while this one is multiplied
        if (stp + ${DEPTH}u < steps) {
${gather(x, `stp + ${DEPTH}u`)}        }
${mma}        workgroupBarrier();
${reduce}      }\n`;
  const inline = `{
      let nKeys = count * KB * sr;
      let steps = ((nKeys + TN - 1u) / TN + TPS - 1u) / TPS;
      // every row valid and every key before every query: no per-row checks
      let fast = rc == ROWS && re <= posBase + 1u;
      let gl = rsub * SGS + lane;
      let gcol = gl % TN; // gather: key column of the team's tile
      let gpart = gl / TN; // gather: first chunk
      // gather: first word stored. Chunks start on 4-word boundaries (8 bank groups of 4 lanes);
      // the lanes sharing a group differ in lane / 8 for 8- and 16-key tiles at this row stride.
      let rot = (lane >> 3u) & 3u;
      let sb = team * TN * QS;
      let rb = team * ROWS * RSTR;
${gDecl}${unrolled(DEPTH, (x) => `      if (${x}u < steps) {\n${gather(x, `${x}u`)}      }\n`)}      for (var s0 = 0u; s0 < steps; s0 += ${DEPTH}u) {
${stepBody(0, 's0')}${DEPTH === 2 ? `        if (s0 + 1u < steps) {\n${stepBody(1, 's0 + 1u')}        }\n` : ''}      }
    }`;
  return { decl, loadQ, helpers, fragDecl, fragLoad, inline };
}

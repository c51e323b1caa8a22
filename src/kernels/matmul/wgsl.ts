/**
 * WGSL for y = x·Wᵀ (+ bias) (+ y), W row-major [N, K] as Hugging Face stores linear weights.
 *
 *   y[yOffset + m·ldy + nOffset + n] (+)= Σ_k x[xOffset + m·ldx + k] · W[n·K + k] + bias[nOffset + n]
 *
 * for m < M, n < N. `nOffset` lets the host split a weight too large for one storage binding
 * into row chunks (each chunk its own binding and its own columns of y). Arithmetic is f32;
 * storage of x, W and y is f16 or f32 each. f16 operands are *read* through u32 words and
 * `unpack2x16float`, so f16 weights need no `enable f16`; only f16 outputs (and the
 * subgroup-matrix kernel, whose tiles are f16) do.
 *
 * Three kernels, one uniform layout (`MATMUL_PARAMS`) and one binding layout
 * [params, x, W, bias, y], so a bind group serves every variant:
 * - 'gemv': decode (few tokens, memory-bound): a workgroup reduces R weight rows over K with
 *   16-byte loads (8 halves or 2×4 floats per step when K, ldx, xOffset are multiples of 8),
 *   partial sums reduced with subgroupAdd where the device has subgroups, else a tree.
 * - 'tiled': prefill without tensor cores: 64×64 output tile, 16-deep K steps staged in
 *   workgroup memory, 4×4 outputs per thread.
 * - 'subgroup-matrix': prefill on tensor cores (`chromium_experimental_subgroup_matrix`): x and W
 *   tiles staged in workgroup memory as f16, each subgroup accumulates SM×SN result matrices
 *   (f32) with subgroupMatrixMultiplyAccumulate; the epilogue goes through a per-subgroup
 *   scratch tile so bias, residual add, bounds and output type are handled per element. With
 *   `emulate: true` the same kernel is generated with plain-WGSL stand-ins for the subgroup
 *   matrix builtins (same load/store semantics: offset, col_major, stride), so its tiling and
 *   indexing are tested on adapters without the feature (lavapipe, SwiftShader).
 */
import { defineUniforms } from '../../gpu/index.js';
import type { StorageType } from '../types.js';

export const MATMUL_PARAMS = defineUniforms('Params', {
  M: 'u32',
  N: 'u32',
  K: 'u32',
  ldx: 'u32',
  ldy: 'u32',
  xOffset: 'u32',
  yOffset: 'u32',
  nOffset: 'u32',
  gridX: 'u32',
  /** bit 0: add bias; bit 1: accumulate into y. */
  flags: 'u32',
  /** Always 0xffffffff: loop bounds written `min(C, p.lim)` stay opaque to the compiler (compact variants). */
  lim: 'u32',
});

export const FLAG_BIAS = 1;
export const FLAG_ACCUMULATE = 2;

export type MatmulKind = 'gemv' | 'tiled' | 'direct' | 'subgroup-matrix';

interface VariantBase {
  /** Storage of W (f16 is read as packed halves). */
  weight: StorageType;
  /** Storage of x. */
  input: StorageType;
  /** Storage of y. */
  output: StorageType;
  /**
   * Keep constant-trip loops rolled (bounds hidden behind a uniform): much faster shader
   * compilation on CPU rasterisers (lavapipe's LLVM JIT takes seconds per unrolled kernel),
   * same results. For fallback adapters; real GPUs want the unrolled code.
   */
  compact: boolean;
}

export interface GemvVariant extends VariantBase {
  kind: 'gemv';
  /** Threads per workgroup (a power of two). */
  workgroupSize: number;
  /** Weight rows per workgroup. */
  rows: number;
  /** Tokens (rows of x) per workgroup; more tokens are spread over dispatch z. */
  tokens: number;
  /** 8-element (16-byte for f16) loads: needs K, ldx and xOffset multiples of 8. */
  vector: boolean;
  /** Reduce with subgroupAdd (needs the 'subgroups' feature). */
  subgroups: boolean;
}

export interface TiledVariant extends VariantBase {
  kind: 'tiled';
  /** Outputs per thread along m and n (16×16 threads; tile 16·TM × 16·TN, 16 deep). TM, TN ∈ {1, 2, 4, 8}. */
  TM: number;
  TN: number;
}

export interface DirectVariant extends VariantBase {
  kind: 'direct';
  /** Outputs per thread: TM rows of x × TN rows of W, accumulated over K without workgroup memory. */
  TM: number;
  TN: number;
  workgroupSize: number;
  /** 4-element loads along K (K, ldx, xOffset multiples of 4). */
  vector: boolean;
}

export interface SubgroupMatrixShape {
  M: number;
  N: number;
  K: number;
}

export interface SubgroupMatrixVariant extends VariantBase {
  kind: 'subgroup-matrix';
  /** The subgroup-matrix shape (one of the adapter's f16 → f32 configs). */
  shape: SubgroupMatrixShape;
  /** The adapter's maximum subgroup size (workgroup x must be a multiple of it). */
  subgroupSize: number;
  /** Result matrices per subgroup: rows × cols. */
  perSubgroup: [number, number];
  /** Subgroups per workgroup: rows × cols. */
  subgroups: [number, number];
  /** K depth staged per step (a multiple of shape.K). */
  kTile: number;
  /** 8-element staging loads (K, ldx, xOffset multiples of 8). */
  vector: boolean;
  /**
   * Two staging buffers, the next K tile's global loads issued into registers before the
   * current tile's MMAs and stored after them: one barrier per K tile and the load latency
   * hidden behind the MMAs (vector staging only; without it the kernel stages single-buffered).
   */
  doubleBuffer: boolean;
  /** Plain-WGSL stand-ins for the subgroup-matrix builtins (testing only). */
  emulate: boolean;
}

export type MatmulVariant = GemvVariant | TiledVariant | DirectVariant | SubgroupMatrixVariant;

/** A short stable name for labels and logs. */
export function variantName(v: MatmulVariant): string {
  const io = `w${v.weight}-x${v.input}-y${v.output}${v.compact ? ' compact' : ''}`;
  switch (v.kind) {
    case 'gemv':
      return `gemv[wg${v.workgroupSize} r${v.rows} t${v.tokens}${v.vector ? ' vec' : ''}${v.subgroups ? ' sg' : ''}] ${io}`;
    case 'tiled':
      return `tiled[${16 * v.TM}x${16 * v.TN}x16] ${io}`;
    case 'direct':
      return `direct[${v.TM}x${v.TN} wg${v.workgroupSize}${v.vector ? ' vec' : ''}] ${io}`;
    case 'subgroup-matrix': {
      const s = v.shape;
      const tm = v.perSubgroup[0] * v.subgroups[0] * s.M;
      const tn = v.perSubgroup[1] * v.subgroups[1] * s.N;
      return `sgmat[${s.M}x${s.N}x${s.K} tile ${tm}x${tn}x${v.kTile} sg${v.subgroups[0]}x${v.subgroups[1]}${v.vector ? ' vec' : ''}${pipelined(v) ? ' db' : ''}${v.emulate ? ' EMULATED' : ''}] ${io}`;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

function header(v: MatmulVariant, extra = ''): string {
  const needF16 = v.output === 'f16' || v.kind === 'subgroup-matrix';
  return `${needF16 ? 'enable f16;\n' : ''}${extra}
${MATMUL_PARAMS.wgsl()}
@group(0) @binding(0) var<uniform> p: Params;
`;
}

/** Declarations of x, W, bias, y and scalar accessors xAt(i), wAt(i) (f32 results). */
function operandDecls(v: MatmulVariant, vectorX: boolean, vectorW: boolean): string {
  const decl = (name: string, binding: number, t: StorageType, vec: boolean) => {
    const elem = t === 'f16' ? (vec ? 'vec4<u32>' : 'u32') : vec ? 'vec4<f32>' : 'f32';
    return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<${elem}>;`;
  };
  const scalarAt = (fn: string, name: string, t: StorageType, vec: boolean) => {
    if (vec) return ''; // vector variants define their own loaders
    return t === 'f16'
      ? `fn ${fn}(i: u32) -> f32 { return unpack2x16float(${name}[i >> 1u])[i & 1u]; }`
      : `fn ${fn}(i: u32) -> f32 { return ${name}[i]; }`;
  };
  const load8 = (fn: string, name: string, t: StorageType) =>
    t === 'f16'
      ? `// 8 consecutive elements from 16-byte word j
fn ${fn}(j: u32) -> array<vec4<f32>, 2> {
  let w = ${name}[j];
  return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
}`
      : `fn ${fn}(j: u32) -> array<vec4<f32>, 2> { return array<vec4<f32>, 2>(${name}[2u * j], ${name}[2u * j + 1u]); }`;
  return `${decl('X', 1, v.input, vectorX)}
${decl('W', 2, v.weight, vectorW)}
@group(0) @binding(3) var<storage, read> Bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<${v.output}>;
${scalarAt('xAt', 'X', v.input, vectorX)}
${scalarAt('wAt', 'W', v.weight, vectorW)}
${vectorX ? load8('x8', 'X', v.input) : ''}
${vectorW ? load8('w8', 'W', v.weight) : ''}
`;
}

/** `fn store(m, n, value)`: bias and residual add (uniform flags), output type. Caller checks bounds. */
function storeFn(v: MatmulVariant): string {
  return `fn store(m: u32, n: u32, value: f32) {
  let i = p.yOffset + m * p.ldy + p.nOffset + n;
  var r = value;
  if ((p.flags & ${FLAG_BIAS}u) != 0u) { r = r + Bias[p.nOffset + n]; }
  if ((p.flags & ${FLAG_ACCUMULATE}u) != 0u) { r = r + f32(Y[i]); }
  Y[i] = ${v.output}(r);
}`;
}

/** A loop bound: the constant itself, or hidden behind the uniform for compact variants. */
function bound(v: MatmulVariant, c: string): string {
  return v.compact ? `min(${c}, p.lim)` : c;
}

// ---------------------------------------------------------------------------------------------
// GEMV

function gemvWgsl(v: GemvVariant): string {
  const WG = v.workgroupSize;
  const R = v.rows;
  const MB = v.tokens;
  const RM = R * MB;
  const B = (c: string) => bound(v, c);
  if ((WG & (WG - 1)) !== 0) throw new Error(`gemv workgroupSize ${WG} is not a power of two`);
  const maxSubgroups = Math.ceil(WG / 4); // subgroups are at least 4 wide
  const redSize = v.subgroups ? RM * maxSubgroups : RM * WG;
  const builtins = v.subgroups ? ', @builtin(subgroup_size) sgSize: u32, @builtin(subgroup_invocation_id) sgLane: u32' : '';
  const loop = v.vector
    ? `  let K8 = p.K / 8u;
  for (var c = lid; c < K8; c += WG) {
    var xs: array<array<vec4<f32>, 2>, MB>;
    for (var t = 0u; t < MB; t++) { xs[t] = x8(xBase[t] / 8u + c); }
    for (var r = 0u; r < R; r++) {
      let w = w8(rowBase[r] / 8u + c);
      for (var t = 0u; t < MB; t++) {
        acc[r * MB + t] += dot(xs[t][0], w[0]) + dot(xs[t][1], w[1]);
      }
    }
  }`
    : `  for (var k = lid; k < p.K; k += WG) {
    var xs: array<f32, MB>;
    for (var t = 0u; t < MB; t++) { xs[t] = xAt(xBase[t] + k); }
    for (var r = 0u; r < R; r++) {
      let w = wAt(rowBase[r] + k);
      for (var t = 0u; t < MB; t++) { acc[r * MB + t] = fma(xs[t], w, acc[r * MB + t]); }
    }
  }`;
  const reduce = v.subgroups
    ? `  let sgId = lid / sgSize;
  for (var i = 0u; i < RM; i++) {
    let s = subgroupAdd(acc[i]);
    if (sgLane == 0u) { red[i * MAXSG + sgId] = s; }
  }
  workgroupBarrier();
  if (lid < RM) {
    let nsg = (WG + sgSize - 1u) / sgSize;
    var total = 0.0;
    for (var j = 0u; j < nsg; j++) { total += red[lid * MAXSG + j]; }
    finish(row0, m0, lid, total);
  }`
    : `  for (var i = 0u; i < RM; i++) { red[i * WG + lid] = acc[i]; }
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      for (var i = 0u; i < RM; i++) { red[i * WG + lid] += red[i * WG + lid + s]; }
    }
    workgroupBarrier();
  }
  if (lid < RM) { finish(row0, m0, lid, red[lid * WG]); }`;
  return `${header(v, v.subgroups ? 'enable subgroups;\n' : '')}
${operandDecls(v, v.vector, v.vector)}
${storeFn(v)}
const WG = ${WG}u;
const R = ${R}u;
const MB = ${MB}u;
const RM = ${RM}u;
const MAXSG = ${maxSubgroups}u;
var<workgroup> red: array<f32, ${redSize}>;

fn finish(row0: u32, m0: u32, j: u32, total: f32) {
  let n = row0 + j / MB;
  let m = m0 + j % MB;
  if (n < p.N && m < p.M) { store(m, n, total); }
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${builtins}) {
  let row0 = (wid.y * p.gridX + wid.x) * R;
  let m0 = wid.z * MB;
  if (row0 >= p.N) { return; }
  var rowBase: array<u32, R>;
  for (var r = 0u; r < R; r++) { rowBase[r] = min(row0 + r, p.N - 1u) * p.K; }
  var xBase: array<u32, MB>;
  for (var t = 0u; t < MB; t++) { xBase[t] = p.xOffset + min(m0 + t, p.M - 1u) * p.ldx; }
  var acc: array<f32, RM>;
${loop}
${reduce}
}
`;
}

// ---------------------------------------------------------------------------------------------
// Tiled GEMM (no tensor cores)

function tiledWgsl(v: TiledVariant): string {
  const B = (c: string) => bound(v, c);
  const { TM, TN } = v;
  const TX = 16; // threads along n
  const TY = 16; // threads along m
  const BM = TY * TM;
  const BN = TX * TN;
  const BK = 16;
  const threads = TX * TY;
  // Loader: each thread stages `per` consecutive k of one row, for both tiles.
  const perA = (BM * BK) / threads;
  const perB = (BN * BK) / threads;
  return `${header(v)}
${operandDecls(v, false, false)}
${storeFn(v)}
const BM = ${BM}u;
const BN = ${BN}u;
const BK = ${BK}u;
var<workgroup> As: array<f32, ${BK * BM}>; // [k][m]
var<workgroup> Bs: array<f32, ${BK * BN}>; // [k][n]

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n0 = wid.x * BN;
  let m0 = wid.y * BM;
  let tx = lid % ${TX}u;
  let ty = lid / ${TX}u;
  let ar = lid / ${BK / perA}u;
  let ak = (lid % ${BK / perA}u) * ${perA}u;
  let br = lid / ${BK / perB}u;
  let bk = (lid % ${BK / perB}u) * ${perB}u;
  let aOk = m0 + ar < p.M;
  let bOk = n0 + br < p.N;
  let xRow = p.xOffset + min(m0 + ar, p.M - 1u) * p.ldx;
  let wRow = min(n0 + br, p.N - 1u) * p.K;
  var acc: array<f32, ${TM * TN}>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var i = 0u; i < ${B(`${perA}u`)}; i++) {
      let k = k0 + ak + i;
      As[(ak + i) * BM + ar] = select(0.0, xAt(xRow + min(k, p.K - 1u)), aOk && k < p.K);
    }
    for (var i = 0u; i < ${B(`${perB}u`)}; i++) {
      let k = k0 + bk + i;
      Bs[(bk + i) * BN + br] = select(0.0, wAt(wRow + min(k, p.K - 1u)), bOk && k < p.K);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${B('BK')}; kk++) {
      var a: array<f32, ${TM}>;
      var b: array<f32, ${TN}>;
      for (var i = 0u; i < ${TM}u; i++) { a[i] = As[kk * BM + ty + ${TY}u * i]; }
      for (var j = 0u; j < ${TN}u; j++) { b[j] = Bs[kk * BN + tx + ${TX}u * j]; }
      for (var i = 0u; i < ${TM}u; i++) {
        for (var j = 0u; j < ${TN}u; j++) { acc[i * ${TN}u + j] = fma(a[i], b[j], acc[i * ${TN}u + j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < ${TM}u; i++) {
    let m = m0 + ty + ${TY}u * i;
    for (var j = 0u; j < ${TN}u; j++) {
      let n = n0 + tx + ${TX}u * j;
      if (m < p.M && n < p.N) { store(m, n, acc[i * ${TN}u + j]); }
    }
  }
}
`;
}

/** Output tile of a tiled variant. */
export function tiledTile(v: TiledVariant): { BM: number; BN: number } {
  return { BM: 16 * v.TM, BN: 16 * v.TN };
}

// ---------------------------------------------------------------------------------------------
// Subgroup-matrix GEMM (tensor cores)

/** Whether a subgroup-matrix variant runs the double-buffered pipeline (it needs vector staging). */
function pipelined(v: SubgroupMatrixVariant): boolean {
  return v.doubleBuffer && v.vector;
}

/** Tile sizes of a subgroup-matrix variant. */
export function subgroupMatrixTile(v: SubgroupMatrixVariant): { BM: number; BN: number; BK: number; threads: number; sharedBytes: number } {
  const s = v.shape;
  const BM = v.perSubgroup[0] * v.subgroups[0] * s.M;
  const BN = v.perSubgroup[1] * v.subgroups[1] * s.N;
  const BK = v.kTile;
  const BKP = BK + 8;
  const nsg = v.subgroups[0] * v.subgroups[1];
  const buffers = pipelined(v) ? 2 : 1;
  return { BM, BN, BK, threads: nsg * v.subgroupSize, sharedBytes: buffers * (BM + BN) * BKP * 2 + nsg * s.M * s.N * 4 };
}

function subgroupMatrixWgsl(v: SubgroupMatrixVariant): string {
  const s = v.shape;
  const [SM, SN] = v.perSubgroup;
  const [WM, WN] = v.subgroups;
  const NSG = WM * WN;
  const { BM, BN, BK, threads } = subgroupMatrixTile(v);
  const BKP = BK + 8; // padded row stride of the staged tiles (16-byte multiple)
  if (BK % s.K !== 0 || BK % 8 !== 0) throw new Error(`subgroup-matrix kTile ${BK} must be a multiple of ${s.K} and of 8`);
  const emu = v.emulate;
  const B = (c: string) => bound(v, c);
  const LEFT = emu ? `array<f32, ${s.M * s.K}>` : `subgroup_matrix_left<f16, ${s.K}, ${s.M}>`;
  const RIGHT = emu ? `array<f32, ${s.K * s.N}>` : `subgroup_matrix_right<f16, ${s.N}, ${s.K}>`;
  const RESULT = emu ? `array<f32, ${s.M * s.N}>` : `subgroup_matrix_result<f32, ${s.N}, ${s.M}>`;
  // Current Dawn syntax: the layout is a template argument (row_major / col_major); the older
  // `(ptr, offset, colMajor, stride)` form is deprecated. The emulation takes the flag as a bool.
  const loadLeft = (off: string) => (emu ? `emuLoadLeft(${off}, false, ${BKP}u)` : `subgroupMatrixLoad<Left, row_major>(&As, ${off}, ${BKP}u)`);
  const loadRight = (off: string) => (emu ? `emuLoadRight(${off}, true, ${BKP}u)` : `subgroupMatrixLoad<Right, col_major>(&Bs, ${off}, ${BKP}u)`);
  const mma = (l: string, r: string, a: string) => (emu ? `emuMma(${l}, ${r}, ${a})` : `subgroupMatrixMultiplyAccumulate(${l}, ${r}, ${a})`);
  const store = (off: string, val: string) =>
    emu ? `if (lane == 0u) { emuStore(${off}, ${val}, false, ${s.N}u); }` : `subgroupMatrixStore<row_major>(&Cs, ${off}, ${val}, ${s.N}u);`;
  const extensions = emu ? 'enable subgroups;\n' : 'enable subgroups;\nenable chromium_experimental_subgroup_matrix;\ndiagnostic(off, chromium.subgroup_matrix_uniformity);\n';
  const builtins = emu
    ? '@builtin(local_invocation_index) lid: u32'
    : '@builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sgIdIn: u32, @builtin(subgroup_invocation_id) laneIn: u32, @builtin(subgroup_size) sgSizeIn: u32';
  const ids = emu
    ? `  let sgid = lid / ${v.subgroupSize}u;
  let lane = lid % ${v.subgroupSize}u;
  let sgSize = ${v.subgroupSize}u;`
    : `  let sgid = sgIdIn;
  let lane = laneIn;
  let sgSize = sgSizeIn;`;
  // Emulation: every lane of a (virtual) subgroup holds the whole matrix; loads and stores
  // follow the builtins' documented addressing: entry [r, c] at offset + r·stride + c
  // (row-major) or offset + c·stride + r (column-major).
  const emuFns = emu
    ? `
fn emuLoadLeft(off: u32, colMajor: bool, stride: u32) -> Left {
  var v: Left;
  for (var r = 0u; r < ${B(`${s.M}u`)}; r++) {
    for (var c = 0u; c < ${B(`${s.K}u`)}; c++) { v[r * ${s.K}u + c] = f32(As[off + select(r * stride + c, c * stride + r, colMajor)]); }
  }
  return v;
}
fn emuLoadRight(off: u32, colMajor: bool, stride: u32) -> Right {
  var v: Right;
  for (var r = 0u; r < ${B(`${s.K}u`)}; r++) {
    for (var c = 0u; c < ${B(`${s.N}u`)}; c++) { v[r * ${s.N}u + c] = f32(Bs[off + select(r * stride + c, c * stride + r, colMajor)]); }
  }
  return v;
}
fn emuMma(l: Left, r: Right, a: Result) -> Result {
  var o = a;
  for (var i = 0u; i < ${B(`${s.M}u`)}; i++) {
    for (var j = 0u; j < ${B(`${s.N}u`)}; j++) {
      var t = o[i * ${s.N}u + j];
      for (var k = 0u; k < ${B(`${s.K}u`)}; k++) { t = fma(l[i * ${s.K}u + k], r[k * ${s.N}u + j], t); }
      o[i * ${s.N}u + j] = t;
    }
  }
  return o;
}
fn emuStore(off: u32, v: Result, colMajor: bool, stride: u32) {
  for (var r = 0u; r < ${B(`${s.M}u`)}; r++) {
    for (var c = 0u; c < ${B(`${s.N}u`)}; c++) { Cs[off + select(r * stride + c, c * stride + r, colMajor)] = v[r * ${s.N}u + c]; }
  }
}`
    : '';

  const stage = (tile: 'As' | 'Bs', rows: number, rowOk: string, rowBase: string, vec: boolean, elemAt: string, load8fn: string) =>
    vec
      ? `  for (var g = lid; g < ${(rows * BK) / 8}u; g += ${threads}u) {
    let r = g / ${BK / 8}u;
    let kk = (g % ${BK / 8}u) * 8u;
    var vals = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
    if (${rowOk.replace(/ROW/g, 'r')} && k0 + kk < p.K) { vals = ${load8fn}((${rowBase.replace(/ROW/g, 'r')} + k0 + kk) / 8u); }
    let o = r * ${BKP}u + kk;
    for (var e = 0u; e < ${B('4u')}; e++) { ${tile}[o + e] = f16(vals[0][e]); ${tile}[o + 4u + e] = f16(vals[1][e]); }
  }`
      : `  for (var e = lid; e < ${rows * BK}u; e += ${threads}u) {
    let r = e / ${BK}u;
    let kk = e % ${BK}u;
    var val = 0.0;
    if (${rowOk.replace(/ROW/g, 'r')} && k0 + kk < p.K) { val = ${elemAt}(${rowBase.replace(/ROW/g, 'r')} + k0 + kk); }
    ${tile}[r * ${BKP}u + kk] = f16(val);
  }`;

  const db = pipelined(v);
  const TILE_A = BM * BKP;
  const TILE_B = BN * BKP;
  // MMAs over one staged K tile whose buffers start at aBase / bBase.
  // Unrolled (real GPUs): every subgroup-matrix variable is indexed by a constant. With loop
  // indices the driver cannot keep the accumulator array in registers (measured on an H100:
  // every tiling stuck at ≈ 28 TFLOP/s).
  const unroll = !v.compact;
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const mmaTile = (aBase: string, bBase: string) =>
    unroll
      ? range(BK / s.K)
          .map(
            (q) => `      {
${range(SM)
  .map((i) => `        let left${i} = ${loadLeft(`${aBase} + ${(i * s.M) * BKP + q * s.K}u + sgRow * ${BKP}u`)};`)
  .join('\n')}
${range(SN)
  .map(
    (j) => `        {
          let right = ${loadRight(`${bBase} + ${(j * s.N) * BKP + q * s.K}u + sgCol * ${BKP}u`)};
${range(SM)
  .map((i) => `          acc[${i}][${j}] = ${mma(`left${i}`, 'right', `acc[${i}][${j}]`)};`)
  .join('\n')}
        }`,
  )
  .join('\n')}
      }`,
          )
          .join('\n')
      : `      for (var kk = 0u; kk < ${BK}u; kk += ${s.K}u) {
        var left: array<Left, ${SM}>;
        for (var i = 0u; i < ${B(`${SM}u`)}; i++) { left[i] = ${loadLeft(`${aBase} + (sgRow + i * ${s.M}u) * ${BKP}u + kk`)}; }
        for (var j = 0u; j < ${B(`${SN}u`)}; j++) {
          let right = ${loadRight(`${bBase} + (sgCol + j * ${s.N}u) * ${BKP}u + kk`)};
          for (var i = 0u; i < ${B(`${SM}u`)}; i++) { acc[i][j] = ${mma('left[i]', 'right', 'acc[i][j]')}; }
        }
      }`;
  const epilogueOne = (i: string, j: string) => `      if (isActive) { ${store('scratch', `acc[${i}][${j}]`)} }
      workgroupBarrier();
      if (isActive) {
        for (var e = lane; e < ${s.M * s.N}u; e += sgSize) {
          let m = m0 + sgRow + ${i} * ${s.M}u + e / ${s.N}u;
          let n = n0 + sgCol + ${j} * ${s.N}u + e % ${s.N}u;
          if (m < p.M && n < p.N) { store(m, n, Cs[scratch + e]); }
        }
      }
      workgroupBarrier();`;
  const epilogue = unroll
    ? range(SM)
        .flatMap((i) => range(SN).map((j) => `  {\n${epilogueOne(`${i}u`, `${j}u`)}\n  }`))
        .join('\n')
    : `  for (var i = 0u; i < ${B(`${SM}u`)}; i++) {
    for (var j = 0u; j < ${B(`${SN}u`)}; j++) {
${epilogueOne('i', 'j')}
    }
  }`;
  // Double-buffered staging: each thread owns G groups of 8 consecutive k of one tile row; the
  // groups are loaded into registers (raw: f16 pairs as u32 words, f32 as two vec4) and stored
  // into workgroup memory later (f16 by bitcast, no f32 round trip).
  const raw = (t: StorageType) => (t === 'f16' ? 'vec4<u32>' : 'array<vec4<f32>, 2>');
  const rawZero = (t: StorageType) => (t === 'f16' ? 'vec4<u32>(0u)' : 'array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0))');
  const rawLoad = (t: StorageType, buf: string, fn8: string, j: string) => (t === 'f16' ? `${buf}[${j}]` : `${fn8}(${j})`);
  const groups = (rows: number) => (rows * BK) / 8;
  const perThread = (rows: number) => Math.ceil(groups(rows) / threads);
  // A loop over this thread's staging groups: unrolled (constant register indices) or not.
  const perGroup = (rows: number, body: (i: string) => string) =>
    unroll
      ? range(perThread(rows))
          .map((i) => `    {\n${body(`${i}u`)}\n    }`)
          .join('\n')
      : `    for (var i = 0u; i < ${B(`${perThread(rows)}u`)}; i++) {\n${body('i')}\n    }`;
  const loadRegs = (regs: string, rows: number, t: StorageType, buf: string, fn8: string, rowOk: string, rowBase: string, k: string) =>
    perGroup(
      rows,
      (i) => `      let g = lid + ${i} * ${threads}u;
      let r = g / ${BK / 8}u;
      let kk = (g % ${BK / 8}u) * 8u;
      ${regs}[${i}] = ${rawZero(t)};
      if (g < ${groups(rows)}u && ${rowOk.replace(/ROW/g, 'r')} && ${k} + kk < p.K) { ${regs}[${i}] = ${rawLoad(t, buf, fn8, `(${rowBase.replace(/ROW/g, 'r')} + ${k} + kk) / 8u`)}; }`,
    );
  const storeRegs = (regs: string, tile: string, rows: number, t: StorageType, base: string) =>
    perGroup(
      rows,
      (i) => `      let g = lid + ${i} * ${threads}u;
      if (g < ${groups(rows)}u) {
        let o = ${base} + (g / ${BK / 8}u) * ${BKP}u + (g % ${BK / 8}u) * 8u;
${
  t === 'f16'
    ? `        let w = ${regs}[${i}];
        let h0 = bitcast<vec2<f16>>(w.x);
        let h1 = bitcast<vec2<f16>>(w.y);
        let h2 = bitcast<vec2<f16>>(w.z);
        let h3 = bitcast<vec2<f16>>(w.w);
        ${tile}[o] = h0.x; ${tile}[o + 1u] = h0.y; ${tile}[o + 2u] = h1.x; ${tile}[o + 3u] = h1.y;
        ${tile}[o + 4u] = h2.x; ${tile}[o + 5u] = h2.y; ${tile}[o + 6u] = h3.x; ${tile}[o + 7u] = h3.y;`
    : `        for (var e = 0u; e < ${B('4u')}; e++) { ${tile}[o + e] = f16(${regs}[${i}][0][e]); ${tile}[o + 4u + e] = f16(${regs}[${i}][1][e]); }`
}
      }`,
    );
  const xOk = '(m0 + ROW < p.M)';
  const xRow = '(p.xOffset + (m0 + ROW) * p.ldx)';
  const wOk = '(n0 + ROW < p.N)';
  const wRow = '((n0 + ROW) * p.K)';
  const mainLoop = db
    ? `  var ra: array<${raw(v.input)}, ${perThread(BM)}>;
  var rb: array<${raw(v.weight)}, ${perThread(BN)}>;
  let nk = (p.K + ${BK - 1}u) / ${BK}u;
${loadRegs('ra', BM, v.input, 'X', 'x8', xOk, xRow, '0u')}
${loadRegs('rb', BN, v.weight, 'W', 'w8', wOk, wRow, '0u')}
${storeRegs('ra', 'As', BM, v.input, '0u')}
${storeRegs('rb', 'Bs', BN, v.weight, '0u')}
  workgroupBarrier();
  for (var t = 0u; t < nk; t++) {
    let cur = t & 1u;
    let more = t + 1u < nk;
    // Loads of tile t+1 are in flight while tile t's MMAs run; buffer 1-cur was last read in
    // step t-1, which ended with a barrier.
    if (more) {
      let kn = (t + 1u) * ${BK}u;
${loadRegs('ra', BM, v.input, 'X', 'x8', xOk, xRow, 'kn')}
${loadRegs('rb', BN, v.weight, 'W', 'w8', wOk, wRow, 'kn')}
    }
    if (isActive) {
${mmaTile(`cur * ${TILE_A}u`, `cur * ${TILE_B}u`)}
    }
    if (more) {
${storeRegs('ra', 'As', BM, v.input, `(1u - cur) * ${TILE_A}u`)}
${storeRegs('rb', 'Bs', BN, v.weight, `(1u - cur) * ${TILE_B}u`)}
    }
    workgroupBarrier();
  }`
    : `  for (var k0 = 0u; k0 < p.K; k0 += ${BK}u) {
${stage('As', BM, xOk, xRow, v.vector, 'xAt', 'x8')}
${stage('Bs', BN, wOk, wRow, v.vector, 'wAt', 'w8')}
    workgroupBarrier();
    if (isActive) {
${mmaTile('0u', '0u')}
    }
    workgroupBarrier();
  }`;

  return `${header(v, extensions)}
${operandDecls(v, v.vector, v.vector)}
${storeFn(v)}
alias Left = ${LEFT};
alias Right = ${RIGHT};
alias Result = ${RESULT};
var<workgroup> As: array<f16, ${(db ? 2 : 1) * TILE_A}>; // x tile(s) [BM][BKP]
var<workgroup> Bs: array<f16, ${(db ? 2 : 1) * TILE_B}>; // W tile(s) [BN][BKP] (= Wᵀ tile, column-major)
var<workgroup> Cs: array<f32, ${NSG * s.M * s.N}>; // one result matrix per subgroup, for the epilogue
${emuFns}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, ${builtins}) {
${ids}
  let n0 = wid.x * ${BN}u;
  let m0 = wid.y * ${BM}u;
  let isActive = sgid < ${NSG}u; // extra subgroups exist when the runtime subgroup is narrower than the max
  let sgRow = (sgid / ${WN}u) * ${SM * s.M}u; // first tile row of this subgroup's block
  let sgCol = (sgid % ${WN}u) * ${SN * s.N}u;
  var acc: array<array<Result, ${SN}>, ${SM}>;
${mainLoop}
  // Epilogue, one result matrix at a time through this subgroup's scratch tile.
  let scratch = min(sgid, ${NSG - 1}u) * ${s.M * s.N}u;
${epilogue}
}
`;
}

// ---------------------------------------------------------------------------------------------
// Direct (register-blocked, no workgroup memory, no barriers)

/**
 * Each thread accumulates a TM × TN block of outputs straight from x and W (4-wide loads along
 * K where aligned). No workgroup memory and no barriers: on CPU rasterisers (lavapipe,
 * SwiftShader), where barriers are expensive and caches do the reuse, this is about ten times
 * faster than the tiled kernel; on GPUs the tiled and tensor-core kernels are better.
 */
function directWgsl(v: DirectVariant): string {
  const { TM, TN } = v;
  const decl = (name: string, binding: number, t: StorageType) =>
    `@group(0) @binding(${binding}) var<storage, read> ${name}: array<${t === 'f16' ? (v.vector ? 'vec2<u32>' : 'u32') : v.vector ? 'vec4<f32>' : 'f32'}>;`;
  const at = (fn: string, name: string, t: StorageType) =>
    v.vector
      ? t === 'f16'
        ? `fn ${fn}(j: u32) -> vec4<f32> { let w = ${name}[j]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }`
        : `fn ${fn}(j: u32) -> vec4<f32> { return ${name}[j]; }`
      : t === 'f16'
        ? `fn ${fn}(i: u32) -> f32 { return unpack2x16float(${name}[i >> 1u])[i & 1u]; }`
        : `fn ${fn}(i: u32) -> f32 { return ${name}[i]; }`;
  const vt = v.vector ? 'vec4<f32>' : 'f32';
  const step = v.vector ? 4 : 1;
  return `${header(v)}
${decl('X', 1, v.input)}
${decl('W', 2, v.weight)}
@group(0) @binding(3) var<storage, read> Bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<${v.output}>;
${at('xAt', 'X', v.input)}
${at('wAt', 'W', v.weight)}
${storeFn(v)}

@compute @workgroup_size(${v.workgroupSize})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n0 = gid.x * ${TN}u;
  let m0 = gid.y * ${TM}u;
  if (n0 >= p.N || m0 >= p.M) { return; }
  var xb: array<u32, ${TM}>;
  var wb: array<u32, ${TN}>;
  for (var i = 0u; i < ${TM}u; i++) { xb[i] = (p.xOffset + min(m0 + i, p.M - 1u) * p.ldx) / ${step}u; }
  for (var j = 0u; j < ${TN}u; j++) { wb[j] = min(n0 + j, p.N - 1u) * p.K / ${step}u; }
  var acc: array<${vt}, ${TM * TN}>;
  for (var k = 0u; k < p.K / ${step}u; k++) {
    var xs: array<${vt}, ${TM}>;
    for (var i = 0u; i < ${TM}u; i++) { xs[i] = xAt(xb[i] + k); }
    for (var j = 0u; j < ${TN}u; j++) {
      let w = wAt(wb[j] + k);
      for (var i = 0u; i < ${TM}u; i++) { acc[i * ${TN}u + j] = fma(xs[i], w, acc[i * ${TN}u + j]); }
    }
  }
  for (var i = 0u; i < ${TM}u; i++) {
    for (var j = 0u; j < ${TN}u; j++) {
      let m = m0 + i;
      let n = n0 + j;
      let a = acc[i * ${TN}u + j];
      if (m < p.M && n < p.N) { store(m, n, ${v.vector ? '(a.x + a.y) + (a.z + a.w)' : 'a'}); }
    }
  }
}
`;
}

/** The WGSL source of a variant. */
export function matmulWgsl(v: MatmulVariant): string {
  switch (v.kind) {
    case 'gemv':
      return gemvWgsl(v);
    case 'tiled':
      return tiledWgsl(v);
    case 'direct':
      return directWgsl(v);
    case 'subgroup-matrix':
      return subgroupMatrixWgsl(v);
  }
}

/**
 * GPU HiP mask estimation on a real GPU: (1) checks the kernels — the tensor-core variants first
 * where the adapter has subgroup matrices — against the CPU reference (estimateHipMask) at small
 * sizes, and every swept tensor-core variant's masks against the classic kernel's on the same
 * GPU problem (bit-identical scores: masks must be equal), (2) times prefill mask estimation for
 * T = 4k … 128k (and a decode refresh, one query) at H=32, H_kv=8, d=128, f16, with GPU
 * timestamps, then the longer contexts (--big-seq-lens) with the fastest variant at the largest T.
 *
 *   npm run build && node dist/bench/hip-mask.js [--seq-lens 4096,…,131072] [--big-seq-lens 262144,524288,1048576]
 *       [--paths auto,scalar] [--modes prefill,decode] [--variants lean,lean-s4r1p1,classic,…]
 *       [--no-check] [--check-only] [--identity-seq-len 16384] [--peak-tflops 989] [--peak-gbps 4800] [--json FILE]
 *
 * Variant names (matrix path): `<kernel>[-s<subgroups>][-r<rowSplit>][-p<prefetch>][-n8][-noreuse][-nosort][-noqreg][-norot]`
 * with kernel `lean` (default) or `classic`; `default` = what 'auto' picks; the old names `sg2`, `sg1`,
 * `nosort`, `noqreg` mean the classic kernel; a `+norobust` suffix runs the variant on a second
 * device created with Dawn's `disable_robustness` toggle (diagnostic: cost of bounds checks).
 *
 * Exit code 1 when a check fails (recall < 0.99, an f32 mask differing from the CPU's, or a
 * tensor-core variant's masks differing from the classic kernel's).
 */
import { writeFile } from 'node:fs/promises';
import type { HipOptions } from '../src/attention/options.js';
import { acquireGpu, DEFAULT_DAWN_TOGGLES, summaryLine, type GpuContext } from '../src/gpu/index.js';
import { benchHipMask, randomGpuBuffer, type HipMaskBenchResult } from '../src/kernels/hip-mask/bench.js';
import {
  createHipMaskEstimator,
  readGpuHipMask,
  variantName,
  type HipMaskEstimatorOptions,
  type HipMaskPathOption,
} from '../src/kernels/hip-mask/index.js';
import { compareMasks, cpuMask, randomCpuProblem, uploadProblem, type MaskProblemSpec } from '../src/kernels/hip-mask/testing.js';
import type { StorageType } from '../src/kernels/types.js';

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}
const has = (name: string) => process.argv.includes(name);
const seqLens = (flag('--seq-lens') ?? '4096,8192,16384,32768,65536,131072').split(',').map(Number);
const bigSeqLens = (flag('--big-seq-lens') ?? '262144,524288,1048576').split(',').filter(Boolean).map(Number);
const modes = (flag('--modes') ?? 'prefill,decode').split(',');
const peakTflops = Number(flag('--peak-tflops') ?? 989); // H200 SXM dense f16 tensor
const peakGbps = Number(flag('--peak-gbps') ?? 4800); // H200 HBM3e

const gpu = await acquireGpu();
const info = gpu.adapterInfo;
console.log(`adapter ${summaryLine(info)}; features ${JSON.stringify(gpu.features)}`);
console.log(`subgroups ${info.subgroupMinSize}…${info.subgroupMaxSize}; subgroup-matrix configs ${JSON.stringify(info.subgroupMatrixConfigs)}`);
console.log(
  `limits: workgroup storage ${gpu.limits.maxComputeWorkgroupStorageSize} B, invocations ${gpu.limits.maxComputeInvocationsPerWorkgroup}, ` +
    `binding ${gpu.limits.maxStorageBufferBindingSize} B, buffer ${gpu.limits.maxBufferSize} B`,
);
const paths: HipMaskPathOption[] = (flag('--paths') ?? (gpu.features.subgroupMatrix ? 'matrix,scalar' : 'scalar')).split(',') as HipMaskPathOption[];
const variantNames = (flag('--variants') ?? 'default').split(',');
/** Estimator options of a variant name (see the header); throws on an unknown token. */
function variantOptions(full: string): Partial<HipMaskEstimatorOptions> {
  const name = full.replace(/\+norobust$/, '');
  const legacy: Record<string, Partial<HipMaskEstimatorOptions>> = {
    default: {},
    nosort: { matrixKernel: 'classic', subgroupSort: false },
    noqreg: { matrixKernel: 'classic', matrixQRegisters: false },
    sg1: { matrixKernel: 'classic', matrixSubgroups: 1 },
    sg2: { matrixKernel: 'classic', matrixSubgroups: 2 },
    sg4: { matrixKernel: 'classic', matrixSubgroups: 4 },
  };
  if (legacy[name]) return legacy[name];
  const [kernel, ...mods] = name.split('-');
  if (kernel !== 'lean' && kernel !== 'classic') throw new Error(`unknown variant ${full}`);
  const o: Partial<HipMaskEstimatorOptions> = { matrixKernel: kernel };
  for (const m of mods) {
    const tiling = /^(?:s(\d+))?(?:r(\d+))?(?:p(\d+))?$/.exec(m);
    if (m === 'noreuse') o.reuse = false;
    else if (m === 'nosort') o.subgroupSort = false;
    else if (m === 'noqreg') o.matrixQRegisters = false;
    else if (m === 'norot') o.matrixRotate = false;
    else if (m === 'n8') o.matrixN = 8;
    else if (tiling && m) {
      if (tiling[1]) o.matrixSubgroups = Number(tiling[1]);
      if (tiling[2]) o.matrixRowSplit = Number(tiling[2]);
      if (tiling[3]) o.matrixPrefetch = Number(tiling[3]);
    } else throw new Error(`unknown variant token ${m} in ${full}`);
  }
  return o;
}
for (const n of variantNames) variantOptions(n); // fail early on typos

// `+norobust` variants: a second device without Dawn's robustness transform (bounds checks).
let noRobust: GpuContext | null | undefined;
async function gpuFor(name: string): Promise<GpuContext | null> {
  if (!name.endsWith('+norobust')) return gpu;
  if (noRobust === undefined) {
    const toggles = DEFAULT_DAWN_TOGGLES.map((t) => (t.startsWith('enable-dawn-features=') ? `${t},disable_robustness` : t));
    noRobust = await acquireGpu({ dawnToggles: toggles, ifUnavailable: 'null' }).catch((e: unknown) => {
      console.log(`(no device with disable_robustness: ${e instanceof Error ? e.message : String(e)})`);
      return null;
    });
  }
  return noRobust;
}

const report: Record<string, unknown> = { date: new Date().toISOString(), adapter: info, features: gpu.features, limits: gpu.limits };
let failed = false;

// ---- 1. correctness against the CPU reference ----------------------------------------------
const SMALL: Partial<HipOptions> = { topK: 64, blockSizeK: 4, blockSizeQ: 16, blockStrideQ: 2, sinkTokens: 8, slidingWindow: 32 };
interface Check {
  name: string;
  spec: MaskProblemSpec;
  options: Partial<HipOptions>;
  dtype: StorageType;
  path: HipMaskPathOption;
  need: 'equal' | 'recall';
  est?: Partial<HipMaskEstimatorOptions>;
}
async function check(g: GpuContext, c: Check) {
  const seed = (Math.random() * 2 ** 32) >>> 0;
  const cpu = randomCpuProblem(seed, c.spec, c.dtype);
  const t0 = performance.now();
  const ref = cpuMask(cpu, c.options);
  const cpuMs = performance.now() - t0;
  const decode = Math.ceil(Math.min(c.options.blockSizeQ ?? 64, c.spec.queryLength) / (c.options.blockStrideQ ?? 2)) === 1;
  const est = await createHipMaskEstimator(g, { dtype: c.dtype, headDim: c.spec.headDim, options: c.options, path: c.path, kinds: [decode ? 'decode' : 'prefill'], ...c.est });
  const p = uploadProblem(g, cpu, c.spec, c.dtype);
  try {
    const enc = g.device.createCommandEncoder();
    const m = est.encode(enc, p);
    g.device.queue.submit([enc.finish()]);
    const got = await readGpuHipMask(g, m);
    const cmp = compareMasks(got, ref);
    const v = est.variants[decode ? 'decode' : 'prefill'];
    const ok = c.need === 'equal' ? cmp.fractionEqual === 1 : cmp.recall >= 0.99;
    if (!ok) failed = true;
    const line =
      `${ok ? 'ok  ' : 'FAIL'} ${c.name} [${variantName(v)}${v.accurate ? ' compensated' : ''}, seed ${seed}]: ` +
      `${cmp.equalSlots}/${cmp.slots} masks equal (${(100 * cmp.fractionEqual).toFixed(2)} %), recall ${cmp.recall.toFixed(5)} (CPU ${cpuMs.toFixed(0)} ms)`;
    console.log(line);
    if (!ok && cmp.firstDiff) console.log(`     first difference: ${JSON.stringify(cmp.firstDiff)}`);
    return { name: c.name, path: v.path, dtype: v.dtype, seed, ...cmp, ok };
  } catch (e) {
    failed = true;
    console.log(`FAIL ${c.name} [${c.path}/${c.dtype}]: ${e instanceof Error ? e.message : String(e)}`);
    return { name: c.name, path: c.path, dtype: c.dtype, seed, error: String(e), ok: false };
  } finally {
    p.destroy();
    est.destroy();
  }
}

if (!has('--no-check')) {
  console.log('\n== checks against the CPU reference (estimateHipMask) ==');
  const prefill: MaskProblemSpec = { batch: 1, heads: 4, kvHeads: 1, queryLength: 4096, keyLength: 4096, headDim: 128, qLayout: 'bthd' };
  const small: MaskProblemSpec = { batch: 2, heads: 8, kvHeads: 2, queryLength: 3001, keyLength: 3001, headDim: 128 };
  const decodeSpec: MaskProblemSpec = { batch: 1, heads: 8, kvHeads: 2, queryLength: 1, keyLength: 30000, headDim: 128 };
  const checks: Check[] = [];
  if (gpu.features.subgroupMatrix) {
    const wide = { ...SMALL, blockSizeQ: 64, slidingWindow: 64, blockSizeK: 2 }; // 32 rows: the row-split layouts
    checks.push(
      { name: 'tensor cores, f16, defaults, T=4096', spec: prefill, options: {}, dtype: 'f16', path: 'matrix', need: 'recall' },
      { name: 'tensor cores, f16, small options (many rounds)', spec: small, options: SMALL, dtype: 'f16', path: 'matrix', need: 'recall' },
      { name: "tensor cores, f16, head groups of 2, 'first'", spec: small, options: { ...SMALL, headGroupSize: 2, representative: 'first' }, dtype: 'f16', path: 'matrix', need: 'recall' },
      { name: 'tensor cores, f16, 32 rows, ragged', spec: small, options: wide, dtype: 'f16', path: 'matrix', need: 'recall' },
      { name: "tensor cores, f16, 32 rows, head groups of 4, 'first'", spec: small, options: { ...wide, headGroupSize: 4, representative: 'first' }, dtype: 'f16', path: 'matrix', need: 'recall' },
      { name: 'tensor cores (classic), f16, defaults, T=4096', spec: prefill, options: {}, dtype: 'f16', path: 'matrix', need: 'recall', est: { matrixKernel: 'classic' } },
      { name: 'tensor cores (lean s4 r1 p1), f16, defaults, T=4096', spec: prefill, options: {}, dtype: 'f16', path: 'matrix', need: 'recall', est: { matrixSubgroups: 4, matrixRowSplit: 1, matrixPrefetch: 1 } },
    );
  } else {
    console.log('(no chromium-experimental-subgroup-matrix on this adapter: tensor-core checks skipped)');
  }
  checks.push(
    { name: 'scalar, f16, defaults, T=4096', spec: prefill, options: {}, dtype: 'f16', path: 'scalar', need: 'recall' },
    { name: 'scalar, f32 (compensated), defaults, T=4096', spec: prefill, options: {}, dtype: 'f32', path: 'scalar', need: 'equal' },
    { name: 'scalar, f32 (compensated), small options', spec: small, options: SMALL, dtype: 'f32', path: 'scalar', need: 'equal' },
    { name: 'decode refresh, f16, T=30000', spec: decodeSpec, options: {}, dtype: 'f16', path: 'auto', need: 'recall' },
    { name: 'decode refresh, f32, T=30000', spec: decodeSpec, options: {}, dtype: 'f32', path: 'auto', need: 'equal' },
  );
  const results = [];
  for (const c of checks) results.push(await check(gpu, c));
  report.checks = results;
}
if ((gpu.features.subgroupMatrix && !has('--no-check')) || has('--identity')) report.identity = await identityChecks();

/**
 * Every swept tensor-core variant against the classic kernel without score reuse, on one random
 * problem at full size (H=32, H_kv=8, d=128, f16): the scores are the same sums in the same
 * order, so the masks must be identical (no CPU reference needed, so T can be realistic).
 */
async function identityChecks() {
  const T = Number(flag('--identity-seq-len') ?? 16384);
  const path: HipMaskPathOption = gpu.features.subgroupMatrix ? 'matrix' : 'matrix-emulated';
  console.log(`\n== tensor-core variants vs the classic kernel (same GPU problem, T=${T}, H=32, H_kv=8, d=128, f16): masks must be identical ==`);
  const shape = { batch: 1, heads: 32, kvHeads: 8, queryLength: T, keyLength: T, headDim: 128 };
  const qb = await randomGpuBuffer(gpu, T * 32 * 128, 'f16', 11, 'identity q');
  const kb = await randomGpuBuffer(gpu, 8 * T * 128, 'f16', 12, 'identity k');
  const problem = {
    q: { buffer: qb, strideBatch: T * 32 * 128, strideHead: 128, strideToken: 32 * 128 },
    k: { buffer: kb, strideBatch: 8 * T * 128, strideHead: T * 128, strideToken: 128 },
    shape,
  };
  const maskOf = async (o: Partial<HipMaskEstimatorOptions>) => {
    const est = await createHipMaskEstimator(gpu, { dtype: 'f16', headDim: 128, path, kinds: ['prefill'], ...o });
    try {
      const enc = gpu.device.createCommandEncoder();
      const m = est.encode(enc, problem);
      gpu.device.queue.submit([enc.finish()]);
      return { mask: await readGpuHipMask(gpu, m), name: variantName(est.variants.prefill) };
    } finally {
      est.destroy();
    }
  };
  const out = [];
  try {
    const ref = await maskOf({ matrixKernel: 'classic', reuse: false });
    const names = [...new Set(['default', 'lean-s4r1p1', 'lean-s4r2p1', 'classic', 'lean-s8r2p2-nosort', 'lean-noreuse', ...variantNames.map((n) => n.replace(/\+norobust$/, ''))])];
    for (const n of names) {
      try {
        const got = await maskOf(variantOptions(n));
        const c = compareMasks(got.mask, ref.mask);
        const ok = c.fractionEqual === 1;
        if (!ok) failed = true;
        console.log(`${ok ? 'ok  ' : 'FAIL'} ${n} [${got.name}] vs [${ref.name}]: ${c.equalSlots}/${c.slots} masks identical${ok ? '' : ` (recall ${c.recall.toFixed(5)})`}`);
        out.push({ name: n, variant: got.name, equal: c.fractionEqual, recall: c.recall, ok });
      } catch (e) {
        failed = true;
        console.log(`FAIL ${n}: ${e instanceof Error ? e.message : String(e)}`);
        out.push({ name: n, error: String(e), ok: false });
      }
    }
  } finally {
    qb.destroy();
    kb.destroy();
  }
  return out;
}

// ---- 2. timing -----------------------------------------------------------------------------
if (!has('--check-only')) {
  console.log('\n== HiP mask estimation, H=32, H_kv=8, d=128, f16, HIP.md defaults (GPU timestamps, median of 5) ==');
  const rows: (Partial<HipMaskBenchResult> & { mode: string; T: number; path: string; variantName: string; kernel?: string; error?: string })[] = [];
  const one = async (mode: string, T: number, path: HipMaskPathOption, vn: string) => {
    const label = `${path}${vn === 'default' ? '' : `:${vn}`}`;
    try {
      const g = await gpuFor(vn);
      if (!g) throw new Error('no such device');
      const r = await benchHipMask(g, {
        seqLen: T,
        queryLength: mode === 'decode' ? 1 : T,
        iterations: 5,
        warmup: 2,
        estimator: { path, ...variantOptions(vn) },
      });
      const kernel = variantName(r.variant);
      console.log(
        `${mode.padEnd(8)} ${String(T).padEnd(8)} ${label.padEnd(26).slice(0, 26)} ${r.ms.toFixed(3).padStart(9)} ${r.tflops.toFixed(1).padStart(8)} ` +
          `${((100 * r.tflops) / peakTflops).toFixed(1).padStart(5)}% ${r.gbps.toFixed(0).padStart(7)} ${((100 * r.gbps) / peakGbps).toFixed(1).padStart(5)}%   ${r.dispatches}   ${kernel}`,
      );
      rows.push({ mode, T, path, variantName: vn, kernel, ...r });
      return r.ms;
    } catch (e) {
      console.log(`${mode.padEnd(8)} ${String(T).padEnd(8)} ${label.padEnd(26)} skipped: ${e instanceof Error ? e.message : String(e)}`);
      rows.push({ mode, T, path, variantName: vn, error: String(e) });
      return Infinity;
    }
  };
  console.log('(TFLOP/s and GB/s count the work the kernel does: nominal minus parent-score reuse where enabled)');
  console.log('mode     T        path:variant                      ms  TFLOP/s  %peak    GB/s  %peak   disp  kernel');
  const best = new Map<string, number>(); // variant → ms at the largest T
  for (const mode of modes) {
    for (const T of seqLens) {
      for (const path of mode === 'decode' ? (['auto'] as HipMaskPathOption[]) : paths) {
        for (const vn of path === 'matrix' || path === 'matrix-emulated' ? variantNames : ['default']) {
          const ms = await one(mode, T, path, vn);
          if (mode === 'prefill' && T === Math.max(...seqLens)) best.set(`${path}\u0000${vn}`, ms);
        }
      }
    }
  }
  // longer contexts for the fastest prefill variant at the largest T
  const fastest = [...best.entries()].filter(([k, ms]) => Number.isFinite(ms) && !k.endsWith('+norobust')).sort((a, b) => a[1] - b[1])[0];
  if (fastest && bigSeqLens.length && modes.includes('prefill')) {
    const [path, vn] = fastest[0].split('\u0000') as [HipMaskPathOption, string];
    console.log(`-- longer contexts with the fastest variant at T=${Math.max(...seqLens)}: ${path}:${vn} --`);
    for (const T of bigSeqLens) await one('prefill', T, path, vn);
    if (modes.includes('decode')) for (const T of bigSeqLens) await one('decode', T, 'auto', 'default');
  }
  report.timings = rows;
}

const json = flag('--json');
if (json) await writeFile(json, JSON.stringify(report, null, 2));
noRobust?.destroy();
gpu.destroy();
if (failed) {
  console.log('\nSOME CHECKS FAILED');
  process.exitCode = 1;
}

/**
 * GPU HiP mask estimation on a real GPU: (1) checks the kernels — the tensor-core variant first
 * where the adapter has subgroup matrices — against the CPU reference (estimateHipMask) at small
 * sizes, (2) times prefill mask estimation for T = 4k … 128k (and a decode refresh, one query)
 * at H=32, H_kv=8, d=128, f16, with GPU timestamps.
 *
 *   npm run build && node dist/bench/hip-mask.js [--seq-lens 4096,…,131072] [--paths auto,scalar]
 *       [--modes prefill,decode] [--variants default,sg2,sg1,nosort,noqreg] [--no-check] [--check-only]
 *       [--peak-tflops 989] [--peak-gbps 4800] [--json FILE]
 *
 * Exit code 1 when a check fails (recall < 0.99, or an f32 mask differing from the CPU's).
 */
import { writeFile } from 'node:fs/promises';
import type { HipOptions } from '../src/attention/options.js';
import { acquireGpu, summaryLine, type GpuContext } from '../src/gpu/index.js';
import { benchHipMask, type HipMaskBenchResult } from '../src/kernels/hip-mask/bench.js';
import { createHipMaskEstimator, readGpuHipMask, type HipMaskEstimatorOptions, type HipMaskPathOption } from '../src/kernels/hip-mask/index.js';
import { compareMasks, cpuMask, randomCpuProblem, uploadProblem, type MaskProblemSpec } from '../src/kernels/hip-mask/testing.js';
import type { StorageType } from '../src/kernels/types.js';

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}
const has = (name: string) => process.argv.includes(name);
const seqLens = (flag('--seq-lens') ?? '4096,8192,16384,32768,65536,131072').split(',').map(Number);
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
const variantOptions = (name: string): Partial<HipMaskEstimatorOptions> =>
  name === 'nosort'
    ? { subgroupSort: false }
    : name === 'noqreg'
      ? { matrixQRegisters: false }
      : name.startsWith('sg')
        ? { matrixSubgroups: Number(name.slice(2)) }
        : {};

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
}
async function check(g: GpuContext, c: Check) {
  const seed = (Math.random() * 2 ** 32) >>> 0;
  const cpu = randomCpuProblem(seed, c.spec, c.dtype);
  const t0 = performance.now();
  const ref = cpuMask(cpu, c.options);
  const cpuMs = performance.now() - t0;
  const decode = Math.ceil(Math.min(c.options.blockSizeQ ?? 64, c.spec.queryLength) / (c.options.blockStrideQ ?? 2)) === 1;
  const est = await createHipMaskEstimator(g, { dtype: c.dtype, headDim: c.spec.headDim, options: c.options, path: c.path, kinds: [decode ? 'decode' : 'prefill'] });
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
      `${ok ? 'ok  ' : 'FAIL'} ${c.name} [${v.path}/${v.dtype}${v.accurate ? '/compensated' : ''}, sort ${v.subgroupSort ? 'subgroup' : 'workgroup'}, seed ${seed}]: ` +
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
    checks.push(
      { name: 'tensor cores, f16, defaults, T=4096', spec: prefill, options: {}, dtype: 'f16', path: 'matrix', need: 'recall' },
      { name: 'tensor cores, f16, small options (many rounds)', spec: small, options: SMALL, dtype: 'f16', path: 'matrix', need: 'recall' },
      { name: "tensor cores, f16, head groups of 2, 'first'", spec: small, options: { ...SMALL, headGroupSize: 2, representative: 'first' }, dtype: 'f16', path: 'matrix', need: 'recall' },
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

// ---- 2. timing -----------------------------------------------------------------------------
if (!has('--check-only')) {
  console.log('\n== HiP mask estimation, H=32, H_kv=8, d=128, f16, HIP.md defaults (GPU timestamps, median of 5) ==');
  console.log('mode     T        path/variant                  ms        TFLOP/s  %peak   GB/s    %peak   dispatches');
  const rows: (Partial<HipMaskBenchResult> & { mode: string; T: number; path: string; variantName: string; error?: string })[] = [];
  for (const mode of modes) {
    for (const T of seqLens) {
      for (const path of mode === 'decode' ? (['auto'] as HipMaskPathOption[]) : paths) {
        for (const vn of path === 'matrix' ? variantNames : ['default']) {
          const label = `${path}${vn === 'default' ? '' : `:${vn}`}`;
          try {
            const r = await benchHipMask(gpu, {
              seqLen: T,
              queryLength: mode === 'decode' ? 1 : T,
              iterations: 5,
              warmup: 2,
              estimator: { path, ...variantOptions(vn) },
            });
            const v = r.variant;
            const desc = `${v.path}${v.matrix ? ` ${v.matrix.subgroups}sg` : ''} wg${v.workgroupSize} ${v.subgroupSort ? 'sgsort' : 'wgsort'}`;
            console.log(
              `${mode.padEnd(8)} ${String(T).padEnd(8)} ${`${label} (${desc})`.padEnd(29).slice(0, 29)} ${r.ms.toFixed(3).padStart(9)} ${r.tflops.toFixed(1).padStart(8)} ` +
                `${((100 * r.tflops) / peakTflops).toFixed(1).padStart(5)}% ${r.gbps.toFixed(0).padStart(7)} ${((100 * r.gbps) / peakGbps).toFixed(1).padStart(5)}%   ${r.dispatches}`,
            );
            rows.push({ mode, T, path, variantName: vn, ...r });
          } catch (e) {
            console.log(`${mode.padEnd(8)} ${String(T).padEnd(8)} ${label.padEnd(29)} skipped: ${e instanceof Error ? e.message : String(e)}`);
            rows.push({ mode, T, path, variantName: vn, error: String(e) });
          }
        }
      }
    }
  }
  report.timings = rows;
}

const json = flag('--json');
if (json) await writeFile(json, JSON.stringify(report, null, 2));
gpu.destroy();
if (failed) {
  console.log('\nSOME CHECKS FAILED');
  process.exitCode = 1;
}
